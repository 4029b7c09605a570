/**
 * Macenko et al. 2009 stain normalisation ("A method for normalizing histology slides for quantitative analysis"),
 * as the paper applies it against one reference image from the training set (Sec. 2.3). Defaults follow the
 * common reference implementations (torchstain, staintools).
 */
import quickselect from 'quickselect';
import { kernelStainMap } from './kernels/pixelKernels.js';

/** H and E optical-density unit vectors (rows: H, E; columns: R, G, B OD) and their 99th-percentile concentrations. */
export interface StainParams {
  stainMatrix: number[][];
  maxConcentrations: number[];
}

/** Transmitted light intensity of glass; 240 as in Macenko's and torchstain's code (not 255). */
export const MACENKO_IO = 240;
/** Pixels with an OD below this in any channel are treated as background and left out (Macenko 2009). */
export const MACENKO_BETA = 0.15;
/** Stain vectors sit at the alpha and (100 - alpha) percentiles of the angle in the OD plane (Macenko 2009). */
export const MACENKO_ALPHA = 1;
/** Percentile of each stain's concentration used as its maximum. */
export const CONCENTRATION_PERCENTILE = 99;
/** Fewest tissue pixels a stain estimate is made from. */
export const MIN_STAIN_PIXELS = 1_000;
/** Tissue pixels a StainEstimator collects before it freezes the slide's stain. */
export const STAIN_SAMPLE_PIXELS = 20_000;
/** The StainEstimator keeps every k-th tissue pixel, so the sample spreads over several tiles. */
export const STAIN_SAMPLE_STRIDE = 4;
/** H and E vectors closer than this are one stain, not two. */
const MIN_STAIN_ANGLE_DEG = 1;

export class StainEstimationError extends Error {
  override readonly name = 'StainEstimationError';
}

export interface StainEstimateOptions {
  io?: number;
  beta?: number;
  alpha?: number;
  minPixels?: number;
  /** Only pixels where mask is non-zero are used (e.g. tissueMask's output). */
  mask?: Uint8Array;
}

/** OD = -ln((I + 1) / Io) for I = 0..255. */
function odTable(io: number, clampAtZero: boolean): Float64Array {
  const t = new Float64Array(256);
  for (let i = 0; i < 256; i++) {
    const od = -Math.log((i + 1) / io);
    t[i] = clampAtZero && od < 0 ? 0 : od;
  }
  return t;
}

/**
 * Linear-interpolated percentile (numpy's default), by selection rather than a full sort: a slide's stain is
 * estimated several times over its first tiles, and sorting 20k values three times was most of each estimate.
 * Reorders `values`.
 */
function percentile(values: Float64Array, p: number): number {
  const n = values.length;
  const pos = ((n - 1) * p) / 100;
  const lo = Math.floor(pos);
  // quickselect is typed for arrays; it only indexes and swaps, which a typed array does the same way.
  quickselect(values as unknown as number[], lo);
  let next = values[lo]!;
  if (lo + 1 < n) {
    // After selection everything past lo is >= values[lo]: the next order statistic is their minimum.
    next = values[lo + 1]!;
    for (let i = lo + 2; i < n; i++) if (values[i]! < next) next = values[i]!;
  }
  return values[lo]! + (next - values[lo]!) * (pos - lo);
}

/**
 * Eigen-decomposition of a symmetric 3x3 matrix by cyclic Jacobi rotations.
 * Returns eigenvalues in descending order and the matching unit eigenvectors.
 */
