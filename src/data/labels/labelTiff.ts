// A label map of any size as a tiled TIFF: one class index per pixel at level 0, written by libvips in strips as it
// scales the model-scale labels up (nearest neighbour), so the whole level-0 map never sits in memory.
import sharp from 'sharp';
import type { LabelMap } from './labelMap.js';

/** TIFF tile side. */
const TIFF_TILE = 512;

/** Whether a path names a TIFF (the label map is then written as a tiled TIFF rather than a PNG). */
export function isTiffPath(path: string): boolean {
  return /\.tiff?$/i.test(path);
}

/**
 * Writes `labels` (any size, usually the model's scale) scaled to width x height as an 8-bit, tiled, deflated
 * (Big)TIFF with the level-0 resolution, so viewers place it over the slide. Only level 0 is written: libvips would
 * make the lower pyramid levels by averaging, and an average of class indices is another class.
 */
export async function writeLabelTiff(path: string, labels: LabelMap, width: number, height: number, mpp: number | null): Promise<void> {
  if (labels.labels.length !== labels.width * labels.height) throw new RangeError(`label map of ${labels.labels.length} bytes is not ${labels.width}x${labels.height}`);
  let img = sharp(labels.labels, { raw: { width: labels.width, height: labels.height, channels: 1 }, limitInputPixels: false });
  if (width !== labels.width || height !== labels.height) img = img.resize(width, height, { kernel: 'nearest', fit: 'fill' });
  const perMm = mpp && mpp > 0 ? 1000 / mpp : undefined;
  await img
    .toColourspace('b-w')
    .tiff({
      tile: true,
      tileWidth: TIFF_TILE,
      tileHeight: TIFF_TILE,
      compression: 'deflate',
      predictor: 'horizontal',
      bigtiff: width * height > 2 ** 31,
      ...(perMm ? { xres: perMm, yres: perMm, resolutionUnit: 'cm' as const } : {}),
    })
    .toFile(path);
}
