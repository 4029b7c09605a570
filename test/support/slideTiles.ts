// The slide the end-to-end tests cut tissue from: the real Aperio SVS in ../shared when it is there (CI lays it beside
// the checkout), else a synthetic one made by src/synth, so that a plain clone runs every test. Set
// HISTOSEG_TEST_SLIDE=synthetic to use the synthetic slide even where the real one exists.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import type { Tile } from '../../src/proto/gen/histoseg/v1/segmentation.js';
import { SYNTH_TIFF_TILE } from '../../src/synth/dataset.js';
import { SYNTH_MPP, renderSynthSlide } from '../../src/synth/slides.js';
import { MODEL_MPP } from '../../src/util/constants.js';

export const SVS_PATH = fileURLToPath(new URL('../../../shared/data/slides/CMU-1-Small-Region.svs', import.meta.url));
/** Whether the real slide is present; tests that use it must also have a synthetic variant that always runs. */
export const haveSlide = existsSync(SVS_PATH);
/** Aperio's MPP for this slide. */
export const SVS_MPP = 0.499;

export interface TestSlide {
  /** 'real' (CMU-1-Small-Region.svs) or 'synthetic'. */
  kind: 'real' | 'synthetic';
  path: string;
  /** Level-0 size. */
  width: number;
  height: number;
  /** Level-0 um/px, as the file's ImageDescription states it ("MPP = "), like an Aperio SVS. */
  mpp: number;
}

export const REAL_SLIDE: TestSlide = { kind: 'real', path: SVS_PATH, width: 2220, height: 2967, mpp: SVS_MPP };

/** Synthetic slide: seed, canvas rendered at SYNTH_MPP, and the centre crop kept (the section's rim is glass). */
const SYNTH_SEED = 5;
const SYNTH_CANVAS = { width: 220, height: 300 };
const SYNTH_CROP = { width: 148, height: 198 };
/** Upscaled to 0.5 um/px (like the real slide's 20X level 0), so level-0 regions up to ~2200x2900 exist. */
const SYNTH_UPSCALE = 15;
export const SYNTH_SLIDE_MPP = SYNTH_MPP / SYNTH_UPSCALE;

/**
 * A minimal one-strip RGB TIFF whose ImageDescription says `description`. sharp cannot set that tag, but it keeps it
 * (keepMetadata) when re-encoding, which is how the pyramidal synthetic slide comes to state its MPP as an SVS does.
 * `compression` is only written into the header (default 1, none): other codes make files a reader must refuse.
 */
export function describedTiff(rgb: Buffer, width: number, height: number, description: string, compression = 1): Buffer {
  const text = Buffer.from(description + '\0', 'latin1');
  const entries: [tag: number, type: number, count: number, value: number][] = [];
  const n = 10;
  const ifd = 8;
  const bps = ifd + 2 + n * 12 + 4;
  const desc = bps + 6;
  const data = desc + text.length;
  const SHORT = 3, LONG = 4, ASCII = 2;
  entries.push([256, LONG, 1, width], [257, LONG, 1, height], [258, SHORT, 3, bps], [259, SHORT, 1, compression], [262, SHORT, 1, 2]);
  entries.push([270, ASCII, text.length, desc], [273, LONG, 1, data], [277, SHORT, 1, 3], [278, LONG, 1, height], [279, LONG, 1, rgb.length]);
  const b = Buffer.alloc(data + rgb.length);
  b.write('II', 0, 'latin1');
  b.writeUInt16LE(42, 2);
  b.writeUInt32LE(ifd, 4);
  b.writeUInt16LE(n, ifd);
  entries.forEach(([tag, type, count, value], i) => {
    const o = ifd + 2 + i * 12;
    b.writeUInt16LE(tag, o);
    b.writeUInt16LE(type, o + 2);
    b.writeUInt32LE(count, o + 4);
    if (type === SHORT && count === 1) b.writeUInt16LE(value, o + 8);
    else b.writeUInt32LE(value, o + 8);
  });
  for (let i = 0; i < 3; i++) b.writeUInt16LE(8, bps + 2 * i);
  text.copy(b, desc);
  rgb.copy(b, data);
  return b;
}

let synthetic: Promise<TestSlide> | undefined;

/**
 * The synthetic slide, made once per process: a src/synth rendering (RGB at 7.5 um/px) upscaled to 0.5 um/px and
 * written as a JPEG-tiled pyramidal TIFF with an Aperio-style ImageDescription, into a temp folder removed at exit.
 */