export function symmetricEigen3(m: readonly (readonly number[])[]): { values: number[]; vectors: number[][] } {
  const a = [0, 1, 2].map((i) => [0, 1, 2].map((j) => m[i]![j]!));
  const v = [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
  ];
  const pairs = [
    [0, 1],
    [0, 2],
    [1, 2],
  ] as const;
  for (let sweep = 0; sweep < 64; sweep++) {
    const off = a[0]![1]! ** 2 + a[0]![2]! ** 2 + a[1]![2]! ** 2;
    const diag = a[0]![0]! ** 2 + a[1]![1]! ** 2 + a[2]![2]! ** 2;
    if (off <= 1e-30 * diag || off === 0) break;
    for (const [p, q] of pairs) {
      const apq = a[p]![q]!;
      if (apq === 0) continue;
      const theta = (a[q]![q]! - a[p]![p]!) / (2 * apq);
      const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
      const c = 1 / Math.sqrt(t * t + 1);
      const s = t * c;
      for (let k = 0; k < 3; k++) {
        const akp = a[k]![p]!;
        const akq = a[k]![q]!;
        a[k]![p] = c * akp - s * akq;
        a[k]![q] = s * akp + c * akq;
      }
      for (let k = 0; k < 3; k++) {
        const apk = a[p]![k]!;
        const aqk = a[q]![k]!;
        a[p]![k] = c * apk - s * aqk;
        a[q]![k] = s * apk + c * aqk;
      }
      for (let k = 0; k < 3; k++) {
        const vkp = v[k]![p]!;
        const vkq = v[k]![q]!;
        v[k]![p] = c * vkp - s * vkq;
        v[k]![q] = s * vkp + c * vkq;
      }
    }
  }
  const order = [0, 1, 2].sort((i, j) => a[j]![j]! - a[i]![i]!);
  return {
    values: order.map((i) => a[i]![i]!),
    vectors: order.map((i) => [v[0]![i]!, v[1]![i]!, v[2]![i]!]),
  };
}

/** Angle in degrees between two vectors (sign-sensitive: opposite vectors are 180 degrees apart). */
export function angleDegrees(a: readonly number[], b: readonly number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  const cos = dot / Math.sqrt(na * nb);
  return (Math.acos(Math.max(-1, Math.min(1, cos))) * 180) / Math.PI;
}

/** Pseudo-inverse (H^T H)^-1 H^T of the 3x2 matrix whose columns are the two stain vectors; 2x3, row-major. */
function stainPinv(stain: readonly (readonly number[])[]): Float64Array {
  const h = stain[0]!;
  const e = stain[1]!;
  let hh = 0;
  let he = 0;
  let ee = 0;
  for (let k = 0; k < 3; k++) {
    hh += h[k]! * h[k]!;
    he += h[k]! * e[k]!;
    ee += e[k]! * e[k]!;
  }
  const det = hh * ee - he * he;
  if (!(det > 1e-12 * hh * ee)) throw new StainEstimationError('stain matrix is singular: H and E vectors are parallel');
  const p = new Float64Array(6);
  for (let k = 0; k < 3; k++) {
    p[k] = (ee * h[k]! - he * e[k]!) / det;
    p[3 + k] = (hh * e[k]! - he * h[k]!) / det;
  }
  return p;
}

function checkParams(p: StainParams, what: string): void {
  const ok =
    p.stainMatrix.length === 2 &&
    p.stainMatrix.every((r) => r.length === 3 && r.every(Number.isFinite)) &&
    p.maxConcentrations.length === 2 &&
    p.maxConcentrations.every((c) => Number.isFinite(c) && c > 0);
  if (!ok) throw new RangeError(`${what} stain params must be a 2x3 stain matrix and 2 positive max concentrations`);
}

/**
 * Estimates the H and E stain vectors and maximum concentrations of an RGB image (Macenko 2009): OD of the pixels
 * whose OD is >= beta in every channel, the plane of the two largest eigenvectors of their OD covariance, the
 * extreme directions at the alpha / (100 - alpha) angle percentiles in that plane, H = the vector with the larger
 * red OD. Concentrations are least squares on the same pixels (the reference code uses all pixels; using the
 * tissue pixels only keeps a whole image and a StainEstimator's tissue sample comparable).
 */
