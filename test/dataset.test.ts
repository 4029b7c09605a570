import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { writeLabelMap } from '../src/data/labels/labelMap.js';
import { MODEL_MPP } from '../src/util/constants.js';
import { labelsToGeoJson } from '../src/data/labels/annotations.js';
import { BACH_WSI_MPP } from '../src/data/datasets/bachLayout.js';
import { loadSlideLabels, readGenericDataset, sizeAtMpp, writeGenericDataset } from '../src/data/datasets/dataset.js';
import { readDataset } from '../src/data/datasets/readDataset.js';
import { openSlide, readSlideRgb, UnsupportedSlideError } from '../src/data/slides/slideReader.js';
import { SLIDE_VARIANTS } from './support/slideTiles.js';
import { UNSUPPORTED_SLIDE_VARIANTS } from './support/testData.js';

const CLASSES = ['normal', 'benign', 'in situ', 'invasive'];

async function png(path: string, width: number, height: number, rgb = [230, 150, 200]): Promise<void> {
  await sharp({ create: { width, height, channels: 3, background: { r: rgb[0]!, g: rgb[1]!, b: rgb[2]! } } })
    .png()
    .toFile(path);
}

/** A valid generic dataset: two slides (a mask and a GeoJSON), patches of two classes, dataset.json. */
async function makeGeneric(root: string): Promise<Uint8Array> {
  for (const d of ['slides', 'masks', 'annotations', 'patches/benign', 'patches/In_Situ']) await mkdir(join(root, d), { recursive: true });
  await writeFile(join(root, 'classes.txt'), CLASSES.join('\n') + '\n');
  await png(join(root, 'slides', 'a.png'), 40, 30);
  await png(join(root, 'slides', 'b.png'), 40, 30);
  const labels = new Uint8Array(40 * 30);
  for (let y = 5; y < 15; y++) for (let x = 10; x < 30; x++) labels[y * 40 + x] = 3;
  await writeLabelMap(join(root, 'masks', 'a.png'), { labels, width: 40, height: 30 });
  await writeFile(join(root, 'annotations', 'b.geojson'), JSON.stringify(labelsToGeoJson(labels, 40, 30, CLASSES)));
  await png(join(root, 'patches', 'benign', 'p1.png'), 16, 16);
  await png(join(root, 'patches', 'In_Situ', 'p2.png'), 20, 10);
  await writeFile(join(root, 'dataset.json'), JSON.stringify({ mpp: 7.5, slides: { a: { split: 'train' }, b: { split: 'test', mpp: 3.75 } } }));
  return labels;
}

test('generic layout: slides, labels, patches, splits and mpp', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'histoseg-ds-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const labels = await makeGeneric(root);
  const ds = await readDataset(root);
  assert.equal(ds.layout, 'generic');
  assert.deepEqual(ds.classes, CLASSES);
  assert.deepEqual(
    ds.slides.map((s) => [s.name, s.split, s.mpp, s.labels.kind, s.width, s.height]),
    [
      ['a', 'train', 7.5, 'mask', 40, 30],
      ['b', 'test', 3.75, 'geojson', 40, 30],
    ],
  );
  assert.deepEqual(ds.patches.map((p) => p.classIndex).sort(), [1, 2]);
  const a = await loadSlideLabels(ds.slides[0]!, ds);
  assert.deepEqual(a.labels, labels);
  const b = await loadSlideLabels(ds.slides[1]!, ds);
  assert.deepEqual(b.labels, labels, 'the GeoJSON rasterises back to the mask');
  // Slide b is 3.75 um/px: at the model's 7.5 it is half size.
  const half = sizeAtMpp(ds.slides[1]!, MODEL_MPP);
  assert.deepEqual([half.width, half.height], [20, 15]);
  const small = await loadSlideLabels(ds.slides[1]!, ds, half);
  assert.equal(small.labels[5 * 20 + 10], 3);
  assert.equal(small.labels[0], 0);
  // Writing the generic layout and reading it back keeps everything.
  const copy = join(root, 'copy');
  await writeGenericDataset(ds, copy);
  const again = await readGenericDataset(copy);
  assert.deepEqual(again.slides.map((s) => [s.name, s.split, s.mpp]), ds.slides.map((s) => [s.name, s.split, s.mpp]));
  assert.equal(again.patches.length, 2);
});

