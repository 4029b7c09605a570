import { TileStatus, type SegmentTilesResponse, type Tile } from '../proto/gen/histoseg/v1/segmentation.js';
import { decodeImage, encodeMaskPng, InvalidImageError, PixelLimitError, resizeLabels, resizeRgb, type RgbImage } from '../preprocess/decode.js';
import { tissueMask } from '../preprocess/tissue.js';
import { Blender, classFractions, extractWindow, planWindows, WINDOW_OVERLAP } from '../preprocess/tiling.js';
import type { LoadedModel } from './modelRegistry.js';
import type { SlideStain } from './slideStain.js';

/** Relative mpp difference below which a tile is taken at the model's scale as it is. */
const MPP_TOLERANCE = 0.02;

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

export class TooManyPixelsError extends Error {}

/** A background answer's mask PNG depends only on its size: cache a few. */
const zeroMasks = new Map<string, Promise<Buffer>>();
function zeroMaskPng(width: number, height: number): Promise<Buffer> {
  const k = `${width}x${height}`;
  let p = zeroMasks.get(k);
  if (!p) {
    if (zeroMasks.size >= 64) zeroMasks.delete(zeroMasks.keys().next().value!);
    p = encodeMaskPng(new Uint8Array(width * height), width, height);
    zeroMasks.set(k, p);
  }
  return p;
}

function softmaxInto(logits: Float32Array, out: Float64Array, weight: number): void {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  const e = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) sum += e[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < logits.length; i++) out[i] += (weight * e[i]) / sum;
}

/** Per-pixel argmax over C planes of `plane` logits each (NCHW of one item). */
function argmaxPlanes(logits: Float32Array, C: number, plane: number): Uint8Array {
  const out = new Uint8Array(plane);
  const best = logits.slice(0, plane);
  for (let c = 1; c < C; c++) {
    const off = c * plane;
    for (let i = 0; i < plane; i++) {
      const v = logits[off + i];
      if (v > best[i]) {
        best[i] = v;
        out[i] = c;
      }
    }
  }
  return out;
}

/** Nearest upsampling of an m x m label map to n x n (n a multiple of m), as the model's own 16 -> 128 step. */
function upsampleNearest(labels: Uint8Array, m: number, n: number): Uint8Array {
  if (m === n) return labels;
  const f = n / m;
  const out = new Uint8Array(n * n);
  for (let y = 0; y < n; y++) {
    const row = ((y / f) | 0) * m;
    for (let x = 0; x < n; x++) out[y * n + x] = labels[row + ((x / f) | 0)];
  }
  return out;
}

/** The same for C planes of logits, for windows that are blended. */
function upsampleLogits(logits: Float32Array, C: number, m: number, n: number): Float32Array {
  if (m === n) return logits;
  const f = n / m;
  const out = new Float32Array(C * n * n);
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < n; y++) {
      const row = c * m * m + ((y / f) | 0) * m;
      for (let x = 0; x < n; x++) out[c * n * n + y * n + x] = logits[row + ((x / f) | 0)];
    }
  }
  return out;
}

function base(tile: Tile, model: LoadedModel): SegmentTilesResponse {
  return {
    tileId: tile.tileId,
    status: TileStatus.TILE_STATUS_UNSPECIFIED,
    mask: Buffer.alloc(0),
    classProbabilities: [],
    classFractions: [],
    tissueFraction: 0,
    modelVersion: model.manifest.version,
    modelName: model.manifest.name,
    error: '',
    x: tile.x,
    y: tile.y,
    width: 0,
    height: 0,
    predictedClass: 0,
    queueSeconds: 0,
    computeSeconds: 0,
  };
}

export function invalid(tile: Tile, model: LoadedModel, error: string): SegmentTilesResponse {
  return { ...base(tile, model), status: TileStatus.TILE_STATUS_INVALID, error };
}

/**
 * One tile, from encoded bytes to its answer. Bad images become INVALID answers; only a tile over the pixel
 * limit throws (TooManyPixelsError), because the stream then ends with RESOURCE_EXHAUSTED.
 */
