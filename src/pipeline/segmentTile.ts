import { checkPixelLimit, decodeImage, InvalidImageError, resizeRgb, scaledSize, type RgbImage } from '../imaging/decode.js';
import { labelResampler } from '../imaging/labelResample.js';
import { tissueMaskChunked, tissueMaskInto } from '../imaging/tissue.js';
import { extractWindow, planWindows, WINDOW_OVERLAP } from '../imaging/windows.js';
import { Blender, countClasses } from '../imaging/blend.js';
import { kernelLabelOneWindow } from '../imaging/kernels/pixelKernels.js';
import type { WindowResult } from './batcher.js';
import { BytePool } from './bufferPool.js';
import { Turnstile } from './turnstile.js';
import type { LoadedModel } from './modelRegistry.js';
import type { SlideStain, StainTurn } from './slideStain.js';

/** Relative mpp difference below which a tile is taken at the model's scale as it is. */
const MPP_TOLERANCE = 0.02;

/*
 * Fairness: no synchronous step of a large tile holds the event loop for long, so health checks, metrics and
 * other streams' tiles are served while it is processed. Pixel passes run in steps of CHUNK_PIXELS with a pause
 * (setImmediate) between; tiles up to SYNC_PIXELS take the one-call paths (WebAssembly mask, zlib PNG decode),
 * which are as short. Windows are queued WINDOW_SLICE at a time under the batcher's window bound, and blended
 * BLEND_STEP at a time as their results come in.
 */
const CHUNK_PIXELS = 1 << 17;
const SYNC_PIXELS = 1 << 18;
const WINDOW_SLICE = 16;
const BLEND_STEP = 2;
/** Encoded tiles over this many bytes wait for a CPU turn before their synchronous decode. */
const TURN_BYTES = 64 * 1024;

/** Runs fn over [0, n) in steps of `step`, each after a CPU turn (no wait at all when one step covers it). */
async function inSteps(pause: () => Promise<void>, n: number, step: number, fn: (from: number, to: number) => void): Promise<void> {
  for (let a = 0; a < n; a += step) {
    fn(a, Math.min(n, a + step));
    if (a + step < n) await pause();
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}
function deferred<T>(): Deferred<T> {
  const d = {} as Deferred<T>;
  d.promise = new Promise<T>((res, rej) => ((d.resolve = res), (d.reject = rej)));
  d.promise.catch(() => undefined); // observed by the consumer, or dropped with the tile
  return d;
}

/**
 * The microns per pixel a tile may claim (0 means "at the model's scale"). Brightfield scanners range from about
 * 0.1 um/px (100X) to a few um/px for thumbnails; outside these bounds the value is a mistake, not a scale.
 */
export const MPP_RANGE = { min: 0.01, max: 1000 } as const;

/** Why a tile's mpp cannot be used, or undefined when it can. */
export function mppProblem(mpp: number): string | undefined {
  if (!Number.isFinite(mpp)) return `mpp must be a finite number, got ${mpp}`;
  if (mpp < 0) return `mpp must not be negative, got ${mpp}`;
  if (mpp !== 0 && (mpp < MPP_RANGE.min || mpp > MPP_RANGE.max)) {
    return `mpp must be 0 (tile already at the model's scale) or between ${MPP_RANGE.min} and ${MPP_RANGE.max} microns per pixel, got ${mpp}`;
  }
  return undefined;
}

/** The factor a tile is resampled by to reach the model's scale; 1 when it is taken as it is. */
function tileScale(mpp: number, modelMpp: number): number {
  return mpp > 0 && Math.abs(mpp - modelMpp) / modelMpp > MPP_TOLERANCE ? mpp / modelMpp : 1;
}

export interface TileLimits {
  maxPixels: number;
}

/** Per-stream (per-slide) state: options, and the stain estimate shared by all the slide's tiles. */
export interface StreamContext {
  readonly model: LoadedModel;
  readonly minTissueFraction: number;
  readonly omitMask: boolean;
  /** Undefined when stain normalisation is off or the model has no reference. */
  readonly stain?: SlideStain;
  readonly signal: AbortSignal;
}

/**
 * A tile as the pipeline sees it: encoded image bytes (what a client sends) or decoded RGB (what a local caller
 * that read the slide itself has), and their scale. Ids and places are the caller's.
 */
export type TileInput = {
  /** Microns per pixel; 0 = already at the model's scale. */
  readonly mpp: number;
} & ({ readonly image: Uint8Array; readonly rgb?: undefined } | { readonly rgb: RgbImage; readonly image?: undefined });

export type TileOutcome = 'segmented' | 'background' | 'invalid';

/** What segmenting one tile gives, with nothing of the wire in it. */
export interface TileResult {
  readonly status: TileOutcome;
  /** Why the tile is invalid; '' otherwise. */
  readonly error: string;
  /** The tile's own size (the label map's); 0 for an invalid tile. */
  readonly width: number;
  readonly height: number;
  /**
   * One class index per pixel, width x height, row-major: all 0 for background, empty for invalid. It may be a
   * pooled buffer: valid until release(), which hands it back (calling release is optional; never twice).
   */
  readonly labels: Uint8Array;
  /** Tile-level class probabilities (the classifier's softmax, averaged over windows); one-hot class 0 for background. */
  readonly probabilities: number[];
  /** Share of the tile's pixels in each class. */
  readonly fractions: number[];
  /** Share of the tile that is tissue (App. B.1 mask), at the model's scale. */
  readonly tissueFraction: number;
  /** argmax of probabilities. */
  readonly predictedClass: number;
  /** Longest queue wait and engine time over the tile's windows (0 when the model was not run). */
  readonly timings: { readonly queueSeconds: number; readonly computeSeconds: number };
  release(): void;
}

function softmaxInto(logits: Float32Array, out: Float64Array, weight: number): void {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  const e = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) sum += e[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < logits.length; i++) out[i] += (weight * e[i]) / sum;
}

