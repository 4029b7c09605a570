import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { readLabelMap } from '../src/data/labels/labelMap.js';
import { readGenericDataset } from '../src/data/datasets/dataset.js';
import { SYNTH_PATCH_SIZE } from '../src/synth/patches.js';
import { Rng } from '../src/util/rng.js';
import { synthSplit, writeSynthDataset } from '../src/synth/dataset.js';
import { SYNTH_CLASSES } from '../src/synth/slides.js';

// Small slides keep the suite fast; the generator's scale (structure sizes in px) is the same at any slide size.
const SIZE = 384;
const SLIDES = 2;
let root = '';
let a = '';
let b = '';
let c = '';

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p)));
    else out.push(p);
  }
  return out.sort();
}

/** TileWidth (tag 322) of the first IFD of a classic little- or big-endian TIFF, or null when untiled. */
function tiffTileWidth(buf: Buffer): number | null {
  const le = buf.toString('latin1', 0, 2) === 'II';
  const u16 = (o: number) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  assert.equal(u16(2), 42, 'classic TIFF magic');
  const ifd = u32(4);
  const n = u16(ifd);
  for (let k = 0; k < n; k++) {
    const e = ifd + 2 + 12 * k;
    if (u16(e) === 322) return u16(e + 2) === 3 ? u16(e + 8) : u32(e + 8);
  }
  return null;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'histoseg-synth-'));
  a = join(root, 'a');
  b = join(root, 'b');
  c = join(root, 'c');
  await writeSynthDataset({ seed: 11, out: a, slides: SLIDES, size: SIZE, patchesPerClass: 4 });
  await writeSynthDataset({ seed: 11, out: b, slides: SLIDES, size: SIZE, patchesPerClass: 4 });
  await writeSynthDataset({ seed: 12, out: c, slides: SLIDES, size: SIZE, patchesPerClass: 4 });
});

after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

test('the PRNG is a pure function of its seed', () => {
  const x = new Rng(5);
  const y = new Rng(5);
  const z = new Rng(6);
  const xs = Array.from({ length: 8 }, () => x.next());
  assert.deepEqual(xs, Array.from({ length: 8 }, () => y.next()));
  assert.notDeepEqual(xs, Array.from({ length: 8 }, () => z.next()));
  assert.ok(xs.every((v) => v >= 0 && v < 1));
});

test('splits: 10 slides give 6 train, 1 validation, 3 test; 2 slides give 1 train, 1 test', () => {
  const count = (n: number) => {
    const s = Array.from({ length: n }, (_, i) => synthSplit(i, n));
    return ['train', 'validation', 'test'].map((k) => s.filter((v) => v === k).length);
  };
  assert.deepEqual(count(10), [6, 1, 3]);
  assert.deepEqual(count(2), [1, 0, 1]);
  assert.deepEqual(count(1), [1, 0, 0]);
});

test('the same seed gives identical bytes for every file', async () => {
  const fa = await listFiles(a);
  const fb = await listFiles(b);
  assert.deepEqual(fa.map((f) => relative(a, f)), fb.map((f) => relative(b, f)));
  assert.ok(fa.length >= 1 + 1 + SLIDES * 4, `expected the whole layout, got ${fa.length} files`);
  for (let i = 0; i < fa.length; i++) {
    assert.ok((await readFile(fa[i]!)).equals(await readFile(fb[i]!)), `${relative(a, fa[i]!)} differs between runs`);
  }
});

test('a different seed gives different slides and masks', async () => {
  for (const f of ['slides/synth-000.tif', 'masks/synth-000.png', 'annotations/synth-000.geojson']) {
    assert.ok(!(await readFile(join(a, f))).equals(await readFile(join(c, f))), `${f} is the same for seeds 11 and 12`);
  }
});

