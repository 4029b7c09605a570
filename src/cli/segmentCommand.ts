import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import sharp from 'sharp';
import type { ModelInfo } from '../proto/gen/histoseg/v1/model.js';
import { TileStatus, type Tile } from '../proto/gen/histoseg/v1/segmentation.js';
import { openSlide, readSlideRgb, type RgbImage } from '../data/slides/slideReader.js';
import { connect, segmentTiles, type HistosegClients } from '../client/segmentationClient.js';

/**
 * Tile side in pixels at the model's scale: 4 model windows across, so most windows see tissue rather than the
 * white padding a smaller tile gets (the paper's model struggles when the region of interest is a small part of
 * the patch, Sec. 4), and the server blends the overlapping windows inside each tile.
 */
export const DEFAULT_TILE = 512;
/** The model's input side (paper Sec. 2.2): smaller tiles would be mostly padding. */
const MIN_TILE = 128;
/** The server refuses tiles over 4096x4096 pixels by default (HISTOSEG_MAX_TILE_PIXELS). */
const MAX_TILE = 4096;
/** Largest image stitched into a full-size mask or overlay: sharp's own default input limit, 0x3FFF squared. */
export const MAX_STITCH_PIXELS = 0x3fff * 0x3fff;
/** Tiles encoded ahead of the stream, so encoding overlaps with the server's work. */
const READ_AHEAD = 4;
/** Opacity of the class colours painted over the image. */
const OVERLAY_ALPHA = 0.45;

export interface SegmentImageOptions {
  /** host:port of the histoseg server. */
  server: string;
  /** Slide (SVS, pyramidal TIFF) or image (PNG, JPEG). */
  image: string;
  /** Level-0 microns per pixel; default: what the file states (Aperio "MPP ="). 0 = the model's own scale. */
  mpp?: number;
  /** Tile side in pixels at the model's scale (default DEFAULT_TILE). */
  tile?: number;
  /** Label mask PNG to write: one class index per pixel, the image's size. */
  out?: string;
  /** Colour overlay PNG to write, in the model's class colours. */
  overlay?: string;
  caFile?: string;
  token?: string;
  /** NAME or NAME@VERSION; default: the server's default model. */
  model?: string;
  onProgress?(done: number, total: number): void;
}

export interface ClassShare {
  index: number;
  name: string;
  color: string;
  /** Pixels of this class at the model's scale, over the tiles that were answered (not INVALID). */
  pixels: number;
  share: number;
}

export interface SegmentSummary {
  model: { name: string; version: string; trained: boolean };
  image: { path: string; width: number; height: number; mpp: number };
  /** The image at the model's scale, as it was tiled and sent. */
  modelScale: { width: number; height: number; mpp: number };
  tileSize: number;
  tiles: { total: number; segmented: number; background: number; invalid: number };
  classes: ClassShare[];
  /** INVALID tiles, by level-0 place, with the server's reason. */
  invalid: { x: number; y: number; error: string }[];
  mask?: string;
  overlay?: string;
}

interface Region {
  left: number;
  top: number;
  width: number;
  height: number;
}

export function parseModelRef(ref: string | undefined): { name: string; version: string } {
  if (!ref) return { name: '', version: '' };
  const at = ref.lastIndexOf('@');
  const [name, version] = at < 0 ? [ref, ''] : [ref.slice(0, at), ref.slice(at + 1)];
  if (!name || (at >= 0 && !version)) throw new Error(`--model must be NAME or NAME@VERSION, got "${ref}"`);
  return { name, version };
}

/** A token file holds the token alone, or a `<role> <token>` line as in the server's tokens file. */
export function readTokenFile(path: string): string {
  const line = readFileSync(path, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => l && !l.startsWith('#'));
  const fields = line?.split(/\s+/) ?? [];
  if (fields.length < 1 || fields.length > 2) throw new Error(`token file ${path}: expected one line with the token (or "<role> <token>")`);
  return fields[fields.length - 1]!;
}

