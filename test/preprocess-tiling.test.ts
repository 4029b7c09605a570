import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE } from '../src/util/constants.js';
import { extractWindow, planWindows, type Window } from '../src/imaging/windows.js';
import { Blender } from '../src/imaging/blend.js';
import { writeModelInput } from '../src/imaging/modelInput.js';

const SIZES = [1, 127, 128, 129, 300, 1000];

test('planWindows covers every pixel once or more, with no duplicate windows', () => {
  for (const w of SIZES) {
    for (const h of SIZES) {
      const wins = planWindows(w, h);
      const keys = new Set(wins.map((v) => `${v.x},${v.y}`));
      assert.equal(keys.size, wins.length, `duplicates for ${w}x${h}`);
      const cover = new Uint8Array(w * h);
      for (const v of wins) {
        assert.ok(v.x >= 0 && v.y >= 0, 'windows start inside the tile');
        if (w >= INPUT_SIZE) assert.ok(v.x + INPUT_SIZE <= w, 'windows end inside a wide tile');
        if (h >= INPUT_SIZE) assert.ok(v.y + INPUT_SIZE <= h, 'windows end inside a tall tile');
        for (let y = v.y; y < Math.min(h, v.y + INPUT_SIZE); y++) cover.fill(1, y * w + v.x, y * w + Math.min(w, v.x + INPUT_SIZE));
      }
      assert.ok(cover.every((c) => c === 1), `pixels left uncovered for ${w}x${h}`);
    }
  }
  assert.deepEqual(planWindows(128, 128), [{ x: 0, y: 0 }]);
  assert.deepEqual(planWindows(50, 20), [{ x: 0, y: 0 }]);
  assert.deepEqual(planWindows(300, 1).map((v) => v.x), [0, 96, 172]);
  assert.throws(() => planWindows(10, 10, 128, 128), RangeError);
});

test('extractWindow copies the image and pads with white', () => {
  const img = { width: 3, height: 2, data: new Uint8Array(18).map((_, i) => i) };
  const win = extractWindow(img, { x: 1, y: 0 }, 4);
  assert.equal(win.length, 4 * 4 * 3);
  assert.deepEqual([...win.subarray(0, 12)], [3, 4, 5, 6, 7, 8, 255, 255, 255, 255, 255, 255]);
  assert.deepEqual([...win.subarray(12, 18)], [12, 13, 14, 15, 16, 17]);
  assert.ok(win.subarray(24).every((v) => v === 255), 'rows below the image are white');
});

test('writeModelInput writes ImageNet-normalised NCHW planes at an offset', () => {
  const size = 2;
  const rgb = new Uint8Array([0, 128, 255, 10, 20, 30, 255, 255, 255, 1, 2, 3]);
  const out = new Float32Array(5 + 3 * size * size + 1).fill(-99);
  writeModelInput(rgb, size, out, 5);
  assert.equal(out[4], -99);
  assert.equal(out[5 + 12], -99);
  for (let i = 0; i < size * size; i++) {
    for (let c = 0; c < 3; c++) {
      const want = (rgb[i * 3 + c]! / 255 - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]!;
      assert.ok(Math.abs(out[5 + c * size * size + i]! - want) < 1e-6);
    }
  }
  assert.throws(() => writeModelInput(rgb, size, new Float32Array(12), 1), RangeError);
});

/** Runs a fake model whose mask logits are logit(c, absolute x, absolute y) over every planned window. */
function blend(w: number, h: number, nc: number, logit: (c: number, x: number, y: number) => number): Uint8Array {
  const size = INPUT_SIZE;
  const wins = planWindows(w, h);
  const blender = new Blender(w, h, nc);
  // Two windows per "batch", to exercise the offset.
  for (let b = 0; b < wins.length; b += 2) {
    const batch = wins.slice(b, b + 2);
    const logits = new Float32Array(batch.length * nc * size * size);
    batch.forEach((win: Window, k) => {
      for (let c = 0; c < nc; c++) {
        for (let y = 0; y < size; y++) {
          for (let x = 0; x < size; x++) logits[((k * nc + c) * size + y) * size + x] = logit(c, win.x + x, win.y + y);
        }
      }
    });
    batch.forEach((win, k) => blender.add(win, logits, k * nc * size * size));
  }
  return blender.labels();
}

