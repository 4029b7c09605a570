// Uploaded examples (data/examples) as training items: the paper's preparation (App. B) applied to tiles instead of
// slides. Each image is brought to the model's scale; a segmentation example is cut into D x D patches around its
// labelled components with the 75% foreground rule (App. B.1), a class example is resized to one D x D patch
// (App. B.2, as `prepare` does); validation examples with masks become whole images to score through the serving
// pipeline.
import { join } from 'node:path';
import sharp from 'sharp';
import { readExampleFile, type FrozenDataset } from '../../data/examples/exampleStore.js';
import { readLabelMap } from '../../data/labels/labelMap.js';
import type { ScoredSlide } from '../../evaluation/evaluateModel.js';
import { decodeImage, resizeLabels, resizeRgb, type RgbImage } from '../../imaging/decode.js';
import { estimateStain, StainEstimationError, type StainParams } from '../../imaging/macenko.js';
import { MIN_FOREGROUND_FRACTION, tissueMask } from '../../imaging/tissue.js';
import { INPUT_SIZE, MODEL_MPP } from '../../util/constants.js';
import { chooseStainReference, cutWindow, foregroundFraction, planSegPatches, type StainCandidate } from '../prepare/patchPreparation.js';
import type { ClsItem, SegItem, TrainingItems } from '../fit/trainingData.js';

const GLASS = 255;
/** Largest example side handled (pixels at the model's scale); the store's pixel limit bounds it before this. */
const MAX_DECODE_PIXELS = 1 << 28;

export interface ExampleData {
  items: TrainingItems;
  validation: ScoredSlide[];
  /** Stain reference chosen from the training patches (App. B / Sec. 2.3 rule), or null. */
  dataReference: StainParams | null;
  counts: { segExamples: number; clsExamples: number; valExamples: number; segPatches: number; clsPatches: number; droppedLowForeground: number };
}

function tryEstimate(rgb: Uint8Array, d: number): StainParams | null {
  try {
    return estimateStain(rgb, d * d, { mask: tissueMask(rgb, d, d) });
  } catch (err) {
    if (err instanceof StainEstimationError) return null;
    throw err;
  }
}

/** The image (and labels) at the model's scale: mpp 0 means it already is. */
async function atModelScale(rgb: RgbImage, labels: Uint8Array | undefined, mpp: number): Promise<{ rgb: RgbImage; labels?: Uint8Array }> {
  if (mpp === 0 || Math.abs(mpp - MODEL_MPP) / MODEL_MPP < 0.01) return { rgb, labels };
  const w = Math.max(1, Math.round((rgb.width * mpp) / MODEL_MPP));
  const h = Math.max(1, Math.round((rgb.height * mpp) / MODEL_MPP));
  return { rgb: await resizeRgb(rgb, w, h), labels: labels && (await resizeLabels(labels, rgb.width, rgb.height, w, h)) };
}

/** Reads the frozen examples in `dir` (written by ExampleStore.freeze) into training items and validation images. */
export async function loadExampleData(dir: string, frozen: FrozenDataset, seed: number): Promise<ExampleData> {
  const d = INPUT_SIZE;
  const seg: SegItem[] = [];
  const cls: ClsItem[] = [];
  const validation: ScoredSlide[] = [];
  const candidates: StainCandidate[] = [];
  const counts = { segExamples: 0, clsExamples: 0, valExamples: 0, segPatches: 0, clsPatches: 0, droppedLowForeground: 0 };
  for (const e of frozen.examples) {
    const { header, image, mask } = await readExampleFile(join(dir, e.file));
    const decoded = await decodeImage(image, { maxPixels: MAX_DECODE_PIXELS });
    const name = `example-${e.file.slice(0, 12)}`;
    if (header.kind === 'class') {
      if (header.split === 'validation') continue; // a class label scores no pixels
      counts.clsExamples += 1;
      const { rgb } = await atModelScale(decoded, undefined, header.mpp);
      const data = await sharp(rgb.data, { raw: { width: rgb.width, height: rgb.height, channels: 3 } }).resize(d, d, { fit: 'cover' }).raw().toBuffer();
      const patch = new Uint8Array(data.buffer, data.byteOffset, data.length);
      cls.push({ rgb: patch, classIndex: header.classIndex! });
      counts.clsPatches += 1;
      const params = tryEstimate(patch, d);
      if (params) candidates.push({ source: name, params });
      continue;
    }
    const labels = (await readLabelMap(mask!)).labels;
    const scaled = await atModelScale(decoded, labels, header.mpp);
    if (header.split === 'validation') {
      counts.valExamples += 1;
      validation.push({ name, rgb: scaled.rgb, truth: scaled.labels! });
      continue;
    }
    counts.segExamples += 1;
    const { rgb } = scaled;
    const map = { labels: scaled.labels!, width: rgb.width, height: rgb.height };
    const plan = planSegPatches(rgb, map, seed, d);
    counts.droppedLowForeground += plan.dropped.length;
    let origins = plan.kept.map((p) => ({ x: p.x, y: p.y }));
    if (origins.length === 0) {
      // No labelled component (an all-background tile): windows on a grid, under the same foreground rule.
      const fg = tissueMask(rgb.data, rgb.width, rgb.height);
      for (let y = 0; y < rgb.height; y += d) {
        for (let x = 0; x < rgb.width; x += d) if (foregroundFraction(fg, rgb.width, rgb.height, x, y, d) >= MIN_FOREGROUND_FRACTION) origins.push({ x, y });
      }
    }
    for (const o of origins) {
      const patch = cutWindow(rgb.data, rgb.width, rgb.height, 3, o.x, o.y, d, GLASS);
      seg.push({ rgb: patch, mask: cutWindow(map.labels, rgb.width, rgb.height, 1, o.x, o.y, d, 0), slide: name });
      counts.segPatches += 1;
      const params = tryEstimate(patch, d);
      if (params) candidates.push({ source: name, params });
    }
  }
  return { items: { seg, cls }, validation, dataReference: chooseStainReference(candidates)?.params ?? null, counts };
}
