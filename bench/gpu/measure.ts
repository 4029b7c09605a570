/**
 * One run of every WebGPU measurement, for a GPU machine (bench/gpu/README.md): the adapter, model-only tiles/s on
 * onnxruntime's WebGPU provider at batch 1..256, end to end through the server at 32 streams, and TF.js WebGPU
 * training images/s. Writes JSON to --out. Benchmarks are not tests: nothing here asserts.
 *   npx tsx bench/gpu/measure.ts [--out dir] [--seconds 3] [--batches 1,8,32,64,128,256] [--streams 32] [--software]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import sharp from 'sharp';
import { connect, segmentTiles } from '../../src/client/segmentationClient.js';
import { OnnxEngine } from '../../src/engine/onnxEngine.js';
import { resolveModel } from '../../src/model/repository.js';
import { startServer } from '../../src/server/grpcServer.js';
import { loadConfig } from '../../src/server/config.js';
import { renderSynthSlide } from '../../src/synth/slides.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { Metrics } from '../../src/telemetry/metrics.js';
import { probeGpuAdapter } from '../../src/util/gpuAdapter.js';
import { INPUT_SIZE } from '../../src/util/constants.js';
import { tissueFraction } from '../../src/imaging/tissue.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const opts = new Command()
  .option('--out <dir>', 'where the JSON goes', join(ROOT, 'bench/results'))
  .option('--seconds <s>', 'timed seconds per measurement', '3')
  .option('--batches <list>', 'model-only batch sizes', '1,8,32,64,128,256')
  .option('--streams <n>', 'concurrent streams end to end', '32')
  .option('--tiles <n>', 'tiles per stream end to end', '64')
  .option('--train-batch <n>', 'training batch', '20')
  .option('--train-steps <n>', 'timed training steps', '5')
  .option('--software', 'accept a software adapter (a dry run on lavapipe)')
  .parse()
  .opts<{ out: string; seconds: string; batches: string; streams: string; tiles: string; trainBatch: string; trainSteps: string; software?: boolean }>();
const seconds = Number(opts.seconds);
const log = (m: string) => process.stderr.write(`[bench:gpu] ${m}\n`);
const result: Record<string, unknown> = { date: new Date().toISOString(), cpus: `${cpus().length} x ${cpus()[0]?.model}`, node: process.version };

const adapter = await probeGpuAdapter();
result.adapter = adapter;
log(`adapter: ${JSON.stringify(adapter)}`);
if (!adapter || (adapter.software && !opts.software)) throw new Error('no hardware GPU adapter (pass --software for a dry run on lavapipe)');

const entry = await resolveModel(join(ROOT, 'models'));
const C = entry.manifest.classes.length;

// 1. Model only: one engine, the seg16 output as served.
const engine = await OnnxEngine.create(join(entry.dir, entry.manifest.files.onnx), C, { intraOpNumThreads: 1, device: 'webgpu', maskOutput: 'seg16', allowSoftwareGpu: true });
const modelOnly = [];
for (const n of opts.batches.split(',').map(Number)) {
  const data = new Float32Array(n * 3 * INPUT_SIZE * INPUT_SIZE).map((_, i) => Math.sin(i) * 2);
  const w0 = performance.now();
  await engine.run({ data, n });
  const warm = (performance.now() - w0) / 1000;
  let tiles = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    await engine.run({ data, n });
    tiles += n;
  }
  const row = { batch: n, tiles_per_s: tiles / ((performance.now() - t0) / 1000), first_run_s: warm };
  modelOnly.push(row);
  log(`model-only batch ${n}: ${row.tiles_per_s.toFixed(1)} tiles/s (first run ${warm.toFixed(2)} s)`);
}
await engine.dispose();
result.model_only = modelOnly;

// 2. End to end: the server on webgpu, `streams` concurrent streams of synthetic tissue tiles (PNG, at model scale).
const slide = renderSynthSlide(5, 1536);
const pngs: Buffer[] = [];
for (let y = 0; y + INPUT_SIZE <= slide.height && pngs.length < 32; y += INPUT_SIZE) {
  for (let x = 0; x + INPUT_SIZE <= slide.width && pngs.length < 32; x += INPUT_SIZE) {
    const raw = Buffer.alloc(INPUT_SIZE * INPUT_SIZE * 3);
    for (let r = 0; r < INPUT_SIZE; r++) slide.rgb.copy(raw, r * INPUT_SIZE * 3, ((y + r) * slide.width + x) * 3, ((y + r) * slide.width + x + INPUT_SIZE) * 3);
    if (tissueFraction(raw, INPUT_SIZE, INPUT_SIZE) < 0.5) continue; // glass would be answered without the model
    pngs.push(await sharp(raw, { raw: { width: INPUT_SIZE, height: INPUT_SIZE, channels: 3 } }).png().toBuffer());
  }
}
const e2e = [];
for (const device of ['webgpu', 'cpu'] as const) {
  const config = loadConfig({ port: '0', metricsPort: '0', models: join(ROOT, 'models'), device, allowSoftwareGpu: 'true', logLevel: 'warn' }, {});
  const server = await startServer(config, createLogger('warn'), new Metrics(undefined, { processMetrics: false }));
  const clients = connect(`127.0.0.1:${server.port}`);
  const perStream = Number(opts.tiles);
  const run = async () => {
    let n = 0;
    await Promise.all(
      Array.from({ length: Number(opts.streams) }, async (_, s) => {
        const tiles = Array.from({ length: perStream }, (_, i) => ({ tileId: `${s}-${i}`, image: pngs[(s + i) % pngs.length]!, mpp: 0, x: 0, y: 0 }));
        for await (const _ of segmentTiles(clients, tiles, { omitMask: true })) n++;
      }),
    );
    return n;
  };
  await run(); // warm-up: every batch size the batcher forms
  const t0 = performance.now();
  const n = await run();
  const row = { device, streams: Number(opts.streams), tiles: n, tiles_per_s: n / ((performance.now() - t0) / 1000), cpus: config.threads };
  e2e.push(row);
  log(`end to end ${device}, ${row.streams} streams: ${row.tiles_per_s.toFixed(1)} tiles/s`);
  clients.close();
  await server.shutdown();
}
result.end_to_end = e2e;
result.tissue_tiles = pngs.length;

// 3. Training on TF.js WebGPU (this process's TF.js backend becomes webgpu from here on).
const [{ selectTfBackend, releaseTfBackend }, { buildSegClsModel }, tf, step, hp] = await Promise.all([
  import('../../src/tf/backend.js'),
  import('../../src/model/network/architecture.js'),
  import('@tensorflow/tfjs'),
  import('../../src/training/fit/step.js'),
  import('../../src/training/fit/hyperparameters.js'),
]);
await selectTfBackend({ device: 'webgpu', allowSoftwareGpu: true });
const B = Number(opts.trainBatch);
const px = INPUT_SIZE * INPUT_SIZE;
const batch = { n: B, x: new Float32Array(B * px * 3).map((_, i) => Math.sin(i)), segTarget: new Float32Array(B * px * 4), clsTarget: new Float32Array(B * 4) };
for (let b = 0; b < B; b++) {
  if (b < B / 2) for (let i = 0; i < px; i++) batch.segTarget[(b * px + i) * 4 + (i % 4)] = 1;
  else batch.clsTarget[b * 4 + (b % 4)] = 1;
}
const model = buildSegClsModel({ numClasses: 4, seed: 1 });
const vars = step.trainableVariables(model);
const optimizer = tf.train.adam(hp.ADAM_LEARNING_RATE, hp.ADAM_BETA1, hp.ADAM_BETA2, hp.ADAM_EPSILON);
const w0 = performance.now();
await step.trainStep(model, optimizer, vars, batch);
const warm = (performance.now() - w0) / 1000;
const times: number[] = [];
for (let i = 0; i < Number(opts.trainSteps); i++) {
  const s0 = performance.now();
  await step.trainStep(model, optimizer, vars, batch);
  times.push((performance.now() - s0) / 1000);
}
const median = times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
result.training = { backend: 'tfjs-webgpu', batch: B, first_step_s: warm, step_median_s: median, images_per_s: B / median };
log(`training on webgpu, batch ${B}: ${(B / median).toFixed(1)} images/s`);
model.dispose();
optimizer.dispose();
releaseTfBackend();

mkdirSync(opts.out, { recursive: true });
writeFileSync(join(opts.out, 'gpu-webgpu.json'), JSON.stringify(result, null, 2) + '\n');
log(`wrote ${join(opts.out, 'gpu-webgpu.json')}`);
process.exit(0);
