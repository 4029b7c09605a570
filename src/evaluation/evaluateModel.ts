import { availableParallelism } from 'node:os';
import { ModelRegistry, type LoadedModel } from '../pipeline/modelRegistry.js';
import type { RgbImage } from '../imaging/decode.js';
import type { Manifest } from '../model/manifest.js';
import { SlideStain } from '../pipeline/slideStain.js';
import { localSegmenter } from '../pipeline/localSegmenter.js';
import { DEFAULT_SLIDE_TILE, imageSource, segmentSlide } from '../pipeline/segmentSlide.js';
import { loadSlideLabels, sizeAtMpp, type Split } from '../data/datasets/dataset.js';
import { readDataset } from '../data/datasets/readDataset.js';
import { openSlide, readSlideRgb } from '../data/slides/slideReader.js';
import { createLogger } from '../telemetry/logger.js';
import { Metrics } from '../telemetry/metrics.js';
import { ConfusionAccumulator, type SegmentationMetrics } from './metrics.js';

/** Side of the tiles a slide is cut into, at the model's scale, as `histoseg segment` cuts them. */
const EVAL_TILE = DEFAULT_SLIDE_TILE;
/** The server's default tissue threshold (src/server/config.ts), so scores match what serving answers. */
const MIN_TISSUE_FRACTION = 0.05;

export interface EvaluateModelOptions {
  models: string;
  model: string;
  data: string;
  split: Split;
  log?: (line: string) => void;
}

export interface EvaluateModelResult {
  model: string;
  slides: string[];
  classes: string[];
  manifest: Manifest;
  metrics: SegmentationMetrics;
  /** The trivial prediction, every pixel class 0, on the same slides: what a model must beat. */
  allBackground: SegmentationMetrics;
}

/** A slide at the model's scale with its truth. */
export interface ScoredSlide {
  name: string;
  rgb: RgbImage;
  truth: Uint8Array;
}

/**
 * Segments each slide through the pipeline exactly as a SegmentTiles stream is served (pipeline/segmentSlide with
 * the local segmenter: same tiles, windows, blending, per-slide stain estimate and tissue threshold) and pools the
 * confusion counts; also those of predicting all class 0.
 */
export async function scoreSlides(
  slides: readonly ScoredSlide[],
  model: LoadedModel,
): Promise<{ metrics: SegmentationMetrics; allBackground: SegmentationMetrics }> {
  const m = model.manifest;
  const C = m.classes.length;
  const acc = new ConfusionAccumulator(C);
  const background = new ConfusionAccumulator(C);
  for (const slide of slides) {
    const segmenter = localSegmenter({
      context: (signal) => ({
        model,
        minTissueFraction: MIN_TISSUE_FRACTION,
        omitMask: false,
        stain: m.stainReference ? new SlideStain(m.stainReference) : undefined,
        signal,
      }),
      maxPixels: EVAL_TILE * EVAL_TILE,
    });
    const result = await segmentSlide(imageSource(slide.rgb), segmenter, { numClasses: C, tile: EVAL_TILE, wantLabels: true });
    const bad = result.invalid[0];
    if (bad) throw new Error(`slide ${slide.name} tile at ${bad.region.left},${bad.region.top}: ${bad.error}`);
    acc.add(slide.truth, result.labels!);
    background.add(slide.truth, new Uint8Array(slide.truth.length));
  }
  return { metrics: acc.metrics(), allBackground: background.metrics() };
}

/**
 * Segments every slide of a split through the serving path (the onnx engine in its worker, the batcher and
 * processTile, with the slide's own stain estimate) at the model's scale, and pools the confusion counts.
 */
export async function evaluateModel(opts: EvaluateModelOptions): Promise<EvaluateModelResult> {
  const [name, version] = opts.model.split('@');
  const dataset = await readDataset(opts.data);
  const slides = dataset.slides.filter((s) => s.split === opts.split);
  if (slides.length === 0) throw new Error(`dataset ${opts.data} has no ${opts.split} slides`);
  const threads = availableParallelism();
  const registry = new ModelRegistry(
    { root: opts.models, engine: 'onnx', device: 'cpu', threads, workers: threads, maxBatch: 16, maxDelayMs: 2, queueCapacity: 4096, maxLoadedModels: 1 },
    createLogger('silent'),
    new Metrics(undefined, { processMetrics: false }),
  );
  try {
    const model = await registry.get(name ?? '', version ?? '');
    const m = model.manifest;
    const C = m.classes.length;
    if (C !== dataset.classes.length) {
      throw new Error(`model ${m.name}@${m.version} has ${C} classes, dataset ${opts.data} has ${dataset.classes.length}`);
    }
    const scored: ScoredSlide[] = [];
    for (const slide of slides) {
      if (slide.mpp === null) throw new Error(`slide ${slide.name} has no mpp (give it in dataset.json)`);
      const size = sizeAtMpp(slide, m.mpp);
      const [rgb, truth] = await Promise.all([
        openSlide(slide.image).then((info) => readSlideRgb(info, size.width, size.height)),
        loadSlideLabels(slide, dataset, size),
      ]);
      scored.push({ name: slide.name, rgb, truth: truth.labels });
      opts.log?.(`${slide.name}: ${size.width}x${size.height} at ${m.mpp} um/px`);
    }
    const { metrics, allBackground } = await scoreSlides(scored, model);
    return {
      model: `${m.name}@${m.version}`,
      slides: slides.map((s) => s.name),
      classes: m.classes.map((c) => c.name),
      manifest: m,
      metrics,
      allBackground,
    };
  } finally {
    await registry.stop();
  }
}
