// The paper's training-patch preparation (Appendix B): foreground mask, centred extraction on each labelled connected
// component, K-means splitting of large components, the 75% foreground rule, and the Macenko reference choice.
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, extname, join, relative } from 'node:path';
import { kmeans } from 'ml-kmeans';
import sharp from 'sharp';
import { encodeLabelMap, type LabelMap } from '../../data/labels/labelMap.js';
import { INPUT_SIZE, MODEL_MPP } from '../../util/constants.js';
import { angleDegrees, estimateStain, type StainParams, StainEstimationError } from '../../imaging/macenko.js';
import { MIN_FOREGROUND_FRACTION, tissueMask } from '../../imaging/tissue.js';
import { type Component, connectedComponents } from '../../imaging/components.js';
import { type Dataset, loadSlideLabels, sizeAtMpp, type Split } from '../../data/datasets/dataset.js';
import { openSlide, readSlideRgb, type RgbImage } from '../../data/slides/slideReader.js';

/** Patch side D (App. B.2: 128 px at 1.25X, the model's input). */
export const PATCH_SIZE = INPUT_SIZE;
/**
 * K-means runs on at most this many of a component's pixels (an even subsample): the centres of a 2-D point cloud
 * barely move, and a large invasive region at 1.25X can hold 10^5-10^6 pixels. Not from the paper.
 */
export const KMEANS_MAX_POINTS = 20_000;
/** Grey level of glass, used to pad patches cut at a slide's edge. */
const GLASS = 255;

/** Number of K-means centres for a component too large for one patch: ceil(1 + area / D^2) (App. B.2). */
export function kmeansClusterCount(area: number, d = PATCH_SIZE): number {
  return Math.ceil(1 + area / (d * d));
}

/**
 * App. B.2 splits a region "larger than our predefined patch size". We read that as: its bounding box does not fit
 * in D x D. (Applied to every component, ceil(1 + area / D^2) would give every small one 2 centres.)
 */
export function isLargeComponent(c: Component, d = PATCH_SIZE): boolean {
  return c.maxX - c.minX + 1 > d || c.maxY - c.minY + 1 > d;
}

/** A patch centre in pixel-corner coordinates, with the component it came from. */
export interface PatchCentre {
  cx: number;
  cy: number;
  classIndex: number;
  componentId: number;
}

/**
 * Centres for every labelled (non-zero) connected component: the bounding-box centre of one that fits in D x D (so
 * the whole component is inside its patch), else the k = ceil(1 + area / D^2) K-means centres of its pixels.
 */
export function componentCentres(labels: Uint8Array, width: number, height: number, seed: number, d = PATCH_SIZE): PatchCentre[] {
  const { ids, components } = connectedComponents(labels, width, height, 0);
  const large = components.filter((c) => isLargeComponent(c, d));
  // One pass collects the (subsampled) pixel coordinates of every large component.
  const points = new Map<number, number[][]>();
  const strides = new Map<number, number>();
  const seen = new Map<number, number>();
  for (const c of large) {
    points.set(c.id, []);
    strides.set(c.id, Math.max(1, Math.ceil(c.area / KMEANS_MAX_POINTS)));
    seen.set(c.id, 0);
  }
  if (large.length > 0) {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const list = id === 0 ? undefined : points.get(id);
      if (!list) continue;
      const n = seen.get(id)!;
      seen.set(id, n + 1);
      if (n % strides.get(id)! === 0) list.push([(i % width) + 0.5, Math.floor(i / width) + 0.5]);
    }
  }
  const centres: PatchCentre[] = [];
  for (const c of components) {
    if (!isLargeComponent(c, d)) {
      centres.push({ cx: (c.minX + c.maxX + 1) / 2, cy: (c.minY + c.maxY + 1) / 2, classIndex: c.classIndex, componentId: c.id });
      continue;
    }
    const data = points.get(c.id)!;
    const k = Math.min(kmeansClusterCount(c.area, d), data.length);
    const result = kmeans(data, k, { seed, initialization: 'kmeans++', maxIterations: 100 });
    for (const [cx, cy] of result.centroids) centres.push({ cx: cx!, cy: cy!, classIndex: c.classIndex, componentId: c.id });
  }
  return centres;
}

