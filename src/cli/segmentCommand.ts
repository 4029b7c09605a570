import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import { writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import type { ModelInfo } from '../proto/gen/histoseg/v1/model.js';
import { openDicomWebSlide, openSlide, readSlideRgb, type SlideInfo } from '../data/slides/slideReader.js';
import { slideRegionSource } from '../data/slides/regionSource.js';
import { storeInstances, type DicomWebTarget } from '../dicom/dicomweb.js';
import { buildDicomSeg } from '../data/labels/dicomSeg.js';
import { segmentationToGeoJson } from '../data/labels/geojson.js';
import { writeOverlay } from '../data/labels/overlay.js';
import { resizeLabels } from '../imaging/decode.js';
import { tissueMask } from '../imaging/tissue.js';
import { connect, type HistosegClients } from '../client/segmentationClient.js';
import { remoteSegmenter } from '../client/remoteSegmenter.js';
import { isTiffPath, writeLabelTiff } from '../data/labels/labelTiff.js';
import { DEFAULT_SLIDE_TILE, imageSource, segmentSlide, type Region, type SlideSource } from '../pipeline/segmentSlide.js';
import { slideAreas, type SlideAreas } from '../pipeline/slideSummary.js';

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

export interface SegmentImageOptions {
  /** host:port of the histoseg server. */
  server: string;
  /** Slide (SVS, pyramidal TIFF, DICOM WSI file or series folder) or image (PNG, JPEG); or use `dicomweb`. */
  image?: string;
  /** A series on a DICOMweb server instead of `image`. */
  dicomweb?: DicomWebTarget;
  /** Send the DICOM SEG back to the DICOMweb server (STOW-RS); needs `dicomweb`. */
  store?: boolean;
  /** DICOM Segmentation to write (a DICOM source only), at the model's scale. */
  dicomSeg?: string;
  /** TILED_FULL (default) or TILED_SPARSE frames in the SEG. */
  segOrganization?: 'TILED_FULL' | 'TILED_SPARSE';
  /** QuPath GeoJSON to write, level-0 pixel coordinates. */
  geojson?: string;
  /** Level-0 microns per pixel; default: what the file states (Aperio "MPP ="). 0 = the model's own scale. */
  mpp?: number;
  /** Tile side in pixels at the model's scale (default DEFAULT_TILE). */
  tile?: number;
  /**
   * Label map to write, one class index per pixel at the image's size: a PNG (up to MAX_STITCH_PIXELS), or a tiled
   * TIFF for a slide of any size when the name ends in .tif or .tiff.
   */
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
  /** Area in mm² (null when the scale is unknown). */
  areaMm2: number | null;
  /** Share of the tissue alone (glass left out). */
  tissueShare: number;
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
  tissue: SlideAreas['tissue'];
  glass: SlideAreas['glass'];
  /** One class for the slide (pipeline/slideSummary.ts says the rule). */
  slideClass: { index: number; name: string; rule: string };
  /** Which pyramid level the tiles were read from, and how many were glass at the coarsest level and not read. */
  read: { format: string; level: number; shrink: number; skippedGlassTiles: number };
  mask?: string;
  overlay?: string;
  dicomSeg?: string;
  geojson?: string;
  /** Over DICOMweb: what travelled (metadata and frames), before any STOW. */
  fetched?: { bytes: number; frames: number; requests: number };
  /** The SEG's identity when it was stored over DICOMweb. */
  stored?: { studyInstanceUid: string; seriesInstanceUid: string; sopInstanceUid: string };
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

function getModel(clients: HistosegClients, name: string, version: string): Promise<ModelInfo> {
  return new Promise((resolve, reject) =>
    clients.models.getModel({ name, version }, clients.metadata(), (err, res) => {
      if (err) reject(err);
      else if (!res?.model) reject(new Error('the server answered GetModel without a model'));
      else resolve(res.model);
    }),
  );
}

/**
 * Segments one slide or image over a single SegmentTiles stream and stitches the answers. The image is read once
 * at the model's scale (from the coarsest pyramid level that is fine enough) and tiled there, so tiles carry
 * enough context for the model and ~(mpp ratio)^2 fewer bytes; the stitched mask is scaled back to level 0.
 */
export async function segmentImage(opts: SegmentImageOptions): Promise<SegmentSummary> {
  const tile = opts.tile ?? DEFAULT_TILE;
  if (!Number.isInteger(tile) || tile < MIN_TILE || tile > MAX_TILE) throw new Error(`--tile must be an integer in ${MIN_TILE}..${MAX_TILE}, got ${tile}`);
  if (!!opts.image === !!opts.dicomweb) throw new Error('give either --image or --dicomweb (with --study and --series)');
  if (opts.store && !opts.dicomweb) throw new Error('--store sends the SEG back to the DICOMweb server: it needs --dicomweb');
  const web = opts.dicomweb ? await openDicomWebSlide(opts.dicomweb) : null;
  const slide: SlideInfo = web ?? (await openSlide(opts.image!));
  const where = opts.image ?? `${opts.dicomweb!.url} study ${opts.dicomweb!.study} series ${opts.dicomweb!.series}`;
  if ((opts.dicomSeg || opts.store) && slide.format !== 'dicom') {
    throw new Error(`${where} is not a DICOM slide: a DICOM SEG takes its patient, study and frame of reference from a DICOM source (write --geojson or --out instead)`);
  }
  const { width, height } = slide;
  const mpp = opts.mpp ?? slide.mpp;
  if (mpp === null || mpp === undefined) {
    throw new Error(`${where} does not state its microns per pixel: pass --mpp (the level-0 um/px), or --mpp 0 if it is already at the model's scale`);
  }
  if (!Number.isFinite(mpp) || mpp < 0) throw new Error(`--mpp must be a number >= 0, got ${mpp}`);
  const tiffOut = !!opts.out && isTiffPath(opts.out);
  const pngOut = !!opts.out && !tiffOut;
  const wantFullSize = pngOut || !!opts.overlay;
  if (wantFullSize && width * height > MAX_STITCH_PIXELS) {
    throw new Error(
      `${where} is ${width}x${height}: over ${MAX_STITCH_PIXELS} pixels, too large to stitch into one full-size PNG; ` +
        '--out FILE.tif writes the label map of a slide of any size as a tiled TIFF, --dicom-seg and --geojson write it at the ' +
        "model's scale, and the summary needs none of them",
    );
  }
  const { name, version } = parseModelRef(opts.model);

  const clients = connect(opts.server, { caFile: opts.caFile, token: opts.token });
  try {
    const model = await getModel(clients, name, version);
    const C = model.classes.length;
    const scale = mpp > 0 ? mpp / model.mpp : 1;
    const mw = Math.max(1, Math.round(width * scale));
    const mh = Math.max(1, Math.round(height * scale));
    // sharp reads JPEG-tiled TIFF/SVS and plain images whole at the model's scale; DICOM and JPEG 2000 slides are
    // read region by region, skipping what the coarsest level shows to be glass.
    let base: SlideSource;
    let regionInfo = { level: 0, shrink: 1, skipped: () => 0 };
    if (slide.format === 'tiff') {
      base = imageSource(await readSlideRgb(slide, mw, mh));
    } else {
      const src = await slideRegionSource(slide, mw, mh, { skipGlass: true });
      base = src;
      regionInfo = { level: src.level, shrink: src.shrink, skipped: () => src.skipped };
    }
    // The paper's tissue mask (App. B.1), tile by tile as the tiles are read: glass apart from class-0 tissue.
    const tissue = new Uint8Array(mw * mh);
    const source: SlideSource = {
      width: mw,
      height: mh,
      read: async (r) => {
        const rgb = await base.read(r);
        const m = tissueMask(rgb.data, r.width, r.height);
        for (let y = 0; y < r.height; y++) tissue.set(m.subarray(y * r.width, (y + 1) * r.width), (r.top + y) * mw + r.left);
        return rgb;
      },
    };
    // Tiles carry their level-0 place, which the server echoes back.
    const level0 = (r: Region) => ({ x: Math.round(r.left / scale), y: Math.round(r.top / scale) });
    const result = await segmentSlide(source, remoteSegmenter(clients, model, (t) => level0(t.region)), {
      numClasses: C,
      tile,
      wantLabels: true,
      readAhead: READ_AHEAD,
      onProgress: opts.onProgress,
    });
    const { tiles } = result;
    const labels = result.labels!;
    const invalid = result.invalid.map((t) => ({ ...level0(t.region), error: t.error }));
    const counts = result.pixels;
    const answered = counts.reduce((s, c) => s + c, 0);
    let answeredMask: Uint8Array | null = null;
    if (result.invalid.length > 0) {
      answeredMask = new Uint8Array(mw * mh).fill(1);
      for (const { region: r } of result.invalid) for (let y = 0; y < r.height; y++) answeredMask.fill(0, (r.top + y) * mw + r.left, (r.top + y) * mw + r.left + r.width);
    }
    const areas = slideAreas(labels, tissue, C, mpp > 0 ? model.mpp : 0, answeredMask);
    const summary: SegmentSummary = {
      model: { name: model.name, version: model.version, trained: model.trained },
      image: { path: where, width, height, mpp },
      modelScale: { width: mw, height: mh, mpp: mpp > 0 ? model.mpp : 0 },
      tileSize: tile,
      tiles,
      classes: model.classes.map((c, k) => ({
        index: c.index,
        name: c.name,
        color: c.color,
        pixels: Math.round(counts[k]!),
        share: answered > 0 ? counts[k]! / answered : 0,
        areaMm2: areas.classes[k]!.areaMm2,
        tissueShare: areas.classes[k]!.tissueShare,
      })),
      invalid,
      tissue: areas.tissue,
      glass: areas.glass,
      slideClass: { ...areas.slideClass, name: model.classes[areas.slideClass.index]?.name ?? '' },
      read: { format: slide.format, level: regionInfo.level, shrink: regionInfo.shrink, skippedGlassTiles: regionInfo.skipped() },
    };
    const classes = model.classes.map((c) => ({ name: c.name, color: c.color }));
    if (web) summary.fetched = { bytes: web.source.bytesFetched, frames: web.source.framesFetched, requests: web.source.requests };
    if (opts.geojson) {
      await writeFile(opts.geojson, JSON.stringify(segmentationToGeoJson(labels, mw, mh, classes, { toLevel0: [width / mw, height / mh] })));
      summary.geojson = opts.geojson;
    }
    if (opts.dicomSeg || opts.store) {
      const dicom = slide.dicom!;
      const L0 = dicom.levels[0]!;
      const spacing0 = L0.pixelSpacing ?? [mpp / 1000, mpp / 1000];
      const read = dicom.levels[regionInfo.level] ?? L0;
      const seg = buildDicomSeg({
        labels,
        width: mw,
        height: mh,
        classes,
        pixelSpacing: [(spacing0[0] * height) / mh, (spacing0[1] * width) / mw],
        source: L0.instances[0]!.dataset,
        sourceInstances: read.instances.map((i) => ({ sopClassUid: String(i.dataset.SOPClassUID), sopInstanceUid: i.sopInstanceUid })),
        algorithm: { name: model.name, version: model.version },
        organization: opts.segOrganization,
      });
      if (opts.dicomSeg) {
        await writeFile(opts.dicomSeg, seg);
        summary.dicomSeg = opts.dicomSeg;
      }
      if (opts.store) summary.stored = await storeInstances(opts.dicomweb!, [seg]);
    }
    if (tiffOut) {
      await writeLabelTiff(opts.out!, { labels, width: mw, height: mh }, width, height, mpp > 0 ? mpp : model.mpp);
      summary.mask = opts.out;
    }
    if (wantFullSize) {
      // Nearest neighbour: labels are categories, never blended.
      const full = mw === width && mh === height ? labels : await resizeLabels(labels, mw, mh, width, height);
      if (pngOut) {
        // b-w, or sharp 0.35 widens the single channel to sRGB on the way out.
        await sharp(full, { raw: { width, height, channels: 1 } }).toColourspace('b-w').png().toFile(opts.out!);
        summary.mask = opts.out;
      }
      if (opts.overlay) {
        const fullTissue = mw === width && mh === height ? tissue : await resizeLabels(tissue, mw, mh, width, height);
        await writeOverlay(opts.overlay, await readSlideRgb(slide, width, height), full, fullTissue, classes);
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
    `tissue   ${pct(s.tissue.share)} of the answered area${s.tissue.areaMm2 !== null ? `, ${s.tissue.areaMm2.toFixed(2)} mm²` : ''}`,
    "classes  share of the answered area, share of the tissue, area (at the model's scale)",
    ...s.classes.map(
      (c) => `  ${String(c.index).padStart(2)} ${c.name.padEnd(12)} ${pct(c.share).padStart(6)} ${pct(c.tissueShare).padStart(6)}${c.areaMm2 !== null ? ` ${c.areaMm2.toFixed(3).padStart(9)} mm²` : ''}  ${c.color}`,
    ),
    `slide    ${s.slideClass.name} (${s.slideClass.rule})`,
    ...s.invalid.slice(0, 10).map((t) => `invalid tile at ${t.x},${t.y}: ${t.error}`),
    ...(s.invalid.length > 10 ? [`... and ${s.invalid.length - 10} more invalid tiles`] : []),
    ...(s.mask ? [`mask     ${s.mask}`] : []),
    ...(s.overlay ? [`overlay  ${s.overlay}`] : []),
    ...(s.dicomSeg ? [`seg      ${s.dicomSeg}`] : []),
    ...(s.geojson ? [`geojson  ${s.geojson}`] : []),
    ...(s.stored ? [`stored   SEG series ${s.stored.seriesInstanceUid} in study ${s.stored.studyInstanceUid}`] : []),
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
  image?: string;
  dicomweb?: string;
  study?: string;
  series?: string;
  store?: boolean;
  dicomwebTokenFile?: string;
  dicomSeg?: string;
  segTiling: string;
  geojson?: string;
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
    .option('--image <file>', 'slide (SVS incl. JPEG 2000, pyramidal TIFF, DICOM WSI file or series folder) or image (PNG, JPEG)')
    .option('--dicomweb <url>', 'DICOMweb root of a PACS (e.g. http://pacs/dicom-web) to read the slide from, with --study and --series')
    .option('--study <uid>', 'StudyInstanceUID of the slide on the DICOMweb server')
    .option('--series <uid>', 'SeriesInstanceUID of the slide on the DICOMweb server')
    .option('--store', 'send the DICOM SEG back to the DICOMweb server (STOW-RS)')
    .option('--dicomweb-token-file <file>', 'file with a bearer token for the DICOMweb server')
    .option('--dicom-seg <file.dcm>', "write a DICOM Segmentation (DICOM sources), at the model's scale")
    .option('--seg-tiling <full|sparse>', 'SEG frames: TILED_FULL (all tiles) or TILED_SPARSE (non-empty tiles only)', 'full')
    .option('--geojson <file>', 'write QuPath GeoJSON (one feature per region, level-0 pixel coordinates)')
    .option('--mpp <um>', 'level-0 microns per pixel (default: from the file; 0 = already at the model scale)', parseNumber(0, false))
    .option('--tile <px>', `tile side in pixels at the model's scale (${MIN_TILE}..${MAX_TILE})`, parseNumber(MIN_TILE, true), DEFAULT_TILE)
    .option('--out <png|tif>', 'write the label map (8-bit, pixel = class index, the image size): PNG, or a tiled TIFF for a slide of any size (.tif)')
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
        if (flags.segTiling !== 'full' && flags.segTiling !== 'sparse') throw new InvalidArgumentError(`--seg-tiling must be full or sparse, got ${flags.segTiling}`);
        if (flags.dicomweb && (!flags.study || !flags.series)) throw new InvalidArgumentError('--dicomweb needs --study and --series');
        const summary = await segmentImage({
          server: flags.server,
          image: flags.image,
          dicomweb: flags.dicomweb
            ? { url: flags.dicomweb, study: flags.study!, series: flags.series!, token: flags.dicomwebTokenFile ? readTokenFile(flags.dicomwebTokenFile) : undefined }
            : undefined,
          store: flags.store,
          dicomSeg: flags.dicomSeg,
          segOrganization: flags.segTiling === 'sparse' ? 'TILED_SPARSE' : 'TILED_FULL',
          geojson: flags.geojson,
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
