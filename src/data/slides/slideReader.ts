// Whole-slide images behind one interface with region reads: Aperio SVS with JPEG tiles, pyramidal TIFF, PNG and
// JPEG through sharp/libvips; JPEG 2000 SVS/TIFF (33003/33005) tile by tile through geotiff + OpenJPEG; DICOM WSI
// (a file, or a folder holding a series) through dicomWsi.ts. segment, evaluate, prepare and the trainer all open
// slides here, so each reads every format.
import { open, stat } from 'node:fs/promises';
import { extname } from 'node:path';
import sharp from 'sharp';
import type { RgbImage } from '../../imaging/decode.js';
import { openDicomWsi, type DicomWsi } from '../../dicom/dicomWsi.js';
import { isDicomFile } from '../../dicom/dicomFile.js';
import { openDicomWebSeries, type DicomWebFrameSource, type DicomWebTarget } from '../../dicom/dicomweb.js';
import { openJpeg2000Tiff, readJpeg2000TiffRegion, type Jpeg2000Tiff } from './tiffJpeg2000.js';

export class UnsupportedSlideError extends Error {
  override name = 'UnsupportedSlideError';
}

export type SlideFormat = 'tiff' | 'tiff-jpeg2000' | 'dicom';

export interface SlideRegion {
  left: number;
  top: number;
  width: number;
  height: number;
}

export interface SlideLevel {
  /** TIFF page index (sharp/libvips or geotiff); the level's index for DICOM. */
  page: number;
  width: number;
  height: number;
  /** Level-0 width / this level's width. */
  downsample: number;
}

export interface SlideInfo {
  path: string;
  /** Level-0 size. */
  width: number;
  height: number;
  /** Level-0 microns per pixel when the file says (Aperio "MPP = "), else null. */
  mpp: number | null;
  /** Pages that are downsampled copies of level 0, level 0 first (SVS label and macro images are left out). */
  levels: SlideLevel[];
  format: SlideFormat;
  /** The DICOM series (identity for a SEG; frames for region reads) when format is 'dicom'. */
  dicom?: DicomWsi;
  /** @internal geotiff pages when format is 'tiff-jpeg2000'. */
  jpeg2000?: Jpeg2000Tiff;
}

export type { RgbImage } from '../../imaging/decode.js';

/** TIFF compression codes of JPEG 2000: Aperio's two (33003 YCbCr, 33005 RGB) and the registered one. */
const JPEG2000_COMPRESSIONS = new Set([33003, 33005, 34712]);
/** Page aspect ratios within this of level 0 count as pyramid levels (SVS label/macro pages differ). */
const LEVEL_ASPECT_TOLERANCE = 0.02;

interface TiffFacts {
  compression?: number;
  description?: string;
}

/** Reads the compression and ImageDescription tags of the first IFD (classic TIFF or BigTIFF). */
async function readTiffFacts(path: string): Promise<TiffFacts | null> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(16);
    await fh.read(head, 0, 16, 0);
    const order = head.toString('latin1', 0, 2);
    if (order !== 'II' && order !== 'MM') return null;
    const le = order === 'II';
    const u16 = (b: Buffer, o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b: Buffer, o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const u64 = (b: Buffer, o: number) => Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
    const magic = u16(head, 2);
    if (magic !== 42 && magic !== 43) return null;
    const big = magic === 43;
    const ifdOffset = big ? u64(head, 8) : u32(head, 4);
    const countBuf = Buffer.alloc(8);
    await fh.read(countBuf, 0, big ? 8 : 2, ifdOffset);
    const count = big ? u64(countBuf, 0) : u16(countBuf, 0);
    const entrySize = big ? 20 : 12;
    const entries = Buffer.alloc(Math.min(count, 4096) * entrySize);
    await fh.read(entries, 0, entries.length, ifdOffset + (big ? 8 : 2));
    const facts: TiffFacts = {};
    for (let i = 0; i < entries.length / entrySize; i++) {
      const o = i * entrySize;
      const tag = u16(entries, o);
      if (tag === 259) facts.compression = u16(entries, o + (big ? 12 : 8));
      if (tag === 270) {
        const n = big ? u64(entries, o + 4) : u32(entries, o + 4);
        const inline = n <= (big ? 8 : 4);
        const text = Buffer.alloc(Math.min(n, 65536));
        if (inline) entries.copy(text, 0, o + (big ? 12 : 8), o + (big ? 12 : 8) + n);
        else await fh.read(text, 0, text.length, big ? u64(entries, o + 12) : u32(entries, o + 8));
        facts.description = text.toString('latin1').replace(/\0+$/, '');
      }
    }
    return facts;
  } finally {
    await fh.close();
  }
}

async function isDicom(path: string): Promise<boolean> {
  if ((await stat(path)).isDirectory()) return true;
  return extname(path).toLowerCase() === '.dcm' || (await isDicomFile(path));
}

