import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { describe, it } from 'node:test';
import type { PoolResult, RgbBatch } from '../src/engine/workerPool.js';
import { Batcher, BatcherStoppedError, type BatchRunner } from '../src/pipeline/batcher.js';

/** A fake engine whose batches finish only when the test says so; it echoes each window's first value. */
class FakeRunner extends EventEmitter implements BatchRunner {
  readonly size: number;
  busy = 0;
  batches: number[] = [];
  private waiting: Array<{ input: RgbBatch; resolve: (r: PoolResult) => void }> = [];
  constructor(size = 1) {
    super();
    this.size = size;
  }
  idleCount(): number {
    return this.size - this.busy;
  }
  run(input: RgbBatch): Promise<PoolResult> {
    this.busy++;
    this.batches.push(input.n);
    const p = new Promise<PoolResult>((resolve) => this.waiting.push({ input, resolve }));
    this.emit('started');
    return p;
  }
  /** Completes the oldest running batch. */
  finish(): void {
    const w = this.waiting.shift()!;
    const n = w.input.n;
    const mask = new Float32Array(n * 2);
    const cls = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const v = w.input.data[i * 3];
      mask[2 * i] = v;
      mask[2 * i + 1] = v;
      cls[i] = v;
    }
    this.busy--;
    w.resolve({ mask, cls, maskSize: 1, seconds: 0.001 });
    this.emit('idle');
  }
}

const opts = { maxBatch: 4, maxDelayMs: 1e6, queueCapacity: 8, inputLength: 3, numClasses: 1 };
const win = (v: number) => new Uint8Array([v, 0, 0]);

