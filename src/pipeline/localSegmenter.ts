// A TileSegmenter over this process's own pipeline: segmentTile for each tile, with a loaded model's batcher and
// engine, exactly as a SegmentTiles stream is served (same windows, blending, stain policy and tissue threshold).
import { setMaxListeners } from 'node:events';
import sharp from 'sharp';
import { decodePlainPng } from '../imaging/png.js';
import { TileStatus } from '../proto/gen/histoseg/v1/segmentation.js';
import { mapAhead } from '../util/mapAhead.js';
import type { TileAnswer, TileOutcome, TileSegmenter } from './segmentSlide.js';
import { processTile, type StreamContext } from './segmentTile.js';

/** Tiles in flight at once: enough to fill the batcher's batches from one slide. */
const DEFAULT_IN_FLIGHT = 8;

const OUTCOME: Partial<Record<TileStatus, TileOutcome>> = {
  [TileStatus.TILE_STATUS_SEGMENTED]: 'segmented',
  [TileStatus.TILE_STATUS_BACKGROUND]: 'background',
  [TileStatus.TILE_STATUS_INVALID]: 'invalid',
};

export interface LocalSegmenterOptions {
  /** Per-slide context: model, tissue threshold, the slide's stain estimate. One per slide, as one stream is. */
  context: (signal: AbortSignal) => StreamContext;
  maxPixels: number;
  inFlight?: number;
}

export function localSegmenter(opts: LocalSegmenterOptions): TileSegmenter {
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
            const image = await sharp(t.rgb.data, { raw: { width: t.rgb.width, height: t.rgb.height, channels: 3 } }).png({ compressionLevel: 1 }).toBuffer();
            const res = await processTile({ tileId: String(t.index), image, mpp: 0, x: t.region.left, y: t.region.top }, ctx, { maxPixels: opts.maxPixels });
            const status = OUTCOME[res.status];
            if (!status) throw new Error(`tile ${t.index}: status ${res.status}`);
            let labels: Uint8Array | null = null;
            if (wantLabels && status !== 'invalid') labels = decodePlainPng(res.mask)!.data;
            return { status, labels, fractions: res.classFractions, ...(res.error ? { error: res.error } : {}) };
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