// Scratch for the one-window labels: used synchronously, so one of each serves every tile.
let smallLabels = new Uint8Array(0);
let smallBest = new Float32Array(0);

/**
 * The labels of a tile that is exactly one window, in one pass: argmax over the C planes of the m x m decoder
 * logits (before the model's nearest upsampling: they commute, and this is (n/m)^2 less work), nearest upsampling
 * to n x n, glass pixels (tissue 0) set to class 0, and the pixel count per class added to `counts`.
 */
export function labelOneWindow(logits: Float32Array, C: number, m: number, n: number, tissue: Uint8Array, out: Uint8Array, counts: Float64Array): void {
  const plane = m * m;
  if (n % m !== 0) throw new RangeError(`mask side ${m} does not divide the window side ${n}`);
  if (logits.length < C * plane || tissue.length < n * n || out.length < n * n || counts.length < C) {
    throw new RangeError('labelOneWindow: buffer too small');
  }
  if (!kernelLabelOneWindow(logits, C, m, n, tissue, out, counts)) labelOneWindowTs(logits, C, m, n, tissue, out, counts);
}

/** labelOneWindow in TypeScript: the kernel's reference (tested against it). */
export function labelOneWindowTs(logits: Float32Array, C: number, m: number, n: number, tissue: Uint8Array, out: Uint8Array, counts: Float64Array): void {
  const plane = m * m;
  if (smallLabels.length < plane) {
    smallLabels = new Uint8Array(plane);
    smallBest = new Float32Array(plane);
  }
  const lab = smallLabels;
  const best = smallBest;
  for (let i = 0; i < plane; i++) {
    best[i] = logits[i]!;
    lab[i] = 0;
  }
  for (let c = 1; c < C; c++) {
    const off = c * plane;
    for (let i = 0; i < plane; i++) {
      const v = logits[off + i]!;
      if (v > best[i]!) {
        best[i] = v;
        lab[i] = c;
      }
    }
  }
  const f = n / m;
  for (let y = 0; y < n; y++) {
    const row = Math.floor(y / f) * m;
    const o = y * n;
    for (let cx = 0; cx < m; cx++) {
      const label = lab[row + cx]!;
      // tissue is 0 or 1, so label & -t is the label on tissue and 0 on glass.
      let onTissue = 0;
      for (let x = o + cx * f, end = x + f; x < end; x++) {
        const t = tissue[x]!;
        out[x] = label & -t;
        onTissue += t;
      }
      counts[label]! += onTissue;
      counts[0]! += f - onTissue;
    }
  }
}

/**
 * The tile path, wire-free: encoded bytes in, a TileResult out. It owns the byte pool its tiles' buffers
 * (decoded, tissue mask, normalised, labels) come from, shared by every tile it segments.
 */
export class TilePipeline {
  readonly buffers = new BytePool();
  /** CPU turns shared by every tile of this pipeline: one synchronous step per turn of the event loop. */
  readonly cpu = new Turnstile();

  constructor(readonly limits: TileLimits) {}