export async function processTile(tile: Tile, ctx: StreamContext, limits: TileLimits): Promise<SegmentTilesResponse> {
  const { model } = ctx;
  const manifest = model.manifest;
  if (!Number.isFinite(tile.mpp) || tile.mpp < 0) return invalid(tile, model, `mpp must be a finite number >= 0, got ${tile.mpp}`);
  if (tile.image.length === 0) return invalid(tile, model, 'image is empty');

  let img: RgbImage;
  try {
    img = await decodeImage(tile.image, { maxPixels: limits.maxPixels });
  } catch (err) {
    if (err instanceof PixelLimitError) throw new TooManyPixelsError(err.message);
    if (err instanceof InvalidImageError) return invalid(tile, model, err.message);
    throw err;
  }
  const { width, height } = img;
  const C = manifest.classes.length;
  const size = manifest.inputSize;

  // Bring the tile to the model's scale (1.25X in the paper); the mask goes back to the tile's own size.
  let work = img;
  if (tile.mpp > 0 && Math.abs(tile.mpp - manifest.mpp) / manifest.mpp > MPP_TOLERANCE) {
    const s = tile.mpp / manifest.mpp;
    work = await resizeRgb(img, Math.max(1, Math.round(width * s)), Math.max(1, Math.round(height * s)));
  }
  const pixels = work.width * work.height;
  const tissue = tissueMask(work.data, work.width, work.height);
  let tissueCount = 0;
  for (let i = 0; i < tissue.length; i++) tissueCount += tissue[i];
  const tissueFraction = tissueCount / pixels;

  if (tissueFraction < ctx.minTissueFraction) {
    // Background answers at once, without the model: all class 0, and a one-hot class 0 for the classifier.
    const probs = new Array<number>(C).fill(0);
    probs[0] = 1;
    return {
      ...base(tile, model),
      status: TileStatus.TILE_STATUS_BACKGROUND,
      mask: ctx.omitMask ? Buffer.alloc(0) : await zeroMaskPng(width, height),
      classProbabilities: probs,
      classFractions: probs.slice(),
      tissueFraction,
      width,
      height,
    };
  }

  let rgb = work.data;
  if (ctx.stain) rgb = ctx.stain.normalize(rgb, pixels, tissue);
  const normalized: RgbImage = { data: rgb, width: work.width, height: work.height };

  const windows = planWindows(work.width, work.height, size, WINDOW_OVERLAP);
  // The common case: a tile of exactly one window goes as it is (the batcher copies it), and is not blended.
  const oneWindow = windows.length === 1 && work.width === size && work.height === size;
  const results = await Promise.all(
    windows.map((win) => model.batcher.enqueue(oneWindow ? normalized.data : extractWindow(normalized, win, size), ctx.signal)),
  );

  const probs = new Float64Array(C);
  let queueSeconds = 0;
  let computeSeconds = 0;
  for (let i = 0; i < windows.length; i++) {
    softmaxInto(results[i].cls, probs, 1 / windows.length);
    queueSeconds = Math.max(queueSeconds, results[i].queueSeconds);
    computeSeconds = Math.max(computeSeconds, results[i].computeSeconds);
  }
  let labels: Uint8Array;
  if (oneWindow) {
    // argmax before the nearest upsampling: they commute, and this is 64x less work.
    const m = results[0].maskSize;
    labels = upsampleNearest(argmaxPlanes(results[0].mask, C, m * m), m, size);
  } else {
    const blender = new Blender(work.width, work.height, C, size);
    for (let i = 0; i < windows.length; i++) blender.add(windows[i], upsampleLogits(results[i].mask, C, results[i].maskSize, size), 0);
    labels = blender.labels();
  }
  // Glass is background whatever the model says: the tissue mask is the paper's own foreground rule (App. B.1).
  for (let i = 0; i < labels.length; i++) if (tissue[i] === 0) labels[i] = 0;
  if (work.width !== width || work.height !== height) labels = await resizeLabels(labels, work.width, work.height, width, height);

  let predicted = 0;
  for (let c = 1; c < C; c++) if (probs[c] > probs[predicted]) predicted = c;
  return {
    ...base(tile, model),
    status: TileStatus.TILE_STATUS_SEGMENTED,
    mask: ctx.omitMask ? Buffer.alloc(0) : await encodeMaskPng(labels, width, height),
    classProbabilities: Array.from(probs),
    classFractions: classFractions(labels, C),
    tissueFraction,
    width,
    height,
    predictedClass: predicted,
    queueSeconds,
    computeSeconds,
  };
}
