import { setMaxListeners } from 'node:events';
import { availableParallelism } from 'node:os';
import { ModelRegistry } from '../pipeline/modelRegistry.js';
import type { Manifest } from '../model/manifest.js';
import { SlideStain } from '../pipeline/slideStain.js';
import { TilePipeline, type StreamContext } from '../pipeline/segmentTile.js';
import { loadSlideLabels, sizeAtMpp, type Split } from '../data/datasets/dataset.js';
import { readDataset } from '../data/datasets/readDataset.js';
import { openSlide, readSlideRgb } from '../data/slides/slideReader.js';
import { createLogger } from '../telemetry/logger.js';
import { Metrics } from '../telemetry/metrics.js';
import { ConfusionAccumulator, type SegmentationMetrics } from './metrics.js';

/** Side of the tiles a slide is cut into, at the model's scale; the server blends 128 px windows inside each. */
const EVAL_TILE = 512;
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

/**
 * Segments every slide of a split through the serving path (the onnx engine in its worker, the batcher and
 * the tile pipeline, with the slide's own stain estimate) at the model's scale, and pools the confusion counts.
 * Tiles go in as RGB and labels come out as labels: no image encoding on the way.
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
    const pipeline = new TilePipeline({ maxPixels: EVAL_TILE * EVAL_TILE });
    const acc = new ConfusionAccumulator(C);
    const background = new ConfusionAccumulator(C);
    for (const slide of slides) {
      if (slide.mpp === null) throw new Error(`slide ${slide.name} has no mpp (give it in dataset.json)`);
      const size = sizeAtMpp(slide, m.mpp);
      const [rgb, truth] = await Promise.all([
        openSlide(slide.image).then((info) => readSlideRgb(info, size.width, size.height)),
        loadSlideLabels(slide, dataset, size),
      ]);
      const signal = new AbortController().signal;
      setMaxListeners(0, signal); // every queued window listens on it
      const ctx: StreamContext = {
        model,
        minTissueFraction: MIN_TISSUE_FRACTION,
        omitMask: false,
        stain: m.stainReference ? new SlideStain(m.stainReference) : undefined,
        signal,
      };
      const pred = new Uint8Array(size.width * size.height);
      const jobs: Promise<void>[] = [];
      for (let y = 0; y < size.height; y += EVAL_TILE) {
        for (let x = 0; x < size.width; x += EVAL_TILE) {
          const w = Math.min(EVAL_TILE, size.width - x);
          const h = Math.min(EVAL_TILE, size.height - y);
          jobs.push(
            (async () => {
              const crop = new Uint8Array(w * h * 3);
              for (let r = 0; r < h; r++) crop.set(rgb.data.subarray(((y + r) * size.width + x) * 3, ((y + r) * size.width + x + w) * 3), r * w * 3);
              const res = await pipeline.segmentTile({ rgb: { data: crop, width: w, height: h }, mpp: 0 }, ctx);
              if (res.status === 'invalid') throw new Error(`slide ${slide.name} tile ${x},${y}: ${res.error}`);
              for (let r = 0; r < h; r++) pred.set(res.labels.subarray(r * w, (r + 1) * w), (y + r) * size.width + x);
              res.release();
            })(),
          );
        }
      }
      await Promise.all(jobs);
      acc.add(truth.labels, pred);
      background.add(truth.labels, new Uint8Array(pred.length));
      opts.log?.(`${slide.name}: ${size.width}x${size.height} at ${m.mpp} um/px`);
    }
    return {
      model: `${m.name}@${m.version}`,
      slides: slides.map((s) => s.name),
      classes: m.classes.map((c) => c.name),
      manifest: m,
      metrics: acc.metrics(),
      allBackground: background.metrics(),
    };
  } finally {
    await registry.stop();
  }
}