  /**
   * One tile, from encoded bytes (or RGB) to its labels. Bad input (an unreadable or corrupt image, a bad mpp, a tile
   * over the pixel limit as decoded or after resampling) becomes an INVALID result saying why; what throws is a bug
   * or a stopped pipeline.
   */
  async segmentTile(tile: TileInput, ctx: StreamContext): Promise<TileResult> {
    // The tile's turn in its slide's stain estimate is taken now, in arrival order (see SlideStain).
    const turn = ctx.stain?.turn();
    try {
      const mppError = mppProblem(tile.mpp);
      if (mppError) return invalidResult(mppError);
      if (tile.image?.length === 0) return invalidResult('image is empty');
      // Every pooled buffer this tile takes goes back when it is done (or fails), except the labels it returns.
      const taken: Uint8Array[] = [];
      const take = (length: number): Uint8Array => {
        const b = this.buffers.acquire(length);
        taken.push(b);
        return b;
      };
      // Until its windows are queued, this tile tells the batcher that more work is coming (Batcher.prepare).
      const queued = ctx.model.batcher.prepare();
      let result: TileResult | undefined;
      try {
        result = await this.segment(tile, ctx, take, queued, turn);
        return result;
      } finally {
        queued();
        for (const b of taken) if (b !== result?.labels) this.buffers.release(b);
      }
    } finally {
      turn?.skip();
    }
  }

  private result(fields: Omit<TileResult, 'release'>): TileResult {
    let released = false;
    return {
      ...fields,
      release: () => {
        if (released) return;
        released = true;
        this.buffers.release(fields.labels);
      },
    };
  }

