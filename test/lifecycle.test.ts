import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { credentials, makeClientConstructor, status, type ClientDuplexStream, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { connect, segmentTiles, type HistosegClients } from '../src/client/segmentationClient.js';
import type { Batcher } from '../src/pipeline/batcher.js';
import { TileStatus, type SegmentTilesRequest, type SegmentTilesResponse, type Tile } from '../src/proto/gen/histoseg/v1/segmentation.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { tissueTiles } from './support/slideTiles.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const CLI = fileURLToPath(new URL('../bin/histoseg.js', import.meta.url));

/** Tissue crops (level 0) sent as if at the model's scale (mpp 0), so each one costs the engine a few windows. */
async function modelScaleTissue(n: number, side: number): Promise<Tile[]> {
  const regions = Array.from({ length: n }, (_, i) => ({ left: 500 + (i % 8) * 150, top: 900 + Math.floor(i / 8) * 250, width: side, height: side }));
  const tiles = await tissueTiles(regions);
  return tiles.map((t, i) => ({ ...t, tileId: `t${i}`, mpp: 0 }));
}

/** A raw SegmentTiles call whose answers and final status are collected. */
function openStream(clients: HistosegClients, deadline?: Date) {
  const call: ClientDuplexStream<SegmentTilesRequest, SegmentTilesResponse> = clients.segmentation.segmentTiles(clients.metadata(), { deadline });
  const answers: SegmentTilesResponse[] = [];
  const events = new EventEmitter();
  call.on('data', (r: SegmentTilesResponse) => {
    answers.push(r);
    events.emit('answer');
  });
  call.on('error', () => undefined); // the status below carries it
  const done = new Promise<StatusObject>((resolve) => call.on('status', resolve));
  const send = (tiles: Tile[]) => tiles.forEach((tile) => call.write({ tile, options: undefined }));
  const firstAnswer = () => (answers.length > 0 ? Promise.resolve() : once(events, 'answer').then(() => undefined));
  return { call, answers, done, send, firstAnswer };
}

async function queueDepthMetric(metricsPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const m = /^histoseg_queue_depth (\S+)$/m.exec(text);
  assert.ok(m, 'histoseg_queue_depth is exported');
  return Number(m[1]);
}

/** Resolves once the batcher has no queued window and no batch running; every change of either emits an event. */
async function batcherIdle(b: Batcher): Promise<void> {
  while (b.depth > 0) await once(b, 'capacity');
  while (b.inflight > 0) await once(b, 'settled');
}

function healthStatus(address: string, service = ''): Promise<string | number> {
  const Health = makeClientConstructor(healthService, 'Health');
  const client = new Health(address, credentials.createInsecure()) as unknown as {
    check(req: { service: string }, cb: (e: Error | null, r: { status: string | number }) => void): void;
    close(): void;
  };
  return new Promise<string | number>((resolve, reject) => client.check({ service }, (e, r) => (e ? reject(e) : resolve(r.status)))).finally(() => client.close());
}

/** Runs the real CLI and follows its JSON log lines. */
class ServeProcess {
  readonly child: ChildProcess;
  readonly logs: Record<string, unknown>[] = [];
  stderr = '';
  readonly exited: Promise<[number | null, NodeJS.Signals | null]>;
  private readonly events = new EventEmitter();

  constructor(args: string[]) {
    // The child must not inherit HISTOSEG_* settings of whoever runs the tests (unknown ones are an error).
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HISTOSEG_')));
    this.child = spawn(process.execPath, [CLI, 'serve', ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = once(this.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        this.logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        this.logs.push({ msg: `(not JSON) ${line}` });
      }
      this.events.emit('log');
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  /** The first log line with this msg; fails if the process exits first. */
  async waitForLog(msg: string): Promise<Record<string, unknown>> {
    const exited = this.exited.then(([code, sig]) => {
      throw new Error(`server exited (code ${code}, signal ${sig}) before logging "${msg}"\nstderr:\n${this.stderr}\nlogs:\n${JSON.stringify(this.logs)}`);
    });
    for (;;) {
      const hit = this.logs.find((l) => l.msg === msg);
      if (hit) return hit;
      await Promise.race([once(this.events, 'log'), exited]);
    }
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

describe('SIGTERM drains in-flight tiles, then the process exits 0', () => {
  let proc: ServeProcess | undefined;
  let clients: HistosegClients | undefined;

  after(() => {
    clients?.close();
    proc?.kill();
  });

  it('answers every tile sent before the signal, refuses new streams, reports not ready, and logs draining/stopped', async () => {
    const tiles = await modelScaleTissue(40, 200);
    proc = new ServeProcess(['--port', '0', '--metrics-port', '0', '--threads', '2', '--drain-timeout-s', '120']);
    const serving = await proc.waitForLog('serving');
    const address = `127.0.0.1:${serving.port as number}`;
    const metricsPort = serving.metricsPort as number;
    clients = connect(address);
    assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status, 200);

    // The stream stays open (no half-close) until the draining state has been checked, so that state is
    // observed deterministically rather than raced against the drain finishing.
    const s = openStream(clients);
    s.send(tiles);
    await s.firstAnswer();
    assert.ok(proc.child.kill('SIGTERM'));
    await proc.waitForLog('draining');

    assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status, 503, '/readyz is 503 while draining');
    const health = await healthStatus(address, 'histoseg.v1.SegmentationService');
    assert.ok(health === 'NOT_SERVING' || health === 2, `health while draining is ${health}`);
    const refused = openStream(clients);
    refused.send(tiles.slice(0, 1));
    refused.call.end();
    const r = await refused.done;
    assert.equal(r.code, status.UNAVAILABLE, `a new stream while draining: ${status[r.code]} ${r.details}`);
    assert.match(r.details, /shutting down/);
    assert.equal(refused.answers.length, 0);

    s.call.end();
    const st = await s.done;
    assert.equal(st.code, status.OK, `the draining stream ends OK, got ${status[st.code]}: ${st.details}`);
    assert.deepEqual(s.answers.map((a) => a.tileId), tiles.map((t) => t.tileId), 'every tile sent before SIGTERM is answered, in order');
    for (const a of s.answers) assert.ok(a.status === TileStatus.TILE_STATUS_SEGMENTED || a.status === TileStatus.TILE_STATUS_BACKGROUND, `${a.tileId}: ${a.error}`);

    const [code, signal] = await proc.exited;
    assert.equal(signal, null);
    assert.equal(code, 0, `exit code; stderr:\n${proc.stderr}`);
    const msgs = proc.logs.map((l) => l.msg);
    assert.ok(msgs.includes('stopped'), `logs: ${msgs.join(' | ')}`);
    assert.ok(msgs.indexOf('draining') < msgs.indexOf('stopped'));
    assert.ok(!msgs.includes('drain timed out; cancelling open streams'));

    // Once the process is gone the connection itself is refused.
    await assert.rejects(
      (async () => {
        for await (const _ of segmentTiles(clients!, tiles.slice(0, 1))) void _;
      })(),
      (err: ServiceError) => (assert.equal(err.code, status.UNAVAILABLE, `after exit: ${status[err.code]} ${err.details}`), true),
    );
  });
});

describe('cancellation and deadlines free queued work', () => {
  let server: RunningServer;
  let clients: HistosegClients;
  let batcher: Batcher;
  let big: Tile[];

  before(async () => {
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 2, logLevel: 'silent' }, {});
    server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
    clients = connect(`127.0.0.1:${server.port}`);
    batcher = (await server.registry.get('', '')).batcher;
    // 512x512 at the model's scale: 25 windows each.
    big = await modelScaleTissue(24, 512);
  });

  after(async () => {
    clients?.close();
    await server?.shutdown();
  });

  /** Windows queued before the cancel: several batches' worth (max batch 16). */
  const QUEUED = 96;

  async function stillServes(): Promise<void> {
    const answers: SegmentTilesResponse[] = [];
    for await (const a of segmentTiles(clients, big.slice(0, 1))) answers.push(a);
    assert.equal(answers.length, 1);
    assert.equal(answers[0].status, TileStatus.TILE_STATUS_SEGMENTED, answers[0].error);
  }

  it('call.cancel() mid-stream drops the stream\'s queued windows; queue depth returns to 0 and a new stream works', async () => {
    const s = openStream(clients);
    s.send(big);
    // Cancel once plenty is queued; the batcher emits 'capacity' at every dispatch, so this wait never polls.
    let ended: StatusObject | undefined;
    const endedEarly = s.done.then((st) => void (ended = st));
    while (batcher.depth < QUEUED) {
      await Promise.race([once(batcher, 'capacity'), endedEarly]);
      assert.equal(ended, undefined, `the stream ended before ${QUEUED} windows were queued`);
    }
    const queuedAtCancel = batcher.depth;
    const inferencesAtCancel = (await server.metrics.inferences.get()).values[0]?.value ?? 0;
    s.call.cancel();
    assert.equal((await s.done).code, status.CANCELLED);

    await batcherIdle(batcher);
    assert.equal(await queueDepthMetric(server.metricsPort), 0);
    const ran = ((await server.metrics.inferences.get()).values[0]?.value ?? 0) - inferencesAtCancel;
    assert.ok(ran < queuedAtCancel, `the queued windows were dropped, not computed: ${ran} ran after cancel, ${queuedAtCancel} were queued`);
    assert.ok(s.answers.length < big.length);
    await stillServes();
  });

  it('a stream past its deadline ends with DEADLINE_EXCEEDED and the server keeps serving', async () => {
    const s = openStream(clients, new Date(Date.now() + 50));
    s.send(big);
    s.call.end();
    const st = await s.done;
    assert.equal(st.code, status.DEADLINE_EXCEEDED, `${status[st.code]}: ${st.details}`);
    assert.ok(s.answers.length < big.length);
    await stillServes();
    // The later stream's windows queued behind the expired one's: once it is answered, nothing is left.
    await batcherIdle(batcher);
    assert.equal(await queueDepthMetric(server.metricsPort), 0);
  });
});
