/**
 * `npm run experiment`: the paper's S vs S+C vs S+C* experiment (Sec. 3.3, Fig. 3) at a scale this machine can run.
 * Trains every (setting, s, seed) of the grid with `histoseg train` in a child process, evaluates each model on the
 * synthetic TEST slides through the serving engine (evaluateModel), and writes bench/results/experiment.json, the
 * table in docs/experiment.md and docs/images/experiment.png. Resumable: runs already in the JSON are skipped, and
 * an interrupted training continues from its checkpoint (`--resume`).
 *
 * The default plan, from about 7 training images/s (wasm, 1 thread) and the default 10-slide set (6 training slides:
 * about 125 segmentation and 383 class patches), batch 20, at most 10 steps (200 images) per epoch, 6 epochs:
 *   images per epoch and seed: S 3+6+13+31+125 = 178; S+C 4 x 200 = 800 (S+C at 100% is S at 100%, reused);
 *   S+C* 5 x 200 = 1000; so 1978 x 6 epochs x 2 seeds = 23.7k images = 57 min at 7 images/s (79 min at 5).
 *   Per run about 60 s besides training (patch preparation, 7 validations of 144 windows, ONNX export, test
 *   evaluation): 28 runs = 28 min. Total about 85 min, under 2 hours with room for a busier machine.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { evaluateModel } from '../src/evaluation/evaluateModel.js';
import { resolveModel } from '../src/model/repository.js';
import { SYNTH_DEFAULT_SIZE } from '../src/synth/slides.js';
import { writeSynthDataset } from '../src/synth/dataset.js';
import { parseSetting } from '../src/cli/trainCommand.js';
import { SETTINGS, type Setting } from '../src/training/fit/trainingData.js';
import {
  type ExperimentRun,
  METRICS,
  type MetricName,
  plotSvg,
  REFERENCE,
  relativeTable,
  renderPng,
  replaceBetweenMarkers,
  runKey,
  tableMarkdown,
} from './experimentReport.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'bin', 'histoseg.js');
const MODEL_VERSION = '1.0.0';

const opts = new Command()
  .description('S vs S+C vs S+C* (paper Sec. 3.3) on synthetic slides, with a shortened schedule')
  .option('--work <dir>', 'dataset, models, checkpoints and logs', '.histoseg-train/experiment')
  .option('--slides <n>', 'synthetic slides (60% train, 10% validation, 30% test)', '10')
  .option('--size <px>', 'synthetic slide side in pixels', String(SYNTH_DEFAULT_SIZE))
  .option('--data-seed <k>', 'seed of the synthetic dataset', '1')
  .option('--settings <list>', 'settings to train', SETTINGS.join(','))
  .option('--fractions <list>', 'shares s of the segmentation patches, in percent', '2.5,5,10,25,100')
  .option('--reps <n>', 'repetitions (training seeds 1..n)', '2')
  .option('--epochs <n>', 'epochs per run (the paper: 100)', '6')
  .option('--max-steps <n>', 'at most this many steps per epoch', '10')
  .option('--batch <n>', 'batch size (the paper: 20)', '20')
  .option('--jobs <n>', 'runs trained at once (each single-threaded)', '1')
  .option('--results <file>', 'results JSON', 'bench/results/experiment.json')
  .option('--doc <file>', 'markdown with the table markers', 'docs/experiment.md')
  .option('--plot <file>', 'PNG plot', 'docs/images/experiment.png')
  .option('--report-only', 'rebuild the table and plot from the results JSON; train nothing')
  .parse()
  .opts<{
    work: string; slides: string; size: string; dataSeed: string; settings: string; fractions: string; reps: string;
    epochs: string; maxSteps: string; batch: string; jobs: string; results: string; doc: string; plot: string; reportOnly?: boolean;
  }>();

function int(flag: string, value: string, min = 1): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag} must be an integer >= ${min}, got ${value}`);
  return n;
}

const config = {
  slides: int('--slides', opts.slides),
  size: int('--size', opts.size),
  dataSeed: int('--data-seed', opts.dataSeed, 0),
  epochs: int('--epochs', opts.epochs),
  maxSteps: int('--max-steps', opts.maxSteps),
  batch: int('--batch', opts.batch),
};
const settings = opts.settings.split(',').map(parseSetting);
const fractions = opts.fractions.split(',').map((v) => {
  const p = Number(v);
  if (!(p > 0 && p <= 100)) throw new Error(`--fractions: each share must be in (0, 100] percent, got ${v}`);
  return p;
});
const seeds = Array.from({ length: int('--reps', opts.reps) }, (_, i) => i + 1);
const jobs = int('--jobs', opts.jobs);
const work = resolve(opts.work);
const dataDir = join(work, 'synth');
const modelsDir = join(work, 'models');

function log(msg: string): void {
  process.stderr.write(`[experiment] ${msg}\n`);
}

interface ResultsFile {
  schema: 1;
  config: typeof config;
  machine: { cpus: number; model: string | undefined; node: string };
  updated: string;
  runs: ExperimentRun[];
}

async function readResults(): Promise<ResultsFile> {
  const fresh: ResultsFile = {
    schema: 1,
    config,
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    updated: new Date().toISOString(),
    runs: [],
  };
  if (!existsSync(opts.results)) return fresh;
  const old = JSON.parse(await readFile(opts.results, 'utf8')) as ResultsFile;
  if (!opts.reportOnly && JSON.stringify(old.config) !== JSON.stringify(config)) {
    throw new Error(
      `${opts.results} holds runs of another configuration (${JSON.stringify(old.config)}); ` +
        `pass the same flags to continue it, or move it away to start over`,
    );
  }
  return old;
}

let writing = Promise.resolve();
/** Written whole to a temporary file and renamed, so an interrupted run never leaves half a JSON. */
function saveResults(results: ResultsFile): Promise<void> {
  writing = writing.then(async () => {
    results.updated = new Date().toISOString();
    results.runs.sort((a, b) => a.seed - b.seed || SETTINGS.indexOf(a.setting) - SETTINGS.indexOf(b.setting) || a.percent - b.percent);
    await mkdir(dirname(opts.results), { recursive: true });
    await writeFile(`${opts.results}.tmp`, JSON.stringify(results, null, 2) + '\n');
    await rename(`${opts.results}.tmp`, opts.results);
  });
  return writing;
}

