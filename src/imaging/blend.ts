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
  }

  /**
   * Adds one window's mask logits, C x m x m starting at `offset`, where m divides the window side: the decoder's
   * m x m output (seg16) stands for its nearest upsampling to size x size, as in the model (Table A.1). The softmax
   * is taken once per decoder cell rather than once per pixel ((size/m)^2 fewer exps), and each pixel's sum comes
   * out bit for bit as blending the upsampled logits would make it. Pixels outside the tile are ignored.
   */
  add(win: Window, maskLogits: Float32Array, offset = 0, m = this.size): void {
    const { width, height, numClasses: nc, size, acc, weight } = this;
    if (!Number.isInteger(m) || m < 1 || size % m !== 0) throw new RangeError(`mask side ${m} does not divide the window side ${size}`);
    const plane = m * m;
    if (offset < 0 || offset + nc * plane > maskLogits.length) {
      throw new RangeError(`mask logits of ${maskLogits.length} floats cannot hold ${nc}x${m}x${m} at ${offset}`);
    }
    const { exps: cells, sums } = this.cellExps(maskLogits, offset, m);
    const f = size / m;
    const npx = width * height;
    const y0 = Math.max(0, win.y);
    const y1 = Math.min(height, win.y + size);
    const x0 = Math.max(0, win.x);
    const x1 = Math.min(width, win.x + size);
    const wv = this.rowScratch.length >= f ? this.rowScratch : (this.rowScratch = new Float64Array(f));
    const cx0 = Math.floor((x0 - win.x) / f);
    const cx1 = Math.ceil((x1 - win.x) / f);
    for (let y = y0; y < y1; y++) {
      const wy = weight[y - win.y]!;
      const rowCell = Math.floor((y - win.y) / f) * m;
      const row = y * width;
      // Cell by cell: a cell's exps are loaded once for its f pixels of this row.
      for (let cx = cx0; cx < cx1; cx++) {
        const xs = Math.max(x0, win.x + cx * f);
        const xe = Math.min(x1, win.x + (cx + 1) * f);
        const cell = rowCell + cx;
        const sum = sums[cell]!;
        // The same arithmetic, in the same order, as a softmax taken at each pixel: weight over the sum, times exp.
        for (let x = xs; x < xe; x++) wv[x - xs] = (wy * weight[x - win.x]!) / sum;
        for (let c = 0; c < nc; c++) {
          const e = cells[c * plane + cell]!;
          const base = c * npx + row;
          for (let x = xs; x < xe; x++) acc[base + x]! += wv[x - xs]! * e;
        }
      }
    }
  }

  private rowScratch = new Float64Array(0);
  private cellScratch = new Float64Array(0);
  private sumScratch = new Float64Array(0);

  /** exp(logit - max) over classes of each of the m x m cells (C planes), and each cell's sum of them. */
  private cellExps(maskLogits: Float32Array, offset: number, m: number): { exps: Float64Array; sums: Float64Array } {
    const nc = this.numClasses;
    const plane = m * m;
    if (this.cellScratch.length < nc * plane) this.cellScratch = new Float64Array(nc * plane);
    if (this.sumScratch.length < plane) this.sumScratch = new Float64Array(plane);
    const out = this.cellScratch;
    const sums = this.sumScratch;
    for (let i = 0; i < plane; i++) {
      const src = offset + i;
      let max = -Infinity;
      for (let c = 0; c < nc; c++) {
        const v = maskLogits[src + c * plane]!;
        if (v > max) max = v;
      }
      let sum = 0;
      for (let c = 0; c < nc; c++) {
        const e = Math.exp(maskLogits[src + c * plane]! - max);
        out[c * plane + i] = e;
        sum += e;
      }
      sums[i] = sum;
    }
    return { exps: out, sums };
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