  private async segment(
    tile: TileInput,
    ctx: StreamContext,
    take: (length: number) => Uint8Array,
    queued: () => void,
    turn: StainTurn | undefined,
  ): Promise<TileResult> {
    const pause = this.cpu.turn;
    const { model } = ctx;
    const manifest = model.manifest;
    const C = manifest.classes.length;
    const scale = tileScale(tile.mpp, manifest.mpp);
    let img: RgbImage;
    try {
      // The pixel limit holds on the decoded size and on the size after resampling, both checked before decoding.
      if (tile.rgb) {
        img = tile.rgb;
        const px = img.width * img.height;
        checkPixelLimit(img, this.limits.maxPixels, scale);
        if (!(img.width >= 1 && img.height >= 1 && img.data.length === px * 3)) throw new InvalidImageError(`RGB tile of ${img.data.length} bytes is not ${img.width}x${img.height}x3`);
      } else {
        // A large image's synchronous decode waits for a CPU turn; one-window tiles are too small to wait for.
        if (tile.image.length > TURN_BYTES) await pause();
        img = await decodeImage(tile.image, { maxPixels: this.limits.maxPixels, scale, maxSyncPixels: SYNC_PIXELS }, take);
      }
    } catch (err) {
      if (err instanceof InvalidImageError) return invalidResult(err.message);
      throw err;
    }
    const { width, height } = img;
    const size = manifest.inputSize;

    // Bring the tile to the model's scale (1.25X in the paper); the labels go back to the tile's own size.
    let work = img;
    if (scale !== 1) {
      const target = scaledSize(width, height, scale);
      work = await resizeRgb(img, target.width, target.height);
    }
    const pixels = work.width * work.height;
    // Larger than one window: each synchronous pixel pass below waits for a CPU turn (Turnstile).
    const multi = pixels > size * size;
    if (multi) await pause();
    const tissue = take(pixels);
    const tissueCount =
      pixels > SYNC_PIXELS ? await tissueMaskChunked(work.data, work.width, work.height, tissue, pause, CHUNK_PIXELS) : tissueMaskInto(work.data, work.width, work.height, tissue);
    const tissueFraction = tissueCount / pixels;

    if (tissueFraction < ctx.minTissueFraction) {
      // Background answers at once, without the model: all class 0, and a one-hot class 0 for the classifier.
      turn?.skip();
      const probs = new Array<number>(C).fill(0);
      probs[0] = 1;
      return this.result({
        status: 'background',
        error: '',
        width,
        height,
        labels: take(width * height).fill(0),
        probabilities: probs,
        fractions: probs.slice(),
        tissueFraction,
        predictedClass: 0,
        timings: { queueSeconds: 0, computeSeconds: 0 },
      });
    }

    let rgb = work.data;
    if (multi) await pause();
    const normalize = await turn?.sample(rgb, pixels, tissue, pause, CHUNK_PIXELS);
    if (normalize) {
      const out = take(pixels * 3);
      await inSteps(pause, pixels, CHUNK_PIXELS, (a, b) => normalize(rgb.subarray(a * 3, b * 3), b - a, out.subarray(a * 3, b * 3)));
      rgb = out;
    }
    const normalized: RgbImage = { data: rgb, width: work.width, height: work.height };

    const windows = planWindows(work.width, work.height, size, WINDOW_OVERLAP);
    const n = windows.length;
    // The common case: a tile of exactly one window goes as it is (the batcher copies it), and is not blended.
    const oneWindow = n === 1 && work.width === size && work.height === size;
    // Producer: windows go to the batcher in slices, each waiting for room under the queue bound.
    const slots = windows.map(() => deferred<WindowResult>());
    let stop = false;
    void (async () => {
      let i = 0;
      try {
        while (i < n && !stop) {
          const k = await model.batcher.reserve(Math.min(WINDOW_SLICE, n - i), ctx.signal);
          if (stop) {
            model.batcher.unreserve(k);
            break;
          }
          for (const end = i + k; i < end; i++) {
            const data = oneWindow ? normalized.data : extractWindow(normalized, windows[i]!, size);
            model.batcher.enqueue(data, ctx.signal, { reserved: true }).then(slots[i]!.resolve, slots[i]!.reject);
          }
          if (i < n) await pause();
        }
      } catch (err) {
        for (; i < n; i++) slots[i]!.reject(err);
      } finally {
        queued();
      }
    })();

    // Consumer: results are folded in window order as they come.
    const probs = new Float64Array(C);
    let queueSeconds = 0;
    let computeSeconds = 0;
    const note = (r: WindowResult) => {
      softmaxInto(r.cls, probs, 1 / n);
      queueSeconds = Math.max(queueSeconds, r.queueSeconds);
      computeSeconds = Math.max(computeSeconds, r.computeSeconds);
    };
    let labels: Uint8Array;
    let counts: Float64Array | undefined;
    try {
      if (oneWindow) {
        const r = await slots[0]!.promise;
        note(r);
        labels = take(size * size);
        counts = new Float64Array(C);
        labelOneWindow(r.mask, C, r.maskSize, size, tissue, labels, counts);
      } else {
        const blender = new Blender(work.width, work.height, C, size);
        for (let i = 0; i < n; i++) {
          const r = await slots[i]!.promise;
          if (i % BLEND_STEP === 0) await pause();
          note(r);
          blender.add(windows[i]!, r.mask, 0, r.maskSize);
        }
        const blended = take(pixels);
        await pause();
        // Glass is background whatever the model says: the tissue mask is the paper's own foreground rule (App. B.1).
        await inSteps(pause, pixels, CHUNK_PIXELS, (a, b) => {
          blender.labelsInto(blended, a, b);
          for (let p = a; p < b; p++) if (tissue[p] === 0) blended[p] = 0;
        });
        labels = blended;
      }
    } catch (err) {
      stop = true;
      throw err;
    }
    if (work.width !== width || work.height !== height) {
      const resized = take(width * height);
      const rows = Math.max(1, Math.floor(CHUNK_PIXELS / width));
      const resample = labelResampler(labels, work.width, work.height, resized, width, height);
      await inSteps(pause, height, rows, resample);
      labels = resized;
      counts = undefined;
    }
    if (!counts) {
      const c = new Float64Array(C);
      await inSteps(pause, labels.length, CHUNK_PIXELS, (a, b) => countClasses(labels, c, a, b));
      counts = c;
    }
    const total = width * height;
    const fractions = Array.from(counts, (c) => c / total);

    let predicted = 0;
    for (let c = 1; c < C; c++) if (probs[c] > probs[predicted]) predicted = c;
    return this.result({
      status: 'segmented',
      error: '',
      width,
      height,
      labels,
      probabilities: Array.from(probs),
      fractions,
      tissueFraction,
      predictedClass: predicted,
      timings: { queueSeconds, computeSeconds },
    });
  }
}

/** An INVALID result: the reason, and no labels. */
export function invalidResult(error: string): TileResult {
  return {
    status: 'invalid',
    error,
    width: 0,
    height: 0,
    labels: new Uint8Array(0),
    probabilities: [],
    fractions: [],
    tissueFraction: 0,
    predictedClass: 0,
    timings: { queueSeconds: 0, computeSeconds: 0 },
    release: () => undefined,
  };
}
