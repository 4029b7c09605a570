// A TileSegmenter over this process's own pipeline: TilePipeline.segmentTile for each tile, with a loaded model's
// batcher and engine, exactly as a SegmentTiles stream is served (same windows, blending, stain policy and tissue
// threshold). Tiles go in as RGB and labels come out as labels: nothing is encoded on the way.
import { setMaxListeners } from 'node:events';
import { mapAhead } from '../util/mapAhead.js';
import type { TileAnswer, TileSegmenter } from './segmentSlide.js';
import { TilePipeline, type StreamContext } from './segmentTile.js';

/** Tiles in flight at once: enough to fill the batcher's batches from one slide. */
const DEFAULT_IN_FLIGHT = 8;

export interface LocalSegmenterOptions {
  /** Per-slide context: model, tissue threshold, the slide's stain estimate. One per slide, as one stream is. */
  context: (signal: AbortSignal) => StreamContext;
  /** Largest tile, width x height. */
  maxPixels: number;
  inFlight?: number;
}

export function localSegmenter(opts: LocalSegmenterOptions): TileSegmenter {
  const pipeline = new TilePipeline({ maxPixels: opts.maxPixels });
  return {
    async *segmentTiles(tiles, { wantLabels, signal }) {
      const ctrl = new AbortController();
      setMaxListeners(0, ctrl.signal); // every queued window listens on it
      const onAbort = () => ctrl.abort(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      const ctx = { ...opts.context(ctrl.signal), omitMask: !wantLabels };
      try {
        const answers = mapAhead(
          tiles,
          async (t): Promise<TileAnswer> => {
            const res = await pipeline.segmentTile({ rgb: t.rgb, mpp: 0 }, ctx);
            try {
              // The labels may be a pooled buffer: copy them out before it goes back.
              const labels = wantLabels && res.status !== 'invalid' ? res.labels.slice() : null;
              return { status: res.status, labels, fractions: res.fractions, ...(res.error ? { error: res.error } : {}) };
            } finally {
              res.release();
            }
          },
          opts.inFlight ?? DEFAULT_IN_FLIGHT,
        );
        yield* answers;
      } finally {
        signal?.removeEventListener('abort', onAbort);
        ctrl.abort(new Error('slide done'));
      }
    },
  };
}
