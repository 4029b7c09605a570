import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { checkJpegScan } from './jpegScan.js';
import { labelResampler } from './labelResample.js';
import { decodePlainPng, encodeGreyPng } from './png.js';

/** An 8-bit RGB image, channels interleaved (RGBRGB...), rows top to bottom. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Bad input bytes: the message says what was wrong, in words a client can act on. */
export class InvalidImageError extends Error {
  override readonly name: string = 'InvalidImageError';
}

/** The image has more pixels than the configured limit (a decompression bomb, or just too big). */
export class PixelLimitError extends InvalidImageError {
  override readonly name = 'PixelLimitError';
}

/** Formats a tile may come in; anything else sharp can read (GIF, SVG, HEIF, PDF...) is refused. */
export const ACCEPTED_FORMATS = ['png', 'jpeg', 'tiff', 'webp'] as const;

const WHITE = { r: 255, g: 255, b: 255 };

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]! : String(err);
}

/** Accepted formats by their magic bytes, so the common case needs one sharp pipeline rather than two. */
function sniffFormat(b: Uint8Array): (typeof ACCEPTED_FORMATS)[number] | undefined {
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return 'png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b.length >= 4 && ((b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a && b[3] === 0) || (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && b[3] === 0x2a))) return 'tiff';
  if (b.length >= 12 && b[0] === 0x52 && b[1] === 0x49 && b[2] === 0x46 && b[3] === 0x46 && b[8] === 0x57 && b[9] === 0x45 && b[10] === 0x42 && b[11] === 0x50) return 'webp';
  return undefined;
}

/**
 * PNG fast path: plain 8-bit PNGs (the usual lossless tile) decode with node's zlib (decodePlainPng), without
 * sharp's per-call setup, which costs more than the decode itself at tile sizes. Anything unusual goes through
 * sharp. This widens what it decoded to RGB.
 */
function toRgb(png: { data: Uint8Array; width: number; height: number; channels: number }): RgbImage {
  const { channels: ch, data, width, height } = png;
  if (ch === 3) return { data, width, height };
  const n = width * height;
  const out = new Uint8Array(n * 3);
  const grey = ch <= 2;
  const alpha = ch === 2 || ch === 4;
  for (let i = 0; i < n; i++) {
    const src = i * ch;
    const a = alpha ? data[src + ch - 1] : 255;
    for (let c = 0; c < 3; c++) {
      const v = data[src + (grey ? 0 : c)];
      // Flatten onto white (glass), as the sharp path does.
      out[i * 3 + c] = alpha ? Math.round((v * a + 255 * (255 - a)) / 255) : v;
    }
  }
  return { data: out, width, height };
}

/** An image's size as its header gives it: what the decoder will allocate. */
export interface ImageHeader {
  format: (typeof ACCEPTED_FORMATS)[number];
  width: number;
  height: number;
}

/**
 * A PNG's size from its chunk list, read strictly: the PNG spec (ISO/IEC 15948, 5.6) puts IHDR first and allows
 * one; a decoder that takes the last IHDR, or skips unknown chunks to find one, would decode a size nobody
 * checked. Only chunk headers are read, never pixel data.
 */
export function pngHeader(bytes: Uint8Array): { width: number; height: number } {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 8 + 12 + 13) throw new InvalidImageError('truncated PNG: no IHDR chunk');
  if (b.readUInt32BE(8) !== 13 || b.toString('latin1', 12, 16) !== 'IHDR') {
    throw new InvalidImageError(`PNG's first chunk is ${JSON.stringify(b.toString('latin1', 12, 16))}, not a 13-byte IHDR (the PNG spec puts IHDR first)`);
  }
  const width = b.readUInt32BE(16);
  const height = b.readUInt32BE(20);
  if (!width || !height) throw new InvalidImageError(`PNG IHDR says ${width}x${height}`);
  for (let p = 8 + 12 + 13; p + 8 <= b.length; ) {
    const type = b.toString('latin1', p + 4, p + 8);
    if (type === 'IHDR') throw new InvalidImageError('PNG has a second IHDR chunk (the PNG spec allows one)');
    if (type === 'IEND') break;
    p += 12 + b.readUInt32BE(p);
  }
  return { width, height };
}

function sharpFailure(err: unknown): InvalidImageError {
  const msg = errMessage(err);
  if (/unsupported image format/i.test(msg)) return new InvalidImageError('not an image (unrecognised format)');
  return new InvalidImageError(`not a readable image: ${msg}`);
}

/**
 * Reads the header (no pixels): the format, which must be an accepted one, and the size the decoder will produce.
 * PNG sizes come from the strict chunk walk above, the rest from sharp's header read, done by the same libvips
 * loader that decodes them.
 */
export async function readHeader(bytes: Uint8Array): Promise<ImageHeader> {
  if (bytes.length === 0) throw new InvalidImageError('not an image: empty input');
  if (sniffFormat(bytes) === 'png') return { format: 'png', ...pngHeader(bytes) };
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw sharpFailure(err);
  }
  const format = meta.format as string | undefined;
  if (!format || !(ACCEPTED_FORMATS as readonly string[]).includes(format)) {
    throw new InvalidImageError(`unsupported format ${format ?? 'unknown'} (accepted: ${ACCEPTED_FORMATS.join(', ')})`);
  }
  if (format === 'png') return { format: 'png', ...pngHeader(bytes) };
  const { width, height } = meta;
  if (!width || !height) throw new InvalidImageError(`${format} image has no dimensions`);
  return { format: format as ImageHeader['format'], width, height };
}

function pixelsText(width: number, height: number): string {
  const pixels = width * height;
  return `${width}x${height} = ${pixels.toPrecision(2).replace('e+', 'e')} pixels`;
}

