import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { readLabelMap, writeLabelMap } from '../src/data/labels/labelMap.js';
import { connectedComponents } from '../src/imaging/components.js';
import { readGenericDataset } from '../src/data/datasets/dataset.js';
import {
  chooseStainReference,
  componentCentres,
  cutWindow,
  foregroundFraction,
  kmeansClusterCount,
  PATCH_SIZE,
  patchOrigin,
  planSegPatches,
  preparePatches,
  type PrepareSummary,
} from '../src/training/prepare/patchPreparation.js';

const D = PATCH_SIZE;
const PINK = [230, 150, 200];
const GLASS = [250, 250, 250];

function fillRect(labels: Uint8Array, width: number, x0: number, y0: number, w: number, h: number, v: number): void {
  for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) labels[y * width + x] = v;
}

/** RGB image: tissue pink where tissue(x, y), glass elsewhere. */
function rgbImage(width: number, height: number, tissue: (x: number, y: number) => boolean) {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set(tissue(x, y) ? PINK : GLASS, (y * width + x) * 3);
  }
  return { data, width, height };
}

test('connected components are 8-connected, per class, with area and bounding box', () => {
  const w = 6;
  const labels = Uint8Array.from([
    1, 0, 0, 0, 2, 2,
    0, 1, 0, 0, 2, 0,
    0, 0, 1, 1, 0, 0,
    3, 3, 0, 0, 0, 1,
  ]);
  const { ids, components } = connectedComponents(labels, w, 4);
  assert.equal(components.length, 4);
  const diag = components.find((c) => c.classIndex === 1 && c.area === 4)!;
  assert.deepEqual([diag.minX, diag.minY, diag.maxX, diag.maxY], [0, 0, 3, 2]);
  assert.equal(ids[0], ids[2 * w + 3]);
  assert.notEqual(ids[3 * w + 5], ids[0], 'the far class-1 pixel is its own component');
  assert.equal(components.find((c) => c.classIndex === 2)!.area, 3);
  assert.equal(ids[1], 0);
});

test('a component that fits in D x D gets one patch centred on its bounding box', () => {
  const width = 400;
  const height = 300;
  const labels = new Uint8Array(width * height);
  fillRect(labels, width, 100, 150, 40, 20, 2);
  const centres = componentCentres(labels, width, height, 1);
  assert.equal(centres.length, 1);
  assert.deepEqual([centres[0]!.cx, centres[0]!.cy, centres[0]!.classIndex], [120, 160, 2]);
  const { x, y } = patchOrigin(centres[0]!.cx, centres[0]!.cy, width, height);
  assert.deepEqual([x + D / 2, y + D / 2], [120, 160]);
  assert.ok(x <= 100 && x + D >= 140 && y <= 150 && y + D >= 170, 'the whole component is inside its patch');
});

test('a patch that would cross the slide edge is shifted inside; a slide smaller than D is padded', () => {
  assert.deepEqual(patchOrigin(5, 295, 400, 300), { x: 0, y: 300 - D });
  assert.deepEqual(patchOrigin(50, 50, 100, 100), { x: 50 - D / 2, y: 50 - D / 2 });
  const src = Uint8Array.from([1, 2, 3, 4]);
  assert.deepEqual(cutWindow(src, 2, 2, 1, -1, -1, 3, 9), Uint8Array.from([9, 9, 9, 9, 1, 2, 9, 3, 4]));
});

test('K-means split count is ceil(1 + area / D^2) for components larger than D', () => {
  assert.equal(kmeansClusterCount(1), 2);
  assert.equal(kmeansClusterCount(D * D), 2);
  assert.equal(kmeansClusterCount(D * D + 1), 3);
  const width = 500;
  const height = 400;
  const labels = new Uint8Array(width * height);
  fillRect(labels, width, 10, 10, 300, 100, 3); // 30000 px, too wide: ceil(1 + 30000/16384) = 3 centres
  fillRect(labels, width, 10, 200, D, D, 1); // exactly D x D: fits, one centre
  fillRect(labels, width, 200, 300, D + 1, 10, 2); // D + 1 wide: split into ceil(1 + 1290/16384) = 2
  const centres = componentCentres(labels, width, height, 7);
  const of = (k: number) => centres.filter((c) => c.classIndex === k);
  assert.equal(of(3).length, 3);
  assert.equal(of(1).length, 1);
  assert.equal(of(2).length, 2);
  for (const c of of(3)) assert.ok(c.cx > 10 && c.cx < 310 && c.cy > 10 && c.cy < 110, 'centres lie in the component');
  const xs = of(3).map((c) => Math.round(c.cx)).sort((a, b) => a - b);
  assert.ok(xs[1]! - xs[0]! > 50 && xs[2]! - xs[1]! > 50, `centres spread along the region: ${xs}`);
  assert.deepEqual(componentCentres(labels, width, height, 7), centres, 'same seed, same centres');
});

