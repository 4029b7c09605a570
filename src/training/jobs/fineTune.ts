// One fine-tuning run over a frozen dataset of uploaded examples: base weights (class-dependent layers fresh when the
// classes differ), App. B preparation, the joint trainer with checkpoints (a resumed run continues from the last
// one), then the new version and the base scored on the validation examples through the serving pipeline, and the
// version written into the repository through a staging folder. Runs in the job's child process.
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import type { FrozenDataset } from '../../data/examples/exampleStore.js';
import type { SegmentationMetrics } from '../../evaluation/metrics.js';
import { BACH_CLASSES, INPUT_SIZE, MODEL_MPP } from '../../util/constants.js';
import { ManifestSchema, type Manifest, type StainReference } from '../../model/manifest.js';
import { buildSegClsModel } from '../../model/network/architecture.js';
import { loadLayersModel, saveLayersModel } from '../../model/network/tfjsIO.js';
import { modelFilePath, nextVersion, publishModelVersion, resolveModel, saveModelVersion } from '../../model/repository.js';
import { selectTfBackend } from '../../tf/backend.js';
import { fit, type FitEvent } from '../fit/trainer.js';
import { normalizeTrainingItems, type Setting } from '../fit/trainingData.js';
import { trainingManifest, validate } from '../fit/validation.js';
import { BATCH_SIZE } from '../fit/hyperparameters.js';
import { loadExampleData } from './exampleItems.js';

export interface FineTuneSpec {
  jobId: string;
  /** Model repository root. */
  models: string;
  baseName: string;
  baseVersion: string;
  outputName: string;
  setting: Setting;
  epochs: number;
  seed: number;
  maxStepsPerEpoch?: number;
  /** Frozen examples (hard links) and their list. */
  frozenDir: string;
  frozen: FrozenDataset;
  /** Work folder: init/, checkpoint/, best/, candidate/. */
  workDir: string;
  resume: boolean;
}

export type FineTuneEvent =
  | { kind: 'stage'; stage: string }
  | { kind: 'fit'; event: FitEvent };

export interface FineTuneResult {
  modelName: string;
  modelVersion: string;
  validationMetrics: Record<string, number>;
  baseMetrics: Record<string, number>;
  /** Validation examples with masks scored (0: nothing to compare on). */
  validationExamples: number;
  imagesPerSecond: number | null;
  bestEpoch: number;
}

const INIT_DIR = 'init';
const CANDIDATE_DIR = 'candidate';

