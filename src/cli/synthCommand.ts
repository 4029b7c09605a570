import type { Command } from 'commander';
import { SYNTH_DEFAULT_PATCHES_PER_CLASS, writeSynthDataset } from '../synth/dataset.js';
import { writeSynthSamples } from '../synth/samples.js';
import { SYNTH_CLASSES, SYNTH_DEFAULT_SIZE } from '../synth/slides.js';

function int(name: string): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v)) throw new Error(`${name} must be a non-negative integer, got "${v}"`);
    return Number(v);
  };
}

export function registerSynth(program: Command): void {
  program
    .command('synth')
    .description('write a deterministic synthetic BACH-like dataset (generic layout) at the model scale')
    .requiredOption('--seed <n>', 'random seed: the same seed gives the same bytes', int('--seed'))
    .requiredOption('--out <dir>', 'output folder (created; must be empty unless --force)')
    .option('--slides <n>', 'number of slides (60% train, 10% validation, 30% test)', int('--slides'), 10)
    .option('--size <px>', 'slide side in pixels at 7.5 um/px', int('--size'), SYNTH_DEFAULT_SIZE)
    .option('--patches <n>', 'class patches per class from each training slide', int('--patches'), SYNTH_DEFAULT_PATCHES_PER_CLASS)
    .option('--samples <dir>', 'also write sample pictures of the first slide (e.g. docs/images)')
    .option('--force', 'replace the dataset files in a non-empty output folder')
    .action(async (o: { seed: number; out: string; slides: number; size: number; patches: number; samples?: string; force?: boolean }) => {
      const started = performance.now();
      const summary = await writeSynthDataset({
        seed: o.seed,
        out: o.out,
        slides: o.slides,
        size: o.size,
        patchesPerClass: o.patches,
        force: o.force ?? false,
        onSlide: (done, total, name) => process.stderr.write(`synth: ${done}/${total} ${name}\n`),
      });
      const seconds = (performance.now() - started) / 1000;
      if (o.samples && summary.first) {
        for (const f of await writeSynthSamples(summary.first, o.samples)) process.stderr.write(`synth: wrote ${f}\n`);
      }
      const splits = summary.slides.map((s) => s.split);
      const count = (s: string) => splits.filter((x) => x === s).length;
      const lines = [
        `wrote ${summary.slides.length} slides to ${o.out} in ${seconds.toFixed(1)} s (${((60 * summary.slides.length) / seconds).toFixed(1)} slides/min)`,
        `splits: ${count('train')} train, ${count('validation')} validation, ${count('test')} test`,
        `patches: ${SYNTH_CLASSES.map((c) => `${c} ${summary.patches[c] ?? 0}`).join(', ')}`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    });
}
