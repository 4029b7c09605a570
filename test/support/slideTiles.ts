import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import type { Tile } from '../../src/proto/gen/histoseg/v1/segmentation.js';
import { MODEL_MPP } from '../../src/util/constants.js';

export const SVS_PATH = fileURLToPath(new URL('../../../shared/data/slides/CMU-1-Small-Region.svs', import.meta.url));
export const haveSlide = existsSync(SVS_PATH);
export const SLIDE_MISSING = `real slide missing: ${SVS_PATH} (CI lays ../shared beside the checkout)`;
/** Aperio's MPP for this slide. */
export const SVS_MPP = 0.499;

/** The slide at the model's scale (1.25X), as one RGB buffer. */
export async function slideAtModelScale(): Promise<{ data: Buffer; width: number; height: number }> {
  const meta = await sharp(SVS_PATH).metadata();
  const scale = SVS_MPP / MODEL_MPP;
  const { data, info } = await sharp(SVS_PATH)
    .resize(Math.round(meta.width! * scale), Math.round(meta.height! * scale), { kernel: 'linear' })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/** Real tissue tiles: regions of the slide encoded as PNG, with their level-0 place. */
export async function tissueTiles(regions: { left: number; top: number; width: number; height: number; mpp: number; format?: 'png' | 'jpeg' | 'webp' | 'tiff' }[]): Promise<Tile[]> {
  return Promise.all(
    regions.map(async (r, i) => {
      let img = sharp(SVS_PATH).extract({ left: r.left, top: r.top, width: r.width, height: r.height });
      if (r.mpp !== SVS_MPP) {
        const s = SVS_MPP / r.mpp;
        img = sharp(await img.png().toBuffer()).resize(Math.round(r.width * s), Math.round(r.height * s));
      }
      const image = await img.removeAlpha().toFormat(r.format ?? 'png').toBuffer();
      return { tileId: `tissue-${i}`, image, mpp: r.mpp, x: r.left, y: r.top };
    }),
  );
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
