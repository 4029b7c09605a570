import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import dcmjs from 'dcmjs';
import sharp from 'sharp';
import { openSlide, readSlideRegion, readSlideRgb } from '../src/data/slides/slideReader.js';
import { buildDicomSeg, readDicomSeg, srgbToDicomLab } from '../src/data/labels/dicomSeg.js';
import { segmentationToGeoJson } from '../src/data/labels/geojson.js';
import { geoJsonToLabels } from '../src/data/labels/annotations.js';
import { resizeLabels } from '../src/imaging/decode.js';
import { mkdir } from 'node:fs/promises';
import { loadSlideLabels, readGenericDataset } from '../src/data/datasets/dataset.js';
import { ExampleStore, readExampleFile } from '../src/data/examples/exampleStore.js';
import { readLabelMap } from '../src/data/labels/labelMap.js';
import { slideAreas } from '../src/pipeline/slideSummary.js';
import { segmentImage } from '../src/cli/segmentCommand.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { renderSynthSlide } from '../src/synth/slides.js';
import { jpeg2000Tiff } from './support/jpeg2000Tiff.js';
import { dciodvfy, dcmdumpValue, DICOMIZER, dicomize, fixtureSource, needTools, type FixtureSource } from './support/dicomFixtures.js';

const CLASSES = [
  { name: 'normal', color: '#ffffff' },
  { name: 'benign', color: '#ff0000' },
  { name: 'in situ', color: '#00ff00' },
  { name: 'invasive', color: '#0000ff' },
];
const NAMES = CLASSES.map((c) => c.name);
/**
 * What bookworm's dciodvfy (dicom3tools 2022) reports for a TILED_FULL slide SEG and nothing else: it predates
 * TILED_FULL for Segmentation, where frame positions and segments are implied by the frame order and the
 * Per-Frame Functional Groups Sequence (so its Segment Identification Sequence) is absent, as highdicom writes it.
 * TILED_SPARSE SEGs validate with no error at all.
 */
const TILED_FULL_FALSE_POSITIVES = [
  'Error - Missing attribute Type 1 Required Element=<SegmentIdentificationSequence> Module=<SegmentationMacro>',
  'Error - Missing attribute Type 1 Required Element=<PerFrameFunctionalGroupsSequence> Module=<MultiFrameFunctionalGroupsForSegmentation>',
];

/** A label map with every class in blobs, some touching the edges, some with holes. */
function blobs(w: number, h: number): Uint8Array {
  const out = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const k = ((x / 37) | 0) + ((y / 29) | 0);
      const ring = Math.hypot((x % 37) - 18, (y % 29) - 14);
      out[y * w + x] = ring < 5 ? 0 : ring < 12 ? k % 4 : 0;
    }
  }
  return out;
}

