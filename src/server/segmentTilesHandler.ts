import { setMaxListeners } from 'node:events';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import type { ModelLease, ModelRegistry } from '../pipeline/modelRegistry.js';
import type { StreamContext, TilePipeline } from '../pipeline/segmentTile.js';
import { SlideStain } from '../pipeline/slideStain.js';
import { TileStatus, type SegmentTilesOptions, type SegmentTilesRequest, type SegmentTilesResponse, type Tile } from '../proto/gen/histoseg/v1/segmentation.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { AuthGuard } from './authGuard.js';
import { invalidResponse, toResponse } from './tileResponse.js';
import type { Config } from './config.js';
import { invalidArgument, toStatus, unavailable } from './errors.js';
import { OrderedWriter } from './orderedWriter.js';
import { RequestReader } from './requestReader.js';

/** How a stream open at SIGTERM ends once the tiles it read are answered: the client sends the rest elsewhere. */
export const DRAIN_MESSAGE = 'server shutting down, retry elsewhere';

export interface HandlerDeps {
  config: Config;
  registry: ModelRegistry;
  /** The tile path (and its buffer pool), shared by every stream. */
  pipeline: TilePipeline;
  log: Logger;
  metrics: Metrics;
  auth?: AuthGuard;
  /** True once SIGTERM arrived: new streams are refused, open ones finish. */
  draining(): boolean;
  /** Aborts on SIGTERM: open streams stop reading, answer every tile they read, then end UNAVAILABLE. */
  drainSignal: AbortSignal;
  /** Totals over the streams that SIGTERM stopped: tiles they read, and answers they wrote. */
  drained: { streams: number; tilesRead: number; tilesAnswered: number };
  /** Open streams, so shutdown can wait for them. */
  track(done: Promise<void>): void;
}

const STATUS_LABEL: Record<number, string> = {
  [TileStatus.TILE_STATUS_SEGMENTED]: 'segmented',
  [TileStatus.TILE_STATUS_BACKGROUND]: 'background',
  [TileStatus.TILE_STATUS_INVALID]: 'invalid',
};
const MAX_TILE_ID_LENGTH = 1024;

type Call = ServerDuplexStream<SegmentTilesRequest, SegmentTilesResponse>;

export function segmentTilesHandler(deps: HandlerDeps): (call: Call) => void {
  return (call) => deps.track(handle(call, deps));
}

/** The stream's model is leased for the whole stream: it finishes on the version it started with. */
async function streamContext(options: SegmentTilesOptions | undefined, deps: HandlerDeps, signal: AbortSignal, hold: (l: ModelLease) => void): Promise<StreamContext> {
  const o = options;
  const min = o?.minTissueFraction;
  if (min !== undefined && !(min >= 0 && min <= 1)) throw invalidArgument(`min_tissue_fraction must be in [0, 1], got ${min}`);
  // Registry errors (not found, malformed name) map to their statuses in toStatus.
  const lease = await deps.registry.acquire(o?.modelName ?? '', o?.modelVersion ?? '');
  hold(lease);
  const model = lease.model;
  const stainOn = (o?.stainNormalization ?? deps.config.stainNormalization) && !!model.manifest.stainReference;
  return {
    model,
    minTissueFraction: min ?? deps.config.minTissueFraction,
    omitMask: o?.omitMask ?? false,
    stain: stainOn && model.manifest.stainReference ? new SlideStain(model.manifest.stainReference) : undefined,
    signal,
  };
}

async function handle(call: Call, deps: HandlerDeps): Promise<void> {
  const { metrics, log, config } = deps;
  const abort = new AbortController();
  const signal = abort.signal;
  // Every queued window listens on this signal (and leaves it when dispatched): no fixed cap fits.
  setMaxListeners(0, signal);
  let ended = false;
  const fail = (err: unknown) => {
    if (ended) return;
    ended = true;
    const s = toStatus(err, { log, metrics, method: 'SegmentationService/SegmentTiles' });
    abort.abort(s);
    call.emit('error', s.toServiceError());
  };
  const onCancel = () => {
    ended = true;
    abort.abort(new Error('stream cancelled'));
  };
  call.on('cancelled', onCancel);
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() - Date.now() : Number(deadline) - Date.now();
  const timer = Number.isFinite(ms) ? setTimeout(onCancel, Math.max(0, ms)) : undefined;

  metrics.streams.inc();
  let lease: ModelLease | undefined;
  const writer = new OrderedWriter<SegmentTilesResponse>(call, signal, fail);
  try {
    if (deps.draining()) throw unavailable('server is shutting down');
    const denied = await deps.auth?.check(call, 'segment', 'SegmentationService/SegmentTiles');
    if (denied) throw denied;

    let ctx: StreamContext | undefined;
    let first = true;
    let tilesRead = 0;
    const reader = new RequestReader<SegmentTilesRequest>(call, deps.drainSignal, signal);
    let last: SegmentTilesRequest | 'ended' | 'stopped';
    while (typeof (last = await reader.next()) === 'object') {
      const req = last;
      if (ended) break;
      if (req.options) {
        if (!first) throw invalidArgument('options may only come in the first message of a stream');
        ctx = await streamContext(req.options, deps, signal, (l) => (lease = l));
      }
      first = false;
      if (!req.tile) {
        if (!req.options) throw invalidArgument('a message must carry options (first message only) or a tile');
        continue;
      }
      tilesRead++;
      ctx ??= await streamContext(undefined, deps, signal, (l) => (lease = l));
      // Backpressure: stop reading while this stream has too much in flight or the shared queue is full.
      await writer.waitBelow(config.streamWindow);
      await ctx.model.batcher.waitForCapacity(signal);
      if (ended) break;
      writer.push(answer(req.tile, ctx, deps));
    }
    if (!ended) {
      // Every tile read is answered, even while draining; then a drained stream says so.
      await writer.finish();
      if (last === 'stopped' && !signal.aborted) {
        deps.drained.streams++;
        deps.drained.tilesRead += tilesRead;
        deps.drained.tilesAnswered += writer.written;
        log.info({ tilesRead, tilesAnswered: writer.written }, 'stream drained');
        throw unavailable(DRAIN_MESSAGE);
      }
      ended = true;
      call.end();
    }
  } catch (err) {
    if (!signal.aborted) fail(err);
  } finally {
    clearTimeout(timer);
    metrics.streams.dec();
    // After the last answer is written (or the stream failed): the version may now be unloaded when idle.
    void writer.finish().catch(() => undefined).finally(() => lease?.release());
  }
}

async function answer(tile: Tile, ctx: StreamContext, deps: HandlerDeps): Promise<SegmentTilesResponse> {
  const started = performance.now();
  deps.metrics.inflightTiles.inc();
  try {
    let res: SegmentTilesResponse;
    if (tile.tileId.length > MAX_TILE_ID_LENGTH) {
      res = invalidResponse(tile, ctx.model.manifest, `tile_id is longer than ${MAX_TILE_ID_LENGTH} characters`);
    } else {
      const result = await deps.pipeline.segmentTile(tile, ctx);
      try {
        res = await toResponse(tile, result, ctx.model.manifest, ctx.omitMask);
      } finally {
        result.release();
      }
    }
    const label = STATUS_LABEL[res.status] ?? 'unknown';
    deps.metrics.tiles.inc({ status: label, model: ctx.model.manifest.name });
    deps.metrics.tileSeconds.observe({ status: label }, (performance.now() - started) / 1000);
    return res;
  } finally {
    deps.metrics.inflightTiles.dec();
  }
}
