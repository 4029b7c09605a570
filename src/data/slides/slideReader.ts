// Whole-slide images through sharp/libvips: Aperio SVS with JPEG tiles, pyramidal TIFF, PNG and JPEG.
// Formats this build cannot decode (JPEG-2000 SVS, DICOM WSI) fail up front with what to install or convert.
import { open } from 'node:fs/promises';
import { extname } from 'node:path';
import sharp from 'sharp';
import type { RgbImage } from '../../imaging/decode.js';

export class UnsupportedSlideError extends Error {
  override name = 'UnsupportedSlideError';
}

export interface SlideLevel {
  /** sharp/libvips page index. */
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
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 128);
    return bytesRead === 4 && b.toString('latin1') === 'DICM';
  } finally {
    await fh.close();
  }
}

/** Opens a slide and lists its pyramid; throws UnsupportedSlideError naming the format and the way out. */
export async function openSlide(path: string): Promise<SlideInfo> {
  try {
    if (extname(path).toLowerCase() === '.dcm' || (await isDicom(path))) {
      throw new UnsupportedSlideError(
        `${path}: DICOM whole-slide images cannot be read by sharp/libvips. Convert the slide to a tiled pyramidal TIFF ` +
          '(e.g. QuPath "Export images > OME TIFF", or `vips tiffsave slide.dcm slide.tif --tile --pyramid --compression jpeg` ' +
          'with a libvips built against OpenSlide 4, which reads DICOM)',
      );
    }
    const facts = await readTiffFacts(path);
    if (facts?.compression !== undefined && JPEG2000_COMPRESSIONS.has(facts.compression)) {
      throw new UnsupportedSlideError(
        `${path}: JPEG-2000 compressed TIFF/SVS (compression ${facts.compression}) cannot be decoded: this sharp/libvips ` +
          'build has no JPEG-2000 (OpenJPEG) support. Convert it to a JPEG-tiled pyramidal TIFF, e.g. with QuPath ' +
          '("Export images > OME TIFF") or `vips tiffsave slide.svs slide.tif --tile --pyramid --compression jpeg` using a ' +
          'libvips built with OpenJPEG, or install such a libvips and rebuild sharp against it',
      );
    }
    const mppMatch = facts?.description?.match(/\bMPP\s*=\s*([0-9.]+)/);
    const mpp = mppMatch ? Number(mppMatch[1]) : null;
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
    return { path, width: meta.width, height: meta.height, mpp: mpp !== null && mpp > 0 ? mpp : null, levels };
  } catch (err) {
    if (err instanceof UnsupportedSlideError) throw err;
    throw new Error(`cannot read slide ${path}: ${(err as Error).message}`);
  }
}

/**
 * The whole slide as RGB at width x height (usually level 0 scaled to the model's mpp). Reads the smallest pyramid
 * level that is still at least that large, then resamples; alpha is flattened onto white (glass).
 */
export async function readSlideRgb(slide: SlideInfo, width: number, height: number): Promise<RgbImage> {
  const usable = slide.levels.filter((l) => l.width >= width && l.height >= height);
  const level = usable.at(-1) ?? slide.levels[0]!;
  try {
    const { data, info } = await sharp(slide.path, { page: level.page, limitInputPixels: false })
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