export function estimateStain(rgb: Uint8Array, pixelCount: number, opts: StainEstimateOptions = {}): StainParams {
  const io = opts.io ?? MACENKO_IO;
  const beta = opts.beta ?? MACENKO_BETA;
  const alpha = opts.alpha ?? MACENKO_ALPHA;
  const minPixels = Math.max(3, opts.minPixels ?? MIN_STAIN_PIXELS);
  const mask = opts.mask;
  if (rgb.length < pixelCount * 3) throw new RangeError(`RGB buffer has ${rgb.length} bytes, expected ${pixelCount}x3`);
  if (mask && mask.length < pixelCount) throw new RangeError(`mask has ${mask.length} bytes, expected ${pixelCount}`);

  const lut = odTable(io, false);
  const od = new Float64Array(pixelCount * 3);
  let m = 0;
  for (let i = 0, j = 0; i < pixelCount; i++, j += 3) {
    if (mask && mask[i] === 0) continue;
    const r = lut[rgb[j]!]!;
    const g = lut[rgb[j + 1]!]!;
    const b = lut[rgb[j + 2]!]!;
    if (r < beta || g < beta || b < beta) continue;
    od[3 * m] = r;
    od[3 * m + 1] = g;
    od[3 * m + 2] = b;
    m++;
  }
  if (m < minPixels) {
    throw new StainEstimationError(
      `too few tissue pixels to estimate the stain: ${m} of ${pixelCount} have OD >= ${beta} in every channel, need ${minPixels}`,
    );
  }

  const mean = [0, 0, 0];
  for (let i = 0; i < m; i++) for (let k = 0; k < 3; k++) mean[k]! += od[3 * i + k]!;
  for (let k = 0; k < 3; k++) mean[k]! /= m;
  const cov = [
    [0, 0, 0],
    [0, 0, 0],
    [0, 0, 0],
  ];
  for (let i = 0; i < m; i++) {
    const d0 = od[3 * i]! - mean[0]!;
    const d1 = od[3 * i + 1]! - mean[1]!;
    const d2 = od[3 * i + 2]! - mean[2]!;
    cov[0]![0]! += d0 * d0;
    cov[0]![1]! += d0 * d1;
    cov[0]![2]! += d0 * d2;
    cov[1]![1]! += d1 * d1;
    cov[1]![2]! += d1 * d2;
    cov[2]![2]! += d2 * d2;
  }
  cov[1]![0] = cov[0]![1]!;
  cov[2]![0] = cov[0]![2]!;
  cov[2]![1] = cov[1]![2]!;

  const { vectors } = symmetricEigen3(cov);
  const e1 = vectors[0]!;
  const e2 = vectors[1]!;
  // Eigenvector signs are arbitrary; point e1 along the (all-positive) OD so angles stay within (-90, 90) degrees.
  if (e1[0]! + e1[1]! + e1[2]! < 0) for (let k = 0; k < 3; k++) e1[k] = -e1[k]!;

  const phi = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    const x = od[3 * i]!;
    const y = od[3 * i + 1]!;
    const z = od[3 * i + 2]!;
    phi[i] = Math.atan2(x * e2[0]! + y * e2[1]! + z * e2[2]!, x * e1[0]! + y * e1[1]! + z * e1[2]!);
  }
  const dir = (a: number): number[] => [0, 1, 2].map((k) => e1[k]! * Math.cos(a) + e2[k]! * Math.sin(a));
  const vMin = dir(percentile(phi, alpha));
  const vMax = dir(percentile(phi, 100 - alpha));
  // Hematoxylin is blue-purple: it absorbs red, so its red OD is the larger one.
  const [h, e] = vMin[0]! > vMax[0]! ? [vMin, vMax] : [vMax, vMin];
  if (angleDegrees(h, e) < MIN_STAIN_ANGLE_DEG) {
    throw new StainEstimationError(`stain estimate is degenerate: H and E vectors are ${angleDegrees(h, e).toFixed(2)} degrees apart`);
  }

  const pinv = stainPinv([h, e]);
  const ch = new Float64Array(m);
  const ce = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    const x = od[3 * i]!;
    const y = od[3 * i + 1]!;
    const z = od[3 * i + 2]!;
    ch[i] = pinv[0]! * x + pinv[1]! * y + pinv[2]! * z;
    ce[i] = pinv[3]! * x + pinv[4]! * y + pinv[5]! * z;
  }
  const maxH = percentile(ch, CONCENTRATION_PERCENTILE);
  const maxE = percentile(ce, CONCENTRATION_PERCENTILE);
  if (!(maxH > 0 && maxE > 0)) {
    throw new StainEstimationError(`stain estimate is degenerate: max concentrations H ${maxH}, E ${maxE}`);
  }
  return { stainMatrix: [h, e], maxConcentrations: [maxH, maxE] };
}

/** Maps RGB pixels from one stain to another, into `out` (a new buffer when omitted); made by stainNormalizer. */
export type StainNormalizer = (rgb: Uint8Array, pixelCount: number, out?: Uint8Array) => Uint8Array;

