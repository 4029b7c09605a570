/**
 * `npm run bench:rpc`: the Train RPC measured against a real server process (bin/histoseg.js serve), written to
 * bench/results/trainRpc.{json,md}. Benchmarks are not tests: nothing here asserts.
 *   1. upload throughput with durability on (every example fsynced before it counts);
 *   2. one fine-tuning job on synthetic tiles: wall time, images/s, new vs base validation macro F1;
 *   3. serving at 8 streams with and without a job training beside it (alternated idle/job/idle/job), one-tile
 *      latency and gRPC health latency;
 *   4. kill -9 during an upload and during a job, then restart: acknowledged examples before and after, the job's state,
 *      and whether ListModels shows anything half-written.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { credentials, makeClientConstructor, type Client } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import sharp from 'sharp';
import { SERVE_NODE_FLAGS } from '../src/cli/serveCommand.js';
import { connect, segmentTiles, type HistosegClients } from '../src/client/segmentationClient.js';
import { cancelTraining, listModels, startTraining, uploadExamples, watchUntil } from '../src/client/trainingClient.js';
import { resolveModel } from '../src/model/repository.js';
import type { Tile } from '../src/proto/gen/histoseg/v1/segmentation.js';
import { JobState, type Example } from '../src/proto/gen/histoseg/v1/training.js';
import { renderSynthSlide } from '../src/synth/slides.js';
import { CLASSES, synthExamples, TOKENS, trainingSandbox } from '../test/support/training.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT_DIR = join(ROOT, 'bench', 'results');
const BIN = join(ROOT, 'bin', 'histoseg.js');

const opts = new Command()
  .option('--seconds <s>', 'length of each timed serving phase', '8')
  .option('--upload <n>', 'examples in the upload run', '120')
  .option('--epochs <n>', 'epochs of the measured fine-tuning job', '2')
  .option('--rounds <n>', 'idle/job serving rounds', '2')
  .parse()
  .opts<{ seconds: string; upload: string; epochs: string; rounds: string }>();
const SECONDS = Number(opts.seconds);

const log = (m: string) => process.stderr.write(`[bench:rpc] ${m}\n`);
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

async function spawnServer(box: ReturnType<typeof trainingSandbox>, extra: string[] = []): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(
    process.execPath,
    [...SERVE_NODE_FLAGS, BIN, 'serve', '--port', '0', '--metrics-port', '0', '--models', box.models, '--datasets', box.datasets, '--tokens-file', box.tokensFile, ...extra],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const lines = createInterface({ input: proc.stdout! });
  for await (const line of lines) {
    try {
      const rec = JSON.parse(line) as { msg?: string; port?: number };
      if (rec.msg === 'serving' && rec.port) {
        lines.on('line', () => undefined);
        return { proc, port: rec.port };
      }
    } catch {
      // not JSON
    }
  }
  throw new Error('server exited before serving');
}

async function kill9(proc: ChildProcess): Promise<void> {
  const exited = once(proc, 'exit');
  proc.kill('SIGKILL');
  await exited;
}

async function stop(proc: ChildProcess): Promise<void> {
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  await exited;
}

/** Synthetic 512 px tissue tiles for serving. */
async function servingTiles(n: number): Promise<Tile[]> {
  const slide = renderSynthSlide(99, 1536);
  const out: Tile[] = [];
  for (let i = 0; out.length < n && i < 9; i++) {
    const x = (i % 3) * 512;
    const y = Math.floor(i / 3) * 512;
    const image = await sharp(slide.rgb, { raw: { width: slide.width, height: slide.height, channels: 3 } }).extract({ left: x, top: y, width: 512, height: 512 }).png().toBuffer();
    out.push({ tileId: `t${i}`, image, mpp: 0, x, y });
  }
  return out;
}