/**
 * Top-left corner of the D x D patch centred on (cx, cy). Where the slide is at least D wide (high), a patch that
 * would cross its edge is shifted inside rather than padded with glass, which would cost it foreground.
 */
export function patchOrigin(cx: number, cy: number, width: number, height: number, d = PATCH_SIZE): { x: number; y: number } {
  const place = (c: number, size: number) => {
    const o = Math.round(c - d / 2);
    return size >= d ? Math.min(Math.max(o, 0), size - d) : o;
  };
  return { x: place(cx, width), y: place(cy, height) };
}

/** Share of the D x D window at (x, y) that the foreground mask marks; pixels outside the slide count as background. */
export function foregroundFraction(mask: Uint8Array, width: number, height: number, x: number, y: number, d = PATCH_SIZE): number {
  let n = 0;
  for (let yy = Math.max(0, y); yy < Math.min(height, y + d); yy++) {
    for (let xx = Math.max(0, x); xx < Math.min(width, x + d); xx++) n += mask[yy * width + xx]!;
  }
  return n / (d * d);
}

/** Copies a size x size window of a `channels`-per-pixel raster, padding outside pixels with `pad`. */
export function cutWindow(
  src: Uint8Array,
  width: number,
  height: number,
  channels: number,
  x: number,
  y: number,
  size: number,
  pad: number,
): Uint8Array {
  const out = new Uint8Array(size * size * channels).fill(pad);
  const x0 = Math.max(0, x);
  const x1 = Math.min(width, x + size);
  if (x1 <= x0) return out;
  for (let yy = Math.max(0, y); yy < Math.min(height, y + size); yy++) {
    const from = (yy * width + x0) * channels;
    out.set(src.subarray(from, from + (x1 - x0) * channels), ((yy - y) * size + (x0 - x)) * channels);
  }
  return out;
}

export interface PlannedPatch extends PatchCentre {
  x: number;
  y: number;
  /** Foreground share of the window (App. B.1). */
  foreground: number;
}

/** Plans a slide's segmentation patches and splits them by the 75% foreground rule (App. B.1). */
export function planSegPatches(
  rgb: RgbImage,
  labels: LabelMap,
  seed: number,
  d = PATCH_SIZE,
): { kept: PlannedPatch[]; dropped: PlannedPatch[] } {
  if (rgb.width !== labels.width || rgb.height !== labels.height) {
    throw new Error(`image is ${rgb.width}x${rgb.height} but labels are ${labels.width}x${labels.height}`);
  }
  const { width, height } = rgb;
  const fg = tissueMask(rgb.data, width, height);
  const kept: PlannedPatch[] = [];
  const dropped: PlannedPatch[] = [];
  for (const c of componentCentres(labels.labels, width, height, seed, d)) {
    const { x, y } = patchOrigin(c.cx, c.cy, width, height, d);
    const foreground = foregroundFraction(fg, width, height, x, y, d);
    (foreground < MIN_FOREGROUND_FRACTION ? dropped : kept).push({ ...c, x, y, foreground });
  }
  return { kept, dropped };
}

// ---------------------------------------------------------------------------------------------------------------
// Macenko reference (paper Sec. 2.3: one reference image picked from the training set)

