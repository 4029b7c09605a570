import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BytePool } from '../src/inference/bufferPool.js';
import { labelOneWindow } from '../src/inference/tileProcessor.js';
import { rng } from './support/random.js';

test('BytePool hands a released buffer out again, by size, and refuses a second release', () => {
  const pool = new BytePool(2);
  const a = pool.acquire(100);
  pool.release(a);
  assert.equal(pool.acquire(100), a, 'same buffer back');
  assert.notEqual(pool.acquire(100), a, 'it is out: a new one');
  pool.release(a);
  assert.throws(() => pool.release(a), /released twice/);
  const other = pool.acquire(50);
  assert.equal(other.length, 50);
  assert.notEqual(other.buffer, a.buffer, 'sizes do not mix');
});

test('BytePool ignores views into larger buffers and keeps at most maxPerSize', () => {
  const pool = new BytePool(1);
  const big = new Uint8Array(200);
  pool.release(big.subarray(0, 100));
  assert.equal(pool.held, 0);
  pool.release(new Uint8Array(10));
  pool.release(new Uint8Array(10));
  assert.equal(pool.held, 1);
});

/** Reference: per-pixel argmax of the nearest-upsampled logits, glass to 0, then counts. */
function reference(logits: Float32Array, C: number, m: number, n: number, tissue: Uint8Array) {
  const f = n / m;
  const out = new Uint8Array(n * n);
  const counts = new Float64Array(C);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const src = Math.floor(y / f) * m + Math.floor(x / f);
      let best = 0;
      for (let c = 1; c < C; c++) if (logits[c * m * m + src]! > logits[best * m * m + src]!) best = c;
      const v = tissue[y * n + x] ? best : 0;
      out[y * n + x] = v;
      counts[v]!++;
    }
  }
  return { out, counts };
}

test('labelOneWindow equals argmax after nearest upsampling, with glass at 0 and class counts', () => {
  const rand = rng(7);
  for (const [C, m, n] of [[4, 16, 128], [3, 8, 32], [2, 16, 16]] as const) {
    const logits = new Float32Array(C * m * m).map(() => rand() * 4 - 2);
    const tissue = new Uint8Array(n * n).map(() => (rand() < 0.7 ? 1 : 0));
    const out = new Uint8Array(n * n).fill(9); // stale contents, as a pooled buffer has
    const counts = new Float64Array(C);
    labelOneWindow(logits, C, m, n, tissue, out, counts);
    const ref = reference(logits, C, m, n, tissue);
    assert.deepEqual(out, ref.out, `C=${C} m=${m} n=${n}`);
    assert.deepEqual(counts, ref.counts);
  }
  assert.throws(() => labelOneWindow(new Float32Array(4 * 36), 4, 6, 16, new Uint8Array(256), new Uint8Array(256), new Float64Array(4)), /does not divide/);
});

test('BytePool holds at most maxBytes in all, so large tiles do not pin their memory', () => {
  const pool = new BytePool(512, 16, 1000);
  const big = [pool.acquire(600), pool.acquire(600)];
  for (const b of big) pool.release(b);
  assert.equal(pool.held, 1);
  assert.equal(pool.bytes, 600);
  pool.acquire(600);
  assert.equal(pool.bytes, 0, 'acquiring gives its bytes back to the budget');
});
