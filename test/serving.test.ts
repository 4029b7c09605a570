// The serving pipeline under stress: dead engine workers, fairness between streams, the queue bound in windows,
// and answers that do not depend on what else the server is doing. Tiles are generated (no ../shared needed).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { connect, type HistosegClients } from '../src/client/segmentationClient.js';
import { EngineUnavailableError, EnginePool } from '../src/engine/workerPool.js';
import { resolveModel } from '../src/model/repository.js';
import type { Batcher } from '../src/pipeline/batcher.js';
import { SegmentTilesResponse, TileStatus, type Tile } from '../src/proto/gen/histoseg/v1/segmentation.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { noiseTile, openStream, synthSlideTiles, watchHealth } from './support/serving.js';

const MODELS = new URL('../models', import.meta.url).pathname;

/** The next `name` event (events.once would reject on the 'error' events a pool reports along the way). */
function next<T = unknown>(emitter: NodeJS.EventEmitter, name: string): Promise<T> {
  return new Promise<T>((resolve) => emitter.once(name, resolve));
}

async function inferences(server: RunningServer): Promise<number> {
  return (await server.metrics.inferences.get()).values[0]?.value ?? 0;
}

/** Resolves once the batcher holds at least n windows (queued); every change of the queue emits 'capacity' or a run. */
async function queuedAtLeast(b: Batcher, n: number): Promise<void> {
  while (b.depth < n) await Promise.race([once(b, 'capacity'), once(b, 'settled')]);
}

describe('engine pool: a dead worker is noticed at once', () => {
  let pool: EnginePool;
  let inputLength: number;

  before(async () => {
    const entry = await resolveModel(MODELS);
    inputLength = 3 * entry.manifest.inputSize ** 2;
    pool = await EnginePool.create({ kind: 'onnx', modelDir: entry.dir, manifest: entry.manifest, threads: 1, workers: 1 });
    pool.on('error', () => undefined); // each death is also reported here (the registry logs it)
  });

  after(async () => {
    await pool?.close();
  });

  it('a worker killed while running a batch fails that batch with EngineUnavailableError, and is replaced', async () => {
    const downs: number[] = [];
    pool.on('down', (alive: number) => downs.push(alive));
    const up = next(pool, 'up');
    pool.killWorker(0); // it exits when it reads this, before the batch posted next
    const batch = pool.run({ data: new Uint8Array(16 * inputLength), n: 16 });
    assert.equal(pool.busyWorker(), 0);
    await assert.rejects(batch, (err: Error) => (assert.ok(err instanceof EngineUnavailableError, err.message), assert.match(err.message, /died/), true));
    assert.deepEqual(downs, [0], 'the pool reported no live worker');
    assert.equal(pool.idleCount(), 0, 'a dead worker is not idle');
    assert.equal(pool.aliveCount(), 0);
    await up;
    assert.equal(pool.aliveCount(), 1);
    const out = await pool.run({ data: new Uint8Array(inputLength), n: 1 });
    assert.ok(out.cls.length > 0, 'the replacement runs batches');
  });

  it('a worker that dies while idle is not handed the next batch: the batch runs on its replacement', async () => {
    const down = next(pool, 'down');
    pool.killWorker(0);
    await down;
    assert.equal(pool.idleCount(), 0);
    assert.rejects(pool.run({ data: new Uint8Array(inputLength), n: 1 }), /no idle engine worker/);
    await next(pool, 'up');
    const out = await pool.run({ data: new Uint8Array(inputLength), n: 1 });
    assert.ok(out.cls.length > 0);
  });
});