/** A minimal VL WSI instance written with dcmjs: native RGB frames, TILED_FULL or with per-frame positions. */
function tinyWsi(rgb: Uint8Array, w: number, h: number, tile: number, sparse: boolean): Uint8Array {
  const across = Math.ceil(w / tile);
  const down = Math.ceil(h / tile);
  const frames: Uint8Array[] = [];
  const positions: { c: number; r: number }[] = [];
  for (let tr = 0; tr < down; tr++) {
    for (let tc = 0; tc < across; tc++) {
      if (sparse && (tr + tc) % 3 === 2) continue; // a gap: glass
      const f = new Uint8Array(tile * tile * 3);
      for (let y = 0; y < tile && tr * tile + y < h; y++) {
        const x1 = Math.min(tile, w - tc * tile);
        f.set(rgb.subarray(((tr * tile + y) * w + tc * tile) * 3, ((tr * tile + y) * w + tc * tile + x1) * 3), y * tile * 3);
      }
      frames.push(f);
      positions.push({ c: tc * tile + 1, r: tr * tile + 1 });
    }
  }
  if (sparse) frames.reverse(), positions.reverse(); // order must not matter when positions are given
  const pixels = new Uint8Array(frames.length * tile * tile * 3);
  frames.forEach((f, i) => pixels.set(f, i * f.length));
  const ds = {
    SOPClassUID: '1.2.840.10008.5.1.4.1.1.77.1.6',
    SOPInstanceUID: '2.25.1234',
    StudyInstanceUID: '2.25.1',
    SeriesInstanceUID: '2.25.2',
    FrameOfReferenceUID: '2.25.3',
    Modality: 'SM',
    ImageType: ['ORIGINAL', 'PRIMARY', 'VOLUME', 'NONE'],
    Rows: tile,
    Columns: tile,
    SamplesPerPixel: 3,
    PhotometricInterpretation: 'RGB',
    PlanarConfiguration: 0,
    BitsAllocated: 8,
    BitsStored: 8,
    HighBit: 7,
    PixelRepresentation: 0,
    NumberOfFrames: frames.length,
    TotalPixelMatrixColumns: w,
    TotalPixelMatrixRows: h,
    DimensionOrganizationType: sparse ? 'TILED_SPARSE' : 'TILED_FULL',
    SharedFunctionalGroupsSequence: [{ PixelMeasuresSequence: [{ PixelSpacing: [0.0005, 0.0005], SliceThickness: 0.001 }] }],
    ...(sparse
      ? { PerFrameFunctionalGroupsSequence: positions.map((p) => ({ PlanePositionSlideSequence: [{ ColumnPositionInTotalImagePixelMatrix: p.c, RowPositionInTotalImagePixelMatrix: p.r }] })) }
      : {}),
    PixelData: [pixels.buffer],
    _vrMap: { PixelData: 'OB' },
  };
  const meta = dcmjs.data.DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: ds.SOPClassUID,
    MediaStorageSOPInstanceUID: ds.SOPInstanceUID,
    TransferSyntaxUID: '1.2.840.10008.1.2.1',
    ImplementationClassUID: '2.25.99',
    _vrMap: { FileMetaInformationVersion: 'OB' },
  });
  const dict = new dcmjs.data.DicomDict(meta);
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(ds);
  return new Uint8Array(dict.write());
}

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('DICOM without Debian tools', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'histoseg-dicom-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads uncompressed DICOM WSI, TILED_FULL and with per-frame positions (gaps are white), decoding only the frames a region needs', async () => {
    const w = 300;
    const h = 200;
    const rgb = new Uint8Array(w * h * 3);
    for (let i = 0; i < w * h; i++) rgb.set([i % 251, (i >> 3) % 253, (i * 7) % 255], 3 * i);
    for (const sparse of [false, true]) {
      const path = join(dir, `tiny-${sparse}.dcm`);
      await writeFile(path, tinyWsi(rgb, w, h, 64, sparse));
      const slide = await openSlide(path);
      assert.equal(slide.format, 'dicom');
      assert.deepEqual([slide.width, slide.height, slide.mpp], [w, h, 0.5]);
      const region = { left: 70, top: 10, width: 50, height: 40 };
      const got = await readSlideRegion(slide, 0, region);
      assert.equal(slide.dicom!.framesDecoded, 1, 'the region lies in one 64 px frame');
      const want = new Uint8Array(50 * 40 * 3);
      for (let y = 0; y < 40; y++) want.set(rgb.subarray(((10 + y) * w + 70) * 3, ((10 + y) * w + 120) * 3), y * 50 * 3);
      assert.deepEqual(got.data, want);
      const whole = await readSlideRgb(slide, w, h);
      if (!sparse) assert.deepEqual(whole.data, rgb);
      else {
        // Frame (row 0, col 2) is absent: glass.
        const px = ((10 * w) + 2 * 64 + 5) * 3;
        assert.deepEqual([...whole.data.subarray(px, px + 3)], [255, 255, 255]);
        const kept = ((10 * w) + 5) * 3;
        assert.deepEqual([...whole.data.subarray(kept, kept + 3)], [...rgb.subarray(kept, kept + 3)]);
      }
    }
  });

  it('reads a JPEG 2000 SVS (compression 33005) tile by tile, every level, losslessly', async () => {
    const synth = renderSynthSlide(3, 300, 200);
    const l0 = { data: new Uint8Array(synth.rgb), width: 300, height: 200 };
    const half = await sharp(synth.rgb, { raw: { width: 300, height: 200, channels: 3 } }).resize(150, 100).raw().toBuffer();
    const l1 = { data: new Uint8Array(half), width: 150, height: 100 };
    const path = join(dir, 'j2k.svs');
    await writeFile(path, await jpeg2000Tiff([l0, l1], 0.5));
    const slide = await openSlide(path);
    assert.equal(slide.format, 'tiff-jpeg2000');
    assert.equal(slide.mpp, 0.5);
    assert.deepEqual(slide.levels.map((l) => [l.width, l.height]), [[300, 200], [150, 100]]);
    const region = await readSlideRegion(slide, 0, { left: 100, top: 50, width: 150, height: 120 });
    const want = new Uint8Array(150 * 120 * 3);
    for (let y = 0; y < 120; y++) want.set(l0.data.subarray(((50 + y) * 300 + 100) * 3, ((50 + y) * 300 + 250) * 3), y * 450);
    assert.equal(maxDiff(region.data, want), 0);
    const small = await readSlideRgb(slide, 150, 100);
    assert.equal(maxDiff(small.data, l1.data), 0, 'the half-size level is read as it is');
  });

  it('a SEG reads back to the label map it was written from, TILED_FULL and TILED_SPARSE (empty frames left out)', async () => {
    const w = 600;
    const h = 333;
    const labels = blobs(w, h);
    for (let y = 0; y < h; y++) labels.fill(0, y * w + 300, y * w + w); // the right half is empty
    const source = { SOPClassUID: '1.2.840.10008.5.1.4.1.1.77.1.6', SOPInstanceUID: '2.25.5', StudyInstanceUID: '2.25.6', SeriesInstanceUID: '2.25.7', FrameOfReferenceUID: '2.25.8', ContainerIdentifier: 'S-1' };
    const sizes: number[] = [];
    for (const organization of ['TILED_FULL', 'TILED_SPARSE'] as const) {
      const bytes = buildDicomSeg({ labels, width: w, height: h, classes: CLASSES, pixelSpacing: [0.0075, 0.0075], source, algorithm: { name: 'm', version: '1' }, organization });
      sizes.push(bytes.length);
      const back = await readDicomSeg(bytes, NAMES);
      assert.deepEqual([back.width, back.height], [w, h]);
      assert.ok(Buffer.from(back.labels).equals(Buffer.from(labels)), organization);
      assert.deepEqual(back.segments.map((s) => s.label), ['benign', 'in situ', 'invasive'], 'no segment for the background class');
      assert.equal(back.dataset.StudyInstanceUID, '2.25.6');
      assert.equal(back.dataset.FrameOfReferenceUID, '2.25.8');
      assert.equal(back.dataset.ContainerIdentifier, 'S-1');
    }
    // The empty right half's frames are left out of the sparse SEG.
    assert.ok(sizes[1]! < sizes[0]!, `sparse ${sizes[1]} < full ${sizes[0]}`);
    // Colours go as CIELab: white is L*=100, a*=b*=0.
    assert.deepEqual(srgbToDicomLab('#ffffff').map((v) => Math.round(v / 100)), [655, 329, 329]);
  });

  it('a DICOM SEG is a training mask: masks/<name>.dcm in the generic layout, and an uploaded example\'s mask', async () => {
    const root = join(dir, 'generic');
    for (const d of ['slides', 'masks', 'patches/benign']) await mkdir(join(root, d), { recursive: true });
    await writeFile(join(root, 'classes.txt'), NAMES.join('\n') + '\n');
    await sharp({ create: { width: 80, height: 60, channels: 3, background: '#d0a0c0' } }).png().toFile(join(root, 'slides', 'a.png'));
    // The SEG at half the slide's size, as histoseg writes them at the model's scale; segments in another order.
    const half = new Uint8Array(40 * 30);
    for (let y = 5; y < 20; y++) for (let x = 4; x < 30; x++) half[y * 40 + x] = y < 12 ? 3 : 1;
    const source = { SOPClassUID: '1.2.840.10008.5.1.4.1.1.77.1.6', SOPInstanceUID: '2.25.11', StudyInstanceUID: '2.25.12', SeriesInstanceUID: '2.25.13' };
    const reordered = [CLASSES[0]!, CLASSES[3]!, CLASSES[1]!, CLASSES[2]!];
    const remap = new Uint8Array(half.map((k) => [0, 2, 3, 1][k]!));
    await writeFile(join(root, 'masks', 'a.dcm'), buildDicomSeg({ labels: remap, width: 40, height: 30, classes: reordered, pixelSpacing: [0.01, 0.01], source, algorithm: { name: 'x', version: '1' } }));
    await sharp({ create: { width: 16, height: 16, channels: 3, background: '#c080b0' } }).png().toFile(join(root, 'patches', 'benign', 'p.png'));
    const ds = await readGenericDataset(root);
    assert.equal(ds.slides[0]!.labels.kind, 'dicom-seg');
    const full = await loadSlideLabels(ds.slides[0]!, ds);
    assert.deepEqual([full.width, full.height], [80, 60]);
    assert.ok(Buffer.from(full.labels).equals(Buffer.from(await resizeLabels(half, 40, 30, 80, 60))), 'segments mapped to classes by label');

    const store = await ExampleStore.open(join(dir, 'store'), { maxExamplePixels: 1 << 20, maxDatasetExamples: 10, maxDatasetBytes: 1 << 24, maxStoreBytes: 1 << 26 });
    await store.openDataset('pacs', NAMES);
    const image = await sharp({ create: { width: 80, height: 60, channels: 3, background: '#d0a0c0' } }).png().toBuffer();
    const mask = new Uint8Array(readFileSync(join(root, 'masks', 'a.dcm')));
    await store.put('pacs', { exampleId: 'e1', image, mpp: 7.5, mask, split: 'train' });
    const file = readdirSync(join(dir, 'store', 'pacs', 'examples')).find((f) => f.endsWith('.ex'))!;
    const stored = await readExampleFile(join(dir, 'store', 'pacs', 'examples', file));
    const map = await readLabelMap(new Uint8Array(stored.mask!));
    assert.ok(Buffer.from(map.labels).equals(Buffer.from(full.labels)), 'the upload keeps the SEG as a label map at the image size');
  });

  it('GeoJSON: one feature per connected region with class name and colour, read back to the same label map', async () => {
    const w = 160;
    const h = 120;
    const labels = blobs(w, h);
    const doc = segmentationToGeoJson(labels, w, h, CLASSES, { toLevel0: 4 });
    const features = doc.features as { geometry: { type: string; coordinates: number[][][] }; properties: { classification: { name: string; color: number[] } } }[];
    assert.ok(features.length > 5);
    assert.ok(features.every((f) => f.geometry.type === 'Polygon'));
    assert.deepEqual(features.find((f) => f.properties.classification.name === 'benign')!.properties.classification.color, [255, 0, 0]);
    assert.ok(Math.max(...features.flatMap((f) => f.geometry.coordinates.flat().map((p) => p[0]!))) > w, 'level-0 coordinates (x4)');
    const back = await geoJsonToLabels(JSON.parse(JSON.stringify(doc)), w, h, NAMES, { scale: 1 / 4 });
    assert.ok(Buffer.from(back).equals(Buffer.from(labels)));
  });

  it('areas in mm², tissue-only shares and the slide class', () => {
    // 10x10 at 10 um/px: 40 px glass (class 0), 50 px class-0 tissue, 8 px in situ, 2 px invasive.
    const labels = new Uint8Array(100);
    const tissue = new Uint8Array(100).fill(1);
    tissue.fill(0, 0, 40);
    labels.fill(2, 40, 48);
    labels.fill(3, 48, 50);
    const a = slideAreas(labels, tissue, 4, 10);
    assert.equal(a.tissue.pixels, 60);
    assert.ok(Math.abs(a.tissue.areaMm2! - 0.006) < 1e-12);
    assert.equal(a.glass.pixels, 40);
    assert.ok(Math.abs(a.classes[0]!.tissueShare - 50 / 60) < 1e-12);
    assert.ok(Math.abs(a.classes[2]!.tissueShare - 8 / 60) < 1e-12);
    assert.equal(a.slideClass.index, 3, 'invasive covers 3% of the tissue: the worst class over 1% names the slide');
    labels.fill(0, 48, 50);
    assert.equal(slideAreas(labels, tissue, 4, 10).slideClass.index, 2);
    assert.equal(slideAreas(labels, tissue, 4, 0).tissue.areaMm2, null);
  });
});

