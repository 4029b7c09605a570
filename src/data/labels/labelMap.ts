import { writeFile } from 'node:fs/promises';
import sharp, { type Metadata } from 'sharp';

/** A label map: one class index per pixel, row-major. */
export interface LabelMap {
  labels: Uint8Array;
  width: number;
  height: number;
}

/**
 * Reads an 8-bit label map PNG (pixel value = class index). Greyscale is expected; an RGB(A) file whose channels are
 * all equal is accepted too (some tools save label maps that way). Palette PNGs are refused: sharp expands the
 * palette to colours and the indices would be lost.
 */
export async function readLabelMap(source: string | Uint8Array, opts: { maxPixels?: number } = {}): Promise<LabelMap> {
  const path = typeof source === 'string' ? source : 'mask';
  const input = () => sharp(source, { limitInputPixels: opts.maxPixels ?? 0x3fff * 0x3fff });
  let meta: Metadata;
  try {
    meta = await input().metadata();
  } catch (err) {
    throw new Error(`cannot read label map ${path}: ${(err as Error).message}`);
  }
  if (meta.format !== 'png') throw new Error(`label map ${path} is ${meta.format ?? 'not an image'}, expected PNG`);
  if (meta.depth !== 'uchar') throw new Error(`label map ${path} has ${meta.depth} samples, expected 8-bit`);
  if (meta.isPalette) {
    throw new Error(`label map ${path} is a palette PNG; save it as 8-bit greyscale (pixel value = class index)`);
  }
  // sharp's raw output is sRGB by default; a greyscale file is read as its one channel.
  const grey = (meta.channels ?? 3) <= 2;
  let decoded;
  try {
    decoded = await (grey ? input().extractChannel(0) : input()).raw().toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new Error(`cannot decode label map ${path}: ${(err as Error).message.split('\n')[0]}`);
  }
  const { data, info } = decoded;
  const n = info.width * info.height;
  const labels = new Uint8Array(n);
  const ch = info.channels;
  if (ch <= 2) {
    for (let i = 0; i < n; i++) labels[i] = data[i * ch]!;
  } else {
    for (let i = 0; i < n; i++) {
      const r = data[i * ch]!;
      if (data[i * ch + 1] !== r || data[i * ch + 2] !== r) {
        const x = i % info.width;
        const y = Math.floor(i / info.width);
        throw new Error(`label map ${path} is a colour image (pixel ${x},${y} is not grey); expected 8-bit greyscale`);
      }
      labels[i] = r;
    }
  }
  return { labels, width: info.width, height: info.height };
}

/** Encodes a label map as an 8-bit greyscale PNG. */
export async function encodeLabelMap(map: LabelMap): Promise<Buffer> {
  if (map.labels.length !== map.width * map.height) {
    throw new Error(`label map has ${map.labels.length} pixels, expected ${map.width}x${map.height}`);
  }
  // Without toColourspace('b-w') sharp 0.35 writes a one-channel raw buffer as an RGB PNG.
  return sharp(map.labels, { raw: { width: map.width, height: map.height, channels: 1 } })
    .toColourspace('b-w')
    .png({ compressionLevel: 9 })
    .toBuffer();
}

export async function writeLabelMap(path: string, map: LabelMap): Promise<void> {
  await writeFile(path, await encodeLabelMap(map));
}
