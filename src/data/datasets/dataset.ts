// The internal dataset form every layout is read into, and the generic layout (reader and writer).
//   classes.txt                 one class name per line; line order = class index; line 1 = background/normal
//   patches/<class name>/*      class-labelled images of any size
//   slides/<name>.<png|jpg|tif|svs>
//   masks/<name>.png            8-bit label map at the slide's size, or
//   annotations/<name>.geojson  QuPath export (level-0 pixels); annotations/<name>.xml (BACH XML) also accepted
//   dataset.json                optional: mpp and split per slide (DatasetJsonSchema)
import { copyFile, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import sharp, { type Metadata } from 'sharp';
import { z } from 'zod';
import { type LabelMap, readLabelMap, writeLabelMap } from '../labels/labelMap.js';
import { resizeLabels } from '../../imaging/decode.js';
import {
  checkAnnotationBounds,
  classIndexOf,
  type LabelledPolygon,
  parseBachXml,
  parseGeoJson,
  polygonsToGeoJson,
  rasteriseAnnotations,
} from '../labels/annotations.js';
import { openSlide } from '../slides/slideReader.js';

export const SPLITS = ['train', 'validation', 'test'] as const;
export type Split = (typeof SPLITS)[number];

/**
 * dataset.json. Top-level `mpp` is the default for slides whose file does not state one; a slide's own entry
 * overrides both. Every name under `slides` must be a slide of the dataset.
 *   { "mpp": 7.5, "slides": { "slide-000": { "split": "train", "mpp": 7.5 } } }
 */
export const DatasetJsonSchema = z
  .object({
    mpp: z.number().positive().optional(),
    /** Set by `histoseg synth`: the slides are generated, not real tissue; a model trained on them is a demo. */
    synthetic: z.boolean().optional(),
    /** What the slides are, in words (goes into a trained model's manifest as trainedOn). */
    description: z.string().max(500).optional(),
    slides: z
      .record(
        z.string(),
        z.object({ split: z.enum(SPLITS).optional(), mpp: z.number().positive().optional() }).strict(),
      )
      .default({}),
  })
  .strict();
export type DatasetJson = z.infer<typeof DatasetJsonSchema>;
export const DATASET_JSON = 'dataset.json';
export const CLASSES_TXT = 'classes.txt';

export const PATCH_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.tif', '.tiff', '.webp'] as const;
export const SLIDE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.tif', '.tiff', '.svs'] as const;

export type LabelSource =
  | { kind: 'mask'; path: string }
  | { kind: 'geojson'; path: string }
  | { kind: 'bach-xml'; path: string };

export interface SlideEntry {
  name: string;
  image: string;
  /** Level-0 size; label maps are at this size unless asked for another. */
  width: number;
  height: number;
  /** Level-0 microns per pixel, null when neither dataset.json nor the file says. */
  mpp: number | null;
  split: Split | null;
  labels: LabelSource;
}

export interface PatchEntry {
  path: string;
  classIndex: number;
}

export interface Dataset {
  root: string;
  layout: 'generic' | 'bach' | 'ebhi';
  classes: string[];
  /** Extra names (normalised) accepted for classes in annotations, e.g. BACH's "Carcinoma in situ". */
  aliases: Record<string, number>;
  slides: SlideEntry[];
  patches: PatchEntry[];
  /** Things skipped on purpose (e.g. unlabelled slides), for the caller to show. */
  warnings: string[];
  /** Generated slides (dataset.json "synthetic": true), not real tissue. */
  synthetic?: boolean;
  /** dataset.json's description of the slides, if any. */
  description?: string;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function listDir(path: string): Promise<string[]> {
  try {
    return (await readdir(path)).filter((f) => !f.startsWith('.')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new Error(`cannot list ${path}: ${(err as Error).message}`);
  }
}

export async function readClasses(root: string): Promise<string[]> {
  const path = join(root, CLASSES_TXT);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new Error(`missing ${path}: a dataset needs one class name per line, line 1 = background/normal`);
  }
  const classes = text.split(/\r?\n/).map((l) => l.trim());
  while (classes.length > 0 && classes.at(-1) === '') classes.pop();
  if (classes.some((c) => c === '')) throw new Error(`${path}: empty class name on line ${classes.indexOf('') + 1}`);
  if (classes.length < 2 || classes.length > 255) throw new Error(`${path}: needs 2..255 classes, found ${classes.length}`);
  const seen = new Map<string, number>();
  classes.forEach((c, i) => {
    const key = c.toLowerCase().replace(/[^a-z0-9]/g, '');
    if (seen.has(key)) throw new Error(`${path}: class "${c}" on line ${i + 1} repeats line ${seen.get(key)! + 1}`);
    seen.set(key, i);
  });
  return classes;
}

export async function readDatasetJson(root: string): Promise<DatasetJson | null> {
  const path = join(root, DATASET_JSON);
  if (!(await exists(path))) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
  const parsed = DatasetJsonSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`invalid ${path}: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/** Checks that a patch image can be decoded (header only) and fails naming it. */
export async function checkImageReadable(path: string): Promise<void> {
  try {
    const m = await sharp(path).metadata();
    if (!m.width || !m.height) throw new Error('no image size');
  } catch (err) {
    throw new Error(`unreadable image ${path}: ${(err as Error).message}`);
  }
}

/** Class-labelled patches under `dir/<class folder>/`; `classOf` maps a folder name to its class or undefined. */
export async function readPatchFolders(dir: string, classOf: (folder: string) => number | undefined, known: string): Promise<PatchEntry[]> {
  const patches: PatchEntry[] = [];
  for (const folder of await listDir(dir)) {
    const folderPath = join(dir, folder);
    if (!(await stat(folderPath)).isDirectory()) throw new Error(`${folderPath}: expected a folder named for a class`);
    const classIndex = classOf(folder);
    if (classIndex === undefined) throw new Error(`${folderPath}: unknown class name "${folder}" (known: ${known})`);
    for (const file of await listDir(folderPath)) {
      const path = join(folderPath, file);
      if (!(PATCH_EXTENSIONS as readonly string[]).includes(extname(file).toLowerCase())) {
        throw new Error(`${path}: not an image file (expected ${PATCH_EXTENSIONS.join(', ')})`);
      }
      await checkImageReadable(path);
      patches.push({ path, classIndex });
    }
  }
  return patches;
}

/** Validates a slide's annotation file (parse, class names, bounds) without rasterising it. */
export async function checkLabelSource(
  source: LabelSource,
  width: number,
  height: number,
  classes: readonly string[],
  aliases: Record<string, number>,
): Promise<void> {
  if (source.kind === 'mask') {
    let meta: Metadata;
    try {
      meta = await sharp(source.path).metadata();
    } catch (err) {
      throw new Error(`unreadable mask ${source.path}: ${(err as Error).message}`);
    }
    if (meta.width !== width || meta.height !== height) {
      throw new Error(`mask ${source.path} is ${meta.width}x${meta.height} but its slide is ${width}x${height}`);
    }
    return;
  }
  checkAnnotationBounds(await readAnnotationPolygons(source, classes, aliases), width, height, source.path);
}

/** Reads and parses a polygon annotation file (GeoJSON or BACH XML); errors name the file. */
async function readAnnotationPolygons(
  source: Exclude<LabelSource, { kind: 'mask' }>,
  classes: readonly string[],
  aliases: Record<string, number>,
): Promise<(LabelledPolygon & { where: string })[]> {
  let text: string;
  try {
    text = await readFile(source.path, 'utf8');
  } catch (err) {
    throw new Error(`unreadable annotation file ${source.path}: ${(err as Error).message}`);
  }
  const opts = { source: source.path, aliases };
  if (source.kind === 'bach-xml') return parseBachXml(text, classes, opts);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`${source.path}: not JSON: ${(err as Error).message}`);
  }
  return parseGeoJson(doc, classes, opts);
}

/**
 * A slide's entry; its mpp is, in order: dataset.json's entry for it, the file's own, dataset.json's default, then
 * `fallbackMpp`.
 */
export function slideEntry(
  name: string,
  image: string,
  info: { width: number; height: number; mpp: number | null },
  labels: LabelSource,
  json: DatasetJson | null,
  fallbackMpp: number | null,
): SlideEntry {
  const entry = json?.slides[name];
  return {
    name,
    image,
    width: info.width,
    height: info.height,
    mpp: entry?.mpp ?? info.mpp ?? json?.mpp ?? fallbackMpp,
    split: entry?.split ?? null,
    labels,
  };
}

/** Reads and validates a dataset in the generic layout. */
export async function readGenericDataset(root: string): Promise<Dataset> {
  const classes = await readClasses(root);
  const json = await readDatasetJson(root);
  const known = classes.join(', ');
  const patches = await readPatchFolders(join(root, 'patches'), (f) => classIndexOf(f, classes), known);

  const slides: SlideEntry[] = [];
  const warnings: string[] = [];
  const names = new Set<string>();
  for (const file of await listDir(join(root, 'slides'))) {
    const image = join(root, 'slides', file);
    const ext = extname(file).toLowerCase();
    const name = basename(file, extname(file));
    if (!(SLIDE_EXTENSIONS as readonly string[]).includes(ext)) {
      const hint = ext === '.dcm' ? ': DICOM slides must be converted to a tiled TIFF first' : '';
      throw new Error(`${image}: unsupported slide file type "${ext}" (expected ${SLIDE_EXTENSIONS.join(', ')})${hint}`);
    }
    if (names.has(name)) throw new Error(`${image}: two slides are named "${name}"`);
    names.add(name);
    const info = await openSlide(image);
    const mask = join(root, 'masks', `${name}.png`);
    const geojson = join(root, 'annotations', `${name}.geojson`);
    const xml = join(root, 'annotations', `${name}.xml`);
    // A mask is exact, so it wins when a slide also has polygon annotations (the generator writes all three).
    let labels: LabelSource;
    if (await exists(mask)) labels = { kind: 'mask', path: mask };
    else if (await exists(geojson)) labels = { kind: 'geojson', path: geojson };
    else if (await exists(xml)) labels = { kind: 'bach-xml', path: xml };
    else throw new Error(`${image}: no labels: expected masks/${name}.png or annotations/${name}.geojson`);
    await checkLabelSource(labels, info.width, info.height, classes, {});
    slides.push(slideEntry(name, image, info, labels, json, null));
  }
  for (const name of Object.keys(json?.slides ?? {})) {
    if (!names.has(name)) throw new Error(`${join(root, DATASET_JSON)}: slide "${name}" is not in slides/`);
  }
  for (const file of await listDir(join(root, 'masks'))) {
    if (!names.has(basename(file, extname(file)))) warnings.push(`masks/${file} has no slide; ignored`);
  }
  return { root, layout: 'generic', classes, aliases: {}, slides, patches, warnings, synthetic: json?.synthetic === true, description: json?.description };
}

/** A slide's level-0 size scaled to `mpp` (unchanged when the slide's own mpp is unknown). */
export function sizeAtMpp(slide: SlideEntry, mpp: number): { width: number; height: number; scale: number } {
  if (slide.mpp === null) return { width: slide.width, height: slide.height, scale: 1 };
  const scale = slide.mpp / mpp;
  return {
    width: Math.max(1, Math.round(slide.width * scale)),
    height: Math.max(1, Math.round(slide.height * scale)),
    scale,
  };
}

/**
 * The slide's label map, at its level-0 size or at `size` (polygons are rasterised straight at that scale; masks
 * are resampled nearest-neighbour). Pixel values are checked against the class list.
 */
export async function loadSlideLabels(
  slide: SlideEntry,
  dataset: Pick<Dataset, 'classes' | 'aliases'>,
  size: { width: number; height: number } = slide,
): Promise<LabelMap> {
  const { width, height } = size;
  const src = slide.labels;
  if (src.kind === 'mask') {
    const map = await readLabelMap(src.path);
    if (map.width !== slide.width || map.height !== slide.height) {
      throw new Error(`mask ${src.path} is ${map.width}x${map.height} but its slide is ${slide.width}x${slide.height}`);
    }
    const max = map.labels.reduce((a, b) => (b > a ? b : a), 0);
    if (max >= dataset.classes.length) {
      throw new Error(`mask ${src.path} has class value ${max}, but there are only ${dataset.classes.length} classes`);
    }
    if (width === map.width && height === map.height) return map;
    return { labels: await resizeLabels(map.labels, map.width, map.height, width, height), width, height };
  }
  const polygons = await readAnnotationPolygons(src, dataset.classes, dataset.aliases);
  return { labels: await rasteriseAnnotations(polygons, width, height, width / slide.width, src.path), width, height };
}

/**
 * Writes a dataset in the generic layout: files are copied, BACH XML becomes GeoJSON (level-0 coordinates), and
 * dataset.json records each slide's mpp and split.
 */
export async function writeGenericDataset(dataset: Dataset, out: string): Promise<void> {
  for (const d of ['slides', 'masks', 'annotations', 'patches']) await mkdir(join(out, d), { recursive: true });
  await writeFile(join(out, CLASSES_TXT), dataset.classes.join('\n') + '\n');
  const json: DatasetJson = { slides: {} };
  for (const s of dataset.slides) {
    await copyFile(s.image, join(out, 'slides', s.name + extname(s.image).toLowerCase()));
    if (s.labels.kind === 'mask') {
      await writeLabelMap(join(out, 'masks', `${s.name}.png`), await readLabelMap(s.labels.path));
    } else if (s.labels.kind === 'geojson') {
      await copyFile(s.labels.path, join(out, 'annotations', `${s.name}.geojson`));
    } else {
      const polygons = parseBachXml(await readFile(s.labels.path, 'utf8'), dataset.classes, {
        source: s.labels.path,
        aliases: dataset.aliases,
      });
      await writeFile(join(out, 'annotations', `${s.name}.geojson`), JSON.stringify(polygonsToGeoJson(polygons, dataset.classes)));
    }
    json.slides[s.name] = {
      ...(s.split !== null ? { split: s.split } : {}),
      ...(s.mpp !== null ? { mpp: s.mpp } : {}),
    };
  }
  const used = new Set<string>();
  for (const p of dataset.patches) {
    const dir = join(out, 'patches', dataset.classes[p.classIndex]!);
    await mkdir(dir, { recursive: true });
    let name = basename(p.path);
    for (let i = 1; used.has(join(dir, name)); i++) name = `${basename(p.path, extname(p.path))}-${i}${extname(p.path)}`;
    used.add(join(dir, name));
    await copyFile(p.path, join(dir, name));
  }
  await writeFile(join(out, DATASET_JSON), JSON.stringify(json, null, 2) + '\n');
}
