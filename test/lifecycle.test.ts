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
import { noiseTile, openStream as openSending } from './support/serving.js';

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
    exited.catch(() => undefined); // raced below; unobserved when the line is there already
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

describe('drain: SIGTERM stops reading, answers every tile read, then ends open streams UNAVAILABLE', () => {
  let server: RunningServer;
  let clients: HistosegClients;
  let address: string;

  before(async () => {
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 2, drainTimeoutS: 120, logLevel: 'silent' }, {});
    server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
    address = `127.0.0.1:${server.port}`;
    clients = connect(address);
  });

  after(async () => {
    clients?.close();
    await server?.shutdown();
  });

  it('while tiles are in flight: not ready, NOT_SERVING, new streams refused; the open stream gets every tile it read, then UNAVAILABLE', async () => {
    const model = await server.registry.get('', '');
    // Hold every batch until the draining state has been checked, so it is observed rather than raced.
    const run = model.pool.run.bind(model.pool);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let held = 0;
    const heldOne = new EventEmitter();
    model.pool.run = async (input) => {
      held++;
      heldOne.emit('held');
      await gate;
      return run(input);
    };
    try {
      const tiles = await Promise.all(Array.from({ length: 12 }, (_, i) => noiseTile(`t${i}`, 200, i + 1)));
      const s = openStream(clients);
      s.send(tiles); // and the stream stays open: the client would keep sending
      if (held === 0) await once(heldOne, 'held');
      void server.shutdown();
      assert.equal((await fetch(`http://127.0.0.1:${server.metricsPort}/readyz`)).status, 503, '/readyz is 503 while draining');
      const health = await healthStatus(address, 'histoseg.v1.SegmentationService');
      assert.ok(health === 'NOT_SERVING' || health === 2, `health while draining is ${health}`);
      const refused = openStream(clients);
      refused.send(tiles.slice(0, 1));
      refused.call.end();
      const r = await refused.done;
      assert.equal(r.code, status.UNAVAILABLE, `a new stream while draining: ${status[r.code]} ${r.details}`);
      assert.match(r.details, /shutting down/);
      assert.equal(refused.answers.length, 0);

      release();
      const st = await s.done;
      assert.equal(st.code, status.UNAVAILABLE, `${status[st.code]}: ${st.details}`);
      assert.equal(st.details, 'server shutting down, retry elsewhere');
      assert.ok(s.answers.length >= 1, 'the tiles read before SIGTERM are answered');
      assert.deepEqual(s.answers.map((a) => a.tileId), tiles.slice(0, s.answers.length).map((t) => t.tileId), 'answers are the first tiles sent, in order');
      for (const a of s.answers) assert.equal(a.status, TileStatus.TILE_STATUS_SEGMENTED, `${a.tileId}: ${a.error}`);
    } finally {
      release();
      model.pool.run = run;
    }
  });
});

describe('SIGTERM to the CLI server with streams that keep sending', () => {
  let proc: ServeProcess | undefined;
  let clients: HistosegClients | undefined;

  after(() => {
    clients?.close();
    proc?.kill();
  });

  it('every tile the server read is answered, each stream ends UNAVAILABLE, and the process exits 0 well before the drain timeout', async () => {
    const tiles = await Promise.all([noiseTile('a', 128, 1), noiseTile('b', 256, 2), noiseTile('c', 128, 3)]);
    proc = new ServeProcess(['--port', '0', '--metrics-port', '0', '--threads', '2', '--drain-timeout-s', '300']);
    const serving = await proc.waitForLog('serving');
    clients = connect(`127.0.0.1:${serving.port as number}`);
    const streams = [0, 1, 2].map(() => openSending(clients!));
    const sending = streams.map((s) => s.sendUntilEnd(tiles));
    await Promise.all(streams.map((s) => s.answered(`${tiles[0]!.tileId}#0`)));
    assert.ok(proc.child.kill('SIGTERM'));
    const sent = await Promise.all(sending);
    for (const [i, s] of streams.entries()) {
      const st = await s.done;
      assert.equal(st.code, status.UNAVAILABLE, `stream ${i}: ${status[st.code]} ${st.details}`);
      assert.equal(st.details, 'server shutting down, retry elsewhere');
      assert.deepEqual(s.answers.map((a) => a.tileId), sent[i]!.slice(0, s.answers.length), `stream ${i}: answers are a prefix of what was sent, in order`);
    }
    const [code, signal] = await proc.exited;
    assert.equal(signal, null);
    assert.equal(code, 0, `exit code; stderr:\n${proc.stderr}`);
    const stopped = await proc.waitForLog('stopped');
    const answered = streams.reduce((n, s) => n + s.answers.length, 0);
    assert.equal(stopped.drainedStreams, 3);
    assert.equal(stopped.tilesRead, answered, 'every tile read was answered, and the client got every answer');
    assert.equal(stopped.tilesAnswered, answered);
    const msgs = proc.logs.map((l) => l.msg);
    assert.ok(msgs.indexOf('draining') < msgs.indexOf('stopped'));
    assert.ok(!msgs.includes('drain timed out; cancelling open streams'));
  });

  it('a second SIGTERM while busy exits with code 1 at once, without a native abort', async () => {
    const big = await noiseTile('big', 1024, 7);
    proc = new ServeProcess(['--port', '0', '--metrics-port', '0', '--threads', '2', '--drain-timeout-s', '300']);
    const serving = await proc.waitForLog('serving');
    clients?.close();
    clients = connect(`127.0.0.1:${serving.port as number}`);
    const streams = [0, 1].map(() => openSending(clients!));
    void Promise.all(streams.map((s) => s.sendUntilEnd([big])));
    await streams[0]!.answered('big#0');
    assert.ok(proc.child.kill('SIGTERM'));
    await proc.waitForLog('draining');
    assert.ok(proc.child.kill('SIGTERM'));
    const [code, signal] = await proc.exited;
    assert.equal(signal, null, `killed by ${signal}; stderr:\n${proc.stderr}`);
    assert.equal(code, 1);
    assert.doesNotMatch(proc.stderr, /terminate called|Napi::Error|Aborted/);
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