test('patches under 75% foreground are dropped', () => {
  // Tissue in the left 96 of 128 columns is exactly 75%: kept. 95 columns is 74.2%: dropped.
  for (const [cols, kept] of [
    [96, true],
    [95, false],
  ] as const) {
    const rgb = rgbImage(D, D, (x) => x < cols);
    const labels = new Uint8Array(D * D);
    fillRect(labels, D, 40, 40, 20, 20, 1);
    const plan = planSegPatches(rgb, { labels, width: D, height: D }, 0);
    assert.equal(plan.kept.length, kept ? 1 : 0, `${cols} tissue columns`);
    assert.equal(plan.dropped.length, kept ? 0 : 1);
    assert.ok(Math.abs((kept ? plan.kept : plan.dropped)[0]!.foreground - cols / D) < 1e-9);
  }
  // Outside the slide counts as background.
  assert.equal(foregroundFraction(new Uint8Array(4).fill(1), 2, 2, 0, 0, 4), 4 / 16);
});

test('the stain reference is the candidate closest to the median stain', () => {
  const cand = (source: string, h: number[], e: number[]) => ({
    source,
    params: { stainMatrix: [h, e], maxConcentrations: [1, 1] },
  });
  const n = (v: number[]) => v.map((x) => x / Math.hypot(...v));
  const chosen = chooseStainReference([
    cand('pale', n([0.4, 0.8, 0.45]), n([0.1, 0.9, 0.4])),
    cand('typical', n([0.56, 0.72, 0.41]), n([0.22, 0.8, 0.56])),
    cand('dark', n([0.7, 0.6, 0.38]), n([0.3, 0.7, 0.65])),
  ]);
  assert.equal(chosen?.source, 'typical');
  assert.equal(chooseStainReference([]), null);
});

test('preparePatches writes seg and class patches with a summary', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'histoseg-prep-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const width = 300;
  const height = 260;
  const tissue = (x: number, y: number) => Math.hypot(x - 150, y - 130) < 125 && ((x * 7 + y * 3) % 11 !== 0);
  const rgb = rgbImage(width, height, tissue);
  // Tissue pixels from Beer-Lambert with H and E vectors, so a stain can be estimated.
  const H = [0.65, 0.7, 0.29];
  const E = [0.07, 0.99, 0.11];
  for (let i = 0; i < width * height; i++) {
    if (rgb.data[3 * i] !== PINK[0]) continue;
    const ch = ((i * 7919) % 97) / 64;
    const ce = ((i * 104729) % 89) / 59;
    for (let k = 0; k < 3; k++) rgb.data[3 * i + k] = Math.round(240 * Math.exp(-(ch * H[k]! + ce * E[k]!)));
  }
  await mkdir(join(root, 'slides'), { recursive: true });
  await mkdir(join(root, 'masks'), { recursive: true });
  await mkdir(join(root, 'patches', 'benign'), { recursive: true });
  await writeFile(join(root, 'classes.txt'), 'normal\nbenign\ninvasive\n');
  await sharp(rgb.data, { raw: { width, height, channels: 3 } }).png().toFile(join(root, 'slides', 's1.png'));
  const labels = new Uint8Array(width * height);
  fillRect(labels, width, 120, 100, 30, 30, 1);
  fillRect(labels, width, 170, 140, 10, 10, 2);
  await writeLabelMap(join(root, 'masks', 's1.png'), { labels, width, height });
  await sharp(rgbImage(200, 100, () => true).data, { raw: { width: 200, height: 100, channels: 3 } })
    .png()
    .toFile(join(root, 'patches', 'benign', 'p1.png'));
  await writeFile(join(root, 'dataset.json'), JSON.stringify({ slides: { s1: { split: 'train' } } }));

  const out = join(root, 'out');
  const summary = await preparePatches(await readGenericDataset(root), out, { seed: 3, splits: ['train'] });
  assert.equal(summary.segPatches.total, 2);
  assert.deepEqual(summary.segPatches.perClass, { normal: 0, benign: 1, invasive: 1 });
  assert.deepEqual(summary.clsPatches.perClass, { normal: 0, benign: 1, invasive: 0 });
  // The two components are close enough that each patch holds both.
  const expectedBg = 1 - (2 * (30 * 30 + 10 * 10)) / (2 * D * D);
  assert.ok(Math.abs(summary.backgroundPixelShare! - expectedBg) < 1e-9, `background share ${summary.backgroundPixelShare}`);
  assert.notEqual(summary.stainReference, null);

  const written = JSON.parse(await readFile(join(out, 'summary.json'), 'utf8')) as PrepareSummary;
  assert.deepEqual(written, summary);
  const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'));
  const seg = index.seg.find((s: { classIndex: number }) => s.classIndex === 1);
  const mask = await readLabelMap(join(out, seg.mask));
  assert.equal(mask.width, D);
  assert.equal(mask.labels.filter((v) => v === 1).length, 900, 'the whole benign component is in its patch');
  const cls = await sharp(join(out, index.cls[0].image)).metadata();
  assert.deepEqual([cls.width, cls.height], [D, D]);
  const ref = JSON.parse(await readFile(join(out, 'stain-reference.json'), 'utf8'));
  assert.equal(ref.stainMatrix.length, 2);
});
