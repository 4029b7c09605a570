import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { labelOneWindow, labelOneWindowTs } from '../src/pipeline/segmentTile.js';
import { compileKernels, kernelsModuleText } from '../src/imaging/kernels/buildKernels.js';
import { stainMapTs } from '../src/imaging/macenko.js';
import { KERNEL_MAX_PIXELS, kernelStainMap } from '../src/imaging/kernels/pixelKernels.js';
import { tissueMask, tissueMaskTs } from '../src/imaging/tissue.js';
import { rng } from './support/random.js';
import { SLIDE_VARIANTS, slideAtModelScale } from './support/slideTiles.js';

test('the committed WebAssembly is what pixelKernels.as.ts compiles to (npm run build:kernels)', async () => {
  const committed = readFileSync(new URL('../src/imaging/kernels/pixelKernelsWasm.ts', import.meta.url), 'utf8');
  assert.equal(committed, kernelsModuleText(await compileKernels()));
});

/** Tiles with tissue, glass, holes, specks and odd sizes, so every branch of the mask runs. */
function syntheticTile(rand: () => number, w: number, h: number): Uint8Array {
  const rgb = new Uint8Array(w * h * 3).fill(235);
  const blobs = 1 + Math.floor(rand() * 6);
  for (let k = 0; k < blobs; k++) {
    const cx = rand() * w, cy = rand() * h, r = 2 + rand() * Math.max(w, h) * 0.4, hole = rand() < 0.5 ? r * 0.3 : 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const d = Math.hypot(x - cx, y - cy);
        if (d < r && d >= hole) rgb.set([120 + rand() * 80, 40 + rand() * 60, 140 + rand() * 60], 3 * (y * w + x));
      }
    }
  }
  for (let s = 0; s < w * h * 0.01; s++) rgb.set([200, 90, 180], 3 * Math.floor(rand() * w * h)); // salt
  return rgb;
}

test('the tissue-mask kernel equals the TypeScript mask on synthetic tiles of many sizes', () => {
  const rand = rng(11);
  for (const [w, h] of [[128, 128], [1, 1], [7, 3], [33, 65], [200, 31], [64, 1]] as const) {
    for (let rep = 0; rep < 4; rep++) {
      const rgb = syntheticTile(rand, w, h);
      assert.deepEqual(tissueMask(rgb, w, h), tissueMaskTs(rgb, w, h), `${w}x${h} #${rep}`);
    }
  }
  const noise = new Uint8Array(96 * 80 * 3).map(() => rand() * 256);
  assert.deepEqual(tissueMask(noise, 96, 80), tissueMaskTs(noise, 96, 80), 'noise');
});

for (const variant of SLIDE_VARIANTS) {
  test(`the tissue-mask kernel equals the TypeScript mask on the ${variant.kind} slide`, async () => {
    const slide = await slideAtModelScale(await variant.load());
    const rgb = new Uint8Array(slide.data.buffer, slide.data.byteOffset, slide.data.length);
    assert.ok(slide.width * slide.height <= KERNEL_MAX_PIXELS);
    const mask = tissueMask(rgb, slide.width, slide.height);
    assert.deepEqual(mask, tissueMaskTs(rgb, slide.width, slide.height));
    const tissue = mask.reduce((s, v) => s + v, 0);
    assert.ok(tissue > 0.2 * mask.length && tissue < mask.length, `the slide has tissue and glass (${tissue} of ${mask.length})`);
  });
}

test('the stain kernel rounds and clamps exactly as a Uint8ClampedArray store', () => {
  const rand = rng(5);
  const lut = new Float64Array(9 * 256).map(() => rand() * 2.2);
  for (let o = 0; o < 3; o++) for (let v = 0; v < 256; v++) lut[768 * o + v] = rand() * 300; // Io-scaled red tables
  // Exact ties: products of 1 * 1 * (k + 1.5) give k + 0.5 after the - 1, which round half to even.
  for (let o = 0; o < 3; o++) {
    lut[768 * o + 7] = 1;
    lut[768 * o + 256 + 7] = 1;
    for (let k = 0; k < 8; k++) lut[768 * o + 512 + k] = k + 1.5;
  }
  const n = 5000;
  const rgb = new Uint8Array(n * 3).map(() => rand() * 256);
  for (let k = 0; k < 8; k++) rgb.set([7, 7, k], 3 * k);
  const a = new Uint8Array(n * 3);
  const b = new Uint8Array(n * 3);
  assert.ok(kernelStainMap(rgb, n, lut, a));
  stainMapTs(rgb, n, lut, b);
  assert.deepEqual(a, b);
  assert.deepEqual(Array.from(a.subarray(0, 24).filter((_, i) => i % 3 === 0)), [0, 2, 2, 4, 4, 6, 6, 8], 'ties to even');
});

test('the labelling kernel equals labelOneWindowTs', () => {
  const rand = rng(3);
  for (const [C, m, n] of [[4, 16, 128], [5, 8, 64], [2, 16, 16]] as const) {
    const logits = new Float32Array(C * m * m).map(() => rand() * 4 - 2);
    const tissue = new Uint8Array(n * n).map(() => (rand() < 0.8 ? 1 : 0));
    const a = new Uint8Array(n * n);
    const b = new Uint8Array(n * n);
    const ca = new Float64Array(C).fill(1);
    const cb = new Float64Array(C).fill(1);
    labelOneWindow(logits, C, m, n, tissue, a, ca);
    labelOneWindowTs(logits, C, m, n, tissue, b, cb);
    assert.deepEqual(a, b);
    assert.deepEqual(ca, cb, 'counts are added to what was there');
  }
});

test('without WebAssembly (node --jitless) the tile path falls back to the TypeScript twins, same mask', () => {
  const rand = rng(21);
  const rgb = syntheticTile(rand, 64, 48);
  const script = `
    const { tissueMask } = await import(${JSON.stringify(new URL('../src/imaging/tissue.ts', import.meta.url).href)});
    const rgb = Uint8Array.from(${JSON.stringify(Array.from(rgb))});
    process.stdout.write(Buffer.from(tissueMask(rgb, 64, 48)).toString('base64'));`;
  const r = spawnSync(process.execPath, ['--jitless', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, Buffer.from(tissueMask(rgb, 64, 48)).toString('base64'));
});
