/**
 * `npm run bench:data`: speed of the synthetic slide generator and the patch counts the paper's preparation cuts
 * from a 10-slide set, written to bench/results/data.{json,md}.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { preparePatches } from '../src/training/prepare/patchPreparation.js';
import { readDataset } from '../src/data/datasets/readDataset.js';
import { writeSynthDataset } from '../src/synth/dataset.js';

const OUT_DIR = fileURLToPath(new URL('results', import.meta.url));
const SLIDES = 10;
const SEED = 1;
const work = mkdtempSync(join(tmpdir(), 'histoseg-data-bench-'));
try {
  const t0 = performance.now();
  const synth = await writeSynthDataset({ seed: SEED, out: join(work, 'synth'), slides: SLIDES });
  const synthSeconds = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const dataset = await readDataset(join(work, 'synth'));
  const prep = await preparePatches(dataset, join(work, 'patches'), { seed: SEED, splits: ['train', 'validation'] });
  const prepSeconds = (performance.now() - t1) / 1000;
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    synth: { slides: SLIDES, seed: SEED, seconds: synthSeconds, slides_per_minute: (60 * SLIDES) / synthSeconds, class_patches: synth.patches },
    prepare: { seconds: prepSeconds, ...prep },
  };
  const md = [
    '# Training-data benchmark',
    '',
    `${result.date}, ${result.machine.cpus} x ${result.machine.model}, Node ${process.version}. \`npm run bench:data\`: ${SLIDES} synthetic slides (seed ${SEED}, default size), then \`prepare\` on their train and validation slides.`,
    '',
    '| measure | value |',
    '|---|---|',
    `| generator speed | ${result.synth.slides_per_minute.toFixed(1)} slides/min (${synthSeconds.toFixed(1)} s for ${SLIDES}) |`,
    `| class-labelled patches written by synth | ${Object.entries(synth.patches).map(([k, v]) => `${k} ${v}`).join(', ')} |`,
    `| prepare time | ${prepSeconds.toFixed(1)} s |`,
    `| segmentation patches (centred on labelled components, K-means split) | ${prep.segPatches.total}: ${Object.entries(prep.segPatches.perClass).map(([k, v]) => `${k} ${v}`).join(', ')} |`,
    `| dropped by the 75% foreground rule | ${prep.segPatches.droppedLowForeground} |`,
    `| class patches | ${prep.clsPatches.total}: ${Object.entries(prep.clsPatches.perClass).map(([k, v]) => `${k} ${v}`).join(', ')} |`,
    `| background (class 0) share of segmentation-patch pixels | ${prep.backgroundPixelShare === null ? 'n/a' : (100 * prep.backgroundPixelShare).toFixed(1) + '%'} (paper: > 90%) |`,
    '',
  ].join('\n');
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(join(OUT_DIR, 'data.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(OUT_DIR, 'data.md'), md);
  process.stdout.write(md);
} finally {
  rmSync(work, { recursive: true, force: true });
}