describe('Batcher', () => {
  it('closes a batch when it is full and routes each result to its window', async () => {
    const runner = new FakeRunner();
    const b = new Batcher(runner, opts);
    const started = once(runner, 'started');
    const announced = b.prepare(); // more tiles are being decoded: the batch waits for them
    const results = [1, 2, 3, 4].map((v) => b.enqueue(win(v)));
    await started;
    announced();
    assert.deepEqual(runner.batches, [4]);
    runner.finish();
    const out = await Promise.all(results);
    assert.deepEqual(out.map((r) => r.cls[0]), [1, 2, 3, 4]);
    assert.deepEqual(Array.from(out[2].mask), [3, 3]);
  });

  it('flushes a partial batch after maxDelayMs', async () => {
    const runner = new FakeRunner();
    const b = new Batcher(runner, { ...opts, maxDelayMs: 5 });
    const started = once(runner, 'started');
    const announced = b.prepare();
    const r = b.enqueue(win(7));
    assert.deepEqual(runner.batches, [], 'a tile is announced: the window waits');
    await started;
    assert.deepEqual(runner.batches, [1]);
    announced();
    runner.finish();
    assert.equal((await r).cls[0], 7);
  });

  it('sends a partial batch to an idle worker at once when no tile is being prepared', async () => {
    const runner = new FakeRunner();
    const b = new Batcher(runner, opts); // maxDelayMs 1e6: only the rule under test can dispatch
    const alone = b.enqueue(win(3));
    assert.deepEqual(runner.batches, [1], 'nothing else is coming: no wait');
    runner.finish();
    assert.equal((await alone).cls[0], 3);
    const announced = b.prepare();
    const waiting = [4, 5].map((v) => b.enqueue(win(v)));
    assert.deepEqual(runner.batches, [1], 'a tile is still being prepared: wait for it');
    announced();
    assert.deepEqual(runner.batches, [1, 2], 'its windows were all it had: go');
    announced();
    assert.equal(b.preparingTiles, 0, 'a second call changes nothing');
    runner.finish();
    assert.deepEqual((await Promise.all(waiting)).map((r) => r.cls[0]), [4, 5]);
  });

  it('forms the next batch while the engine is busy, and runs it when a worker is idle', async () => {
    const runner = new FakeRunner();
    const b = new Batcher(runner, { ...opts, maxDelayMs: 0 });
    const first = b.enqueue(win(1));
    const rest = [2, 3, 4, 5, 6].map((v) => b.enqueue(win(v)));
    assert.deepEqual(runner.batches, [1]);
    assert.equal(b.depth, 5);
    const next = once(runner, 'started');
    runner.finish();
    await first;
    await next;
    assert.deepEqual(runner.batches, [1, 4]);
    const last = once(runner, 'started');
    runner.finish();
    await last;
    assert.deepEqual(runner.batches, [1, 4, 1]);
    runner.finish();
    assert.deepEqual((await Promise.all(rest)).map((r) => r.cls[0]), [2, 3, 4, 5, 6]);
  });

  it('reports no capacity when the queue is full and resolves waiters when it drains', async () => {
    const runner = new FakeRunner();
    runner.busy = 1; // engine occupied: nothing dispatches
    const b = new Batcher(runner, { ...opts, queueCapacity: 2, maxDelayMs: 0 });
    const a = b.enqueue(win(1));
    const c = b.enqueue(win(2));
    assert.equal(b.hasCapacity(), false);
    let resolved = false;
    const waiting = b.waitForCapacity().then(() => (resolved = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(resolved, false);
    runner.busy = 0;
    runner.emit('idle');
    await waiting;
    assert.equal(resolved, true);
    runner.finish();
    await Promise.all([a, c]);
  });

  it('drops the windows of a cancelled stream from the queue', async () => {
    const runner = new FakeRunner();
    runner.busy = 1;
    const b = new Batcher(runner, { ...opts, maxDelayMs: 0 });
    const ac = new AbortController();
    const keep = b.enqueue(win(1));
    const gone = [b.enqueue(win(2), ac.signal), b.enqueue(win(3), ac.signal)];
    assert.equal(b.depth, 3);
    ac.abort(new Error('cancelled'));
    for (const g of gone) await assert.rejects(g, /cancelled/);
    assert.equal(b.depth, 1);
    const started = once(runner, 'started');
    runner.busy = 0;
    runner.emit('idle');
    await started;
    assert.deepEqual(runner.batches, [1]);
    runner.finish();
    assert.equal((await keep).cls[0], 1);
  });

  it('refuses a window of the wrong size', async () => {
    const b = new Batcher(new FakeRunner(), opts);
    await assert.rejects(b.enqueue(new Uint8Array(5)), /expected 3/);
  });

  it('stop() runs what is queued, then refuses new work', async () => {
    const runner = new FakeRunner();
    const b = new Batcher(runner, opts);
    runner.on('started', () => queueMicrotask(() => runner.finish()));
    const r = b.enqueue(win(9));
    await b.stop();
    assert.equal((await r).cls[0], 9);
    await assert.rejects(b.enqueue(win(1)), BatcherStoppedError);
  });

  it('serves lanes in turn: a window of a second stream goes in the next batch, however many the first has queued', async () => {
    const runner = new FakeRunner();
    const b = new Batcher(runner, { ...opts, queueCapacity: 100 });
    const busy = b.enqueue(win(1)); // the only worker is busy with this one
    const a = {};
    const c = {};
    const first = Array.from({ length: 12 }, (_, i) => b.enqueue(win(10 + i), undefined, { lane: a }));
    const second = b.enqueue(win(99), undefined, { lane: c });
    assert.deepEqual(runner.batches, [1]);
    runner.finish();
    await busy;
    assert.deepEqual(runner.batches, [1, 4]);
    runner.finish();
    assert.equal((await second).cls[0], 99, 'the second lane got a place in the next batch');
    const firstBatch = await Promise.all(first.slice(0, 3));
    assert.deepEqual(firstBatch.map((r) => r.cls[0]), [10, 11, 12], 'the first lane keeps its order');
    while (runner.busy > 0) runner.finish();
    await Promise.all(first);
  });

  it('reserve() holds the bound in windows over all lanes, first come first served', async () => {
    const runner = new FakeRunner();
    const b = new Batcher(runner, opts); // capacity 8
    assert.equal(await b.reserve(6), 6);
    const order: string[] = [];
    const big = b.reserve(4).then((n) => (order.push('big'), n));
    const small = b.reserve(1).then((n) => (order.push('small'), n));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [], 'neither fits: 6 + 4 > 8, and the small one waits its turn behind the big one');
    assert.equal(b.depth + b.reserved, 6);
    b.unreserve(6);
    assert.equal(await big, 4);
    assert.equal(await small, 1);
    assert.deepEqual(order, ['big', 'small']);
    assert.equal(b.reserved, 5);
    b.unreserve(5);
    assert.equal(await b.reserve(100), 8, 'a request over the capacity is capped at it');
  });
});

