import { type Command, InvalidArgumentError } from 'commander';
import { SPLITS } from '../data/datasets/dataset.js';
import { type PrepareSummary, preparePatches, type SplitName } from '../training/prepare/patchPreparation.js';
import { readDataset } from '../data/datasets/readDataset.js';

const SPLIT_NAMES: readonly SplitName[] = [...SPLITS, 'unsplit'];

function parseSeed(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('must be a non-negative integer');
  return n;
}

function parseSplits(value: string): SplitName[] {
  const names = value.split(',').map((s) => s.trim());
  for (const n of names) {
    if (!(SPLIT_NAMES as readonly string[]).includes(n)) {
      throw new InvalidArgumentError(`unknown split "${n}" (valid: ${SPLIT_NAMES.join(', ')})`);
    }
  }
  return names as SplitName[];
}

export function formatPrepareSummary(s: PrepareSummary): string {
  const lines = [`slides: ${s.slides}   patch size: ${s.patchSize} px at ${s.mpp} um/px   seed: ${s.seed}`];
  lines.push(`segmentation patches: ${s.segPatches.total} (dropped under 75% foreground: ${s.segPatches.droppedLowForeground})`);
  for (const [split, n] of Object.entries(s.segPatches.perSplit)) lines.push(`  ${split.padEnd(12)} ${n}`);
  const names = Object.keys(s.segPatches.perClass);
  const w = Math.max(5, ...names.map((n) => n.length));
  lines.push(`${'class'.padEnd(w)}  seg patches  cls patches  pixel share`);
  for (const name of names) {
    lines.push(
      `${name.padEnd(w)}  ${String(s.segPatches.perClass[name]).padStart(11)}  ${String(s.clsPatches.perClass[name]).padStart(11)}  ${(s.pixelShare[name]! * 100).toFixed(1).padStart(10)}%`,
    );
  }
  const bg = s.backgroundPixelShare === null ? '-' : `${(s.backgroundPixelShare * 100).toFixed(1)}%`;
  lines.push(`background pixel share of segmentation patches: ${bg}`);
  lines.push(`stain reference: ${s.stainReference ?? 'none'}`);
  return lines.join('\n') + '\n';
}

export function registerPrepare(program: Command): void {
  program
    .command('prepare')
    .description("cut training patches the paper's way (App. B): centred on labelled components, K-means for large ones")
    .requiredOption('--data <dir>', 'dataset folder (generic or BACH layout)')
    .requiredOption('--out <dir>', 'output folder for patches, index.json, summary.json, stain-reference.json')
    .option('--seed <n>', 'K-means seed', parseSeed, 0)
    .option('--splits <list>', `slide splits to cut, comma-separated (${SPLIT_NAMES.join(', ')})`, parseSplits, [
      'train',
      'validation',
      'unsplit',
    ] as SplitName[])
    .action(async (opts: { data: string; out: string; seed: number; splits: SplitName[] }) => {
      const dataset = await readDataset(opts.data);
      for (const w of dataset.warnings) process.stderr.write(`warning: ${w}\n`);
      const summary = await preparePatches(dataset, opts.out, {
        seed: opts.seed,
        splits: opts.splits,
        log: (line) => process.stderr.write(line + '\n'),
      });
      process.stdout.write(formatPrepareSummary(summary));
    });
}