export function syntheticSlide(): Promise<TestSlide> {
  synthetic ??= (async () => {
    const full = renderSynthSlide(SYNTH_SEED, SYNTH_CANVAS.width, SYNTH_CANVAS.height);
    const { width: w, height: h } = SYNTH_CROP;
    const x0 = (SYNTH_CANVAS.width - w) >> 1;
    const y0 = (SYNTH_CANVAS.height - h) >> 1;
    const crop = Buffer.alloc(w * h * 3);
    for (let y = 0; y < h; y++) full.rgb.copy(crop, y * w * 3, ((y0 + y) * SYNTH_CANVAS.width + x0) * 3, ((y0 + y) * SYNTH_CANVAS.width + x0 + w) * 3);
    const width = w * SYNTH_UPSCALE;
    const height = h * SYNTH_UPSCALE;
    const description = `Aperio Image Library histoseg synthetic test slide (seed ${SYNTH_SEED})\r\n${width}x${height} |MPP = ${SYNTH_SLIDE_MPP}`;
    const dir = mkdtempSync(join(tmpdir(), 'histoseg-test-slide-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'synthetic.svs');
    const pxPerMm = 1000 / SYNTH_SLIDE_MPP;
    await sharp(describedTiff(crop, w, h, description))
      .resize(width, height, { kernel: 'cubic' })
      .keepMetadata()
      .tiff({ compression: 'jpeg', quality: 90, tile: true, tileWidth: SYNTH_TIFF_TILE, tileHeight: SYNTH_TIFF_TILE, pyramid: true, xres: pxPerMm, yres: pxPerMm, resolutionUnit: 'cm' })
      .toFile(path);
    return { kind: 'synthetic', path, width, height, mpp: SYNTH_SLIDE_MPP } satisfies TestSlide;
  })();
  return synthetic;
}

/** The slide for tests of properties any H&E slide has: the real one when present (and not overridden), else synthetic. */
export function testSlide(): Promise<TestSlide> {
  return haveSlide && process.env.HISTOSEG_TEST_SLIDE !== 'synthetic' ? Promise.resolve(REAL_SLIDE) : syntheticSlide();
}

/** For tests of facts about a slide file: the synthetic slide always, and the real one too when present. */
export const SLIDE_VARIANTS: { kind: TestSlide['kind']; load: () => Promise<TestSlide> }[] = [
  { kind: 'synthetic', load: syntheticSlide },
  ...(haveSlide ? [{ kind: 'real' as const, load: () => Promise.resolve(REAL_SLIDE) }] : []),
];

/** A slide (default: the test slide) at the model's scale (1.25X), as one RGB buffer. */
export async function slideAtModelScale(slide?: TestSlide): Promise<{ data: Buffer; width: number; height: number }> {
  slide ??= await testSlide();
  const scale = slide.mpp / MODEL_MPP;
  const { data, info } = await sharp(slide.path)
    .resize(Math.round(slide.width * scale), Math.round(slide.height * scale), { kernel: 'linear' })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/**
 * Tissue tiles: regions of the test slide encoded as PNG (or `format`), with their level-0 place. A region is resampled
 * to its `mpp` (default: the slide's own) and the tile declares that mpp.
 */
export async function tissueTiles(regions: { left: number; top: number; width: number; height: number; mpp?: number; format?: 'png' | 'jpeg' | 'webp' | 'tiff' }[]): Promise<Tile[]> {
  const slide = await testSlide();
  return Promise.all(
    regions.map(async (r, i) => {
      const mpp = r.mpp ?? slide.mpp;
      let img = sharp(slide.path).extract({ left: r.left, top: r.top, width: r.width, height: r.height });
      if (mpp !== slide.mpp) {
        const s = slide.mpp / mpp;
        img = sharp(await img.png().toBuffer()).resize(Math.round(r.width * s), Math.round(r.height * s));
      }
      const image = await img.removeAlpha().toFormat(r.format ?? 'png').toBuffer();
      return { tileId: `tissue-${i}`, image, mpp, x: r.left, y: r.top };
    }),
  );
}

export const EBHI_PNG = fileURLToPath(new URL('../../../shared/data/ebhi/images/A-GT2001814-2-400-001.png', import.meta.url));
/** A level-0 region of the synthetic slide that is all tissue. */
const SYNTH_TISSUE_REGION = { left: 850, top: 1300, width: 512, height: 512 };
let syntheticPng: Promise<string> | undefined;

/** A 512x512 all-tissue H&E PNG with no stated mpp: a crop of the synthetic slide, written once per process. */
export function syntheticTissuePng(): Promise<string> {
  syntheticPng ??= (async () => {
    const slide = await syntheticSlide();
    const path = join(slide.path, '..', 'tissue.png');
    await sharp(slide.path).extract(SYNTH_TISSUE_REGION).removeAlpha().png().toFile(path);
    return path;
  })();
  return syntheticPng;
}

/** PNGs for tests of any all-tissue H&E image: the synthetic one always, and an EBHI image too when present. */
export const TISSUE_PNG_VARIANTS: { kind: TestSlide['kind']; load: () => Promise<string> }[] = [
  { kind: 'synthetic', load: syntheticTissuePng },
  ...(existsSync(EBHI_PNG) ? [{ kind: 'real' as const, load: () => Promise.resolve(EBHI_PNG) }] : []),
];

/** The all-tissue PNG for end-to-end tests: the EBHI image when present (and not overridden), else synthetic. */
export function tissuePng(): Promise<string> {
  return existsSync(EBHI_PNG) && process.env.HISTOSEG_TEST_SLIDE !== 'synthetic' ? Promise.resolve(EBHI_PNG) : syntheticTissuePng();
}

export async function whiteTile(id: string, width = 128, height = 128): Promise<Tile> {
  const image = await sharp({ create: { width, height, channels: 3, background: { r: 245, g: 245, b: 245 } } }).png().toBuffer();
  return { tileId: id, image, mpp: 0, x: 0, y: 0 };
}

export async function decodeMask(png: Uint8Array): Promise<{ data: Buffer; width: number; height: number; channels: number }> {
  // sharp 0.35 widens greyscale to 3 channels on raw output, so read the PNG's own channel count.
  const meta = await sharp(png).metadata();
  const { data, info } = await sharp(png).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: meta.channels! };
}
