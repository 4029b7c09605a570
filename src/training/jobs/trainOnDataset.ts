// A training run from a dataset of slides on disk: App. B patches (training/prepare), Macenko-normalised items, the
// validation slides, then the joint trainer (training/fit). Reports through hooks; writes nothing to the terminal.
import { readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { StainReferenceSchema, type StainReference } from '../../model/manifest.js';
import type { Dataset } from '../../data/datasets/dataset.js';
import { datasetHash } from '../../data/datasets/datasetHash.js';
import { type PatchIndex, preparePatches } from '../prepare/patchPreparation.js';
import { fit, type FitHooks, type FitResult } from '../fit/trainer.js';
import { loadTrainingItems, normalizeTrainingItems, type Setting } from '../fit/trainingData.js';
import { loadValidationSlides, trainingManifest, validate } from '../fit/validation.js';

export interface TrainOptions {
  readonly dataset: Dataset;
  readonly setting: Setting;
  /** Share of the segmentation patches used, in percent (Sec. 3.3's s). */
  readonly segPercent: number;
  readonly epochs: number;
  readonly seed: number;
  readonly batchSize: number;
  /** Work folder: prepared patches, checkpoint/, best/. */
  readonly workDir: string;
  /** ImageNet ResNet-18 safetensors for the encoder (importWeights). */
  readonly initWeights?: string;
  /** Folder of a TF.js model (a repository version's tfjs/) to start from. */
  readonly baseModel?: string;
  /** Continue from workDir's checkpoint. */
  readonly resume?: boolean;
  /** Cap on steps per epoch (tests and smoke runs). */
  readonly maxStepsPerEpoch?: number;
  /** The dataset's hash (datasetHash), if the caller has it; else it is computed. A resume must match it. */
  readonly datasetHash?: string;
  /** Notes for a person (warnings, resumption); silent by default. */
  readonly log?: (line: string) => void;
}

export interface TrainResult extends FitResult {
  classes: string[];
  stainReference: StainReference | null;
}

const PREPARED_DIR = 'prepared';

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Cuts the dataset's training patches once per work folder (a resumed run reuses them). */
async function preparedPatches(dataset: Dataset, workDir: string, seed: number, log: (l: string) => void): Promise<string> {
  const dir = join(workDir, PREPARED_DIR);
  if (await exists(join(dir, 'index.json'))) return dir;
  const tmp = `${dir}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await preparePatches(dataset, tmp, { seed, splits: ['train', 'unsplit'], log });
  await rename(tmp, dir);
  return dir;
}

async function readReference(dir: string): Promise<StainReference | null> {
  const path = join(dir, 'stain-reference.json');
  if (!(await exists(path))) return null;
  return StainReferenceSchema.parse(JSON.parse(await readFile(path, 'utf8')));
}

export async function train(o: TrainOptions, hooks: FitHooks = {}): Promise<TrainResult> {
  const log = o.log ?? (() => {});
  const classes = o.dataset.classes;
  // A fresh run cuts the patches anew (the dataset may have changed); a resumed one reuses its own.
  if (!o.resume) await rm(join(o.workDir, PREPARED_DIR), { recursive: true, force: true });
  const prepared = await preparedPatches(o.dataset, o.workDir, o.seed, log);
  const index = JSON.parse(await readFile(join(prepared, 'index.json'), 'utf8')) as PatchIndex;
  const reference = await readReference(prepared);
  let items = await loadTrainingItems(prepared, index);
  if (reference) {
    const normalized = normalizeTrainingItems(items, reference);
    items = normalized.items;
    if (normalized.unnormalized > 0) log(`${normalized.unnormalized} patch(es) had too little tissue to estimate a stain; left as they are`);
  } else {
    log('no stain reference could be estimated from the training images: training without Macenko normalisation');
  }
  const valSlides = await loadValidationSlides(o.dataset);
  const manifest = trainingManifest(classes, reference);
  if (valSlides.length === 0) log('no validation slide (dataset.json split "validation"): the last epoch is kept');
  const result = await fit(
    items,
    {
      setting: o.setting,
      segPercent: o.segPercent,
      epochs: o.epochs,
      seed: o.seed,
      batchSize: o.batchSize,
      numClasses: classes.length,
      workDir: o.workDir,
      initWeights: o.initWeights,
      baseModel: o.baseModel,
      resume: o.resume,
      maxStepsPerEpoch: o.maxStepsPerEpoch,
      identity: { datasetHash: o.datasetHash ?? (await datasetHash(o.dataset.root)) },
    },
    {
      ...hooks,
      validate: hooks.validate ?? ((model) => validate(model, valSlides, manifest)),
      onProgress: (e) => {
        if (e.kind === 'start' && o.resume) log(e.resumed ? `resuming after epoch ${e.epochsDone}` : `no checkpoint in ${o.workDir}: starting from scratch`);
        hooks.onProgress?.(e);
      },
    },
  );
  return { ...result, classes, stainReference: reference };
}
