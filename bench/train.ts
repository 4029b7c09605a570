/**
 * `npm run bench:train`: training images/s of the real model (forward + backward + Adam, the trainer's joint loss)
 * per TF.js engine, with peak RSS and wasm heap, written to bench/results/training.{json,md}. Each engine runs in a
 * child process of its own (`--engine NAME`), so its peak RSS is its own and the native bindings cannot shadow wasm.
 *   npx tsx bench/train.ts [--batch 20] [--steps 3] [--native-steps 1] [--engines wasm,wasm-native,...]
 *   npx tsx bench/train.ts --engine wasm [--profile]     one engine, JSON on stdout (and a kernel profile)
 * Benchmarks are not tests: nothing here asserts.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { initWasmBackend } from '../src/tf/backend.js';
import { registerWasmTrainingKernels } from '../src/tf/gradKernels/index.js';
import { buildSegClsModel } from '../src/model/network/architecture.js';
import { INPUT_SIZE } from '../src/util/constants.js';
import { ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, ADAM_LEARNING_RATE, BATCH_SIZE } from '../src/training/fit/hyperparameters.js';
import { jointLoss } from '../src/training/fit/losses.js';
import { cpuSnap, foreign } from './cpuLoad.js';

const OUT_DIR = fileURLToPath(new URL('results', import.meta.url));
const NUM_CLASSES = 4;

/** How each engine is set up; the native-binding packages are optional and usually absent here. */
const ENGINES = {
  wasm: 'TF.js wasm, 1 thread, with the replacement gradient kernels (what the trainer uses)',
  'wasm-native': 'TF.js wasm, 1 thread, only the missing Conv2DBackpropFilter added (native MaxPoolGrad, Conv2DBackpropInput, Tile, Sum, Mean)',
  'wasm-workers': 'TF.js wasm, data parallel over worker threads',
  'tfjs-node': '@tensorflow/tfjs-node (libtensorflow, CPU)',
  'tfjs-node-gpu': '@tensorflow/tfjs-node-gpu (libtensorflow, CUDA)',
} as const;
type EngineName = keyof typeof ENGINES;

const opts = new Command()
  .option('--engines <list>', 'engines to measure', Object.keys(ENGINES).join(','))
  .option('--engine <name>', 'measure this engine in this process and print its JSON (used by the parent)')
  .option('--batch <n>', 'batch size', String(BATCH_SIZE))
  .option('--steps <n>', 'timed steps after one warm-up step', '3')
  .option('--native-steps <n>', 'timed steps for wasm-native (about 4x slower per step)', '1')
  .option('--profile', 'print the kernels that took the most time in one step (with --engine)')
  .parse()
  .opts<{ engines: string; engine?: string; batch: string; steps: string; nativeSteps: string; profile?: boolean }>();

interface EngineResult {
  engine: EngineName;
  description: string;
  skipped?: string;
  backend?: string;
  batch?: number;
  warmup_s?: number;
  step_s?: number[];
  step_median_s?: number;
  images_per_s?: number;
  /** The wasm module's heap (its ArrayBuffer), which holds every tensor; null on other backends. */
  wasm_heap_mib?: number | null;
  peak_rss_mib?: number;
  /** Cores other processes used during the timed steps. */
  foreign_cores?: number;
}

function isEngine(name: string): name is EngineName {
  return name in ENGINES;
}

/** Sets the engine up in this process; returns a reason when it cannot run here. */
async function setUp(engine: EngineName): Promise<{ backend: string } | { skipped: string }> {
  if (engine === 'wasm-workers') return { skipped: 'data parallelism over worker threads is not implemented yet (docs/training.md)' };
  if (engine === 'tfjs-node' || engine === 'tfjs-node-gpu') {
    try {
      const specifier: string = `@tensorflow/${engine}`; // optional: no types, usually not installed
      await import(specifier);
    } catch (err) {
      return { skipped: `${engine} does not load: ${(err as Error).message.split('\n')[0]}` };
    }
    if (!(await tf.setBackend('tensorflow'))) return { skipped: `${engine} loaded, but its 'tensorflow' backend did not initialise` };
    await tf.ready();
    return { backend: tf.getBackend() };
  }
  const backend = await initWasmBackend();
  registerWasmTrainingKernels({ replaceNative: engine === 'wasm' });
  return { backend };
}