function planRegions(width: number, height: number, tile: number): Region[] {
  const out: Region[] = [];
  for (let top = 0; top < height; top += tile) {
    for (let left = 0; left < width; left += tile) out.push({ left, top, width: Math.min(tile, width - left), height: Math.min(tile, height - top) });
  }
  return out;
}

/** "#rrggbb" -> [r, g, b]. */
function parseColor(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) return [0, 0, 0];
  return [parseInt(m[1]!, 16), parseInt(m[2]!, 16), parseInt(m[3]!, 16)];
}

/** Runs the jobs in order with up to `ahead` of them started early. */
async function* readAhead<T>(jobs: (() => Promise<T>)[], ahead: number): AsyncGenerator<T> {
  const started: Promise<T>[] = [];
  let next = 0;
  const start = () => {
    const p = jobs[next++]!();
    p.catch(() => undefined); // awaited below, in order
    started.push(p);
  };
  while (next < jobs.length && started.length < ahead) start();
  while (started.length > 0) {
    const value = await started.shift()!;
    if (next < jobs.length) start();
    yield value;
  }
}

function getModel(clients: HistosegClients, name: string, version: string): Promise<ModelInfo> {
  return new Promise((resolve, reject) =>
    clients.models.getModel({ name, version }, clients.metadata(), (err, res) => {
      if (err) reject(err);
      else if (!res?.model) reject(new Error('the server answered GetModel without a model'));
      else resolve(res.model);
    }),
  );
}

async function writeOverlay(path: string, image: string, labels: Uint8Array, width: number, height: number, classes: ModelInfo['classes']): Promise<void> {
  const colors = classes.map((c) => parseColor(c.color));
  const alpha = Math.round(OVERLAY_ALPHA * 255);
  const layer = Buffer.alloc(width * height * 4);
  for (let i = 0; i < labels.length; i++) {
    const k = labels[i]!;
    // Class 0 is normal tissue and glass (paper, "Task"): left unpainted so the slide shows through.
    if (k === 0 || k >= colors.length) continue;
    const [r, g, b] = colors[k]!;
    layer[4 * i] = r;
    layer[4 * i + 1] = g;
    layer[4 * i + 2] = b;
    layer[4 * i + 3] = alpha;
  }
  await sharp(image, { page: 0, limitInputPixels: false })
    .flatten({ background: '#ffffff' })
    .toColourspace('srgb')
    .composite([{ input: layer, raw: { width, height, channels: 4 } }])
    .png()
    .toFile(path);
}

/** Cuts a region of an RGB image out as PNG. */
function encodeRegion(img: RgbImage, r: Region): Promise<Buffer> {
  const buf = Buffer.alloc(r.width * r.height * 3);
  for (let y = 0; y < r.height; y++) {
    const src = ((r.top + y) * img.width + r.left) * 3;
    buf.set(img.data.subarray(src, src + r.width * 3), y * r.width * 3);
  }
  return sharp(buf, { raw: { width: r.width, height: r.height, channels: 3 } }).png({ compressionLevel: 1 }).toBuffer();
}

/**
 * Segments one slide or image over a single SegmentTiles stream and stitches the answers. The image is read once
 * at the model's scale (from the coarsest pyramid level that is fine enough) and tiled there, so tiles carry
 * enough context for the model and ~(mpp ratio)^2 fewer bytes; the stitched mask is scaled back to level 0.
 */
