import { INPUT_SIZE } from '../util/constants.js';
import type { Window } from './windows.js';

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
    const out = new Uint8Array(this.width * this.height);
    this.labelsInto(out);
    return out;
  }

  /** labels() for pixels from..to-1 (row-major) into out, so a large tile's labels can be made in steps. */
  labelsInto(out: Uint8Array, from = 0, to = this.width * this.height): void {
    const { numClasses: nc, acc } = this;
    const npx = this.width * this.height;
    if (out.length < npx || from < 0 || to > npx) throw new RangeError(`labelsInto: ${from}..${to} of ${npx} pixels into ${out.length}`);
    for (let p = from; p < to; p++) {
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
  }

  /** Fraction of the tile's pixels in each class. */
  classFractions(labels: Uint8Array): number[] {
    return classFractions(labels, this.numClasses);
  }
}

/** Share of the label map in each class, in class order. */
export function classFractions(labels: Uint8Array, numClasses: number): number[] {
  const counts = new Float64Array(numClasses);
  countClasses(labels, counts);
  return Array.from(counts, (c) => c / labels.length);
}

/** Adds the pixels of each class among labels[from..to) to counts. */
export function countClasses(labels: Uint8Array, counts: Float64Array, from = 0, to = labels.length): void {
  for (let p = from; p < to; p++) counts[labels[p]!]!++;
}
