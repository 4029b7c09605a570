/**
 * `npm run bench:evaluate [-- --before REF]`: `evaluate --model` throughput (slides/s, megapixels/s at the model's
 * scale) on a synthetic test split, written to bench/results/evaluate.{json,md}. With --before, the same runs of the
 * tree at REF (a git worktree) alternate with this tree's, and the ratio is of medians from the one run.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeSynthDataset } from '../src/synth/dataset.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT_DIR = fileURLToPath(new URL('results', import.meta.url));
const { values } = parseArgs({ options: { before: { type: 'string' }, rounds: { type: 'string', default: '3' }, model: { type: 'string', default: 'histoseg-bach@1.0.0' } } });
const ROUNDS = Number(values.rounds);
const SEED = 21;
const SLIDES = 10;
const SIZE = 1024;

interface Run {
  seconds: number;
  slides: number;
  pixels: number;
  macroF1: number | null;
}

const work = mkdtempSync(join(tmpdir(), 'histoseg-eval-bench-'));
let beforeTree: string | undefined;
try {
  await writeSynthDataset({ seed: SEED, out: join(work, 'synth'), slides: SLIDES, size: SIZE, patchesPerClass: 1 });
  if (values.before) {
    beforeTree = join(work, 'before');
    execFileSync('git', ['worktree', 'add', '--detach', beforeTree, values.before], { cwd: ROOT, stdio: 'ignore' });
    symlinkSync(join(ROOT, 'node_modules'), join(beforeTree, 'node_modules'));
  }
  const once = (tree: string): Run => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'evaluateOnce.ts'), tree, join(work, 'synth'), join(ROOT, 'models'), values.model!], { cwd: tree, encoding: 'utf8' });
    return JSON.parse(out.trim().split('\n').at(-1)!) as Run;
  };
  const runs: { tree: 'this' | 'before'; run: Run }[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    runs.push({ tree: 'this', run: once(ROOT) });
    if (beforeTree) runs.push({ tree: 'before', run: once(beforeTree) });
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const summary = (tree: 'this' | 'before') => {
    const rs = runs.filter((r) => r.tree === tree).map((r) => r.run);
    if (rs.length === 0) return null;
    const s = median(rs.map((r) => r.seconds));
    return { seconds_median: s, slides_per_s: rs[0]!.slides / s, megapixels_per_s: rs[0]!.pixels / s / 1e6, macro_f1: rs.map((r) => r.macroF1), runs: rs.map((r) => r.seconds) };
  };
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    data: { seed: SEED, slides: SLIDES, size: SIZE, split: 'test' },
    model: values.model,
    this: summary('this'),
    before: values.before ? summary('before') : null,
    before_ref: values.before ?? null,
  };
  const ratio = result.before && result.this ? result.before.seconds_median / result.this.seconds_median : null;
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(join(OUT_DIR, 'evaluate.json'), JSON.stringify({ ...result, speedup: ratio }, null, 2) + '\n');
  const row = (name: string, s: ReturnType<typeof summary>) =>
    s ? `| ${name} | ${s.seconds_median.toFixed(2)} | ${s.slides_per_s.toFixed(2)} | ${s.megapixels_per_s.toFixed(2)} | ${s.macro_f1.map((f) => f?.toFixed(4)).join(', ')} |` : '';
  const md = [
    '# evaluate --model throughput',
    '',
    `${result.date}, ${result.machine.cpus} x ${result.machine.model}, Node ${process.version}. \`npm run bench:evaluate${values.before ? ` -- --before ${values.before}` : ''}\`: ` +
      `${result.model} on the test split of ${SLIDES} synthetic slides (seed ${SEED}, ${SIZE}x${SIZE} at the model's scale), ${ROUNDS} alternated rounds, medians.`,
    '',
    '| tree | seconds | slides/s | megapixels/s | macro F1 per run |',
    '|---|---|---|---|---|',
    row('this tree', result.this),
    ...(result.before ? [row(`before (${values.before})`, result.before)] : []),
    '',
    ...(ratio ? [`Speedup of this tree over ${values.before}: **${ratio.toFixed(2)}x** (median seconds before / this).`] : []),
    '',
  ].join('\n');
  writeFileSync(join(OUT_DIR, 'evaluate.md'), md);
  process.stdout.write(md);
} finally {
  if (beforeTree && existsSync(beforeTree)) execFileSync('git', ['worktree', 'remove', '--force', beforeTree], { cwd: ROOT, stdio: 'ignore' });
  rmSync(work, { recursive: true, force: true });
}