test('a single 128x128 window gives the plain argmax', () => {
  const nc = 4;
  const plane = INPUT_SIZE * INPUT_SIZE;
  const logits = new Float32Array(nc * plane).map((_, i) => Math.sin(i * 12.9898) * 43758.5453 % 5);
  const blender = new Blender(INPUT_SIZE, INPUT_SIZE, nc);
  blender.add({ x: 0, y: 0 }, logits);
  const labels = blender.labels();
  for (let p = 0; p < plane; p++) {
    let best = 0;
    for (let c = 1; c < nc; c++) if (logits[c * plane + p]! > logits[best * plane + p]!) best = c;
    assert.equal(labels[p], best);
  }
});

test('a constant logit field blends to the same argmax everywhere', () => {
  const labels = blend(300, 200, 3, (c) => [0.1, 2, -1][c]!);
  assert.equal(labels.length, 300 * 200);
  assert.ok(labels.every((l) => l === 1));
});

test('a field that depends only on absolute position is reproduced across windows', () => {
  const w = 333;
  const h = 150;
  const logit = (c: number, x: number, y: number): number => Math.cos((x + 1.7 * c * 37) / 23) + Math.sin((y * (c + 1)) / 17);
  const labels = blend(w, h, 4, logit);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let best = 0;
      for (let c = 1; c < 4; c++) if (Math.fround(logit(c, x, y)) > Math.fround(logit(best, x, y))) best = c;
      assert.equal(labels[y * w + x], best, `pixel ${x},${y}`);
    }
  }
});

test('a small tile ignores the padded part of its window; classFractions sums to 1', () => {
  const blender = new Blender(50, 20, 2);
  const size = INPUT_SIZE;
  const logits = new Float32Array(2 * size * size);
  // Class 1 inside the 50x20 tile, class 0 (strongly) in the padding.
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const inside = x < 50 && y < 20;
      logits[y * size + x] = inside ? 0 : 10;
      logits[size * size + y * size + x] = inside ? 1 : 0;
    }
  }
  blender.add({ x: 0, y: 0 }, logits);
  const labels = blender.labels();
  assert.equal(labels.length, 50 * 20);
  assert.ok(labels.every((l) => l === 1));
  assert.deepEqual(blender.classFractions(labels), [0, 1]);
  const mixed = new Uint8Array([0, 1, 1, 1]);
  assert.deepEqual(new Blender(2, 2, 3).classFractions(mixed), [0.25, 0.75, 0]);
});

test('blending the 16x16 decoder output equals blending its nearest upsampling, bit for bit', () => {
  const nc = 4;
  const m = 16;
  const f = INPUT_SIZE / m;
  const w = 300;
  const h = 230;
  const wins = planWindows(w, h);
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 12 - 6;
  const small = wins.map(() => Float32Array.from({ length: nc * m * m }, rand));
  const coarse = new Blender(w, h, nc);
  const fine = new Blender(w, h, nc);
  wins.forEach((win, i) => {
    const up = new Float32Array(nc * INPUT_SIZE * INPUT_SIZE);
    for (let c = 0; c < nc; c++) {
      for (let y = 0; y < INPUT_SIZE; y++) {
        for (let x = 0; x < INPUT_SIZE; x++) up[(c * INPUT_SIZE + y) * INPUT_SIZE + x] = small[i]![(c * m + Math.floor(y / f)) * m + Math.floor(x / f)]!;
      }
    }
    coarse.add(win, small[i]!, 0, m);
    fine.add(win, up, 0);
  });
  const a = coarse.labels();
  assert.deepEqual(a, fine.labels());
  assert.ok(new Set(a).size > 1, 'the test blends several classes');
  assert.deepEqual((coarse as unknown as { acc: Float32Array }).acc, (fine as unknown as { acc: Float32Array }).acc);
  assert.throws(() => coarse.add(wins[0]!, small[0]!, 0, 12), RangeError);
});