describe('server: one stream cannot starve the others; the queue bound is in windows; a dead worker', () => {
  let server: RunningServer;
  let clients: HistosegClients;
  let address: string;
  let batcher: Batcher;
  const CAPACITY = 40;

  before(async () => {
    // One engine worker and small batches, so a large tile is many batches long.
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 1, workers: 1, maxBatch: 8, queueCapacity: CAPACITY, logLevel: 'silent' }, {});
    server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
    address = `127.0.0.1:${server.port}`;
    clients = connect(address);
    batcher = (await server.registry.get('', '')).batcher;
  });

  after(async () => {
    clients?.close();
    await server?.shutdown();
  });

  it('a small tile on a second stream is answered while a large tile on the first still has most of its windows to run', async () => {
    const big = await noiseTile('big', 1200, 1); // 11 x 11 = 121 windows
    const small = await noiseTile('small', 128, 2);
    const a = openStream(clients);
    a.send([big]);
    a.call.end();
    await queuedAtLeast(batcher, 8);
    const before = await inferences(server);
    const b = openStream(clients);
    b.send([small]);
    b.call.end();
    const answer = await b.answered('small');
    const ran = (await inferences(server)) - before;
    assert.equal(answer.status, TileStatus.TILE_STATUS_SEGMENTED, answer.error);
    assert.equal(a.answers.length, 0, 'the large tile is still being worked on');
    assert.ok(ran < 40, `the small tile waited for ${ran} windows of the large one (of 121)`);
    assert.equal((await a.done).code, status.OK);
    assert.equal(a.answers[0]?.status, TileStatus.TILE_STATUS_SEGMENTED);
  });

  it('queued plus reserved windows never exceed queue-capacity, over all streams', async () => {
    let worst = 0;
    const enqueue = batcher.enqueue.bind(batcher);
    batcher.enqueue = (...args: Parameters<Batcher['enqueue']>) => {
      const p = enqueue(...args);
      worst = Math.max(worst, batcher.depth + batcher.reserved);
      return p;
    };
    try {
      const tiles = await Promise.all([1, 2, 3].map((s) => noiseTile(`q${s}`, 600, s))); // 36 windows each
      const streams = tiles.map((t) => {
        const s = openStream(clients);
        s.send([t, { ...t, tileId: `${t.tileId}b` }]);
        s.call.end();
        return s;
      });
      for (const s of streams) assert.equal((await s.done).code, status.OK);
      assert.ok(worst > 0);
      assert.ok(worst <= CAPACITY, `${worst} windows queued at once, capacity ${CAPACITY}`);
      for (const s of streams) assert.deepEqual(s.answers.map((r) => r.status), [TileStatus.TILE_STATUS_SEGMENTED, TileStatus.TILE_STATUS_SEGMENTED]);
    } finally {
      batcher.enqueue = enqueue;
    }
  });

  it('health is NOT_SERVING while the only engine worker is dead, SERVING once it is replaced; tiles work again', async () => {
    const model = (await server.registry.get('', '')) as unknown as { pool: EnginePool };
    const health = watchHealth(address, 'histoseg.v1.SegmentationService');
    try {
      await health.reaches('SERVING');
      const mark = health.seen.length;
      model.pool.killWorker(0);
      await health.reaches('NOT_SERVING', mark);
      await health.reaches('SERVING', mark + 1);
      const s = openStream(clients);
      s.send([await noiseTile('after', 128, 5)]);
      s.call.end();
      assert.equal((await s.done).code, status.OK);
      assert.equal(s.answers[0]?.status, TileStatus.TILE_STATUS_SEGMENTED);
    } finally {
      health.close();
    }
  });

  it('a worker killed mid-batch ends the streams whose windows it held with UNAVAILABLE, never a hang', async () => {
    const model = (await server.registry.get('', '')) as unknown as { pool: EnginePool };
    // The worker is told to crash just before the stream's first batch is posted to it: that batch dies with it.
    const pool = model.pool;
    const run = pool.run.bind(pool);
    pool.run = (input) => {
      pool.run = run;
      pool.killWorker(0);
      return run(input);
    };
    const s = openStream(clients);
    s.send([await noiseTile('lost', 600, 6)]);
    s.call.end();
    const up = next(model.pool, 'up');
    const st = await s.done;
    assert.equal(st.code, status.UNAVAILABLE, `${status[st.code]}: ${st.details}`);
    assert.match(st.details, /engine worker died/);
    await up;
  });
});

describe('answers do not depend on what else the server is doing', () => {
  let server: RunningServer;
  let clients: HistosegClients;

  before(async () => {
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 2, logLevel: 'silent' }, {});
    server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
    clients = connect(`127.0.0.1:${server.port}`);
  });

  after(async () => {
    clients?.close();
    await server?.shutdown();
  });

  /** The answer's bytes without its timings (queue and compute seconds are measurements, not results). */
  const bytes = (r: SegmentTilesResponse) => Buffer.from(SegmentTilesResponse.encode({ ...r, queueSeconds: 0, computeSeconds: 0 }).finish()).toString('base64');

  async function run(tiles: Tile[]): Promise<SegmentTilesResponse[]> {
    const s = openStream(clients);
    s.send(tiles);
    s.call.end();
    const st = await s.done;
    assert.equal(st.code, status.OK, st.details);
    return s.answers;
  }

  it('one slide sent twice, alone and beside two busy streams, gets byte-identical answers', async () => {
    // JPEG tiles of one synthetic slide, a large one first: decoding finishes out of order, and the slide's stain
    // estimate is still provisional over these tiles (it freezes at 20,000 sampled tissue pixels).
    const slide = await synthSlideTiles(3, 384, 128, 'jpeg');
    const [first] = await synthSlideTiles(3, 384, 384, 'jpeg');
    const tiles = [first!, ...slide];
    const alone = await run(tiles);
    assert.ok(alone.filter((r) => r.status === TileStatus.TILE_STATUS_SEGMENTED).length >= 5, 'most tiles are tissue');
    const others = [await synthSlideTiles(4, 384, 192, 'jpeg'), await synthSlideTiles(5, 384, 128, 'png')];
    const busy = others.map((t) => run([...t, ...t, ...t]));
    const crowded = await run(tiles);
    await Promise.all(busy);
    assert.deepEqual(crowded.map(bytes), alone.map(bytes));
  });
});
