// The EBHI-Seg sample (../shared/data/ebhi/) converted to the generic layout:
//   images/<file>.png, masks/<file>.png (RGB colour per class), labels.csv (file,class_index,class_name).
// Each image shows one class, so it becomes both a slide with a mask and a class-labelled patch.
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { writeLabelMap } from '../labels/labelMap.js';
import { CLASSES_TXT, DATASET_JSON, type Dataset, type DatasetJson, readGenericDataset, type Split } from './dataset.js';

/** Mask colours from the sample's README, in labels.csv's class_index order; black is background. */
export const EBHI_CLASSES = [
  { name: 'background', rgb: [0, 0, 0] },
  { name: 'Adenocarcinoma', rgb: [110, 80, 50] },
  { name: 'High-grade_IN', rgb: [240, 130, 240] },
  { name: 'Low-grade_IN', rgb: [255, 255, 0] },
  { name: 'Normal', rgb: [255, 255, 255] },
  { name: 'Polyp', rgb: [0, 255, 0] },
  { name: 'Serrated_adenoma', rgb: [0, 0, 255] },
] as const;

/**
 * The sample's groups A, B and C each hold one image of every class; giving each group a split keeps every class in
 * every split. This is our choice, not the source's.
 */
export const EBHI_GROUP_SPLITS: Readonly<Record<string, Split>> = { A: 'train', B: 'validation', C: 'test' };

/**
 * RGB mask -> class indices. Mask edges are anti-aliased against black, so a pixel is read as a blend
 * a * colour + (1 - a) * black: it takes the colour whose blend line it lies closest to, and that class when a >= 0.5,
 * else background. (Plain nearest-colour would turn a half-yellow edge pixel (128,128,0) into the brown of
 * Adenocarcinoma.) Pure colours map exactly as nearest-colour does.
 */
export function ebhiMaskToLabels(rgb: Uint8Array, pixels: number, channels: number): Uint8Array {
  const labels = new Uint8Array(pixels);
  for (let i = 0; i < pixels; i++) {
    const r = rgb[i * channels]!;
    const g = rgb[i * channels + 1]!;
    const b = rgb[i * channels + 2]!;
    let best = 0;
    let bestDist = r * r + g * g + b * b;
    let bestA = 0;
    for (let k = 1; k < EBHI_CLASSES.length; k++) {
      const [cr, cg, cb] = EBHI_CLASSES[k]!.rgb;
      const a = Math.min(1, Math.max(0, (r * cr + g * cg + b * cb) / (cr * cr + cg * cg + cb * cb)));
      const dr = r - a * cr;
      const dg = g - a * cg;
      const db = b - a * cb;
      const dist = dr * dr + dg * dg + db * db;
      if (dist < bestDist) {
        bestDist = dist;
        best = k;
        bestA = a;
      }
    }
    labels[i] = bestA >= 0.5 ? best : 0;
  }
  return labels;
}

export interface EbhiLabel {
  file: string;
  classIndex: number;
  className: string;
}

export async function readEbhiLabels(src: string): Promise<EbhiLabel[]> {
  const path = join(src, 'labels.csv');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines[0]?.trim() !== 'file,class_index,class_name') {
    throw new Error(`${path}: expected the header "file,class_index,class_name"`);
  }
  return lines.slice(1).map((line, i) => {
    const [file, index, className] = line.split(',').map((s) => s.trim());
    const classIndex = Number(index);
    const expected = EBHI_CLASSES[classIndex]?.name;
    if (!file || !Number.isInteger(classIndex) || classIndex < 1 || expected === undefined) {
      throw new Error(`${path} line ${i + 2}: bad row "${line}"`);
    }
    if (className !== expected) {
      throw new Error(`${path} line ${i + 2}: class_index ${classIndex} is "${expected}", not "${className}"`);
    }
    return { file, classIndex, className };
  });
}

/** Converts the EBHI sample at `src` into the generic layout at `out` and reads it back. */
export async function ingestEbhi(src: string, out: string): Promise<Dataset> {
  const rows = await readEbhiLabels(src);
  for (const d of ['slides', 'masks']) await mkdir(join(out, d), { recursive: true });
  for (const c of EBHI_CLASSES.slice(1)) await mkdir(join(out, 'patches', c.name), { recursive: true });
  await writeFile(join(out, CLASSES_TXT), EBHI_CLASSES.map((c) => c.name).join('\n') + '\n');
  const json: DatasetJson = { slides: {} };
  for (const row of rows) {
    const image = join(src, 'images', row.file);
    const maskPath = join(src, 'masks', row.file);
    const name = row.file.replace(/\.[^.]+$/, '');
    let imageMeta: Metadata;
    let mask: { data: Buffer; info: OutputInfo };
    try {
      imageMeta = await sharp(image).metadata();
    } catch (err) {
      throw new Error(`unreadable image ${image}: ${(err as Error).message}`);
    }
    try {
      mask = await sharp(maskPath).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    } catch (err) {
      throw new Error(`unreadable mask ${maskPath}: ${(err as Error).message}`);
    }
    const { width, height, channels } = mask.info;
    if (imageMeta.width !== width || imageMeta.height !== height) {
      throw new Error(`mask ${maskPath} is ${width}x${height} but its image is ${imageMeta.width}x${imageMeta.height}`);
    }
    const labels = ebhiMaskToLabels(mask.data, width * height, channels);
    // The mask's main foreground class must agree with labels.csv.
    const counts = new Array<number>(EBHI_CLASSES.length).fill(0);
    for (const v of labels) counts[v]! += 1;
    const dominant = counts.slice(1).reduce((best, n, k) => (n > counts[best]! ? k + 1 : best), 1);
    if (dominant !== row.classIndex) {
      throw new Error(
        `${maskPath}: mostly ${EBHI_CLASSES[dominant]!.name}, but labels.csv says ${row.className}`,
      );
    }
    await copyFile(image, join(out, 'slides', `${name}.png`));
    await writeLabelMap(join(out, 'masks', `${name}.png`), { labels, width, height });
    await copyFile(image, join(out, 'patches', row.className, `${name}.png`));
    const split = EBHI_GROUP_SPLITS[name.split('-')[0]!];
    json.slides[name] = split ? { split } : {};
  }
  await writeFile(join(out, DATASET_JSON), JSON.stringify(json, null, 2) + '\n');
  return readGenericDataset(out);
}