/** Times warm-up + `steps` training steps of the real model on a random batch, half segmentation, half class patches. */
async function measure(engine: EngineName, batch: number, steps: number): Promise<EngineResult> {
  const base = { engine, description: ENGINES[engine] };
  const setup = await setUp(engine);
  if ('skipped' in setup) return { ...base, ...setup };
  const model = buildSegClsModel({ numClasses: NUM_CLASSES, seed: 1 });
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const optimizer = tf.train.adam(ADAM_LEARNING_RATE, ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON);
  const seg = Math.ceil(batch / 2);
  const x = tf.randomNormal([batch, INPUT_SIZE, INPUT_SIZE, 3], 0, 1, 'float32', 1);
  // The trainer's targets (trainingData.buildBatch): class weight at each seg pixel's class, one-hot for class patches.
  const segTarget = tf.tidy(() =>
    tf.mul(
      tf.oneHot(tf.randomUniform([batch, INPUT_SIZE, INPUT_SIZE], 0, NUM_CLASSES, 'int32', 2), NUM_CLASSES),
      tf.concat([tf.ones([seg, 1, 1, 1]), tf.zeros([batch - seg, 1, 1, 1])]),
    ),
  );
  const clsTarget = tf.tidy(() =>
    tf.mul(tf.oneHot(tf.randomUniform([batch], 0, NUM_CLASSES, 'int32', 3), NUM_CLASSES), tf.concat([tf.zeros([seg, 1]), tf.ones([batch - seg, 1])])),
  );
  const step = (): number => {
    const loss = optimizer.minimize(
      () => {
        const [mask, cls] = model.apply(x, { training: true }) as tf.Tensor[];
        const l = jointLoss(mask!, cls!, segTarget, clsTarget);
        return l.total;
      },
      true,
      vars,
    );
    const value = loss!.dataSync()[0]!;
    loss!.dispose();
    return value;
  };
  const t0 = performance.now();
  step(); // warm-up: kernel and XNNPACK operator creation, Adam slots
  const warmup = (performance.now() - t0) / 1000;
  const own = [process.pid, process.ppid];
  const a = cpuSnap(own);
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const s0 = performance.now();
    step();
    times.push((performance.now() - s0) / 1000);
  }
  const foreignCores = foreign(a, cpuSnap(own));
  const median = [...times].sort((p, q) => p - q)[Math.floor(times.length / 2)]!;
  const wasmHeap = setup.backend === 'wasm' ? (tf.backend() as BackendWasm).typedArrayFromHeap(x).buffer.byteLength / 2 ** 20 : null;
  if (opts.profile) {
    const info = await tf.profile(() => {
      step();
    });
    const byKernel = new Map<string, number>();
    for (const k of info.kernels) byKernel.set(k.name, (byKernel.get(k.name) ?? 0) + Number(k.kernelTimeMs));
    for (const [name, ms] of [...byKernel].sort((p, q) => q[1] - p[1]).slice(0, 15)) {
      process.stderr.write(`${name.padEnd(28)} ${ms.toFixed(0).padStart(6)} ms\n`);
    }
  }
  tf.dispose([x, segTarget, clsTarget]);
  optimizer.dispose();
  model.dispose();
  return {
    ...base,
    backend: setup.backend,
    batch,
    warmup_s: warmup,
    step_s: times,
    step_median_s: median,
    images_per_s: batch / median,
    wasm_heap_mib: wasmHeap,
    peak_rss_mib: process.resourceUsage().maxRSS / 1024,
    foreign_cores: foreignCores,
  };
}

function log(msg: string): void {
  process.stderr.write(`[bench:train] ${msg}\n`);
}

/** Runs one engine in a child process (this script with --engine) and parses the JSON it prints. */
async function measureInChild(engine: EngineName, batch: number, steps: number): Promise<EngineResult> {
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [...process.execArgv, self, '--engine', engine, '--batch', String(batch), '--steps', String(steps)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  const line = stdout.trim().split('\n').at(-1);
  if (code !== 0 || !line) return { engine, description: ENGINES[engine], skipped: `the measuring process failed (exit ${code})` };
  return JSON.parse(line) as EngineResult;
}

const batch = Number(opts.batch);
const steps = Number(opts.steps);
if (opts.engine !== undefined) {
  if (!isEngine(opts.engine)) throw new Error(`--engine must be one of ${Object.keys(ENGINES).join(', ')}, got ${opts.engine}`);
  process.stdout.write(JSON.stringify(await measure(opts.engine, batch, steps)) + '\n');
} else {
  const engines = opts.engines.split(',').map((e) => {
    if (!isEngine(e)) throw new Error(`--engines: unknown engine ${e}; valid: ${Object.keys(ENGINES).join(', ')}`);
    return e;
  });
  const started = new Date();
  const rows: EngineResult[] = [];
  for (const engine of engines) {
    const r = await measureInChild(engine, batch, engine === 'wasm-native' ? Number(opts.nativeSteps) : steps);
    rows.push(r);
    log(r.skipped ? `${engine}: skipped (${r.skipped})` : `${engine}: ${r.images_per_s!.toFixed(2)} images/s (foreign load ${r.foreign_cores!.toFixed(2)} cores)`);
  }
  const result = {
    date: started.toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavg_at_start: loadavg() },
    batch,
    engines: rows,
  };
  const n = (v: number | null | undefined, d = 1) => (v === null || v === undefined ? 'n/a' : v.toFixed(d));
  const md = [
    '# Training benchmark',
    '',
    `${result.date}, ${result.machine.cpus} x ${result.machine.model}, Node ${process.version}. \`npm run bench:train\`: one ` +
      `training step (forward, backward, Adam; the trainer's joint loss on half segmentation, half class patches) of the ` +
      `paper's model at batch ${batch}, timed after one warm-up step, each engine in its own process. "Foreign" is the CPU ` +
      `(in cores) other processes used during the timed steps.`,
    '',
    '| engine | images/s | step median (s) | timed steps | warm-up (s) | peak RSS (MiB) | wasm heap (MiB) | foreign (cores) |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map((r) =>
      r.skipped
        ? `| ${r.engine} | skipped: ${r.skipped} | | | | | | |`
        : `| ${r.engine} | ${n(r.images_per_s, 2)} | ${n(r.step_median_s, 2)} | ${r.step_s!.length} | ${n(r.warmup_s)} | ${n(r.peak_rss_mib, 0)} | ${n(r.wasm_heap_mib, 0)} | ${n(r.foreign_cores, 2)} |`,
    ),
    '',
    ...rows.map((r) => `- ${r.engine}: ${r.description}.`),
    '',
  ].join('\n');
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(join(OUT_DIR, 'training.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(OUT_DIR, 'training.md'), md);
  process.stdout.write(md);
}
