import { availableParallelism } from 'node:os';
import { ModelRegistry, type LoadedModel } from '../pipeline/modelRegistry.js';
import type { RgbImage } from '../imaging/decode.js';
import type { Manifest } from '../model/manifest.js';
import { SlideStain } from '../pipeline/slideStain.js';
import { localSegmenter } from '../pipeline/localSegmenter.js';
import { DEFAULT_SLIDE_TILE, imageSource, segmentSlide } from '../pipeline/segmentSlide.js';
import { mapAhead } from '../util/mapAhead.js';
import { loadSlideLabels, sizeAtMpp, type Split } from '../data/datasets/dataset.js';
import { readDataset } from '../data/datasets/readDataset.js';
import { openSlide, readSlideRgb } from '../data/slides/slideReader.js';
import { createLogger } from '../telemetry/logger.js';
import { Metrics } from '../telemetry/metrics.js';
import { ConfusionAccumulator, type SegmentationMetrics } from './metrics.js';

/** Side of the tiles a slide is cut into, at the model's scale, as `histoseg segment` cuts them. */
const EVAL_TILE = DEFAULT_SLIDE_TILE;
/** Slides segmented at once (as concurrent streams would be). */
const SLIDES_AT_ONCE = 4;
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
  // Slides go through several at a time, as several streams would, so the batcher fills its batches across them;
  // each slide has its own stain estimate and its answers do not depend on the others. Counts are pooled in order.
  const segmentOne = async (slide: ScoredSlide): Promise<Uint8Array> => {
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
    return result.labels!;
  };
  for await (const [slide, labels] of mapAhead(slides, async (slide) => [slide, await segmentOne(slide)] as const, SLIDES_AT_ONCE)) {
    acc.add(slide.truth, labels);
    background.add(slide.truth, new Uint8Array(slide.truth.length));
  }
  return { metrics: acc.metrics(), allBackground: background.metrics() };
}

/**
 * Segments every slide of a split through the serving path (the onnx engine in its workers, the batcher and the
 * tile pipeline, with each slide's own stain estimate) at the model's scale, and pools the confusion counts.
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
    // The slides are read while the engines load: only the manifest (classes, scale) is needed to read them.
    const m = (await registry.resolve(name ?? '', version ?? '')).manifest;
    const loading = registry.get(m.name, m.version);
    loading.catch(() => undefined); // awaited below
    const C = m.classes.length;
    if (C !== dataset.classes.length) {
      throw new Error(`model ${m.name}@${m.version} has ${C} classes, dataset ${opts.data} has ${dataset.classes.length}`);
    }
    const scored = await Promise.all(
      slides.map(async (slide): Promise<ScoredSlide> => {
        if (slide.mpp === null) throw new Error(`slide ${slide.name} has no mpp (give it in dataset.json)`);
        const size = sizeAtMpp(slide, m.mpp);
        const [rgb, truth] = await Promise.all([
          openSlide(slide.image).then((info) => readSlideRgb(info, size.width, size.height)),
          loadSlideLabels(slide, dataset, size),
        ]);
        opts.log?.(`${slide.name}: ${size.width}x${size.height} at ${m.mpp} um/px`);
        return { name: slide.name, rgb, truth: truth.labels };
      }),
    );
    const model = await loading;
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
