import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { decodeImage } from '../src/imaging/decode.js';
import {
  MIN_FOREGROUND_FRACTION,
  OPENING_SIZE,
  SATURATION_THRESHOLD,
  tissueFraction,
  tissueMask,
  tissueMaskChunked,
  tissueMaskInto,
} from '../src/imaging/tissue.js';
import { rng } from './support/random.js';
import { TISSUE_PNG_VARIANTS } from './support/slideTiles.js';

const PINK = [200, 120, 180] as const;
const WHITE = [245, 245, 245] as const;

/** A w x h tile of background with tissue wherever isTissue(x, y). */
function tile(w: number, h: number, isTissue: (x: number, y: number) => boolean): Uint8Array {
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) rgb.set(isTissue(x, y) ? PINK : WHITE, (y * w + x) * 3);
  }
  return rgb;
}

function uniform(w: number, h: number, px: readonly number[]): Uint8Array {
  const rgb = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) rgb.set(px, i * 3);
  return rgb;
}

const sum = (m: Uint8Array): number => m.reduce((a, b) => a + b, 0);

test('paper constants', () => {
  assert.equal(SATURATION_THRESHOLD, 0.1);
  assert.equal(MIN_FOREGROUND_FRACTION, 0.75);
  assert.equal(OPENING_SIZE % 2, 1, 'a centred square element has odd size');
});

test('saturation threshold: 10% of maximum saturation is tissue, below is background', () => {
  assert.equal(tissueFraction(uniform(16, 16, [100, 90, 90]), 16, 16), 1, 'S = 0.10');
  assert.equal(tissueFraction(uniform(16, 16, [100, 91, 91]), 16, 16), 0, 'S = 0.09');
  assert.equal(tissueFraction(uniform(16, 16, [255, 255, 255]), 16, 16), 0, 'white glass');
  assert.equal(tissueFraction(uniform(16, 16, [0, 0, 0]), 16, 16), 0, 'black has no saturation');
  assert.equal(tissueFraction(uniform(16, 16, PINK), 16, 16), 1);
});

test('holes enclosed by tissue are filled; background reaching the border is not', () => {
  const w = 40;
  // A tissue ring around a 10x10 hole, on background.
  const ring = tile(w, w, (x, y) => x >= 5 && x < 35 && y >= 5 && y < 35 && !(x >= 15 && x < 25 && y >= 15 && y < 25));
  const m = tissueMask(ring, w, w);
  assert.equal(m[20 * w + 20], 1, 'hole centre becomes tissue');
  assert.equal(m[2 * w + 2], 0, 'outside stays background');
  assert.equal(sum(m), 30 * 30);
  // A channel from the hole to the border keeps it background (4-connectivity).
  const open = tile(w, w, (x, y) => x >= 5 && x < 35 && y >= 5 && !(x >= 15 && x < 25 && y >= 15));
  const m2 = tissueMask(open, w, w);
  assert.equal(m2[20 * w + 20], 0);
  // A diagonal line of background from the border is not connected under 4-connectivity: it is filled.
  const diag = tile(w, w, (x, y) => !(x === y && x <= 20));
  const m3 = tissueMask(diag, w, w);
  assert.equal(m3[20 * w + 20], 1);
  assert.equal(m3[10 * w + 10], 1);
  assert.equal(m3[0], 0, 'the corner pixel touches the border and stays background');
});

test('opening removes specks and thin strands but keeps solid tissue and tile edges', () => {
  const w = 64;
  const specks = tile(w, w, (x, y) => (x % 16 === 3 && y % 16 === 3) || (x >= 40 && x < 43 && y >= 40 && y < 43));
  assert.equal(sum(tissueMask(specks, w, w)), 0, 'specks up to 3x3 vanish');
  const thin = tile(w, w, (x) => x >= 10 && x < 10 + OPENING_SIZE - 1);
  assert.equal(sum(tissueMask(thin, w, w)), 0, 'a strand narrower than the element vanishes');
  const wide = tile(w, w, (x) => x >= 10 && x < 10 + OPENING_SIZE);
  assert.equal(sum(tissueMask(wide, w, w)), OPENING_SIZE * w, 'a strand as wide as the element stays whole');
  const corner = tile(w, w, (x, y) => x < 20 && y < 20);
  const m = tissueMask(corner, w, w);
  assert.equal(sum(m), 400, 'a square at the tile corner is neither eroded nor grown by the edge');
  assert.equal(m[0], 1);
  // A tile narrower than the element keeps its tissue (windows are clipped to the tile).
  assert.equal(tissueFraction(tile(3, 50, (_x, y) => y < 25), 3, 50), 0.5);
});

