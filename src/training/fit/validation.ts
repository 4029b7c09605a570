// Per-epoch validation (Sec. 3.3): the held-out slides are segmented with the model in memory through the same
// pipeline as serving (evaluation/scoreSlides: pipeline/segmentSlide, segmentTile, blending, per-slide stain), so the
// best epoch is chosen by the segmenter that is served and scored.
import type * as tf from '@tensorflow/tfjs';
import { TfjsEngine } from '../../engine/tfjsEngine.js';
import { scoreSlides, type ScoredSlide } from '../../evaluation/evaluateModel.js';
import type { SegmentationMetrics } from '../../evaluation/metrics.js';
import type { Manifest, StainReference } from '../../model/manifest.js';
import { inProcessModel } from '../../pipeline/inProcessModel.js';
import { INPUT_SIZE, MODEL_MPP } from '../../util/constants.js';
import { type Dataset, loadSlideLabels, sizeAtMpp } from '../../data/datasets/dataset.js';
import { openSlide, readSlideRgb } from '../../data/slides/slideReader.js';

/** Reads the dataset's 'validation' slides once, at the model's scale, with their truth. */
export async function loadValidationSlides(dataset: Dataset): Promise<ScoredSlide[]> {
  const out: ScoredSlide[] = [];
  for (const slide of dataset.slides.filter((s) => s.split === 'validation')) {
    const size = sizeAtMpp(slide, MODEL_MPP);
    const rgb = await readSlideRgb(await openSlide(slide.image), size.width, size.height);
    const labels = await loadSlideLabels(slide, dataset, size);
    out.push({ name: slide.name, rgb, truth: labels.labels });
  }
  return out;
}

/** The manifest a model in training would be served with: its classes, scale and stain reference. */
export function trainingManifest(classes: readonly string[], stainReference: StainReference | null): Manifest {
  return {
    schema: 1,
    name: 'in-training',
    version: '0',
    architecture: 'resnet18-layer3-segcls',
    classes: classes.map((name) => ({ name, color: '#000000' })),
    inputSize: INPUT_SIZE,
    mpp: MODEL_MPP,
    trained: true,
    stainReference,
    createdAt: new Date(0).toISOString(),
    lineage: { parent: null, datasetHash: null, settings: {} },
    metrics: {},
    files: { tfjs: '', onnx: '' },
  };
}

/** Metrics pooled over the slides (null when there are none); the model stays the caller's. */
export async function validate(model: tf.LayersModel, slides: readonly ScoredSlide[], manifest: Manifest): Promise<SegmentationMetrics | null> {
  if (slides.length === 0) return null;
  const engine = TfjsEngine.fromModel(model, manifest.classes.length, undefined, 'seg16', false);
  const loaded = inProcessModel(manifest, engine);
  try {
    return (await scoreSlides(slides, loaded)).metrics;
  } finally {
    await loaded.batcher.stop();
    await engine.dispose();
  }
}
