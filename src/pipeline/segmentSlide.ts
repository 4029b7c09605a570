// The one segment-a-slide loop: cut the slide (at the model's scale) into tiles, send them through a segmenter (the
// local pipeline, or a histoseg server through the client), and stitch the answers. Serving, `histoseg segment`,
// `evaluate --model` and the trainer's validation all segment through here, so they segment the same way.
import type { RgbImage } from '../imaging/decode.js';

/**
 * Tile side in pixels at the model's scale: 4 model windows across, so most windows see tissue rather than the
 * white padding a smaller tile gets (the paper's model struggles when the region of interest is a small part of
 * the patch, Sec. 4), and the pipeline blends the overlapping windows inside each tile.
 */
export const DEFAULT_SLIDE_TILE = 512;
/** Tiles read and started ahead of the answers, so reading and encoding overlap with the segmenter's work. */
const DEFAULT_READ_AHEAD = 4;

export interface Region {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** A slide at the model's scale that can hand out regions of itself. */
export interface SlideSource {
  readonly width: number;
  readonly height: number;
  read(region: Region): Promise<RgbImage>;
}

export interface TileRequest {
  /** Index in the slide's tile order; answers come back in this order. */
  readonly index: number;
  readonly region: Region;
  readonly rgb: RgbImage;
}

export type TileOutcome = 'segmented' | 'background' | 'invalid';

export interface TileAnswer {
  readonly status: TileOutcome;
  /** region.width x region.height class indices; null for an INVALID tile, or when labels were not asked for. */
  readonly labels: Uint8Array | null;
  /** Share of the tile's pixels in each class. */
  readonly fractions: readonly number[];
  readonly error?: string;
}

/** Segments a slide's tiles, answering in order. Implementations: local (pipeline) and remote (client). */
export interface TileSegmenter {
  segmentTiles(tiles: AsyncIterable<TileRequest>, opts: { wantLabels: boolean; signal?: AbortSignal }): AsyncIterable<TileAnswer>;
}

export interface SlideSegmentation {
  width: number;
  height: number;
  /** width x height class indices at the model's scale (null when not asked for). INVALID tiles stay 0. */
  labels: Uint8Array | null;
  /** Pixels per class over the tiles that were answered (not INVALID). */
  pixels: number[];
  tiles: { total: number; segmented: number; background: number; invalid: number };
  invalid: { region: Region; error: string }[];
}

export interface SegmentSlideOptions {
  numClasses: number;
  tile?: number;
  wantLabels: boolean;
  readAhead?: number;
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

/** Row-major tiles of at most `tile` x `tile` covering width x height. */
export function planRegions(width: number, height: number, tile: number): Region[] {
  const out: Region[] = [];
  for (let top = 0; top < height; top += tile) {
    for (let left = 0; left < width; left += tile) out.push({ left, top, width: Math.min(tile, width - left), height: Math.min(tile, height - top) });
  }
  return out;
}

/** Copies a region out of an RGB image. */
export function cropRgb(img: RgbImage, r: Region): RgbImage {
  if (r.left < 0 || r.top < 0 || r.left + r.width > img.width || r.top + r.height > img.height) {
    throw new RangeError(`region ${r.width}x${r.height} at ${r.left},${r.top} is outside the ${img.width}x${img.height} image`);
  }
  const data = new Uint8Array(r.width * r.height * 3);
  for (let y = 0; y < r.height; y++) {
    const src = ((r.top + y) * img.width + r.left) * 3;
    data.set(img.data.subarray(src, src + r.width * 3), y * r.width * 3);
  }
  return { data, width: r.width, height: r.height };
}

/** A slide already in memory at the model's scale. */
export function imageSource(img: RgbImage): SlideSource {
  return { width: img.width, height: img.height, read: async (r) => cropRgb(img, r) };
}

async function* requests(source: SlideSource, regions: readonly Region[], ahead: number): AsyncGenerator<TileRequest> {
  const started: Promise<TileRequest>[] = [];
  let next = 0;
  const start = () => {
    const index = next++;
    const region = regions[index]!;
    const p = source.read(region).then((rgb) => ({ index, region, rgb }));
    p.catch(() => undefined); // awaited below, in order
    started.push(p);
  };
  while (next < regions.length && started.length < ahead) start();
  while (started.length > 0) {
    const value = await started.shift()!;
    if (next < regions.length) start();
    yield value;
  }
}

export async function segmentSlide(source: SlideSource, segmenter: TileSegmenter, opts: SegmentSlideOptions): Promise<SlideSegmentation> {
  const tile = opts.tile ?? DEFAULT_SLIDE_TILE;
  const { width, height } = source;
  const regions = planRegions(width, height, tile);
  const labels = opts.wantLabels ? new Uint8Array(width * height) : null;
  const pixels = new Array<number>(opts.numClasses).fill(0);
  const tiles = { total: regions.length, segmented: 0, background: 0, invalid: 0 };
  const invalid: SlideSegmentation['invalid'] = [];
  let done = 0;
  opts.onProgress?.(0, regions.length);
  const answers = segmenter.segmentTiles(requests(source, regions, opts.readAhead ?? DEFAULT_READ_AHEAD), {
    wantLabels: opts.wantLabels,
    signal: opts.signal,
  });
  for await (const a of answers) {
    const r = regions[done];
    if (!r) throw new Error(`the segmenter answered ${done + 1} tiles for ${regions.length} sent`);
    done++;
    if (a.status === 'invalid') {
      tiles.invalid++;
      invalid.push({ region: r, error: a.error ?? 'invalid' });
    } else {
      tiles[a.status]++;
      const area = r.width * r.height;
      a.fractions.forEach((f, k) => {
        if (k < pixels.length) pixels[k]! += f * area;
      });
      if (labels) {
        if (!a.labels || a.labels.length !== area) {
          throw new Error(`the answer for tile ${done} (${r.width}x${r.height} at ${r.left},${r.top}) has ${a.labels?.length ?? 0} labels, expected ${area}`);
        }
        for (let y = 0; y < r.height; y++) labels.set(a.labels.subarray(y * r.width, (y + 1) * r.width), (r.top + y) * width + r.left);
      }
    }
    opts.onProgress?.(done, regions.length);
  }
  if (done !== regions.length) throw new Error(`the segmenter answered ${done} of ${regions.length} tiles`);
  return { width, height, labels, pixels: pixels.map((p) => Math.round(p)), tiles, invalid };
}