export interface StainCandidate {
  source: string;
  params: StainParams;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function unit(v: number[]): number[] {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

/**
 * The paper names no rule, so: the training image whose H and E vectors are closest (sum of the two angles) to the
 * component-wise median H and E vectors of all training images, i.e. the most typical stain. Ties keep the first.
 */
export function chooseStainReference(candidates: readonly StainCandidate[]): StainCandidate | null {
  if (candidates.length === 0) return null;
  const med = [0, 1].map((row) => unit([0, 1, 2].map((k) => median(candidates.map((c) => c.params.stainMatrix[row]![k]!)))));
  let best = candidates[0]!;
  let bestScore = Infinity;
  for (const c of candidates) {
    const score = angleDegrees(c.params.stainMatrix[0]!, med[0]!) + angleDegrees(c.params.stainMatrix[1]!, med[1]!);
    if (score < bestScore) {
      bestScore = score;
      best = c;
    }
  }
  return best;
}

function tryEstimate(rgb: Uint8Array, pixels: number, width: number, height: number): StainParams | null {
  try {
    return estimateStain(rgb, pixels, { mask: tissueMask(rgb, width, height) });
  } catch (err) {
    if (err instanceof StainEstimationError) return null;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The prepare command's work

export type SplitName = Split | 'unsplit';

export interface PrepareOptions {
  seed: number;
  /** Slides of these splits are cut into segmentation patches; slides with no split count as 'unsplit'. */
  splits: readonly SplitName[];
  log?: (line: string) => void;
}

export interface PrepareSummary {
  seed: number;
  patchSize: number;
  mpp: number;
  slides: number;
  segPatches: { total: number; droppedLowForeground: number; perClass: Record<string, number>; perSplit: Record<string, number> };
  clsPatches: { total: number; perClass: Record<string, number> };
  /** Share of all segmentation-patch mask pixels that are class 0 (the paper reports > 90%). */
  backgroundPixelShare: number | null;
  pixelShare: Record<string, number>;
  stainReference: string | null;
}

export interface PatchIndex {
  classes: string[];
  seg: { image: string; mask: string; slide: string; split: SplitName; classIndex: number; x: number; y: number }[];
  cls: { image: string; classIndex: number; source: string }[];
}

async function writeRgbPng(path: string, data: Uint8Array, width: number, height: number): Promise<void> {
  await sharp(data, { raw: { width, height, channels: 3 } }).png().toFile(path);
}

/**
 * Writes segmentation patches (out/seg/<split>/{images,masks}/<slide>-<n>.png), class patches resized to D x D
 * (out/cls/<class>/<name>.png, centre crop to square first), stain-reference.json, index.json and summary.json.
 */
export async function preparePatches(dataset: Dataset, out: string, opts: PrepareOptions): Promise<PrepareSummary> {
  const log = opts.log ?? (() => {});
  const d = PATCH_SIZE;
  const classes = dataset.classes;
  const segPerClass = new Array<number>(classes.length).fill(0);
  const pixelCounts = new Array<number>(classes.length).fill(0);
  const perSplit: Record<string, number> = {};
  const index: PatchIndex = { classes, seg: [], cls: [] };
  const candidates: StainCandidate[] = [];
  let dropped = 0;
  let slidesUsed = 0;
  const unknownMpp: string[] = [];

  for (const slide of dataset.slides) {
    const split: SplitName = slide.split ?? 'unsplit';
    if (!opts.splits.includes(split)) continue;
    slidesUsed += 1;
    const size = sizeAtMpp(slide, MODEL_MPP);
    if (slide.mpp === null) unknownMpp.push(slide.name);
    const rgb = await readSlideRgb(await openSlide(slide.image), size.width, size.height);
    const labels = await loadSlideLabels(slide, dataset, size);
    const plan = planSegPatches(rgb, labels, opts.seed, d);
    dropped += plan.dropped.length;
    const dir = join(out, 'seg', split);
    await mkdir(join(dir, 'images'), { recursive: true });
    await mkdir(join(dir, 'masks'), { recursive: true });
    for (const [n, p] of plan.kept.entries()) {
      const id = `${slide.name}-${String(n).padStart(4, '0')}`;
      const image = cutWindow(rgb.data, rgb.width, rgb.height, 3, p.x, p.y, d, GLASS);
      const mask = cutWindow(labels.labels, labels.width, labels.height, 1, p.x, p.y, d, 0);
      const imagePath = join(dir, 'images', `${id}.png`);
      const maskPath = join(dir, 'masks', `${id}.png`);
      await writeRgbPng(imagePath, image, d, d);
      await writeFile(maskPath, await encodeLabelMap({ labels: mask, width: d, height: d }));
      for (const v of mask) pixelCounts[v]! += 1;
      segPerClass[p.classIndex]! += 1;
      perSplit[split] = (perSplit[split] ?? 0) + 1;
      index.seg.push({
        image: relative(out, imagePath),
        mask: relative(out, maskPath),
        slide: slide.name,
        split,
        classIndex: p.classIndex,
        x: p.x,
        y: p.y,
      });
      if (split === 'train' || split === 'unsplit') {
        const params = tryEstimate(image, d * d, d, d);
        if (params) candidates.push({ source: relative(out, imagePath), params });
      }
    }
    log(`${slide.name} (${split}): ${plan.kept.length} patches, ${plan.dropped.length} under ${MIN_FOREGROUND_FRACTION * 100}% foreground`);
  }

  if (unknownMpp.length > 0) {
    log(`${unknownMpp.length} slide(s) state no mpp and were taken to be at the model's ${MODEL_MPP} um/px: ${unknownMpp.join(', ')}`);
  }

  const clsPerClass = new Array<number>(classes.length).fill(0);
  const usedNames = new Set<string>();
  for (const patch of dataset.patches) {
    const className = classes[patch.classIndex]!;
    const dir = join(out, 'cls', className);
    await mkdir(dir, { recursive: true });
    const stem = basename(patch.path, extname(patch.path));
    let name = `${stem}.png`;
    for (let i = 1; usedNames.has(join(dir, name)); i++) name = `${stem}-${i}.png`;
    usedNames.add(join(dir, name));
    let data: Buffer;
    try {
      data = await sharp(patch.path)
        .flatten({ background: '#ffffff' })
        .resize(d, d, { fit: 'cover' })
        .toColourspace('srgb')
        .removeAlpha()
        .raw()
        .toBuffer();
    } catch (err) {
      throw new Error(`unreadable image ${patch.path}: ${(err as Error).message}`);
    }
    const rgb = new Uint8Array(data.buffer, data.byteOffset, data.length);
    const path = join(dir, name);
    await writeRgbPng(path, rgb, d, d);
    clsPerClass[patch.classIndex]! += 1;
    index.cls.push({ image: relative(out, path), classIndex: patch.classIndex, source: patch.path });
    const params = tryEstimate(rgb, d * d, d, d);
    if (params) candidates.push({ source: relative(out, path), params });
  }

  const reference = chooseStainReference(candidates);
  if (reference) {
    await writeFile(
      join(out, 'stain-reference.json'),
      JSON.stringify({ ...reference.params, source: reference.source }, null, 2) + '\n',
    );
  } else {
    log('no training image had enough tissue to estimate a stain; no stain-reference.json written');
  }

  const totalPixels = pixelCounts.reduce((a, b) => a + b, 0);
  const byName = (counts: number[]) => Object.fromEntries(classes.map((c, k) => [c, counts[k]!]));
  const summary: PrepareSummary = {
    seed: opts.seed,
    patchSize: d,
    mpp: MODEL_MPP,
    slides: slidesUsed,
    segPatches: {
      total: index.seg.length,
      droppedLowForeground: dropped,
      perClass: byName(segPerClass),
      perSplit,
    },
    clsPatches: { total: index.cls.length, perClass: byName(clsPerClass) },
    backgroundPixelShare: totalPixels === 0 ? null : pixelCounts[0]! / totalPixels,
    pixelShare: byName(pixelCounts.map((n) => (totalPixels === 0 ? 0 : n / totalPixels))),
    stainReference: reference?.source ?? null,
  };
  await mkdir(out, { recursive: true });
  await writeFile(join(out, 'index.json'), JSON.stringify(index, null, 1) + '\n');
  await writeFile(join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  return summary;
}