async function writeReport(results: ResultsFile): Promise<void> {
  if (!results.runs.some((r) => r.setting === REFERENCE.setting && r.percent === REFERENCE.percent)) return;
  const table = relativeTable(results.runs);
  const c = results.config;
  const header =
    `${results.updated}, ${results.machine.cpus} x ${results.machine.model}, Node ${results.machine.node}. ` +
    `${c.slides} synthetic slides of ${c.size} px (data seed ${c.dataSeed}), ${c.epochs} epoch(s) of at most ${c.maxSteps} ` +
    `step(s), batch ${c.batch}; ${results.runs.length} runs, evaluated on the test slides through the serving engine.`;
  const doc = await readFile(opts.doc, 'utf8');
  await writeFile(opts.doc, replaceBetweenMarkers(doc, `${header}\n\n${tableMarkdown(table, results.runs)}`));
  await mkdir(dirname(opts.plot), { recursive: true });
  await writeFile(opts.plot, await renderPng(plotSvg(table)));
}

async function ensureDataset(): Promise<void> {
  const stamp = join(work, 'synth.json');
  const want = JSON.stringify({ seed: config.dataSeed, slides: config.slides, size: config.size });
  if (existsSync(stamp) && (await readFile(stamp, 'utf8')) === want) return;
  log(`writing ${config.slides} synthetic slides (seed ${config.dataSeed}, ${config.size} px) to ${dataDir}`);
  await rm(stamp, { force: true });
  await writeSynthDataset({ seed: config.dataSeed, out: dataDir, slides: config.slides, size: config.size, force: true });
  await writeFile(stamp, want);
}

function modelName(setting: Setting, percent: number, seed: number): string {
  const s = setting.toLowerCase().replace('+c*', 'cstar').replace('+c', 'c');
  return `exp-${s}-${String(percent).replace('.', 'p')}-${seed}`;
}