test('the output is a dataset in the generic layout', async () => {
  assert.equal(await readFile(join(a, 'classes.txt'), 'utf8'), 'normal\nbenign\nin situ\ninvasive\n');
  const json = JSON.parse(await readFile(join(a, 'dataset.json'), 'utf8'));
  assert.deepEqual(json, {
    description: 'synthetic slides from histoseg synth (seed 11, 2 slides), not real tissue',
    synthetic: true,
    mpp: 7.5,
    slides: { 'synth-000': { split: 'train', mpp: 7.5 }, 'synth-001': { split: 'test', mpp: 7.5 } },
  });
  for (const name of ['synth-000', 'synth-001']) {
    const geo = JSON.parse(await readFile(join(a, 'annotations', `${name}.geojson`), 'utf8'));
    assert.equal(geo.type, 'FeatureCollection');
    assert.ok(geo.features.length > 0, `${name}.geojson has no features`);
    const xml = await readFile(join(a, 'annotations', `${name}.xml`), 'utf8');
    assert.match(xml, /^<\?xml[^>]*>\s*<Annotations/);
    assert.match(xml, /<Vertex X="/);
  }
  const folders = (await readdir(join(a, 'patches'))).sort();
  assert.deepEqual(folders, [...SYNTH_CLASSES].sort());
  const patches = (await listFiles(join(a, 'patches'))).filter((f) => f.endsWith('.png'));
  assert.ok(patches.length > 0, 'no class patches');
  for (const f of patches) {
    assert.match(relative(a, f), /^patches\/[a-z ]+\/synth-000-\d{3}\.png$/, 'patches come from the training slide only');
    const meta = await sharp(f).metadata();
    assert.deepEqual([meta.width, meta.height], [SYNTH_PATCH_SIZE, SYNTH_PATCH_SIZE]);
  }
  // The generic-layout reader takes it as it is.
  const ds = await readGenericDataset(a);
  assert.deepEqual(ds.classes, [...SYNTH_CLASSES]);
  assert.deepEqual(ds.slides.map((s) => [s.name, s.split, s.mpp, s.width, s.height]), [
    ['synth-000', 'train', 7.5, SIZE, SIZE],
    ['synth-001', 'test', 7.5, SIZE, SIZE],
  ]);
  assert.equal(ds.patches.length, patches.length);
});

test('slides are tiled pyramidal TIFFs at 7.5 um/px, and masks match their size', async () => {
  for (const name of ['synth-000', 'synth-001']) {
    const tif = await readFile(join(a, 'slides', `${name}.tif`));
    const meta = await sharp(tif).metadata();
    assert.equal(meta.format, 'tiff');
    assert.ok((meta.pages ?? 1) >= 2, `${name}.tif has ${meta.pages} pages, expected a pyramid`);
    assert.equal(tiffTileWidth(tif), 256);
    assert.equal(meta.resolutionUnit, 'cm');
    assert.ok(Math.abs((meta.density ?? 0) / 25.4 - 1000 / 7.5) < 0.5, `density ${meta.density} dpi is not 7.5 um/px`);
    const mask = await sharp(join(a, 'masks', `${name}.png`)).metadata();
    assert.deepEqual([mask.width, mask.height, mask.channels], [meta.width, meta.height, 1]);
  }
});

test('the masks hold all four classes across the set, mostly normal', async () => {
  const counts = [0, 0, 0, 0];
  for (const name of ['synth-000', 'synth-001']) {
    const map = await readLabelMap(join(a, 'masks', `${name}.png`));
    for (const v of map.labels) {
      assert.ok(v < 4, `label ${v} out of range`);
      counts[v]! += 1;
    }
  }
  assert.ok(counts.every((n) => n > 0), `class pixel counts ${counts}`);
  assert.ok(counts[0]! > counts[1]! + counts[2]! + counts[3]!, `class pixel counts ${counts}`);
});

test('an existing non-empty output folder is refused without force', async () => {
  await assert.rejects(writeSynthDataset({ seed: 11, out: a, slides: 1, size: SIZE }), /not empty/);
});