/** Opens a slide (a file, or a folder holding a DICOM WSI series) and lists its pyramid. */
export async function openSlide(path: string): Promise<SlideInfo> {
  try {
    if (await isDicom(path)) {
      return dicomSlide(path, await openDicomWsi(path));
    }
    const facts = await readTiffFacts(path);
    const mppMatch = facts?.description?.match(/\bMPP\s*=\s*([0-9.]+)/);
    const mpp = mppMatch ? Number(mppMatch[1]) : null;
    if (facts?.compression !== undefined && JPEG2000_COMPRESSIONS.has(facts.compression)) return await openJpeg2000Slide(path, mpp);
    const meta = await sharp(path, { limitInputPixels: false }).metadata();
    if (!meta.width || !meta.height) throw new Error('no image size');
    const levels: SlideLevel[] = [{ page: 0, width: meta.width, height: meta.height, downsample: 1 }];
    const aspect = meta.width / meta.height;
    for (let page = 1; page < (meta.pages ?? 1); page++) {
      const m = await sharp(path, { page, limitInputPixels: false }).metadata();
      if (!m.width || !m.height || m.width > meta.width) continue;
      if (Math.abs(m.width / m.height / aspect - 1) > LEVEL_ASPECT_TOLERANCE) continue;
      levels.push({ page, width: m.width, height: m.height, downsample: meta.width / m.width });
    }
    levels.sort((a, b) => a.downsample - b.downsample);
    return { path, width: meta.width, height: meta.height, mpp: mpp !== null && mpp > 0 ? mpp : null, levels, format: 'tiff' };
  } catch (err) {
    if (err instanceof UnsupportedSlideError) throw err;
    throw new Error(`cannot read slide ${path}: ${(err as Error).message}`);
  }
}

function dicomSlide(path: string, dicom: DicomWsi): SlideInfo {
  const levels = dicom.levels.map((l, page) => ({ page, width: l.width, height: l.height, downsample: l.downsample }));
  return { path, width: dicom.width, height: dicom.height, mpp: dicom.mpp, levels, format: 'dicom', dicom };
}

/** A slide in a series on a DICOMweb server (WADO-RS); `source` counts what was fetched. */
export async function openDicomWebSlide(target: DicomWebTarget): Promise<SlideInfo & { source: DicomWebFrameSource }> {
  const { url, dicom, source } = await openDicomWebSeries(target);
  return { ...dicomSlide(url, dicom), source };
}

/** JPEG 2000 TIFF/SVS: pyramid pages are the JPEG 2000 pages of level 0's aspect (thumbnail/label/macro left out). */
async function openJpeg2000Slide(path: string, mpp: number | null): Promise<SlideInfo> {
  const { fromFile } = await import('geotiff');
  const tiff = await fromFile(path);
  const count = await tiff.getImageCount();
  const pages: { page: number; width: number; height: number }[] = [];
  for (let page = 0; page < count; page++) {
    const im = await tiff.getImage(page);
    const compression = Number(im.getFileDirectory().getValue('Compression'));
    if (!JPEG2000_COMPRESSIONS.has(compression)) continue;
    const p = { page, width: im.getWidth(), height: im.getHeight() };
    if (pages.length > 0 && Math.abs(p.width / p.height / (pages[0]!.width / pages[0]!.height) - 1) > LEVEL_ASPECT_TOLERANCE) continue;
    pages.push(p);
  }
  pages.sort((a, b) => b.width - a.width);
  const w0 = pages[0]!.width;
  const jpeg2000 = await openJpeg2000Tiff(path, pages.map((p) => p.page));
  const levels = pages.map((p) => ({ ...p, downsample: w0 / p.width }));
  return { path, width: w0, height: pages[0]!.height, mpp: mpp !== null && mpp > 0 ? mpp : null, levels, format: 'tiff-jpeg2000', jpeg2000 };
}

/** RGB of a region of one pyramid level (index into slide.levels), in that level's pixels. */
export async function readSlideRegion(slide: SlideInfo, level: number, r: SlideRegion): Promise<RgbImage> {
  const L = slide.levels[level];
  if (!L) throw new RangeError(`level ${level} of ${slide.levels.length}`);
  if (r.left < 0 || r.top < 0 || r.width < 1 || r.height < 1 || r.left + r.width > L.width || r.top + r.height > L.height) {
    throw new RangeError(`region ${r.width}x${r.height} at ${r.left},${r.top} is outside level ${level} (${L.width}x${L.height})`);
  }
  try {
    if (slide.format === 'dicom') return await slide.dicom!.readRegion(level, r);
    if (slide.format === 'tiff-jpeg2000') return await readJpeg2000TiffRegion(slide.jpeg2000!, level, r);
    const { data, info } = await sharp(slide.path, { page: L.page, limitInputPixels: false })
      .extract(r)
      .flatten({ background: '#ffffff' })
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (err) {
    throw new Error(`cannot read slide ${slide.path}: ${(err as Error).message}`);
  }
}

/** The pyramid level to read for an image of width x height: the coarsest one still at least that large. */
export function levelFor(slide: SlideInfo, width: number, height: number): number {
  let best = 0;
  slide.levels.forEach((l, i) => {
    if (l.width >= width && l.height >= height && l.width <= slide.levels[best]!.width) best = i;
  });
  return best;
}

/**
 * The whole slide as RGB at width x height (usually level 0 scaled to the model's mpp). Reads the smallest pyramid
 * level that is still at least that large, then resamples; alpha is flattened onto white (glass).
 */
export async function readSlideRgb(slide: SlideInfo, width: number, height: number): Promise<RgbImage> {
  const level = levelFor(slide, width, height);
  const L = slide.levels[level]!;
  try {
    if (slide.format !== 'tiff') {
      const img = await readSlideRegion(slide, level, { left: 0, top: 0, width: L.width, height: L.height });
      if (img.width === width && img.height === height) return img;
      const { data, info } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 }, limitInputPixels: false })
        .resize(width, height, { fit: 'fill' })
        .raw()
        .toBuffer({ resolveWithObject: true });
      return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
    }
    const { data, info } = await sharp(slide.path, { page: L.page, limitInputPixels: false })
      .flatten({ background: '#ffffff' })
      .resize(width, height, { fit: 'fill' })
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`expected 3 channels, got ${info.channels}`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (err) {
    throw new Error(`cannot read slide ${slide.path}: ${(err as Error).message}`);
  }
}