test('tissueFraction equals the mean of tissueMask, and masks are independent buffers', () => {
  const w = 37;
  const h = 23;
  const rgb = tile(w, h, (x, y) => (x * 7 + y * 3) % 11 < 6 || x > 25);
  const m = tissueMask(rgb, w, h);
  assert.equal(m.length, w * h);
  assert.ok(sum(m) > 0 && sum(m) < w * h);
  assert.equal(tissueFraction(rgb, w, h), sum(m) / (w * h));
  const m2 = tissueMask(uniform(w, h, WHITE), w, h);
  assert.notEqual(m, m2);
  assert.equal(tissueFraction(rgb, w, h), sum(m) / (w * h), 'unchanged after other calls');
});

/** Straightforward reference: float HSV saturation, BFS hole filling, naive clipped min then max filters. */
function referenceMask(rgb: Uint8Array, w: number, h: number): Uint8Array {
  const n = w * h;
  const m = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const px = [rgb[3 * i]!, rgb[3 * i + 1]!, rgb[3 * i + 2]!];
    const max = Math.max(...px);
    m[i] = max > 0 && (max - Math.min(...px)) / max >= SATURATION_THRESHOLD ? 1 : 0;
  }
  const reached = new Uint8Array(n);
  const queue: number[] = [];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if ((x === 0 || y === 0 || x === w - 1 || y === h - 1) && m[y * w + x] === 0) {
        reached[y * w + x] = 1;
        queue.push(y * w + x);
      }
    }
  }
  while (queue.length > 0) {
    const i = queue.pop()!;
    const x = i % w;
    const y = (i - x) / w;
    for (const [nx, ny] of [[x - 1, y], [x + 1, y], [x, y - 1], [x, y + 1]] as const) {
      const j = ny * w + nx;
      if (nx >= 0 && ny >= 0 && nx < w && ny < h && m[j] === 0 && !reached[j]) {
        reached[j] = 1;
        queue.push(j);
      }
    }
  }
  for (let i = 0; i < n; i++) m[i] = reached[i] ? 0 : 1;
  const r = OPENING_SIZE >> 1;
  const filter = (src: Uint8Array, erode: boolean): Uint8Array => {
    const out = new Uint8Array(n);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let v = erode ? 1 : 0;
        for (let yy = Math.max(0, y - r); yy <= Math.min(h - 1, y + r); yy++) {
          for (let xx = Math.max(0, x - r); xx <= Math.min(w - 1, x + r); xx++) {
            v = erode ? v & src[yy * w + xx]! : v | src[yy * w + xx]!;
          }
        }
        out[y * w + x] = v;
      }
    }
    return out;
  };
  return filter(filter(m, true), false);
}

test('tissueMask matches a naive reference on random blobs of many sizes', () => {
  let seed = 7;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  for (const [w, h] of [[1, 1], [1, 40], [40, 1], [3, 7], [31, 9], [32, 32], [33, 20], [64, 17], [65, 66], [100, 37], [128, 128]] as const) {
    for (let trial = 0; trial < 3; trial++) {
      const fx = 0.1 + rnd() * 0.5;
      const fy = 0.1 + rnd() * 0.5;
      const ph = rnd() * 6;
      const rgb = tile(w, h, (x, y) => Math.sin(x * fx + ph) + Math.cos(y * fy) + (rnd() - 0.5) * 1.2 > 0.3);
      // Some pixels near the threshold and some black ones, to exercise the saturation rule.
      for (let i = 0; i < w * h; i += 13) rgb.set(rnd() < 0.5 ? [100, 90, 90] : [100, 91, 91], 3 * i);
      for (let i = 5; i < w * h; i += 29) rgb.set([0, 0, 0], 3 * i);
      assert.deepEqual(tissueMask(rgb, w, h), referenceMask(rgb, w, h), `${w}x${h} trial ${trial}`);
    }
  }
});

