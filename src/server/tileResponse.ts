import { encodeMaskPng } from '../imaging/decode.js';
import type { Manifest } from '../model/manifest.js';
import type { TileResult } from '../pipeline/segmentTile.js';
import { TileStatus, type SegmentTilesResponse, type Tile } from '../proto/gen/histoseg/v1/segmentation.js';

const WIRE_STATUS = {
  segmented: TileStatus.TILE_STATUS_SEGMENTED,
  background: TileStatus.TILE_STATUS_BACKGROUND,
  invalid: TileStatus.TILE_STATUS_INVALID,
} as const;

/** A background answer's mask PNG depends only on its size: cache a few. */
const zeroMasks = new Map<string, Promise<Buffer>>();
function zeroMaskPng(width: number, height: number): Promise<Buffer> {
  const k = `${width}x${height}`;
  let p = zeroMasks.get(k);
  if (!p) {
    if (zeroMasks.size >= 64) zeroMasks.delete(zeroMasks.keys().next().value!);
    p = encodeMaskPng(new Uint8Array(width * height), width, height);
    zeroMasks.set(k, p);
  }
  return p;
}

function base(tile: Tile, manifest: Manifest): SegmentTilesResponse {
  return {
    tileId: tile.tileId,
    status: TileStatus.TILE_STATUS_UNSPECIFIED,
    mask: Buffer.alloc(0),
    classProbabilities: [],
    classFractions: [],
    tissueFraction: 0,
    modelVersion: manifest.version,
    modelName: manifest.name,
    error: '',
    x: tile.x,
    y: tile.y,
    width: 0,
    height: 0,
    predictedClass: 0,
    queueSeconds: 0,
    computeSeconds: 0,
  };
}

/** An INVALID answer that never reached the pipeline (e.g. a bad tile id). */
export function invalidResponse(tile: Tile, manifest: Manifest, error: string): SegmentTilesResponse {
  return { ...base(tile, manifest), status: TileStatus.TILE_STATUS_INVALID, error };
}

/** A TileResult as the wire answer: the labels become an 8-bit PNG mask unless the stream asked to omit masks. */
export async function toResponse(tile: Tile, r: TileResult, manifest: Manifest, omitMask: boolean): Promise<SegmentTilesResponse> {
  if (r.status === 'invalid') return invalidResponse(tile, manifest, r.error);
  let mask: Buffer = Buffer.alloc(0);
  if (!omitMask) mask = r.status === 'background' ? await zeroMaskPng(r.width, r.height) : await encodeMaskPng(r.labels, r.width, r.height);
  return {
    ...base(tile, manifest),
    status: WIRE_STATUS[r.status],
    mask,
    classProbabilities: r.probabilities,
    classFractions: r.fractions,
    tissueFraction: r.tissueFraction,
    width: r.width,
    height: r.height,
    predictedClass: r.predictedClass,
    queueSeconds: r.timings.queueSeconds,
    computeSeconds: r.timings.computeSeconds,
  };
}
