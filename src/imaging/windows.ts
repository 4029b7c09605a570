import { INPUT_SIZE } from '../util/constants.js';
import type { RgbImage } from './decode.js';

/** Overlap of neighbouring model windows inside a large tile, so every seam is blended. */
export const WINDOW_OVERLAP = 32;
/** Value used outside the image: white, i.e. glass. */
export const PAD_VALUE = 255;

/** Top-left corner of one model window, in tile pixels. */
export interface Window {
  x: number;
  y: number;
}

function axisStarts(length: number, size: number, stride: number): number[] {
  if (length <= size) return [0];
  const starts: number[] = [];
  for (let p = 0; p + size < length; p += stride) starts.push(p);
  const last = length - size;
  if (starts[starts.length - 1] !== last) starts.push(last);
  return starts;
}

/**
 * Windows of `size` covering a width x height tile: a step of size - overlap, the last row and column moved back
 * to end at the edge. A tile smaller than `size` on an axis gets one window there, padded (see extractWindow).
 */
export function planWindows(width: number, height: number, size = INPUT_SIZE, overlap = WINDOW_OVERLAP): Window[] {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`tile size must be positive integers, got ${width}x${height}`);
  }
  if (!Number.isInteger(size) || !Number.isInteger(overlap) || size < 1 || overlap < 0 || overlap >= size) {
    throw new RangeError(`window size ${size} and overlap ${overlap} must be integers with 0 <= overlap < size`);
  }
  const xs = axisStarts(width, size, size - overlap);
  const ys = axisStarts(height, size, size - overlap);
  const out: Window[] = [];
  for (const y of ys) for (const x of xs) out.push({ x, y });
  return out;
}

/** One size x size RGB window of the image, white outside it. */
export function extractWindow(img: RgbImage, win: Window, size = INPUT_SIZE): Uint8Array {
  const out = new Uint8Array(size * size * 3).fill(PAD_VALUE);
  const x0 = Math.max(0, win.x);
  const x1 = Math.min(img.width, win.x + size);
  const y0 = Math.max(0, win.y);
  const y1 = Math.min(img.height, win.y + size);
  if (x1 <= x0) return out;
  for (let y = y0; y < y1; y++) {
    const src = (y * img.width + x0) * 3;
    out.set(img.data.subarray(src, src + (x1 - x0) * 3), ((y - win.y) * size + (x0 - win.x)) * 3);
  }
  return out;
}

