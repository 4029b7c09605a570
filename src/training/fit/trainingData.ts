// Training items in memory: prepared patches read back, stain-normalised, selected per setting (Sec. 3.3) and
// batched as model input and loss targets.
import { join } from 'node:path';
import sharp from 'sharp';
import { INPUT_SIZE } from '../../util/constants.js';
import { writeNhwcInput } from '../../imaging/modelInput.js';
import { estimateStain, StainEstimationError, StainEstimator, stainNormalizer, type StainParams } from '../../imaging/macenko.js';
import { tissueMask } from '../../imaging/tissue.js';
import { readLabelMap } from '../../data/labels/labelMap.js';
import type { PatchIndex } from '../prepare/patchPreparation.js';
import { Rng } from '../../util/rng.js';

/** Sec. 3.3: S = segmentation patches only; S+C = s% seg + (100 - s)% cls; S+C* = s% seg + 100% cls. */
export const SETTINGS = ['S', 'S+C', 'S+C*'] as const;
export type Setting = (typeof SETTINGS)[number];

const PIXELS = INPUT_SIZE * INPUT_SIZE;

export interface SegItem {
  readonly rgb: Uint8Array;
  readonly mask: Uint8Array;
  readonly slide: string;
}

export interface ClsItem {
  readonly rgb: Uint8Array;
  readonly classIndex: number;
}

export interface TrainingItems {
  readonly seg: SegItem[];
  readonly cls: ClsItem[];
}

