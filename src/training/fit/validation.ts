// Per-epoch validation (Sec. 3.3): segment the held-out slide(s) with the model in memory and score them.
import * as tf from '@tensorflow/tfjs';
import { ConfusionAccumulator, type SegmentationMetrics } from '../../evaluation/metrics.js';
import { INPUT_SIZE, MODEL_MPP } from '../../util/constants.js';
import { StainEstimator, stainNormalizer, type StainParams } from '../../imaging/macenko.js';
import { tissueMask } from '../../imaging/tissue.js';
import { type Dataset, loadSlideLabels, sizeAtMpp } from '../../data/datasets/dataset.js';
import { openSlide, readSlideRgb } from '../../data/slides/slideReader.js';
import { cutWindow } from '../prepare/patchPreparation.js';
import { writeNhwcInput } from '../../imaging/modelInput.js';
import { VALIDATION_BATCH } from './hyperparameters.js';

/** A validation slide at the model's mpp, stain-normalised, with its truth and tissue mask. */
export interface ValidationSlide {
  name: string;
  width: number;
  height: number;
  rgb: Uint8Array;
  labels: Uint8Array;
  tissue: Uint8Array;
}

/** Reads the dataset's 'validation' slides once; each is normalised with its own whole-slide stain estimate. */
export async function loadValidationSlides(dataset: Dataset, reference: StainParams | null): Promise<ValidationSlide[]> {
  const out: ValidationSlide[] = [];
  for (const slide of dataset.slides.filter((s) => s.split === 'validation')) {
    const size = sizeAtMpp(slide, MODEL_MPP);
    const rgb = await readSlideRgb(await openSlide(slide.image), size.width, size.height);
    const labels = await loadSlideLabels(slide, dataset, size);
    const tissue = tissueMask(rgb.data, rgb.width, rgb.height);
    let data = rgb.data;
    if (reference) {
      const est = new StainEstimator();
      est.add(rgb.data, rgb.width * rgb.height, tissue);
      const params = est.tryParams();
      if (params) data = stainNormalizer(params, reference)(rgb.data, rgb.width * rgb.height);
    }
    out.push({ name: slide.name, width: rgb.width, height: rgb.height, rgb: data, labels: labels.labels, tissue });
  }
  return out;
}

/**
 * Label map of one image: non-overlapping INPUT_SIZE windows (white beyond the edge), argmax of the mask logits,
 * and glass (tissue mask 0) as class 0, as serving does.
 */
export function segmentImage(model: tf.LayersModel, slide: Omit<ValidationSlide, 'labels'>, batch = VALIDATION_BATCH): Uint8Array {
  const { width, height } = slide;
  const d = INPUT_SIZE;
  const windows: { x: number; y: number }[] = [];
  for (let y = 0; y < height; y += d) for (let x = 0; x < width; x += d) windows.push({ x, y });
  const pred = new Uint8Array(width * height);
  for (let start = 0; start < windows.length; start += batch) {
    const group = windows.slice(start, start + batch);
    const input = new Float32Array(group.length * d * d * 3);
    group.forEach((w, b) => writeNhwcInput(cutWindow(slide.rgb, width, height, 3, w.x, w.y, d, 255), input, b * d * d * 3));
    const labels = tf.tidy(() => {
      const out = model.predict(tf.tensor4d(input, [group.length, d, d, 3])) as tf.Tensor[];
      return tf.argMax(out[0]!, -1);
    });
    const data = labels.dataSync();
    labels.dispose();
    group.forEach((w, b) => {
      for (let yy = 0; yy < d && w.y + yy < height; yy++) {
        for (let xx = 0; xx < d && w.x + xx < width; xx++) {
          pred[(w.y + yy) * width + w.x + xx] = data[(b * d + yy) * d + xx]!;
        }
      }
    });
  }
  for (let i = 0; i < pred.length; i++) if (slide.tissue[i] === 0) pred[i] = 0;
  return pred;
}

/** Metrics pooled over all validation slides (null when there are none). */
export function validate(model: tf.LayersModel, slides: readonly ValidationSlide[], numClasses: number): SegmentationMetrics | null {
  if (slides.length === 0) return null;
  const acc = new ConfusionAccumulator(numClasses);
  for (const s of slides) acc.add(s.labels, segmentImage(model, s));
  return acc.metrics();
}