describe('DICOM WSI from Orthanc\'s dicomizer, segmented into a validated SEG', () => {
  let dir: string;
  let server: RunningServer;
  let address: string;
  let src: FixtureSource;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'histoseg-dicomize-'));
    src = await fixtureSource(dir);
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 2, logLevel: 'silent' }, {});
    server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
    address = `127.0.0.1:${server.port}`;
  });
  after(async () => {
    await server?.shutdown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('reads JPEG and JPEG 2000 (pyramid) series as the source slide reads', async (t) => {
    if (!needTools(t, DICOMIZER)) return;
    const jpeg = await dicomize(src, join(dir, 'jpeg'), 'jpeg');
    const j2k = await dicomize(src, join(dir, 'j2k'), 'jpeg2000', { pyramid: true });
    // A region a few frames wide, so the JPEG 2000 decoding stays short.
    const region = { left: 100, top: 150, width: Math.min(500, src.width - 100), height: Math.min(400, src.height - 150) };
    const ref = await sharp(src.path, { limitInputPixels: false }).extract(region).removeAlpha().raw().toBuffer();
    for (const [what, path] of [['jpeg', jpeg], ['jpeg2000', j2k]] as const) {
      const slide = await openSlide(path);
      assert.deepEqual([slide.width, slide.height], [src.width, src.height], what);
      assert.ok(Math.abs(slide.mpp! - src.mpp) < 1e-6, `${what}: mpp from PixelSpacing ${slide.mpp}`);
      const img = await readSlideRegion(slide, 0, region);
      // The JPEG tiles are the source's (or decoded by another libjpeg); JPEG 2000 is lossless over them.
      let sum = 0;
      for (let i = 0; i < ref.length; i++) sum += Math.abs(img.data[i]! - ref[i]!);
      assert.ok(sum / ref.length < 1, `${what}: mean difference ${sum / ref.length}`);
      // Frames decoded at half size (libjpeg DCT scaling; one JPEG 2000 resolution level fewer) match the region
      // read whole and halved, up to the filters' difference.
      const half = { left: region.left / 2, top: region.top / 2, width: Math.floor(region.width / 2), height: Math.floor(region.height / 2) };
      const small = await slide.dicom!.readRegion(0, half, 2);
      const want = await sharp(img.data, { raw: { width: region.width, height: region.height, channels: 3 } }).resize(half.width, half.height, { fit: 'fill' }).raw().toBuffer();
      let d = 0;
      for (let i = 0; i < want.length; i++) d += Math.abs(small.data[i]! - want[i]!);
      assert.ok(d / want.length < 8, `${what}: half-size decode differs by ${d / want.length} on average`);
    }
    const pyramid = await openSlide(j2k);
    assert.ok(pyramid.levels.length >= 3, 'every level of the series');
    const before = pyramid.dicom!.framesDecoded;
    await readSlideRegion(pyramid, 0, { left: 10, top: 10, width: 20, height: 20 });
    assert.equal(pyramid.dicom!.framesDecoded - before, 1, 'a region inside one frame decodes one frame');
  });

  it('segment --dicom-seg --geojson --out: the SEG passes dciodvfy, dcmdump shows its identity, and it reads back to the PNG', async (t) => {
    if (!needTools(t, { ...DICOMIZER, dciodvfy: 'dicom3tools', dcmdump: 'dcmtk' })) return;
    const series = await dicomize(src, join(dir, 'seg-src'), 'jpeg');
    const files: Record<string, string> = {};
    for (const org of ['TILED_FULL', 'TILED_SPARSE'] as const) {
      const seg = join(dir, `seg-${org}.dcm`);
      const out = join(dir, `mask-${org}.png`);
      const geojson = join(dir, `seg-${org}.geojson`);
      const overlay = join(dir, `overlay-${org}.png`);
      const summary = await segmentImage({ server: address, image: series, tile: 128, out, overlay, dicomSeg: seg, geojson, segOrganization: org, model: 'histoseg-bach@0.1.0' });
      files[org] = seg;
      assert.equal(summary.read.format, 'dicom');
      assert.ok(summary.tissue.areaMm2! > 0 && summary.classes.every((c) => c.areaMm2 !== null));
      assert.ok(Math.abs(summary.classes.reduce((s, c) => s + c.tissueShare, 0) - 1) < 1e-9);
      assert.equal(summary.slideClass.name, NAMES[summary.slideClass.index]);

      const v = await dciodvfy(seg);
      const unexpected = v.errors.filter((e) => org !== 'TILED_FULL' || !TILED_FULL_FALSE_POSITIVES.includes(e));
      assert.deepEqual(unexpected, [], v.output);

      const source0 = join(series, 'wsi-000000.dcm');
      assert.equal(await dcmdumpValue(seg, '0008,0016'), '=SegmentationStorage');
      assert.equal(await dcmdumpValue(seg, '0062,0001'), 'BINARY');
      assert.equal(await dcmdumpValue(seg, '0020,9311'), org);
      for (const tag of ['0020,000d', '0010,0020']) assert.equal(await dcmdumpValue(seg, tag), await dcmdumpValue(source0, tag), tag);
      assert.equal(await dcmdumpValue(seg, '0048,0006'), String(summary.modelScale.width));
      assert.equal(await dcmdumpValue(seg, '0048,0007'), String(summary.modelScale.height));
      assert.notEqual(await dcmdumpValue(seg, '0020,000e'), await dcmdumpValue(source0, '0020,000e'), 'a new series');

      const back = await readDicomSeg(seg, NAMES);
      const png = await sharp(out).extractChannel(0).raw().toBuffer();
      const full = await resizeLabels(back.labels, back.width, back.height, src.width, src.height);
      assert.ok(Buffer.from(full).equals(png), `${org}: the SEG's label map is the PNG's`);

      const doc = JSON.parse(readFileSync(geojson, 'utf8'));
      const fromGeo = await geoJsonToLabels(doc, back.width, back.height, NAMES, { scale: [back.width / src.width, back.height / src.height] });
      assert.ok(Buffer.from(fromGeo).equals(Buffer.from(back.labels)), 'the GeoJSON reads back to the same label map');
      assert.ok(statSync(overlay).size > 0);
    }
  });
});