test('generic layout errors name the file', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'histoseg-ds-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  await mkdir(root, { recursive: true });
  await assert.rejects(readGenericDataset(root), /missing .*classes\.txt/);

  const cases: [string, (dir: string) => Promise<void>, RegExp][] = [
    ['unknown patch class', (d) => mkdir(join(d, 'patches', 'Tumour')), /patches\/Tumour: unknown class name "Tumour"/],
    [
      'unknown annotation class',
      (d) =>
        writeFile(
          join(d, 'annotations', 'b.geojson'),
          JSON.stringify([{ type: 'Feature', geometry: { type: 'Polygon', coordinates: [[[1, 1], [5, 1], [5, 5]]] }, properties: { classification: { name: 'Stroma' } } }]),
        ),
      /b\.geojson: feature 0 has unknown class "Stroma"/,
    ],
    [
      'polygon outside the slide',
      (d) =>
        writeFile(
          join(d, 'annotations', 'b.geojson'),
          JSON.stringify([{ type: 'Feature', geometry: { type: 'Polygon', coordinates: [[[1, 1], [500, 1], [5, 5]]] }, properties: { classification: { name: 'benign' } } }]),
        ),
      /b\.geojson: feature 0 has vertex \(500, 1\) outside the slide/,
    ],
    ['mask of another size', (d) => writeLabelMap(join(d, 'masks', 'a.png'), { labels: new Uint8Array(12), width: 4, height: 3 }), /mask .*a\.png is 4x3 but its slide is 40x30/],
    ['unreadable slide', (d) => writeFile(join(d, 'slides', 'a.png'), 'not a png'), /cannot read slide .*a\.png/],
    ['unreadable patch', (d) => writeFile(join(d, 'patches', 'benign', 'p1.png'), 'junk'), /unreadable image .*p1\.png/],
    ['slide without labels', (d) => rm(join(d, 'masks', 'a.png')), /a\.png: no labels: expected masks\/a\.png/],
    ['dataset.json names a missing slide', (d) => writeFile(join(d, 'dataset.json'), JSON.stringify({ slides: { zz: { split: 'train' } } })), /slide "zz" is not in slides/],
    ['bad split', (d) => writeFile(join(d, 'dataset.json'), JSON.stringify({ slides: { a: { split: 'dev' } } })), /invalid .*dataset\.json/],
  ];
  for (const [what, breakIt, error] of cases) {
    const dir = join(root, what.replace(/\W+/g, '-'));
    await makeGeneric(dir);
    await breakIt(dir);
    await assert.rejects(readGenericDataset(dir), error, what);
  }

  // A mask value beyond the class list fails when the labels are loaded.
  const dir = join(root, 'values');
  await makeGeneric(dir);
  await writeLabelMap(join(dir, 'masks', 'a.png'), { labels: new Uint8Array(1200).fill(7), width: 40, height: 30 });
  const ds = await readGenericDataset(dir);
  await assert.rejects(loadSlideLabels(ds.slides[0]!, ds), /a\.png has class value 7, but there are only 4 classes/);
});

for (const variant of UNSUPPORTED_SLIDE_VARIANTS) {
  test(`${variant.kind} slides sharp cannot decode fail naming the format and the way out`, async () => {
    const { jpeg2000, dicom } = await variant.load();
    await assert.rejects(openSlide(jpeg2000), (err: Error) => {
      assert.ok(err instanceof UnsupportedSlideError);
      assert.match(err.message, /JPEG-2000 .*compression 33005/);
      assert.match(err.message, /Convert it to a JPEG-tiled pyramidal TIFF/);
      return true;
    });
    await assert.rejects(openSlide(dicom), (err: Error) => {
      assert.ok(err instanceof UnsupportedSlideError);
      assert.match(err.message, /DICOM whole-slide images cannot be read/);
      assert.match(err.message, /tiled pyramidal TIFF/);
      return true;
    });
  });
}

