/**
 * `npm run bench:train`: training images/s of the real model (forward + backward + Adam, the trainer's joint loss)
 * per TF.js engine, with peak RSS and wasm heap, written to bench/results/training.{json,md}. Each engine runs in a
 * child process of its own (`--engine NAME`), so its peak RSS is its own and the native bindings cannot shadow wasm.
 *   npx tsx bench/train.ts [--batch 20] [--steps 3] [--native-steps 1] [--rounds 2] [--engines wasm,wasm-workers,torch,...]
 * Engines run in rounds, alternating, so drift on a shared machine falls on all of them; ratios are per round.
 *   npx tsx bench/train.ts --engine wasm [--profile]     one engine, JSON on stdout (and a kernel profile)
 *     with --profile: TOP=N lists N kernels (default 15); SHAPES=KernelName lists that kernel's input shapes
 * Benchmarks are not tests: nothing here asserts.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { initWasmBackend, releaseTfBackend, selectTfBackend } from '../src/tf/backend.js';
import { registerWasmTrainingKernels } from '../src/tf/gradKernels/index.js';
import { buildSegClsModel } from '../src/model/network/architecture.js';
import { INPUT_SIZE } from '../src/util/constants.js';
import { ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, ADAM_LEARNING_RATE, BATCH_SIZE } from '../src/training/fit/hyperparameters.js';
import { DataParallel } from '../src/training/fit/dataParallel.js';
import { trainableVariables, trainStep } from '../src/training/fit/step.js';
import type { BatchArrays } from '../src/training/fit/trainingData.js';
import { Rng } from '../src/util/rng.js';
import { cpuSnap, foreign, vectorIsa } from './cpuLoad.js';

const OUT_DIR = fileURLToPath(new URL('results', import.meta.url));
const NUM_CLASSES = 4;

/** How each engine is set up; the native-binding packages are optional and usually absent here. */
const ENGINES = {
  wasm: 'TF.js wasm, 1 thread, with the replacement gradient kernels and every conv (forward, both gradients) on onnxruntime\'s native CPU kernels, 1 thread (tf/ortConv)',
  'wasm-xnnpack': 'TF.js wasm, 1 thread, with the replacement gradient kernels, convs on TF.js wasm (XNNPACK): the trainer before tf/ortConv',
  'wasm-native': 'TF.js wasm, 1 thread, only the missing Conv2DBackpropFilter added (native MaxPoolGrad, Conv2DBackpropInput, Tile, Sum, Mean)',
  'wasm-workers': 'TF.js wasm, data parallel: one worker thread per core, the batch cut into one shard per worker (training/fit/dataParallel.ts), convs on onnxruntime, 1 thread per worker: what `histoseg train` uses by default',
  'wasm-workers-xnnpack': 'as wasm-workers, convs on TF.js wasm (XNNPACK): what `histoseg train` used before tf/ortConv',
  webgpu: 'TF.js WebGPU (Dawn for Node over Vulkan); here Mesa lavapipe, a software rasteriser on the CPU, so slow: a check that it runs, not a GPU figure',
  torch: 'PyTorch reference (../shared/tools/torch-reference/train_torch.py, 2 threads, its own loss: plain cross-entropies)',
  'tfjs-node': '@tensorflow/tfjs-node (libtensorflow, CPU)',
  'tfjs-node-gpu': '@tensorflow/tfjs-node-gpu (libtensorflow, CUDA)',
} as const;
type EngineName = keyof typeof ENGINES;

const opts = new Command()
  .option('--engines <list>', 'engines to measure', Object.keys(ENGINES).filter((e) => e !== 'wasm-native').join(','))
  .option('--engine <name>', 'measure this engine in this process and print its JSON (used by the parent)')
  .option('--batch <n>', 'batch size', String(BATCH_SIZE))
  .option('--steps <n>', 'timed steps after the warm-up steps', '6')
  .option('--warmup <n>', 'untimed steps first (session and operator creation, Adam slots, JIT)', '3')
  .option('--native-steps <n>', 'timed steps for wasm-native (about 4x slower per step)', '1')
  .option('--webgpu-batch <n>', 'batch size for webgpu (lavapipe is slow)', '4')
  .option('--rounds <n>', 'rounds of all engines, alternated', '2')
  .option('--profile', 'print the kernels that took the most time in one step (with --engine)')
  .parse()
  .opts<{ engines: string; engine?: string; batch: string; steps: string; nativeSteps: string; webgpuBatch: string; rounds: string; warmup: string; profile?: boolean }>();