export async function segmentImage(opts: SegmentImageOptions): Promise<SegmentSummary> {
  const tile = opts.tile ?? DEFAULT_TILE;
  if (!Number.isInteger(tile) || tile < MIN_TILE || tile > MAX_TILE) throw new Error(`--tile must be an integer in ${MIN_TILE}..${MAX_TILE}, got ${tile}`);
  const slide = await openSlide(opts.image);
  const { width, height } = slide;
  const mpp = opts.mpp ?? slide.mpp;
  if (mpp === null || mpp === undefined) {
    throw new Error(`${opts.image} does not state its microns per pixel: pass --mpp (the level-0 um/px), or --mpp 0 if it is already at the model's scale`);
  }
  if (!Number.isFinite(mpp) || mpp < 0) throw new Error(`--mpp must be a number >= 0, got ${mpp}`);
  const wantMask = !!(opts.out || opts.overlay);
  if (wantMask && width * height > MAX_STITCH_PIXELS) {
    throw new Error(`${opts.image} is ${width}x${height}: over ${MAX_STITCH_PIXELS} pixels, too large to stitch into one PNG; run without --out/--overlay for the summary`);
  }
  const { name, version } = parseModelRef(opts.model);

  const clients = connect(opts.server, { caFile: opts.caFile, token: opts.token });
  try {
    const model = await getModel(clients, name, version);
    const C = model.classes.length;
    const scale = mpp > 0 ? mpp / model.mpp : 1;
    const mw = Math.max(1, Math.round(width * scale));
    const mh = Math.max(1, Math.round(height * scale));
    const img = await readSlideRgb(slide, mw, mh);
    const regions = planRegions(mw, mh, tile);
    // Tiles carry their level-0 place, which the server echoes back.
    const level0 = (r: Region) => ({ x: Math.round(r.left / scale), y: Math.round(r.top / scale) });
    const jobs = regions.map((r) => async (): Promise<Tile> => ({ tileId: `${r.left},${r.top}`, image: await encodeRegion(img, r), mpp: model.mpp, ...level0(r) }));
    const labels = wantMask ? new Uint8Array(mw * mh) : undefined;
    const counts = new Float64Array(C);
    const tiles = { total: regions.length, segmented: 0, background: 0, invalid: 0 };
    const invalid: SegmentSummary['invalid'] = [];

    let done = 0;
    opts.onProgress?.(0, regions.length);
    const stream = segmentTiles(clients, readAhead(jobs, READ_AHEAD), { modelName: model.name, modelVersion: model.version, omitMask: !wantMask });
    for await (const a of stream) {
      const r = regions[done]!;
      if (a.tileId !== `${r.left},${r.top}`) throw new Error(`answer ${done} is for tile ${a.tileId}, expected ${r.left},${r.top}`);
      done++;
      if (a.status === TileStatus.TILE_STATUS_INVALID) {
        tiles.invalid++;
        invalid.push({ ...level0(r), error: a.error });
      } else {
        if (a.status === TileStatus.TILE_STATUS_SEGMENTED) tiles.segmented++;
        else tiles.background++;
        a.classFractions.forEach((f, k) => (counts[k] += f * r.width * r.height));
        if (labels) {
          // extractChannel: sharp 0.35 widens greyscale to 3 channels on raw output.
          const { data, info } = await sharp(a.mask).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
          if (info.width !== r.width || info.height !== r.height) throw new Error(`mask of tile ${a.tileId} is ${info.width}x${info.height}, expected ${r.width}x${r.height}`);
          for (let y = 0; y < r.height; y++) labels.set(data.subarray(y * r.width, (y + 1) * r.width), (r.top + y) * mw + r.left);
        }
      }
      opts.onProgress?.(done, regions.length);
    }
    if (done !== regions.length) throw new Error(`the stream ended after ${done} of ${regions.length} answers`);

    const answered = counts.reduce((s, c) => s + c, 0);
    const summary: SegmentSummary = {
      model: { name: model.name, version: model.version, trained: model.trained },
      image: { path: opts.image, width, height, mpp },
      modelScale: { width: mw, height: mh, mpp: mpp > 0 ? model.mpp : 0 },
      tileSize: tile,
      tiles,
      classes: model.classes.map((c, k) => ({ index: c.index, name: c.name, color: c.color, pixels: Math.round(counts[k]!), share: answered > 0 ? counts[k]! / answered : 0 })),
      invalid,
    };
    if (labels) {
      // Nearest neighbour: labels are categories, never blended.
      const full =
        mw === width && mh === height
          ? labels
          : (await sharp(labels, { raw: { width: mw, height: mh, channels: 1 } }).resize(width, height, { kernel: 'nearest', fit: 'fill' }).extractChannel(0).raw().toBuffer());
      if (opts.out) {
        // b-w, or sharp 0.35 widens the single channel to sRGB on the way out.
        await sharp(full, { raw: { width, height, channels: 1 } }).toColourspace('b-w').png().toFile(opts.out);
        summary.mask = opts.out;
      }
      if (opts.overlay) {
        await writeOverlay(opts.overlay, opts.image, full, width, height, model.classes);
        summary.overlay = opts.overlay;
      }
    }
    return summary;
  } finally {
    clients.close();
  }
}

