import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import sharp from 'sharp';
import type { ModelInfo } from '../proto/gen/histoseg/v1/model.js';
import { openSlide, readSlideRgb } from '../data/slides/slideReader.js';
import { connect, type HistosegClients } from '../client/segmentationClient.js';
import { remoteSegmenter } from '../client/remoteSegmenter.js';
import { DEFAULT_SLIDE_TILE, imageSource, segmentSlide, type Region } from '../pipeline/segmentSlide.js';

/** Tile side in pixels at the model's scale (pipeline/segmentSlide.ts says why 512). */
export const DEFAULT_TILE = DEFAULT_SLIDE_TILE;
/** The model's input side (paper Sec. 2.2): smaller tiles would be mostly padding. */
const MIN_TILE = 128;
/** The server refuses tiles over 4096x4096 pixels by default (HISTOSEG_MAX_TILE_PIXELS). */
const MAX_TILE = 4096;
/** Largest image stitched into a full-size mask or overlay: sharp's own default input limit, 0x3FFF squared. */
export const MAX_STITCH_PIXELS = 0x3fff * 0x3fff;
/** Tiles read ahead of the stream. */
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

/** "#rrggbb" -> [r, g, b]. */
function parseColor(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) return [0, 0, 0];
  return [parseInt(m[1]!, 16), parseInt(m[2]!, 16), parseInt(m[3]!, 16)];
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
    // Tiles carry their level-0 place, which the server echoes back.
    const level0 = (r: Region) => ({ x: Math.round(r.left / scale), y: Math.round(r.top / scale) });
    const result = await segmentSlide(imageSource(img), remoteSegmenter(clients, model, (t) => level0(t.region)), {
      numClasses: C,
      tile,
      wantLabels: wantMask,
      readAhead: READ_AHEAD,
      onProgress: opts.onProgress,
    });
    const { tiles, labels } = result;
    const invalid = result.invalid.map((t) => ({ ...level0(t.region), error: t.error }));
    const counts = result.pixels;
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