interface EngineResult {
  engine: EngineName;
  description: string;
  round?: number;
  /** wasm-workers: worker threads. */
  workers?: number;
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

/** The trainer's batch (trainingData.buildBatch): first half segmentation patches (weight 1), second half class patches. */
function randomBatch(batch: number): BatchArrays {
  const rng = new Rng(1);
  const pixels = INPUT_SIZE * INPUT_SIZE;
  const seg = Math.ceil(batch / 2);
  const x = Float32Array.from({ length: batch * pixels * 3 }, () => rng.range(-2, 2));
  const segTarget = new Float32Array(batch * pixels * NUM_CLASSES);
  const clsTarget = new Float32Array(batch * NUM_CLASSES);
  for (let b = 0; b < batch; b++) {
    if (b < seg) for (let i = 0; i < pixels; i++) segTarget[(b * pixels + i) * NUM_CLASSES + Math.floor(rng.range(0, NUM_CLASSES))] = 1;
    else clsTarget[b * NUM_CLASSES + Math.floor(rng.range(0, NUM_CLASSES))] = 1;
  }
  return { n: batch, x, segTarget, clsTarget };
}

const TORCH_DIR = fileURLToPath(new URL('../../shared/tools/torch-reference', import.meta.url));

/** PyTorch's train_torch.py (batch 20, 2 threads), run where torch is installed; its median step. */
async function measureTorch(): Promise<EngineResult> {
  const base = { engine: 'torch' as const, description: ENGINES.torch };
  if (!existsSync(join(TORCH_DIR, 'train_torch.py'))) return { ...base, skipped: `${TORCH_DIR}/train_torch.py is absent` };
  const child = spawn('/usr/bin/python3', ['train_torch.py'], { cwd: TORCH_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const [code] = (await once(child, 'close')) as [number | null]; // 'close': after stdout has been read to its end
  const m = /batch (\d+): median (\d+) ms/.exec(out);
  if (code !== 0 || !m) return { ...base, skipped: `train_torch.py failed (exit ${code}): ${out.trim().split('\n').at(-1)}` };
  const step = Number(m[2]) / 1000;
  return { ...base, backend: 'torch', batch: Number(m[1]), step_median_s: step, images_per_s: Number(m[1]) / step, step_s: [step] };
}

function isEngine(name: string): name is EngineName {
  return name in ENGINES;
}

/** Sets the engine up in this process; returns a reason when it cannot run here. */
async function setUp(engine: EngineName): Promise<{ backend: string } | { skipped: string }> {
  if (engine === 'webgpu') {
    try {
      return { backend: await selectTfBackend({ device: 'webgpu', allowSoftwareGpu: true }) };
    } catch (err) {
      return { skipped: (err as Error).message.split('\n')[0]! };
    }
  }
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
  registerWasmTrainingKernels({ replaceNative: engine !== 'wasm-native', convs: engine === 'wasm' || engine === 'wasm-workers' ? 'onnxruntime' : 'wasm' });
  return { backend };
}

/** Times warm-up + `steps` training steps of the real model on a random batch, half segmentation, half class patches. */
async function measure(engine: EngineName, batch: number, steps: number): Promise<EngineResult> {
  const base = { engine, description: ENGINES[engine] };
  const setup = await setUp(engine);
  if ('skipped' in setup) return { ...base, ...setup };
  const model = buildSegClsModel({ numClasses: NUM_CLASSES, seed: 1 });
  const vars = trainableVariables(model);
  const optimizer = tf.train.adam(ADAM_LEARNING_RATE, ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON);
  const arrays = randomBatch(batch);
  const dataParallel = engine === 'wasm-workers' || engine === 'wasm-workers-xnnpack';
  const workers = dataParallel ? availableParallelism() : 1;
  const parallel = dataParallel ? await DataParallel.start(workers, NUM_CLASSES, workers, engine === 'wasm-workers' ? 'onnxruntime' : 'wasm') : undefined;
  const step = async (): Promise<number> => (parallel ? await parallel.step(model, optimizer, vars, arrays) : await trainStep(model, optimizer, vars, arrays)).total;
  const t0 = performance.now();
  for (let i = 0; i < Number(opts.warmup); i++) await step(); // kernel, session and operator creation, Adam slots, JIT
  const warmup = (performance.now() - t0) / 1000;
  const own = [process.pid, process.ppid];
  const a = cpuSnap(own);
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const s0 = performance.now();
    await step();
    times.push((performance.now() - s0) / 1000);
  }
  const foreignCores = foreign(a, cpuSnap(own));
  const sorted = [...times].sort((p, q) => p - q);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  const probe = tf.zeros([1]);
  const wasmHeap = setup.backend === 'wasm' ? (tf.backend() as BackendWasm).typedArrayFromHeap(probe).buffer.byteLength / 2 ** 20 : null;
  probe.dispose();
  if (opts.profile) {
    const info = await tf.profile(async () => {
      await step();
    });
    const byKernel = new Map<string, number>();
    for (const k of info.kernels) byKernel.set(k.name, (byKernel.get(k.name) ?? 0) + Number(k.kernelTimeMs));
    if (process.env.SHAPES) for (const k of info.kernels) if (k.name === process.env.SHAPES) process.stderr.write(`${k.name} ${JSON.stringify(k.inputShapes)} ${Number(k.kernelTimeMs).toFixed(1)}\n`);
    for (const [name, ms] of [...byKernel].sort((p, q) => q[1] - p[1]).slice(0, Number(process.env.TOP ?? 15))) {
      process.stderr.write(`${name.padEnd(28)} ${ms.toFixed(0).padStart(6)} ms\n`);
    }
  }
  optimizer.dispose();
  model.dispose();
  await parallel?.close();
  if (setup.backend === 'webgpu') releaseTfBackend();
  return {
    ...base,
    ...(parallel ? { workers } : {}),
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
  if (engine === 'torch') return measureTorch();
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [...process.execArgv, self, '--engine', engine, '--batch', String(batch), '--steps', String(steps)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const [code] = (await once(child, 'close')) as [number | null]; // 'close': after stdout has been read to its end
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
  const rounds = Number(opts.rounds);
  for (let round = 1; round <= rounds; round++) {
    // Alternate the order each round, so a slow spell on the shared machine does not always hit the same engine.
    for (const engine of round % 2 === 1 ? engines : [...engines].reverse()) {
      // webgpu on lavapipe, and engines that cannot run here, once only.
      if (round > 1 && (engine === 'webgpu' || rows.some((r) => r.engine === engine && r.skipped))) continue;
      const b = engine === 'webgpu' ? Number(opts.webgpuBatch) : batch;
      const r = { ...(await measureInChild(engine, b, engine === 'wasm-native' || engine === 'webgpu' ? Number(opts.nativeSteps) : steps)), round };
      rows.push(r);
      log(r.skipped ? `${engine}: skipped (${r.skipped})` : `round ${round} ${engine}: ${r.images_per_s!.toFixed(2)} images/s (foreign load ${(r.foreign_cores ?? NaN).toFixed(2)} cores)`);
    }
  }
  const perRound = (engine: EngineName, round: number) => rows.find((r) => r.engine === engine && r.round === round && !r.skipped)?.images_per_s;
  const ratios = Array.from({ length: rounds }, (_, i) => {
    const at = (e: EngineName) => perRound(e, i + 1);
    const ratio = (a: number | undefined, b: number | undefined) => (a && b ? a / b : null);
    return {
      round: i + 1,
      workers_over_workers_xnnpack: ratio(at('wasm-workers'), at('wasm-workers-xnnpack')),
      wasm_over_wasm_xnnpack: ratio(at('wasm'), at('wasm-xnnpack')),
      workers_over_wasm: ratio(at('wasm-workers'), at('wasm')),
      workers_over_torch: ratio(at('wasm-workers'), at('torch')),
    };
  });
  const result = {
    date: started.toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, vector_isa: vectorIsa(), node: process.version, loadavg_at_start: loadavg() },
    batch,
    warmup_steps: Number(opts.warmup),
    max_foreign_cores: Math.max(0, ...rows.map((r) => r.foreign_cores ?? 0)),
    engines: rows,
    ratios,
  };
  const n = (v: number | null | undefined, d = 1) => (v === null || v === undefined ? 'n/a' : v.toFixed(d));
  const md = [
    '# Training benchmark',
    '',
    `${result.date}, ${result.machine.cpus} x ${result.machine.model} (${result.machine.vector_isa}), Node ${process.version}. \`npm run bench:train\`: one ` +
      `training step (forward, backward, Adam; the trainer's joint loss on half segmentation, half class patches) of the ` +
      `paper's model at batch ${batch}, timed after ${opts.warmup} warm-up steps, each engine in its own process. "Foreign" is ` +
      `the CPU (in cores) other processes used during the timed steps: at most ${n(result.max_foreign_cores, 2)} in this run.`,
    '',
    `Engines run in ${rounds} rounds, alternating order, and the ratios below compare engines within one round.`,
    '',
    '| round | engine | batch | images/s | step median (s) | timed steps | warm-up (s) | peak RSS (MiB) | wasm heap (MiB) | foreign (cores) |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) =>
      r.skipped
        ? `| ${r.round} | ${r.engine} | | skipped: ${r.skipped} | | | | | | |`
        : `| ${r.round} | ${r.engine}${r.workers ? ` (${r.workers} workers)` : ''} | ${r.batch} | ${n(r.images_per_s, 2)} | ${n(r.step_median_s, 2)} | ${r.step_s!.length} | ${n(r.warmup_s)} | ${n(r.peak_rss_mib, 0)} | ${n(r.wasm_heap_mib, 0)} | ${n(r.foreign_cores, 2)} |`,
    ),
    '',
    '| round | wasm-workers / wasm-workers-xnnpack | wasm / wasm-xnnpack | wasm-workers / wasm | wasm-workers / torch |',
    '|---|---|---|---|---|',
    ...ratios.map(
      (q) => `| ${q.round} | ${n(q.workers_over_workers_xnnpack, 2)} | ${n(q.wasm_over_wasm_xnnpack, 2)} | ${n(q.workers_over_wasm, 2)} | ${n(q.workers_over_torch, 3)} |`,
    ),
    '',
    ...engines.map((e) => `- ${e}: ${ENGINES[e]}.`),
    '',
  ].join('\n');
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(join(OUT_DIR, 'training.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(OUT_DIR, 'training.md'), md);
  process.stdout.write(md);
}