test('bad sizes are refused', () => {
  assert.throws(() => tissueMask(new Uint8Array(10), 2, 2), RangeError);
  assert.throws(() => tissueFraction(new Uint8Array(0), 0, 5), RangeError);
});

for (const variant of TISSUE_PNG_VARIANTS) {
  test(`${variant.kind} H&E: a tissue image is mostly foreground, a glass crop is background`, async () => {
    const img = await decodeImage(readFileSync(await variant.load()), { maxPixels: 1 << 24 });
    const f = tissueFraction(img.data, img.width, img.height);
    assert.ok(f >= MIN_FOREGROUND_FRACTION, `tissue fraction ${f}`);
    // The same tile washed towards glass (low saturation) is background.
    const washed = img.data.map((v) => 235 + Math.round(v / 32));
    assert.ok(tissueFraction(washed, img.width, img.height) < 0.05);
  });
}

test('the integer saturation rule equals the float one for every (max, min) pair', () => {
  // One pixel per pair, as (max, min, min): the threshold sees exactly max and min.
  const pairs: [number, number][] = [];
  for (let max = 0; max < 256; max++) for (let min = 0; min <= max; min++) pairs.push([max, min]);
  const w = pairs.length;
  const rgb = new Uint8Array(w * 3);
  pairs.forEach(([max, min], i) => rgb.set([max, min, min], 3 * i));
  // A one-row tile is all border: hole filling adds nothing, but the opening would, so compare the raw rule
  // through tissueFraction on single pixels padded to a uniform 5x5 tile instead.
  let mismatches = 0;
  for (const [max, min] of pairs) {
    const tile = new Uint8Array(5 * 5 * 3);
    for (let p = 0; p < 25; p++) tile.set([max, min, min], 3 * p);
    const expected = max > 0 && (max - min) / max >= SATURATION_THRESHOLD ? 1 : 0;
    if (tissueFraction(tile, 5, 5) !== expected) mismatches++;
  }
  assert.equal(mismatches, 0);
});

test('tissueMaskInto returns the count of the mask it writes', () => {
  const rand = rng(9);
  const w = 40, h = 30;
  const rgb = new Uint8Array(w * h * 3).map(() => rand() * 256);
  const out = new Uint8Array(w * h).fill(7);
  const count = tissueMaskInto(rgb, w, h, out);
  assert.deepEqual(out, tissueMask(rgb, w, h));
  assert.equal(count, sum(out));
});

test('tissueMaskChunked gives the same mask and count as tissueMask, in many pauses, two masks interleaved', async () => {
  let seed = 11;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const sizes = [[1, 1], [40, 1], [33, 20], [65, 66], [100, 37], [300, 170]] as const;
  for (const [w, h] of sizes) {
    const imgs = [0, 1].map(() => {
      const fx = 0.05 + rnd() * 0.3;
      const ph = rnd() * 6;
      return tile(w, h, (x, y) => Math.sin(x * fx + ph) + Math.cos(y * fx) + (rnd() - 0.5) * 1.2 > 0.3);
    });
    let pauses = 0;
    const pause = () => new Promise<void>((r) => setImmediate(() => (pauses++, r())));
    // Two masks at once, so each runs in the other's pauses: no shared scratch may leak between them.
    const outs = imgs.map(() => new Uint8Array(w * h).fill(7));
    const counts = await Promise.all(imgs.map((rgb, i) => tissueMaskChunked(rgb, w, h, outs[i]!, pause, 97)));
    for (let i = 0; i < 2; i++) {
      const ref = tissueMask(imgs[i]!, w, h);
      assert.deepEqual(outs[i], ref, `${w}x${h} image ${i}`);
      assert.equal(counts[i], ref.reduce((a, b) => a + b, 0));
    }
    if (w * h > 1000) assert.ok(pauses > 10, `${w}x${h}: ${pauses} pauses`);
  }
});