async function readRgb(path: string): Promise<Uint8Array> {
  const { data, info } = await sharp(path).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  if (info.width !== INPUT_SIZE || info.height !== INPUT_SIZE || info.channels !== 3) {
    throw new Error(`${path}: expected a ${INPUT_SIZE}x${INPUT_SIZE} RGB patch, got ${info.width}x${info.height}x${info.channels}`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** Reads the training-split patches that preparePatches wrote into `dir` (index.json). */
export async function loadTrainingItems(dir: string, index: PatchIndex): Promise<TrainingItems> {
  const seg: SegItem[] = [];
  for (const p of index.seg.filter((s) => s.split === 'train' || s.split === 'unsplit')) {
    const mask = await readLabelMap(join(dir, p.mask));
    if (mask.width !== INPUT_SIZE || mask.height !== INPUT_SIZE) throw new Error(`${p.mask}: expected ${INPUT_SIZE}x${INPUT_SIZE}`);
    seg.push({ rgb: await readRgb(join(dir, p.image)), mask: mask.labels, slide: p.slide });
  }
  const cls: ClsItem[] = [];
  for (const p of index.cls) cls.push({ rgb: await readRgb(join(dir, p.image)), classIndex: p.classIndex });
  return { seg, cls };
}

/**
 * Macenko normalisation of every training patch to `reference` (Sec. 2.3). A segmentation patch's source stain is
 * its slide's, estimated from all of that slide's patches (as serving estimates one stain per slide); a class patch
 * is its own source. A patch whose stain cannot be estimated (too little tissue) stays as it is.
 */
export function normalizeTrainingItems(items: TrainingItems, reference: StainParams): { items: TrainingItems; unnormalized: number } {
  let unnormalized = 0;
  const bySlide = new Map<string, SegItem[]>();
  for (const s of items.seg) bySlide.set(s.slide, [...(bySlide.get(s.slide) ?? []), s]);
  const slideNormalizers = new Map<string, ((rgb: Uint8Array) => Uint8Array) | null>();
  for (const [slide, patches] of bySlide) {
    const est = new StainEstimator();
    for (const p of patches) est.add(p.rgb, PIXELS, tissueMask(p.rgb, INPUT_SIZE, INPUT_SIZE));
    const params = est.tryParams();
    const f = params ? stainNormalizer(params, reference) : null;
    slideNormalizers.set(slide, f ? (rgb) => f(rgb, PIXELS) : null);
  }
  const seg = items.seg.map((s) => {
    const f = slideNormalizers.get(s.slide);
    if (!f) unnormalized += 1;
    return f ? { ...s, rgb: f(s.rgb) } : s;
  });
  const cls = items.cls.map((c) => {
    try {
      const params = estimateStain(c.rgb, PIXELS, { mask: tissueMask(c.rgb, INPUT_SIZE, INPUT_SIZE) });
      return { ...c, rgb: stainNormalizer(params, reference)(c.rgb, PIXELS) };
    } catch (err) {
      if (!(err instanceof StainEstimationError)) throw err;
      unnormalized += 1;
      return c;
    }
  });
  return { items: { seg, cls }, unnormalized };
}

/** A 32-bit seed for an independent stream, from the run seed and a label (FNV-1a over both). */
export function streamSeed(seed: number, label: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  h = Math.imul(h, 0x01000193) >>> 0;
  for (const ch of `${seed}:${label}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h >>> 0;
}

/** Seeded Fisher-Yates permutation of 0..n-1. */
export function permutation(n: number, seed: number): number[] {
  const rng = new Rng(seed);
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** round(percent% of n), but at least 1 when percent > 0 and n > 0 (a tiny set must not lose its only patch). */
export function fractionCount(n: number, percent: number): number {
  if (percent <= 0 || n === 0) return 0;
  return Math.min(n, Math.max(1, Math.round((n * percent) / 100)));
}

export interface Selection {
  /** Indices into TrainingItems.seg, ascending. */
  seg: number[];
  /** Indices into TrainingItems.cls, ascending. */
  cls: number[];
}

/**
 * The patches a run trains on (Sec. 3.3). The s% segmentation subset depends only on the seed and s, so S, S+C and
 * S+C* with one seed share it, as in the paper ("randomly picking the same s% of training data").
 */
export function selectPatches(setting: Setting, segTotal: number, clsTotal: number, segPercent: number, seed: number): Selection {
  if (!(segPercent >= 0 && segPercent <= 100)) throw new Error(`--seg-fraction must be in 0..100 (percent), got ${segPercent}`);
  const seg = permutation(segTotal, streamSeed(seed, 'seg-subset')).slice(0, fractionCount(segTotal, segPercent));
  let cls: number[] = [];
  if (setting === 'S+C') cls = permutation(clsTotal, streamSeed(seed, 'cls-subset')).slice(0, fractionCount(clsTotal, 100 - segPercent));
  else if (setting === 'S+C*') cls = Array.from({ length: clsTotal }, (_, i) => i);
  return { seg: seg.sort((a, b) => a - b), cls: cls.sort((a, b) => a - b) };
}

/** One training example: a segmentation patch (kind 'seg') or a class patch ('cls'), by index. */
export interface ItemRef {
  kind: 'seg' | 'cls';
  index: number;
}

/**
 * The order of epoch `epoch` (0-based): a pure function of (seed, epoch), so the run's only RNG state is the epoch
 * number and a resumed run draws the same batches as an uninterrupted one.
 */
export function epochOrder(selection: Selection, seed: number, epoch: number): ItemRef[] {
  const all: ItemRef[] = [
    ...selection.seg.map((index) => ({ kind: 'seg' as const, index })),
    ...selection.cls.map((index) => ({ kind: 'cls' as const, index })),
  ];
  return permutation(all.length, streamSeed(seed, `epoch-${epoch}`)).map((i) => all[i]!);
}

/** Pixel counts per class over the selected segmentation patches (the class-weight distribution). */
export function pixelCounts(items: TrainingItems, selection: Selection, numClasses: number): number[] {
  const counts = new Array<number>(numClasses).fill(0);
  for (const i of selection.seg) {
    for (const v of items.seg[i]!.mask) {
      if (v >= numClasses) throw new Error(`mask value ${v} but only ${numClasses} classes`);
      counts[v]! += 1;
    }
  }
  return counts;
}

export interface BatchArrays {
  n: number;
  /** [n,128,128,3] model input. */
  x: Float32Array;
  /** [n,128,128,C]: the class weight at each segmentation pixel's true class, else 0 (losses.ts). */
  segTarget: Float32Array;
  /** [n,C]: one-hot for class patches, else 0. */
  clsTarget: Float32Array;
}

export function buildBatch(items: TrainingItems, refs: readonly ItemRef[], weights: readonly number[]): BatchArrays {
  const n = refs.length;
  const c = weights.length;
  const x = new Float32Array(n * PIXELS * 3);
  const segTarget = new Float32Array(n * PIXELS * c);
  const clsTarget = new Float32Array(n * c);
  refs.forEach((ref, b) => {
    if (ref.kind === 'seg') {
      const item = items.seg[ref.index]!;
      writeNhwcInput(item.rgb, x, b * PIXELS * 3);
      const base = b * PIXELS * c;
      for (let i = 0; i < PIXELS; i++) {
        const y = item.mask[i]!;
        segTarget[base + i * c + y] = weights[y]!;
      }
    } else {
      const item = items.cls[ref.index]!;
      writeNhwcInput(item.rgb, x, b * PIXELS * 3);
      clsTarget[b * c + item.classIndex] = 1;
    }
  });
  return { n, x, segTarget, clsTarget };
}
