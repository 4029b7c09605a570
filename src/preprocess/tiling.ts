import { IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE } from '../model/constants.js';
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

/** (v / 255 - mean) / std per channel, as a 256-entry table each. */
const NORM_LUT = [0, 1, 2].map((c) => {
  const t = new Float32Array(256);
  for (let v = 0; v < 256; v++) t[v] = (v / 255 - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]!;
  return t;
}) as [Float32Array, Float32Array, Float32Array];

/** Writes one RGB window as three ImageNet-normalised NCHW planes (R, G, B) at `offset` of a batch buffer. */
export function writeModelInput(rgbWindow: Uint8Array, size: number, out: Float32Array, offset: number): void {
  const n = size * size;
  if (rgbWindow.length !== n * 3) throw new RangeError(`window has ${rgbWindow.length} bytes, expected ${size}x${size}x3`);
  if (offset < 0 || offset + 3 * n > out.length) {
    throw new RangeError(`batch buffer of ${out.length} floats cannot hold a window at offset ${offset}`);
  }
  const [lr, lg, lb] = NORM_LUT;
  const g0 = offset + n;
  const b0 = offset + 2 * n;
  for (let i = 0, j = 0; i < n; i++, j += 3) {
    out[offset + i] = lr[rgbWindow[j]!]!;
    out[g0 + i] = lg[rgbWindow[j + 1]!]!;
    out[b0 + i] = lb[rgbWindow[j + 2]!]!;
  }
}

/**
 * Blends the per-pixel class probabilities of overlapping windows into one label map. Each window's softmax is
 * weighted by a separable raised cosine, sin^2(pi (i + 0.5) / size), which is largest at the window centre and
 * small but never 0 at its edge, so a pixel trusts the window that sees it with the most context and seams vanish.
 */
export class Blender {
  private readonly acc: Float32Array;
  private readonly weight: Float32Array;
  private readonly probs: Float64Array;

  constructor(
    readonly width: number,
    readonly height: number,
    readonly numClasses: number,
    readonly size = INPUT_SIZE,
  ) {
    if (numClasses < 1 || numClasses > 256) throw new RangeError(`numClasses must be 1..256, got ${numClasses}`);
    this.acc = new Float32Array(numClasses * width * height);
    this.weight = new Float32Array(size);
    for (let i = 0; i < size; i++) this.weight[i] = Math.sin((Math.PI * (i + 0.5)) / size) ** 2;
    this.probs = new Float64Array(numClasses);
  }

  /** Adds one window's mask logits (C x size x size, starting at `offset`); pixels outside the tile are ignored. */
  add(win: Window, maskLogits: Float32Array, offset = 0): void {
    const { width, height, numClasses: nc, size, acc, weight, probs } = this;
    const plane = size * size;
    if (offset < 0 || offset + nc * plane > maskLogits.length) {
      throw new RangeError(`mask logits of ${maskLogits.length} floats cannot hold ${nc}x${size}x${size} at ${offset}`);
    }
    const npx = width * height;
    const y0 = Math.max(0, win.y);
    const y1 = Math.min(height, win.y + size);
    const x0 = Math.max(0, win.x);
    const x1 = Math.min(width, win.x + size);
    for (let y = y0; y < y1; y++) {
      const wy = weight[y - win.y]!;
      for (let x = x0; x < x1; x++) {
        const src = offset + (y - win.y) * size + (x - win.x);
        let max = -Infinity;
        for (let c = 0; c < nc; c++) {
          const v = maskLogits[src + c * plane]!;
          if (v > max) max = v;
        }
        let sum = 0;
        for (let c = 0; c < nc; c++) {
          const e = Math.exp(maskLogits[src + c * plane]! - max);
          probs[c] = e;
          sum += e;
        }
        const w = (wy * weight[x - win.x]!) / sum;
        const dst = y * width + x;
        for (let c = 0; c < nc; c++) acc[c * npx + dst]! += w * probs[c]!;
      }
    }
  }

  /** Argmax class per pixel (width * height); ties go to the lower class index. */
  labels(): Uint8Array {
    const { numClasses: nc, acc } = this;
    const npx = this.width * this.height;
    const out = new Uint8Array(npx);
    for (let p = 0; p < npx; p++) {
      let best = 0;
      let bestV = acc[p]!;
      for (let c = 1; c < nc; c++) {
        const v = acc[c * npx + p]!;
        if (v > bestV) {
          bestV = v;
          best = c;
        }
      }
      out[p] = best;
    }
    return out;
  }

  /** Fraction of the tile's pixels in each class. */
  classFractions(labels: Uint8Array): number[] {
    return classFractions(labels, this.numClasses);
  }
}

/** Share of the label map in each class, in class order. */
export function classFractions(labels: Uint8Array, numClasses: number): number[] {
  const counts = new Float64Array(numClasses);
  for (let p = 0; p < labels.length; p++) counts[labels[p]!]!++;
  return Array.from(counts, (c) => c / labels.length);
}