for (const variant of SLIDE_VARIANTS) {
  test(`BACH layout: ${variant.kind} SVS + ImageScope XML rasterised at the model scale, Photos as patches`, async (t) => {
    const { path: svs, width, height, mpp, kind } = await variant.load();
    const info = await openSlide(svs);
    assert.deepEqual([info.width, info.height, info.mpp], [width, height, mpp]);
    if (kind === 'real') assert.deepEqual([info.width, info.height, info.mpp], [2220, 2967, 0.499]);
    assert.ok(info.levels.length >= 2, 'the thumbnail counts as a level; label/macro pages do not');
    assert.ok(info.levels.every((l) => Math.abs(l.width / l.height - width / height) < 0.02));

    const root = await mkdtemp(join(tmpdir(), 'histoseg-bach-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    for (const f of ['Photos/Normal', 'Photos/InSitu', 'WSI']) await mkdir(join(root, f), { recursive: true });
    await sharp({ create: { width: 64, height: 48, channels: 3, background: '#c080b0' } }).tiff().toFile(join(root, 'Photos/Normal/n001.tif'));
    await sharp({ create: { width: 64, height: 48, channels: 3, background: '#a060c0' } }).tiff().toFile(join(root, 'Photos/InSitu/is001.tif'));
    await copyFile(svs, join(root, 'WSI', 'A01.svs'));
    await copyFile(svs, join(root, 'WSI', 'A02.svs')); // no XML: skipped with a warning
    const xml = `<?xml version="1.0"?>
<Annotations MicronsPerPixel="${mpp}">
  <Annotation Id="1"><Regions>
    <Region Id="1" Text="Carcinoma in situ"><Vertices>
      <Vertex X="300" Y="300"/><Vertex X="1500" Y="300"/><Vertex X="1500" Y="1500"/><Vertex X="300" Y="1500"/>
    </Vertices></Region>
    <Region Id="2" Text="Invasive carcinoma"><Vertices>
      <Vertex X="600" Y="2000"/><Vertex X="1800" Y="2000"/><Vertex X="1800" Y="2800"/>
    </Vertices></Region>
  </Regions></Annotation>
</Annotations>`;
    await writeFile(join(root, 'WSI', 'A01.xml'), xml);
    const ds = await readDataset(root);
    assert.equal(ds.layout, 'bach');
    assert.deepEqual(ds.patches.map((p) => p.classIndex).sort(), [0, 2]);
    assert.equal(ds.slides.length, 1);
    assert.match(ds.warnings.join('\n'), /A02\.svs has no A02\.xml/);
    const slide = ds.slides[0]!;
    assert.equal(slide.mpp, mpp);
    assert.notEqual(slide.mpp, BACH_WSI_MPP, 'the SVS states its own MPP');
    const size = sizeAtMpp(slide, MODEL_MPP);
    assert.deepEqual([size.width, size.height], [Math.round((width * mpp) / 7.5), Math.round((height * mpp) / 7.5)]);
    const labels = await loadSlideLabels(slide, ds, size);
    const at = (x0: number, y0: number) => labels.labels[Math.floor(y0 * size.scale) * size.width + Math.floor(x0 * size.scale)];
    assert.equal(at(900, 900), 2);
    assert.equal(at(1700, 2700), 3);
    assert.equal(at(100, 100), 0);
    const rgb = await readSlideRgb(await openSlide(slide.image), size.width, size.height);
    assert.equal(rgb.data.length, size.width * size.height * 3);

    await writeFile(join(root, 'WSI', 'A01.xml'), xml.replace('Carcinoma in situ', 'Necrosis'));
    await assert.rejects(readDataset(root), /A01\.xml: Annotation 1 Region 1 has unknown class "Necrosis"/);
    await writeFile(join(root, 'WSI', 'A01.xml'), xml.replace('X="1800" Y="2800"', 'X="1800" Y="9000"'));
    await assert.rejects(readDataset(root), /A01\.xml: Annotation 1 Region 2 has vertex \(1800, 9000\) outside the slide/);
  });
}
