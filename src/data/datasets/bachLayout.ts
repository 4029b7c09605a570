// The BACH challenge layout (Aresta et al. 2019):
//   Photos/{Normal,Benign,InSitu,Invasive}/*.tif   part A, class-labelled microscopy images
//   WSI/<name>.svs + WSI/<name>.xml                 part B, whole slides with ImageScope polygon annotations
// Slides are level-0 pixels; their labels are rasterised at whatever scale the caller asks (the model's, MODEL_MPP).
import { readdir, stat } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { classIndexOf, normaliseClassName } from '../labels/annotations.js';
import { checkLabelSource, type Dataset, readDatasetJson, readPatchFolders, type SlideEntry, slideEntry } from './dataset.js';
import { openSlide } from '../slides/slideReader.js';

/** BACH's four classes in label order (paper Sec. 1: normal 0 is also background). */
export const BACH_CLASSES = ['normal', 'benign', 'in situ', 'invasive'] as const;
/** Part A folder names, in class order. */
export const BACH_PHOTO_FOLDERS = ['Normal', 'Benign', 'InSitu', 'Invasive'] as const;
/** BACH WSIs are 0.467 um/px (20X); used when an SVS does not state its MPP. */
export const BACH_WSI_MPP = 0.467;

/** Region texts seen in BACH/ImageScope files, normalised as by normaliseClassName. */
export const BACH_ALIASES: Readonly<Record<string, number>> = Object.fromEntries(
  (
    [
      ['Normal', 0],
      ['Benign', 1],
      ['InSitu', 2],
      ['Carcinoma in situ', 2],
      ['In situ carcinoma', 2],
      ['DCIS', 2],
      ['Invasive', 3],
      ['Invasive carcinoma', 3],
      ['Carcinoma invasive', 3],
    ] as const
  ).map(([name, k]) => [normaliseClassName(name), k]),
);

async function isDir(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

export async function looksLikeBach(root: string): Promise<boolean> {
  return (await isDir(join(root, 'Photos'))) || (await isDir(join(root, 'WSI')));
}

/** Reads a BACH-layout folder; an optional dataset.json beside Photos/ and WSI/ gives splits (and mpp overrides). */
export async function readBachDataset(root: string): Promise<Dataset> {
  const classes = [...BACH_CLASSES];
  const aliases = { ...BACH_ALIASES };
  const patches = await readPatchFolders(
    join(root, 'Photos'),
    (folder) => classIndexOf(folder, classes, aliases),
    BACH_PHOTO_FOLDERS.join(', '),
  );
  const json = await readDatasetJson(root);
  const slides: SlideEntry[] = [];
  const warnings: string[] = [];
  const wsiDir = join(root, 'WSI');
  const files = (await isDir(wsiDir)) ? (await readdir(wsiDir)).filter((f) => !f.startsWith('.')).sort() : [];
  const xmls = new Set(files.filter((f) => extname(f).toLowerCase() === '.xml').map((f) => basename(f, extname(f))));
  for (const file of files) {
    if (extname(file).toLowerCase() !== '.svs') continue;
    const name = basename(file, extname(file));
    const image = join(wsiDir, file);
    if (!xmls.has(name)) {
      warnings.push(`${image} has no ${name}.xml annotation; skipped (unlabelled)`);
      continue;
    }
    const info = await openSlide(image);
    const labels = { kind: 'bach-xml' as const, path: join(wsiDir, `${name}.xml`) };
    await checkLabelSource(labels, info.width, info.height, classes, aliases);
    slides.push(slideEntry(name, image, info, labels, json, BACH_WSI_MPP));
  }
  for (const name of xmls) {
    if (!files.some((f) => basename(f, extname(f)) === name && extname(f).toLowerCase() === '.svs')) {
      warnings.push(`${join(wsiDir, name)}.xml has no .svs slide; ignored`);
    }
  }
  if (patches.length === 0 && slides.length === 0) throw new Error(`${root}: no Photos/<class>/* images and no WSI/*.svs with .xml`);
  return { root, layout: 'bach', classes, aliases, slides, patches, warnings };
}
