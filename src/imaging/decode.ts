import sharp, { type Metadata } from 'sharp';
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

/**
 * Decodes PNG, JPEG, TIFF (first page) or WebP bytes to 8-bit RGB: alpha flattened onto white (glass),
 * greyscale and CMYK converted to sRGB, EXIF orientation applied so the mask lines up with what a viewer shows.
 * Throws only InvalidImageError for bad input.
 */
/** Accepted formats by their magic bytes, so the common case needs one sharp pipeline rather than two. */
function sniffFormat(b: Uint8Array): (typeof ACCEPTED_FORMATS)[number] | undefined {
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return 'png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b.length >= 4 && ((b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a && b[3] === 0) || (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && b[3] === 0x2a))) return 'tiff';
  if (b.length >= 12 && b[0] === 0x52 && b[1] === 0x49 && b[2] === 0x46 && b[3] === 0x46 && b[8] === 0x57 && b[9] === 0x45 && b[10] === 0x42 && b[11] === 0x50) return 'webp';
  return undefined;
}

/**
 * PNG fast path: plain 8-bit PNGs (the usual lossless tile) decode with node's zlib, without sharp's per-call
 * setup, which costs more than the decode itself at tile sizes. Anything unusual goes through sharp.
 */
function decodePngFast(bytes: Uint8Array, maxPixels: number, alloc?: (length: number) => Uint8Array): RgbImage | undefined {
  if (bytes.length < 24) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(16) * view.getUint32(20) > maxPixels) return undefined;
  const png = decodePlainPng(bytes, alloc);
  if (!png) return undefined;
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

/**
 * Reads the header (no pixels) to say why bytes were refused: not an image, an unsupported format, or too many
 * pixels. Returns normally only when the header is acceptable.
 */
async function checkHeader(bytes: Uint8Array, maxPixels: number): Promise<string> {
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    const msg = errMessage(err);
    if (/unsupported image format/i.test(msg)) throw new InvalidImageError('not an image (unrecognised format)');
    throw new InvalidImageError(`not a readable image: ${msg}`);
  }
  const format = meta.format as string | undefined;
  if (!format || !(ACCEPTED_FORMATS as readonly string[]).includes(format)) {
    throw new InvalidImageError(`unsupported format ${format ?? 'unknown'} (accepted: ${ACCEPTED_FORMATS.join(', ')})`);
  }
  const { width, height } = meta;
  if (!width || !height) throw new InvalidImageError(`${format} image has no dimensions`);
  const pixels = width * height;
  if (pixels > maxPixels) {
    throw new PixelLimitError(
      `image is ${width}x${height} = ${pixels.toPrecision(2).replace('e+', 'e')} pixels, over the limit of ${maxPixels}`,
    );
  }
  return format;
}

/**
 * Decodes PNG, JPEG, TIFF (first page) or WebP bytes to 8-bit RGB: alpha flattened onto white (glass),
 * greyscale and CMYK converted to sRGB, EXIF orientation applied so the mask lines up with what a viewer shows.
 * Throws only InvalidImageError for bad input. Decompression bombs stop at sharp's limitInputPixels, which reads
 * the header before any pixel.
 */
export async function decodeImage(
  bytes: Uint8Array,
  /** maxSyncPixels: larger PNGs skip the synchronous fast path and decode in sharp's threads (event loop stays free). */
  limits: { maxPixels: number; maxSyncPixels?: number },
  /** Where plain PNGs decode to (the server passes its buffer pool). */
  alloc?: (length: number) => Uint8Array,
): Promise<RgbImage> {
  if (bytes.length === 0) throw new InvalidImageError('not an image: empty input');
  const maxPixels = Math.floor(limits.maxPixels);
  if (!(maxPixels > 0)) throw new RangeError(`maxPixels must be a positive number, got ${limits.maxPixels}`);

  const format = sniffFormat(bytes) ?? (await checkHeader(bytes, maxPixels));
  const plain = format === 'png' ? decodePngFast(bytes, Math.min(maxPixels, limits.maxSyncPixels ?? Infinity), alloc) : undefined;
  if (plain) return plain;
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: maxPixels, failOn: 'error' })
      .autoOrient()
      .flatten({ background: WHITE })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
  } catch (err) {
    // Over the pixel limit, or a header that lies about its format: let the header say which.
    await checkHeader(bytes, maxPixels);
    throw new InvalidImageError(`truncated or corrupt ${format.toUpperCase()}: ${errMessage(err)}`);
  }
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