async function serving(c: HistosegClients, address: string, tiles: Tile[]) {
  const end = performance.now() + SECONDS * 1000;
  let answered = 0;
  const streams = Array.from({ length: 8 }, async (_, s) => {
    async function* gen() {
      for (let i = s; performance.now() < end; i++) yield tiles[i % tiles.length]!;
    }
    for await (const _ of segmentTiles(c, gen(), { omitMask: true })) answered += 1;
  });
  // Health probes beside the load.
  const Health = makeClientConstructor(healthService, 'Health');
  const health = new Health(address, credentials.createInsecure()) as unknown as Client & { check(req: object, cb: (err: Error | null) => void): void };
  const healthTimes: number[] = [];
  const probing = (async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await new Promise<void>((resolve, reject) => health.check({ service: '' }, (err: Error | null) => (err ? reject(err) : resolve())));
      healthTimes.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const t0 = performance.now();
  await Promise.all(streams);
  const wall = (performance.now() - t0) / 1000;
  await probing;
  health.close();
  // One-tile latency: single-tile streams one after another.
  const one: number[] = [];
  const oneEnd = performance.now() + (SECONDS / 2) * 1000;
  for (let i = 0; performance.now() < oneEnd; i++) {
    const t = performance.now();
    for await (const _ of segmentTiles(c, [tiles[i % tiles.length]!], { omitMask: true })) void _;
    one.push(performance.now() - t);
  }
  return { tiles_per_s: round(answered / wall, 1), health_p50_ms: round(pct(healthTimes, 50)), health_p99_ms: round(pct(healthTimes, 99)), one_tile_p50_ms: round(pct(one, 50)), one_tile_p99_ms: round(pct(one, 99)) };
}

async function main() {
  const box = trainingSandbox('histoseg-bench-rpc-');
  const result: Record<string, unknown> = {
    when: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, loadavg_at_start: loadavg().map((x) => round(x)) },
    note: '2-core machine, load average at start above: absolute figures move with load; compare the ratios within this run',
  };
  try {
    // 1. Upload throughput.
    const s1 = await spawnServer(box);
    const c = connect(`127.0.0.1:${s1.port}`, { token: TOKENS.admin });
    const n = Number(opts.upload);
    const examples = await synthExamples({ seed: 1, tiles: n, side: 256 });
    const bytes = examples.reduce((a, e) => a + e.image.length + (e.mask?.length ?? 0), 0);
    log(`upload: ${examples.length} examples, ${(bytes / 1e6).toFixed(1)} MB`);
    let t0 = performance.now();
    const up = await uploadExamples(c, 'bench-upload', CLASSES, examples);
    let s = (performance.now() - t0) / 1000;
    result.upload = { examples: up.accepted, mb: round(bytes / 1e6), seconds: round(s), examples_per_s: round(up.accepted / s, 1), mb_per_s: round(bytes / 1e6 / s), durable: 'temp file + fsync + rename + fsync dir per example' };
    log(JSON.stringify(result.upload));

    // 2. One fine-tuning job.
    const train = await synthExamples({ seed: 2, tiles: 30, validation: 6, classExamples: 12 });
    await uploadExamples(c, 'bench-train', CLASSES, train);
    t0 = performance.now();
    const job = await startTraining(c, { dataset: 'bench-train', epochs: Number(opts.epochs), seed: 1, outputName: 'bench-finetune' });
    const done = await watchUntil(c, job.jobId, () => false);
    s = (performance.now() - t0) / 1000;
    result.fineTune = {
      examples: train.length,
      epochs: done.epochs,
      state: JobState[done.state],
      wall_s: round(s, 1),
      images_per_s: round(done.imagesPerSecond),
      new_macro_f1: done.validationMetrics.macro_f1 ?? null,
      base_macro_f1: done.baseMetrics.macro_f1 ?? null,
      new_metrics: done.validationMetrics,
      base_metrics: done.baseMetrics,
      error: done.error,
    };
    log(JSON.stringify(result.fineTune));

    // 3. Serving with and without a job, alternated.
    const tiles = await servingTiles(9);
    const address = `127.0.0.1:${s1.port}`;
    await serving(c, address, tiles.slice(0, 2)); // warm-up
    const idle = [];
    const busy = [];
    for (let r = 0; r < Number(opts.rounds); r++) {
      idle.push(await serving(c, address, tiles));
      log(`idle: ${JSON.stringify(idle.at(-1))}`);
      const long = await startTraining(c, { dataset: 'bench-train', epochs: 1000, seed: r, outputName: 'bench-never' });
      await watchUntil(c, long.jobId, (j) => j.stage === 'training' && j.progress > 0);
      busy.push(await serving(c, address, tiles));
      log(`with a job: ${JSON.stringify(busy.at(-1))}`);
      await cancelTraining(c, long.jobId);
    }
    const mean = (xs: { tiles_per_s: number }[]) => xs.reduce((a, x) => a + x.tiles_per_s, 0) / xs.length;
    result.servingWhileTraining = {
      streams: 8,
      seconds_per_phase: SECONDS,
      idle,
      with_job: busy,
      throughput_ratio: round(mean(busy) / mean(idle), 3),
      target: 'ratio >= 0.5 and health p99 < 100 ms',
      health_p99_ms_max_with_job: Math.max(...busy.map((b) => b.health_p99_ms)),
    };
    c.close();
    await stop(s1.proc);

    // 4. kill -9 during an upload and during a job.
    const s2 = await spawnServer(box, ['--training-max-steps', '1']);
    let k = connect(`127.0.0.1:${s2.port}`, { token: TOKENS.admin });
    const before = (await uploadExamples(k, 'bench-kill', CLASSES, examples.slice(0, 40))).accepted;
    let sentInflight = 0;
    async function* dying(): AsyncGenerator<Example> {
      for (const e of examples.slice(40, 80)) {
        yield { ...e, exampleId: `inflight-${sentInflight}` };
        sentInflight += 1;
        if (sentInflight === 20) await kill9(s2.proc);
      }
    }
    await uploadExamples(k, 'bench-kill', [], dying()).catch(() => undefined);
    k.close();
    const s3 = await spawnServer(box, ['--training-max-steps', '1']);
    k = connect(`127.0.0.1:${s3.port}`, { token: TOKENS.admin });
    const after = (await uploadExamples(k, 'bench-kill', [], [])).datasetExamples;
    const killJob = await startTraining(k, { dataset: 'bench-kill', epochs: 4, outputName: 'bench-kill' });
    await watchUntil(k, killJob.jobId, (j) => j.stage === 'training' && j.progress > 0.3);
    await kill9(s3.proc);
    k.close();
    const s4 = await spawnServer(box, ['--training-max-steps', '1']);
    k = connect(`127.0.0.1:${s4.port}`, { token: TOKENS.admin });
    const resumed = await watchUntil(k, killJob.jobId, () => false);
    const listed = await listModels(k);
    let halfWritten = 0;
    for (const m of listed) await resolveModel(box.models, m.name, m.version).catch(() => (halfWritten += 1));
    result.kill9 = {
      acknowledged_before: before,
      examples_after_restart: after,
      inflight_sent_unacknowledged: sentInflight,
      acknowledged_lost: Math.max(0, before - after),
      job_state_after_restart: JobState[resumed.state],
      job_error: resumed.error,
      versions_listed: listed.map((m) => `${m.name}@${m.version}`),
      half_written_versions: halfWritten,
    };
    log(JSON.stringify(result.kill9));
    k.close();
    await stop(s4.proc);
  } finally {
    rmSync(box.dir, { recursive: true, force: true });
  }
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(join(OUT_DIR, 'trainRpc.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(OUT_DIR, 'trainRpc.md'), markdown(result));
  log(`wrote ${join(OUT_DIR, 'trainRpc.md')}`);
}

function markdown(r: Record<string, any>): string {
  const u = r.upload;
  const f = r.fineTune;
  const sv = r.servingWhileTraining;
  const k = r.kill9;
  const row = (name: string, x: any) => `| ${name} | ${x.tiles_per_s} | ${x.one_tile_p50_ms} | ${x.one_tile_p99_ms} | ${x.health_p50_ms} | ${x.health_p99_ms} |`;
  return [
    '# Train RPC benchmark',
    '',
    `Run ${r.when} with \`npm run bench:rpc\` on ${r.machine.cpus} cores (${r.machine.model}), load average at start ${r.machine.loadavg_at_start.join(', ')}.`,
    `**${r.note}.**`,
    '',
    '## Upload (durability on)',
    '',
    `${u.examples} examples (256 px PNG tiles with 8-bit masks, ${u.mb} MB) in one stream: **${u.examples_per_s} examples/s, ${u.mb_per_s} MB/s** (${u.seconds} s); each example is ${u.durable} before it counts.`,
    '',
    '## One fine-tuning job',
    '',
    `${f.examples} synthetic examples (24 mask tiles for training, 6 for validation, 12 class-labelled), ${f.epochs} epochs from histoseg-bach@1.0.0: ${f.state} in **${f.wall_s} s** wall (child process start, App. B preparation, training, scoring both versions, ONNX export, publishing), **${f.images_per_s} training images/s**.`,
    `Validation macro F1: new **${f.new_macro_f1?.toFixed(4) ?? 'n/a'}**, base **${f.base_macro_f1?.toFixed(4) ?? 'n/a'}** (same validation examples, same serving pipeline).`,
    '',
    '## Serving while a job trains (8 streams of 512 px tiles, about 36 model windows each: not comparable with serving.md, whose tiles are one window)',
    '',
    '| phase | tiles/s | one tile p50 ms | one tile p99 ms | health p50 ms | health p99 ms |',
    '|---|---|---|---|---|---|',
    ...sv.idle.flatMap((x: any, i: number) => [row(`idle ${i + 1}`, x), row(`with a job ${i + 1}`, sv.with_job[i])]),
    '',
    `Throughput with a job / idle: **${sv.throughput_ratio}** (target at least 0.5); worst health p99 with a job: **${sv.health_p99_ms_max_with_job} ms** (target under 100 ms).`,
    '',
    '## kill -9',
    '',
    `Upload: ${k.acknowledged_before} examples acknowledged, then the server was killed while ${k.inflight_sent_unacknowledged} more were in flight (never acknowledged). After restart the dataset holds **${k.examples_after_restart}** examples: **${k.acknowledged_lost} acknowledged examples lost**.`,
    `Job: killed mid-training; after restart it resumed from its checkpoint and ended **${k.job_state_after_restart}**${k.job_error ? ` (${k.job_error})` : ''}. ListModels: ${k.versions_listed.join(', ')}; **${k.half_written_versions} half-written versions**.`,
    '',
  ].join('\n');
}

main().catch((err) => {
  process.stderr.write(`bench:rpc failed: ${(err as Error).stack}\n`);
  process.exit(1);
});