export function metricsRecord(m: SegmentationMetrics | null): Record<string, number> {
  if (!m) return {};
  const out: Record<string, number> = {};
  if (m.macroF1 !== null) out.macro_f1 = m.macroF1;
  if (m.bachScore !== null) out.bach_score = m.bachScore;
  if (m.microF1 !== null) out.micro_f1 = m.microF1;
  if (m.accuracy !== null) out.accuracy = m.accuracy;
  return out;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/**
 * The starting weights: the base's own when its classes are the dataset's; otherwise a fresh model of the dataset's
 * classes with every layer whose weights have the same shapes (encoder, decoder body) copied from the base, so only
 * the class-dependent layers start fresh.
 */
export function transplant(base: tf.LayersModel, numClasses: number, seed: number): { model: tf.LayersModel; copied: number; fresh: number } {
  const model = buildSegClsModel({ numClasses, seed });
  let copied = 0;
  let fresh = 0;
  for (const layer of model.layers) {
    const weights = layer.getWeights();
    if (weights.length === 0) continue;
    let from: tf.layers.Layer | undefined;
    try {
      from = base.getLayer(layer.name);
    } catch {
      from = undefined;
    }
    const src = from?.getWeights() ?? [];
    if (src.length === weights.length && src.every((w, i) => w.shape.join() === weights[i]!.shape.join())) {
      layer.setWeights(src);
      copied += 1;
    } else fresh += 1;
  }
  return { model, copied, fresh };
}

export async function runFineTune(spec: FineTuneSpec, hooks: { onEvent(e: FineTuneEvent): void; signal: AbortSignal }): Promise<FineTuneResult> {
  const stage = (s: string) => hooks.onEvent({ kind: 'stage', stage: s });
  await selectTfBackend();
  const base = await resolveModel(spec.models, spec.baseName, spec.baseVersion);
  const classes = spec.frozen.classes;
  const sameClasses = base.manifest.classes.length === classes.length && base.manifest.classes.every((c, i) => c.name === classes[i]);

  stage('preparing');
  const data = await loadExampleData(spec.frozenDir, spec.frozen, spec.seed);
  hooks.signal.throwIfAborted();
  // The base's stain reference when it has one (the encoder learnt that colour space), else the data's own.
  const reference: StainReference | null = base.manifest.stainReference ?? data.dataReference;
  const items = reference ? normalizeTrainingItems(data.items, reference).items : data.items;
  const manifest = trainingManifest(classes, reference);

  await mkdir(spec.workDir, { recursive: true });
  const initDir = join(spec.workDir, INIT_DIR);
  if (!(await exists(join(initDir, 'model.json')))) {
    const baseModel = await loadLayersModel(modelFilePath(base.dir, base.manifest.files.tfjs));
    const start = sameClasses ? { model: baseModel, copied: -1, fresh: 0 } : transplant(baseModel, classes.length, spec.seed);
    await rm(initDir, { recursive: true, force: true });
    await saveLayersModel(start.model, initDir);
    start.model.dispose();
    if (!sameClasses) baseModel.dispose();
  }

  stage('training');
  const result = await fit(
    items,
    {
      setting: spec.setting,
      segPercent: 100,
      epochs: spec.epochs,
      seed: spec.seed,
      batchSize: BATCH_SIZE,
      numClasses: classes.length,
      workDir: spec.workDir,
      baseModel: initDir,
      resume: spec.resume,
      maxStepsPerEpoch: spec.maxStepsPerEpoch,
      identity: { datasetHash: spec.frozen.hash, base: `${spec.baseName}@${spec.baseVersion}` },
    },
    {
      signal: hooks.signal,
      onProgress: (event) => hooks.onEvent({ kind: 'fit', event }),
      validate: (model) => validate(model, data.validation, manifest),
    },
  );
  try {
    hooks.signal.throwIfAborted();
    stage('evaluating');
    const newMetrics = result.validation;
    let baseMetrics: SegmentationMetrics | null = null;
    if (data.validation.length > 0) {
      if (sameClasses) {
        const baseModel = await loadLayersModel(modelFilePath(base.dir, base.manifest.files.tfjs));
        try {
          baseMetrics = await validate(baseModel, data.validation, { ...base.manifest, inputSize: INPUT_SIZE });
        } finally {
          baseModel.dispose();
        }
      }
    }
    hooks.signal.throwIfAborted();

    stage('saving');
    const validationMetrics = metricsRecord(newMetrics);
    const baseRecord = metricsRecord(baseMetrics);
    const classColours = sameClasses
      ? base.manifest.classes
      : classes.map((name, i) => ({ name, color: BACH_CLASSES[i]?.color ?? `#${((i * 0x9e3779b1) >>> 8).toString(16).padStart(6, '0').slice(0, 6)}` }));
    const candidateRoot = join(spec.workDir, CANDIDATE_DIR);
    await rm(candidateRoot, { recursive: true, force: true });
    for (let attempt = 0; ; attempt++) {
      const version = await nextVersion(spec.models, spec.outputName);
      const m: Manifest = ManifestSchema.parse({
        schema: 1,
        name: spec.outputName,
        version,
        architecture: 'resnet18-layer3-segcls',
        classes: classColours,
        inputSize: INPUT_SIZE,
        mpp: MODEL_MPP,
        trained: true,
        stainReference: reference,
        createdAt: new Date().toISOString(),
        lineage: {
          parent: `${base.name}@${base.version}`,
          datasetHash: spec.frozen.hash,
          settings: {
            job: spec.jobId,
            dataset: spec.frozen.dataset,
            examples: spec.frozen.examples.length,
            setting: spec.setting,
            epochs: spec.epochs,
            seed: spec.seed,
            bestEpoch: result.bestEpoch,
            classesChanged: !sameClasses,
            baseMetrics: baseRecord,
          },
        },
        metrics: validationMetrics,
        files: { tfjs: 'tfjs/model.json', onnx: 'model.onnx' },
      });
      const candidate = await saveModelVersion(candidateRoot, m, result.model, { overwrite: true });
      hooks.signal.throwIfAborted();
      try {
        await publishModelVersion(spec.models, candidate.dir);
      } catch (err) {
        // Another job took this version number meanwhile: take the next one.
        if (attempt < 5 && /already exists/.test((err as Error).message)) continue;
        throw err;
      }
      await rm(candidateRoot, { recursive: true, force: true });
      return {
        modelName: m.name,
        modelVersion: m.version,
        validationMetrics,
        baseMetrics: baseRecord,
        validationExamples: data.validation.length,
        imagesPerSecond: result.imagesPerSecond,
        bestEpoch: result.bestEpoch,
      };
    }
  } finally {
    result.model.dispose();
  }
}

/** Reads a JSON file written by the parent. */
export async function readJson<T>(path: string): Promise<T> {
  return JSON.parse(await readFile(path, 'utf8')) as T;
}
