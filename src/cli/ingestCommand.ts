import { type Command, Option } from 'commander';
import { readBachDataset } from '../data/datasets/bachLayout.js';
import { type Dataset, readGenericDataset, writeGenericDataset } from '../data/datasets/dataset.js';
import { ingestEbhi } from '../data/datasets/ebhi.js';

const LAYOUTS = ['generic', 'bach', 'ebhi'] as const;
type Layout = (typeof LAYOUTS)[number];

/** Reads a dataset of any supported layout and writes it in the generic layout at `out`. */
export async function ingest(layout: Layout, src: string, out: string): Promise<Dataset> {
  if (layout === 'ebhi') return ingestEbhi(src, out);
  const dataset = layout === 'bach' ? await readBachDataset(src) : await readGenericDataset(src);
  await writeGenericDataset(dataset, out);
  return { ...(await readGenericDataset(out)), warnings: dataset.warnings };
}

export function describeDataset(d: Dataset): string {
  const lines = [`classes: ${d.classes.join(', ')}`];
  const splits = new Map<string, number>();
  for (const s of d.slides) splits.set(s.split ?? 'unsplit', (splits.get(s.split ?? 'unsplit') ?? 0) + 1);
  lines.push(`slides: ${d.slides.length} (${[...splits].map(([k, n]) => `${k} ${n}`).join(', ') || 'none'})`);
  const perClass = d.classes.map((_, k) => d.patches.filter((p) => p.classIndex === k).length);
  lines.push(`patches: ${d.patches.length} (${d.classes.map((c, k) => `${c} ${perClass[k]}`).join(', ')})`);
  return lines.join('\n') + '\n';
}

export function registerIngest(program: Command): void {
  program
    .command('ingest')
    .description('convert a dataset (BACH layout, the EBHI sample, or generic) into the generic layout, checking it')
    .addOption(new Option('--layout <layout>', 'layout of --src').choices(LAYOUTS).makeOptionMandatory())
    .requiredOption('--src <dir>', 'dataset to read')
    .requiredOption('--out <dir>', 'folder to write the generic layout into')
    .action(async (opts: { layout: Layout; src: string; out: string }) => {
      const dataset = await ingest(opts.layout, opts.src, opts.out);
      for (const w of dataset.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stdout.write(describeDataset(dataset));
    });
}
