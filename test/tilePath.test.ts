import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BytePool } from '../src/pipeline/bufferPool.js';
import sharp from 'sharp';
import type { LoadedModel } from '../src/pipeline/modelRegistry.js';
import { SlideStain } from '../src/pipeline/slideStain.js';
import { labelOneWindow, TilePipeline, type TileResult } from '../src/pipeline/segmentTile.js';
import type { Tile } from '../src/proto/gen/histoseg/v1/segmentation.js';
import { testManifest } from './support/manifest.js';
import { rng } from './support/random.js';
import { testSlide } from './support/slideTiles.js';

/** A plausible H&E reference (the bundled model's is of the same form). */
const STAIN_REFERENCE = {
  stainMatrix: [
    [0.65, 0.7, 0.29],
    [0.07, 0.99, 0.11],
  ],
  maxConcentrations: [1.9, 1.0],
};

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

/**
 * A batcher that holds every window until `expected` have arrived, then answers them in a shuffled order, with
 * logits computed from the window's own pixels: if a pooled buffer were shared by two tiles, answers would change.
 */
function shufflingBatcher(expected: number, C: number, rand: () => number) {
  const pending: { data: Uint8Array; resolve: (r: unknown) => void }[] = [];
  const answer = (data: Uint8Array) => {
    const m = 16;
    const mask = new Float32Array(C * m * m);
    for (let cell = 0; cell < m * m; cell++) {
      const cy = Math.floor(cell / m) * 8, cx = (cell % m) * 8;
      let sum = 0;
      for (let y = cy; y < cy + 8; y++) for (let x = cx; x < cx + 8; x++) sum += data[(y * 128 + x) * 3]!;
      for (let c = 0; c < C; c++) mask[c * m * m + cell] = Math.sin(sum / 640 + c);
    }
    const cls = new Float32Array(C).map((_, c) => data[c * 4099]! / 255);
    return { mask, cls, maskSize: m, queueSeconds: 0, computeSeconds: 0 };
  };
  return {
    prepare: () => () => undefined,
    reserve: (n: number) => Promise.resolve(n),
    unreserve: () => undefined,
    enqueue(data: Uint8Array) {
      return new Promise((resolve) => {
        pending.push({ data, resolve });
        if (pending.length === expected) {
          for (let i = pending.length - 1; i > 0; i--) {
            const j = Math.floor(rand() * (i + 1));
            [pending[i], pending[j]] = [pending[j]!, pending[i]!];
          }
          for (const p of pending.splice(0)) p.resolve(answer(p.data));
        }
      });
    },
  };
}

test('tiles processed concurrently never see one another\'s pooled buffers', async () => {
  // Crops at 2 um/px, sent as if at the model's scale (mpp 0): here only what the pixels are matters.
  const { data, info } = await sharp((await testSlide()).path).resize(555, 742, { kernel: 'linear' }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const slide = { data, width: info.width };
  const tiles: Tile[] = [];
  for (const [x, y] of [[200, 150], [300, 250], [250, 400], [350, 500], [150, 450], [280, 80]]) {
    const crop = Buffer.alloc(128 * 128 * 3);
    for (let r = 0; r < 128; r++) slide.data.copy(crop, r * 384, ((y + r) * slide.width + x) * 3, ((y + r) * slide.width + x + 128) * 3);
    tiles.push({ tileId: `t${x}-${y}`, image: await sharp(crop, { raw: { width: 128, height: 128, channels: 3 } }).png().toBuffer(), mpp: 0, x, y });
  }
  const manifest = testManifest({ classes: [0, 1, 2, 3].map((i) => ({ name: `c${i}`, color: '#000000' })), stainReference: STAIN_REFERENCE });
  const C = manifest.classes.length;
  const run = async (batch: Tile[], seed: number) => {
    const model = { manifest, batcher: shufflingBatcher(batch.length, C, rng(seed)) } as unknown as LoadedModel;
    // One stain estimate for all: the same slide, already frozen, so every order normalises alike.
    const ctx = { model, minTissueFraction: 0, omitMask: false, stain: frozenStain, signal: new AbortController().signal };
    return Promise.all(batch.map(async (t) => ({ tileId: t.tileId, ...(await pipeline.segmentTile(t, ctx)) })));
  };
  const pipeline = new TilePipeline({ maxPixels: 1 << 24 });
  const frozenStain = new SlideStain(STAIN_REFERENCE);
  for (let k = 0; k < 4; k++) await run(tiles, 1); // fill the estimator until frozen
  const alone = new Map<string, TileResult>();
  for (const t of tiles) alone.set(t.tileId, (await run([t], 2))[0]!);
  const crowd = Array.from({ length: 60 }, (_, i) => tiles[i % tiles.length]!);
  const together = await run(crowd, 3);
  assert.ok(together.every((r) => r.status === 'segmented'));
  // Labels are compared before any is released: a buffer shared by two tiles would show as a difference.
  for (const r of together) {
    const ref = alone.get(r.tileId)!;
    assert.deepEqual(r.labels, ref.labels, r.tileId);
    assert.deepEqual(r.fractions, ref.fractions);
    assert.deepEqual(r.probabilities, ref.probabilities);
  }
  assert.ok(new Set(together.map((r) => Buffer.from(r.labels).toString('base64'))).size > 1, 'the tiles differ, so a mix-up would show');
});