/** The size of an image resampled by `scale` (a tile's mpp over the model's): what the pipeline will allocate. */
export function scaledSize(width: number, height: number, scale: number): { width: number; height: number } {
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

/**
 * Holds a size to the pixel limit: as decoded, and after resampling by `scale` when one is given. Throws
 * PixelLimitError saying which.
 */
export function checkPixelLimit(size: { width: number; height: number }, maxPixels: number, scale?: number): void {
  const { width, height } = size;
  if (width * height > maxPixels) {
    throw new PixelLimitError(`image is ${pixelsText(width, height)}, over the limit of ${maxPixels}`);
  }
  if (scale !== undefined && scale !== 1) {
    const s = scaledSize(width, height, scale);
    if (s.width * s.height > maxPixels) {
      throw new PixelLimitError(
        `image is ${width}x${height}; resampled to the model's scale (x${scale.toPrecision(3)}) it would be ` +
          `${pixelsText(s.width, s.height)}, over the limit of ${maxPixels}`,
      );
    }
  }
}

/**
 * Decodes PNG, JPEG, TIFF (first page) or WebP bytes to 8-bit RGB: alpha flattened onto white (glass),
 * greyscale and CMYK converted to sRGB, EXIF orientation applied so the mask lines up with what a viewer shows.
 * Throws only InvalidImageError for bad input (PixelLimitError, one kind of it, for too many pixels).
 *
 * The pixel limit is checked on the header before any pixel is decoded, on the size the decoder will produce
 * (and, given `scale`, on the size after resampling); sharp also gets it as limitInputPixels. Corrupt data is
 * refused: sharp runs with failOn 'warning', so whatever libjpeg, libspng, libtiff or libwebp notices (bad Huffman
 * codes, premature ends, CRC errors) fails the decode; baseline JPEG scans are also walked by checkJpegScan, which
 * catches scan damage libjpeg decodes without a warning.
 */
export async function decodeImage(
  bytes: Uint8Array,
  /**
   * scale: the resampling factor the caller will apply (see checkPixelLimit). maxSyncPixels: larger PNGs skip the
   * synchronous zlib path and decode in sharp's threads, so the event loop stays free.
   */
  limits: { maxPixels: number; scale?: number; maxSyncPixels?: number },
  /** Where plain PNGs decode to (the server passes its buffer pool). */
  alloc?: (length: number) => Uint8Array,
): Promise<RgbImage> {
  if (bytes.length === 0) throw new InvalidImageError('not an image: empty input');
  const maxPixels = Math.floor(limits.maxPixels);
  if (!(maxPixels > 0)) throw new RangeError(`maxPixels must be a positive number, got ${limits.maxPixels}`);

  const header = await readHeader(bytes);
  checkPixelLimit(header, maxPixels, limits.scale);
  const { format } = header;
  const sync = header.width * header.height <= (limits.maxSyncPixels ?? Infinity);
  const plain = format === 'png' && sync ? decodePlainPng(bytes, alloc) : undefined;
  if (plain) return toRgb(plain);
  if (format === 'jpeg') {
    const problem = await checkJpegScan(bytes);
    if (problem) throw new InvalidImageError(`truncated or corrupt JPEG: ${problem}`);
  }
  let decoded: { data: Buffer; info: OutputInfo };
  try {
    decoded = await sharp(bytes, { limitInputPixels: maxPixels, failOn: 'warning' })
      .autoOrient()
      .flatten({ background: WHITE })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new InvalidImageError(`truncated or corrupt ${format.toUpperCase()}: ${errMessage(err)}`);
  }
  const { data, info } = decoded;
  if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
  // The header said otherwise: refuse rather than trust either.
  checkPixelLimit(info, maxPixels);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

function checkRgb(img: RgbImage): void {
  if (img.data.length !== img.width * img.height * 3) {
    throw new RangeError(`RGB buffer has ${img.data.length} bytes, expected ${img.width}x${img.height}x3`);
  }
}

function checkSize(width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`target size must be positive integers, got ${width}x${height}`);
  }
}

/**
 * Resamples an RGB image (e.g. a tile whose mpp differs from the model's). libvips box-shrinks by the integer
 * part of the factor and finishes with a linear (triangle) kernel: area averaging on downscale, no ringing.
 */
export async function resizeRgb(img: RgbImage, width: number, height: number): Promise<RgbImage> {
  checkRgb(img);
  checkSize(width, height);
  if (width === img.width && height === img.height) return { data: img.data.slice(), width, height };
  const { data, info } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: 'linear' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

/**
 * Nearest-neighbour resampling of a label map (pixel centres aligned: source index floor((x + 0.5) * w / newW)).
 * Hand-written rather than sharp: a label must never be blended, and the centre convention must be exact so an
 * integer upscale maps every source pixel to a full block.
 */
export async function resizeLabels(
  labels: Uint8Array,
  w: number,
  h: number,
  newW: number,
  newH: number,
): Promise<Uint8Array> {
  if (labels.length !== w * h) throw new RangeError(`label buffer has ${labels.length} bytes, expected ${w}x${h}`);
  checkSize(newW, newH);
  const out = new Uint8Array(newW * newH);
  labelResampler(labels, w, h, out, newW, newH)(0, newH);
  return out;
}

/** 8-bit single-channel PNG holding one class index per pixel. */
export async function encodeMaskPng(labels: Uint8Array, width: number, height: number): Promise<Buffer> {
  checkSize(width, height);
  if (labels.length !== width * height) {
    throw new RangeError(`label buffer has ${labels.length} bytes, expected ${width}x${height}`);
  }
  return encodeGreyPng(labels, width, height);
}