export function formatSummary(s: SegmentSummary): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const lines = [
    `model    ${s.model.name}@${s.model.version}${s.model.trained ? '' : '  (UNTRAINED: random weights, the classes mean nothing)'}`,
    `image    ${s.image.path}  ${s.image.width}x${s.image.height} at ${s.image.mpp || "the model's"} um/px`,
    `tiled    ${s.modelScale.width}x${s.modelScale.height} at the model's scale, in ${s.tileSize}px tiles`,
    `tiles    ${s.tiles.total}: ${s.tiles.segmented} segmented, ${s.tiles.background} background, ${s.tiles.invalid} invalid`,
    "classes  share of the answered area (at the model's scale)",
    ...s.classes.map((c) => `  ${String(c.index).padStart(2)} ${c.name.padEnd(12)} ${pct(c.share).padStart(6)}  ${c.color}`),
    ...s.invalid.slice(0, 10).map((t) => `invalid tile at ${t.x},${t.y}: ${t.error}`),
    ...(s.invalid.length > 10 ? [`... and ${s.invalid.length - 10} more invalid tiles`] : []),
    ...(s.mask ? [`mask     ${s.mask}`] : []),
    ...(s.overlay ? [`overlay  ${s.overlay}`] : []),
  ];
  return lines.join('\n') + '\n';
}

function parseNumber(min: number, integer: boolean) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) throw new InvalidArgumentError(`must be ${integer ? 'an integer' : 'a number'} >= ${min}`);
    return n;
  };
}

interface SegmentFlags {
  server: string;
  image: string;
  mpp?: number;
  tile: number;
  out?: string;
  overlay?: string;
  ca?: string;
  tokenFile?: string;
  model?: string;
  json?: boolean;
}

export function registerSegment(program: Command): void {
  program
    .command('segment')
    .description('segment a slide or image on a histoseg server: one stream of tiles, stitched into a label mask')
    .requiredOption('--server <host:port>', 'histoseg server address')
    .requiredOption('--image <file>', 'slide (SVS, pyramidal TIFF) or image (PNG, JPEG)')
    .option('--mpp <um>', 'level-0 microns per pixel (default: from the file; 0 = already at the model scale)', parseNumber(0, false))
    .option('--tile <px>', `tile side in pixels at the model's scale (${MIN_TILE}..${MAX_TILE})`, parseNumber(MIN_TILE, true), DEFAULT_TILE)
    .option('--out <png>', 'write the label mask (8-bit, pixel = class index, the image size)')
    .option('--overlay <png>', 'write the image with classes painted in the model colours')
    .option('--ca <file>', 'PEM CA of a TLS server (default: plaintext)')
    .option('--token-file <file>', 'file with the bearer token')
    .option('--model <name[@version]>', "model to use (default: the server's default)")
    .option('--json', 'print one JSON object instead of the summary')
    .action(async (flags: SegmentFlags) => {
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar({ stream: process.stderr, format: 'tiles {bar} {value}/{total} {percentage}% eta {eta}s', hideCursor: true }, cliProgress.Presets.shades_classic)
        : undefined;
      let started = false;
      try {
        const summary = await segmentImage({
          server: flags.server,
          image: flags.image,
          mpp: flags.mpp,
          tile: flags.tile,
          out: flags.out,
          overlay: flags.overlay,
          caFile: flags.ca,
          token: flags.tokenFile ? readTokenFile(flags.tokenFile) : undefined,
          model: flags.model,
          onProgress: (done, total) => {
            if (!bar) return;
            if (!started) bar.start(total, done);
            else bar.update(done);
            started = true;
          },
        });
        bar?.stop();
        process.stdout.write(flags.json ? JSON.stringify(summary) + '\n' : formatSummary(summary));
      } finally {
        bar?.stop();
      }
    });
}
