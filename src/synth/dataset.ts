// Writes a synthetic dataset in the generic layout (see dataset.ts): every file is a pure function of the seed.
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeLabelMap } from '../data/labels/labelMap.js';
import { labelsToBachXml, labelsToGeoJson } from '../data/labels/annotations.js';
import { CLASSES_TXT, DATASET_JSON, type DatasetJson, type Split } from '../data/datasets/dataset.js';
import { SYNTH_PATCH_SIZE, cutClassPatches } from './patches.js';
import { Rng } from '../util/rng.js';
import { SYNTH_CLASSES, SYNTH_DEFAULT_SIZE, SYNTH_MPP, type SynthSlide, renderSynthSlide } from './slides.js';

/** Tile side of the pyramidal TIFFs, as in Aperio SVS files. */
export const SYNTH_TIFF_TILE = 256;
/** Class patches per class from each training slide: 6 training slides give about BACH part A's 100 per class. */
export const SYNTH_DEFAULT_PATCHES_PER_CLASS = 16;
/** The layout entries the generator owns; `force` removes exactly these. */
const OUTPUT_ENTRIES = [CLASSES_TXT, DATASET_JSON, 'slides', 'masks', 'annotations', 'patches'];

export interface SynthDatasetOptions {
  seed: number;
  out: string;
  slides?: number;
  size?: number;
  patchesPerClass?: number;
  /** Replace the generator's own files in a non-empty `out`. */
  force?: boolean;
  onSlide?: (done: number, total: number, name: string) => void;
}

export interface SynthSlideSummary {
  name: string;
  split: Split;
  /** Pixels per class. */
  pixels: number[];
}

export interface SynthDatasetSummary {
  slides: SynthSlideSummary[];
  /** Patches per class name. */
  patches: Record<string, number>;
  /** The first slide, rendered, for sample pictures. */
  first: SynthSlide | null;
}

/** Slide i of n: about 60% train, 10% validation (at least one from 3 slides up), 30% test, in that order. */
export function synthSplit(i: number, n: number): Split {
  const test = n >= 3 ? Math.round(0.3 * n) : n === 2 ? 1 : 0;
  const validation = n >= 3 ? Math.max(1, Math.round(0.1 * n)) : 0;
  if (i >= n - test) return 'test';
  if (i >= n - test - validation) return 'validation';
  return 'train';
}

export function synthSlideName(i: number): string {
  return `synth-${String(i).padStart(3, '0')}`;
}

async function prepareOut(out: string, force: boolean): Promise<void> {
  let entries: string[] = [];
  try {
    entries = await readdir(out);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (entries.length > 0) {
    if (!force) throw new Error(`${out} is not empty; choose a new folder or pass --force to replace its dataset`);
    for (const e of OUTPUT_ENTRIES) await rm(join(out, e), { recursive: true, force: true });
  }
  for (const dir of ['slides', 'masks', 'annotations', 'patches']) await mkdir(join(out, dir), { recursive: true });
  for (const cls of SYNTH_CLASSES) await mkdir(join(out, 'patches', cls), { recursive: true });
}

/** Encodes a rendered slide as a tiled, pyramidal, JPEG-compressed TIFF with its resolution in the header. */
export function encodeSlideTiff(slide: SynthSlide): Promise<Buffer> {
  const pxPerMm = 1000 / SYNTH_MPP;
  return sharp(slide.rgb, { raw: { width: slide.width, height: slide.height, channels: 3 } })
    .tiff({
      compression: 'jpeg',
      quality: 90,
      tile: true,
      tileWidth: SYNTH_TIFF_TILE,
      tileHeight: SYNTH_TIFF_TILE,
      pyramid: true,
      xres: pxPerMm,
      yres: pxPerMm,
      resolutionUnit: 'cm',
    })
    .toBuffer();
}

export async function writeSynthDataset(opts: SynthDatasetOptions): Promise<SynthDatasetSummary> {
  const n = opts.slides ?? 10;
  const size = opts.size ?? SYNTH_DEFAULT_SIZE;
  const perClass = opts.patchesPerClass ?? SYNTH_DEFAULT_PATCHES_PER_CLASS;
  if (!Number.isInteger(n) || n < 1) throw new Error(`--slides must be a positive integer, got ${n}`);
  if (!Number.isInteger(size) || size < SYNTH_PATCH_SIZE) {
    throw new Error(`--size must be an integer of at least ${SYNTH_PATCH_SIZE}, got ${size}`);
  }
  if (!Number.isInteger(opts.seed) || opts.seed < 0 || opts.seed > 0xffffffff) {
    throw new Error(`--seed must be an integer in 0..4294967295, got ${opts.seed}`);
  }
  await prepareOut(opts.out, opts.force ?? false);
  const classes = [...SYNTH_CLASSES];
  await writeFile(join(opts.out, CLASSES_TXT), classes.join('\n') + '\n');

  const master = new Rng(opts.seed ^ 0x5eed5eed);
  const json: DatasetJson = {
    mpp: SYNTH_MPP,
    synthetic: true,
    description: `synthetic slides from histoseg synth (seed ${opts.seed}, ${n} slides), not real tissue`,
    slides: {},
  };
  const summary: SynthDatasetSummary = { slides: [], patches: Object.fromEntries(classes.map((c) => [c, 0])), first: null };
  for (let i = 0; i < n; i++) {
    const name = synthSlideName(i);
    const split = synthSplit(i, n);
    const slideSeed = master.seed();
    const patchRng = new Rng(master.seed());
    const slide = renderSynthSlide(slideSeed, size);
    if (i === 0) summary.first = slide;
    const { width, height, labels } = slide;
    await writeFile(join(opts.out, 'slides', `${name}.tif`), await encodeSlideTiff(slide));
    await writeLabelMap(join(opts.out, 'masks', `${name}.png`), { labels, width, height });
    await writeFile(
      join(opts.out, 'annotations', `${name}.geojson`),
      JSON.stringify(labelsToGeoJson(labels, width, height, classes)) + '\n',
    );
    await writeFile(
      join(opts.out, 'annotations', `${name}.xml`),
      labelsToBachXml(labels, width, height, classes, { mpp: SYNTH_MPP }),
    );
    // Class patches come from training slides only, so validation and test slides stay unseen.
    if (split === 'train') {
      const counters = new Array<number>(classes.length).fill(0);
      for (const p of cutClassPatches(slide, patchRng, perClass, classes.length)) {
        const k = counters[p.cls]!++;
        const file = join(opts.out, 'patches', classes[p.cls]!, `${name}-${String(k).padStart(3, '0')}.png`);
        const raw = { width: SYNTH_PATCH_SIZE, height: SYNTH_PATCH_SIZE, channels: 3 as const };
        await writeFile(file, await sharp(p.rgb, { raw }).png().toBuffer());
        summary.patches[classes[p.cls]!]! += 1;
      }
    }
    const pixels = new Array<number>(classes.length).fill(0);
    for (let j = 0; j < labels.length; j++) pixels[labels[j]!]! += 1;
    summary.slides.push({ name, split, pixels });
    json.slides[name] = { split, mpp: SYNTH_MPP };
    opts.onSlide?.(i + 1, n, name);
  }
  await writeFile(join(opts.out, DATASET_JSON), JSON.stringify(json, null, 2) + '\n');
  return summary;
}