/**
 * Precomputes the mapping from `source`'s stain to `target`'s once (serving calls it once per slide): OD ->
 * concentrations (pseudo-inverse of the source stain matrix) -> scaled by the ratio of max concentrations -> OD
 * under the target stain -> RGB. OD is clamped at 0, so glass brighter than Io becomes neutral grey Io - 1 rather
 * than a tinted colour. The returned function writes into the buffer it is given, or a new one.
 */
export function stainNormalizer(source: StainParams, target: StainParams, opts: { io?: number } = {}): StainNormalizer {
  checkParams(source, 'source');
  checkParams(target, 'target');
  const io = opts.io ?? MACENKO_IO;
  const pinv = stainPinv(source.stainMatrix);
  const sh = target.maxConcentrations[0]! / source.maxConcentrations[0]!;
  const se = target.maxConcentrations[1]! / source.maxConcentrations[1]!;
  const th = target.stainMatrix[0]!;
  const te = target.stainMatrix[1]!;
  const od = odTable(io, true);
  // M = T^T diag(scale) pinv(S). exp(-(M od)) factors per input channel, so each (output, input) pair is one
  // 256-entry table of exp(-M[o][i] od[v]) and a pixel costs three products per channel, no exp. Io is folded
  // into the red tables, and all nine sit in one array, the layout the kernel reads.
  const lut = new Float64Array(9 * 256);
  for (let o = 0; o < 3; o++) {
    for (let i = 0; i < 3; i++) {
      const coef = th[o]! * sh * pinv[i]! + te[o]! * se * pinv[3 + i]!;
      for (let v = 0; v < 256; v++) lut[(3 * o + i) * 256 + v] = (i === 0 ? io : 1) * Math.exp(-coef * od[v]!);
    }
  }
  return (rgb, pixelCount, into) => {
    if (rgb.length < pixelCount * 3) throw new RangeError(`RGB buffer has ${rgb.length} bytes, expected ${pixelCount}x3`);
    const n3 = pixelCount * 3;
    if (into && into.length < n3) throw new RangeError(`output buffer has ${into.length} bytes, expected ${pixelCount}x3`);
    const target = into ?? new Uint8Array(n3);
    if (!kernelStainMap(rgb, pixelCount, lut, target)) stainMapTs(rgb, pixelCount, lut, target);
    return target;
  };
}

/**
 * The per-pixel step of stainNormalizer with its 9 x 256 table (output channel o's three input tables at 768 o):
 * the WebAssembly kernel's reference, and the path for tiles over its size limit.
 */
export function stainMapTs(rgb: Uint8Array, pixelCount: number, lut: Float64Array, into: Uint8Array): void {
  const n3 = pixelCount * 3;
  // Uint8ClampedArray stores clamp to 0..255 and round, so io*exp(-od) - 1 can be written directly.
  const out = new Uint8ClampedArray(into.buffer, into.byteOffset, n3);
  const L = lut;
  for (let j = 0; j < n3; j += 3) {
    const r = rgb[j]!;
    const g = rgb[j + 1]! + 256;
    const b = rgb[j + 2]! + 512;
    out[j] = L[r]! * L[g]! * L[b]! - 1;
    out[j + 1] = L[768 + r]! * L[768 + g]! * L[768 + b]! - 1;
    out[j + 2] = L[1536 + r]! * L[1536 + g]! * L[1536 + b]! - 1;
  }
}

/** Maps an RGB image stained like `source` to `target`'s stain (see stainNormalizer); returns a new buffer. */
export function normalizeStain(
  rgb: Uint8Array,
  pixelCount: number,
  source: StainParams,
  target: StainParams,
  opts: { io?: number } = {},
): Uint8Array {
  return stainNormalizer(source, target, opts)(rgb, pixelCount);
}

export interface StainEstimatorOptions {
  /** Tissue pixels to collect before the estimate is frozen. */
  samplePixels?: number;
  /** Keep every k-th tissue pixel. */
  stride?: number;
  /** Fewest pixels for a provisional estimate. */
  minPixels?: number;
  io?: number;
  beta?: number;
  alpha?: number;
}