/** `histoseg train` in a child process (its own wasm heap; a crash costs one run), its output to a log file. */
async function trainChild(setting: Setting, percent: number, seed: number, name: string): Promise<void> {
  const logFile = join(work, 'logs', `${name}.log`);
  await mkdir(dirname(logFile), { recursive: true });
  const out = createWriteStream(logFile, { flags: 'a' });
  await once(out, 'open');
  const args = [
    CLI, 'train', '--data', dataDir, '--setting', setting, '--seg-fraction', `${percent}%`, '--epochs', String(config.epochs),
    '--seed', String(seed), '--name', name, '--version', MODEL_VERSION, '--models', modelsDir, '--batch', String(config.batch),
    '--max-steps', String(config.maxSteps), '--work', join(work, 'runs', name), '--resume',
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', out, out] });
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  out.end();
  if (code !== 0) throw new Error(`training ${name} failed (${signal ?? `exit ${code}`}); see ${logFile}`);
}

async function runOne(setting: Setting, percent: number, seed: number): Promise<ExperimentRun> {
  const name = modelName(setting, percent, seed);
  const t0 = performance.now();
  // A version left by an interrupted experiment (trained, not yet evaluated) is evaluated as it is.
  const existing = await resolveModel(modelsDir, name, MODEL_VERSION).catch(() => null);
  if (!existing) await trainChild(setting, percent, seed, name);
  const t1 = performance.now();
  const evaluation = await evaluateModel({ models: modelsDir, model: `${name}@${MODEL_VERSION}`, data: dataDir, split: 'test' });
  const t2 = performance.now();
  const entry = await resolveModel(modelsDir, name, MODEL_VERSION);
  const lineage = entry.manifest.lineage?.settings as { segPatches?: number; clsPatches?: number } | undefined;
  const metrics = Object.fromEntries(METRICS.map((m) => [m, evaluation.metrics[m]])) as Record<MetricName, number | null>;
  // The result is recorded; the checkpoints and the model version are not needed any more.
  await rm(join(work, 'runs', name), { recursive: true, force: true });
  await rm(join(modelsDir, name), { recursive: true, force: true });
  return {
    setting,
    percent,
    seed,
    metrics,
    bestEpoch: Number(entry.manifest.metrics?.bestEpoch ?? NaN),
    segPatches: lineage?.segPatches ?? NaN,
    clsPatches: lineage?.clsPatches ?? NaN,
    trainSeconds: existing ? 0 : (t1 - t0) / 1000,
    evalSeconds: (t2 - t1) / 1000,
  };
}

/** S+C at s = 100% selects (100 - 100)% = no class patches: the same patches, seed and order as S at 100%. */
function aliasOf(setting: Setting, percent: number): Setting | null {
  return setting === 'S+C' && percent === 100 && settings.includes('S') ? 'S' : null;
}

const results = await readResults();
if (opts.reportOnly) {
  await writeReport(results);
  log(`report rebuilt from ${results.runs.length} runs in ${opts.results}`);
  process.exit(0);
}
await ensureDataset();
const done = new Set(results.runs.map(runKey));
const grid = seeds.flatMap((seed) =>
  fractions.flatMap((percent) => settings.map((setting) => ({ setting, percent, seed }))),
);
// The reference first in every repetition, so a partial run can already be reported relative to it.
const isRef = (g: { setting: Setting; percent: number }) => g.setting === REFERENCE.setting && g.percent === REFERENCE.percent;
grid.sort((a, b) => a.seed - b.seed || Number(isRef(b)) - Number(isRef(a)));
const todo = grid.filter((g) => !done.has(runKey(g)) && aliasOf(g.setting, g.percent) === null);
log(`${grid.length} runs in the grid, ${grid.length - todo.length} done or reused, ${todo.length} to train (${jobs} at a time)`);

const started = performance.now();
let finished = 0;
let failures = 0;
const queue = [...todo];
async function worker(): Promise<void> {
  for (let g = queue.shift(); g; g = queue.shift()) {
    try {
      const run = await runOne(g.setting, g.percent, g.seed);
      results.runs.push(run);
      await saveResults(results);
      finished++;
      const minutes = (performance.now() - started) / 60_000;
      log(
        `${finished}/${todo.length} ${g.setting} at ${g.percent}% seed ${g.seed}: macro F1 ${run.metrics.macroF1?.toFixed(4) ?? 'n/a'}, ` +
          `BACH ${run.metrics.bachScore?.toFixed(4) ?? 'n/a'} (train ${run.trainSeconds.toFixed(0)} s, eval ${run.evalSeconds.toFixed(0)} s; ` +
          `${minutes.toFixed(1)} min so far)`,
      );
    } catch (err) {
      failures++;
      log(`${g.setting} at ${g.percent}% seed ${g.seed} failed: ${(err as Error).message}`);
    }
  }
}
await Promise.all(Array.from({ length: jobs }, () => worker()));

for (const g of grid) {
  const source = aliasOf(g.setting, g.percent);
  if (source === null || done.has(runKey(g))) continue;
  const ref = results.runs.find((r) => r.setting === source && r.percent === g.percent && r.seed === g.seed);
  if (ref) results.runs.push({ ...ref, setting: g.setting, trainSeconds: 0, evalSeconds: 0, sameAs: runKey(ref) });
}
await saveResults(results);
await writeReport(results);
log(`${finished} runs trained in ${((performance.now() - started) / 60_000).toFixed(1)} min; ${failures} failed; results in ${opts.results}`);
if (failures > 0) process.exitCode = 1;