/**
 * Estimates one slide's stain from its first tissue tiles (the stain is a property of the slide, not of a tile).
 *
 * - add() keeps every `stride`-th tissue pixel (mask non-zero if a mask is given, and OD >= beta in every channel),
 *   counting across tiles, until `samplePixels` are held; after that add() is a no-op.
 * - ready: the sample is full. The first params() after that estimates once and the result is frozen for the slide
 *   (an estimate that fails then fails every later call the same way).
 * - Before ready, params() returns a provisional estimate from the pixels collected so far (recomputed when the
 *   sample has grown by half) once at least `minPixels` are held, and throws StainEstimationError before that;
 *   tryParams() returns null instead of throwing. Early tiles of a slide may thus be normalised with a slightly
 *   different estimate than later ones.
 */
export class StainEstimator {
  private readonly capacity: number;
  private readonly stride: number;
  private readonly minPixels: number;
  private readonly estimateOpts: StainEstimateOptions;
  private readonly keep: Uint8Array;
  private readonly samples: Uint8Array;
  private count = 0;
  private seen = 0;
  private frozen: StainParams | StainEstimationError | null = null;
  private provisional: { count: number; result: StainParams | StainEstimationError } | null = null;

  constructor(opts: StainEstimatorOptions = {}) {
    this.capacity = opts.samplePixels ?? STAIN_SAMPLE_PIXELS;
    this.stride = Math.max(1, Math.floor(opts.stride ?? STAIN_SAMPLE_STRIDE));
    this.minPixels = opts.minPixels ?? MIN_STAIN_PIXELS;
    const beta = opts.beta ?? MACENKO_BETA;
    this.estimateOpts = { io: opts.io, beta, alpha: opts.alpha, minPixels: this.minPixels };
    const od = odTable(opts.io ?? MACENKO_IO, false);
    this.keep = new Uint8Array(256).map((_, v) => (od[v]! >= beta ? 1 : 0));
    this.samples = new Uint8Array(this.capacity * 3);
  }

  get ready(): boolean {
    return this.count >= this.capacity;
  }

  /** Tissue pixels held so far. */
  get sampledPixels(): number {
    return this.count;
  }

  add(rgb: Uint8Array, pixelCount: number, tissueMask?: Uint8Array): void {
    if (rgb.length < pixelCount * 3) throw new RangeError(`RGB buffer has ${rgb.length} bytes, expected ${pixelCount}x3`);
    if (tissueMask && tissueMask.length < pixelCount) {
      throw new RangeError(`tissue mask has ${tissueMask.length} bytes, expected ${pixelCount}`);
    }
    const keep = this.keep;
    for (let i = 0, j = 0; i < pixelCount && this.count < this.capacity; i++, j += 3) {
      if (tissueMask && tissueMask[i] === 0) continue;
      if (!(keep[rgb[j]!]! & keep[rgb[j + 1]!]! & keep[rgb[j + 2]!]!)) continue;
      if (this.seen++ % this.stride !== 0) continue;
      const k = 3 * this.count++;
      this.samples[k] = rgb[j]!;
      this.samples[k + 1] = rgb[j + 1]!;
      this.samples[k + 2] = rgb[j + 2]!;
    }
  }

  params(): StainParams {
    const r = this.result();
    if (r instanceof StainEstimationError) throw r;
    return r;
  }

  tryParams(): StainParams | null {
    const r = this.result();
    return r instanceof StainEstimationError ? null : r;
  }

  private result(): StainParams | StainEstimationError {
    if (this.frozen) return this.frozen;
    if (this.ready) {
      this.frozen = this.estimate();
      return this.frozen;
    }
    if (this.count < this.minPixels) {
      return new StainEstimationError(
        `too few tissue pixels to estimate the stain yet: ${this.count} collected, need ${this.minPixels}`,
      );
    }
    // Re-estimate when the sample has grown by half: each estimate costs milliseconds, and tiles come by the hundred.
    if (!this.provisional || this.count >= 1.5 * this.provisional.count) {
      this.provisional = { count: this.count, result: this.estimate() };
    }
    return this.provisional.result;
  }

  private estimate(): StainParams | StainEstimationError {
    try {
      const p = estimateStain(this.samples, this.count, this.estimateOpts);
      p.stainMatrix.forEach((row) => Object.freeze(row));
      Object.freeze(p.stainMatrix);
      Object.freeze(p.maxConcentrations);
      return Object.freeze(p);
    } catch (err) {
      if (err instanceof StainEstimationError) return err;
      throw err;
    }
  }
}
