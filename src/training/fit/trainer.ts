// The paper's joint trainer (Sec. 2.2-2.3, 3.3): segmentation and class patches in one loop, Lcls + Lseg, Adam,
// per-epoch validation picking the best epoch, checkpoints after every epoch. It takes prepared, normalised items and
// reports through hooks: no dataset reading and no terminal output here (training/jobs/ and cli/ do those).
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { releaseTfBackend, selectTfBackend, type TfDevice } from '../../tf/backend.js';
import { registerWasmTrainingKernels } from '../../tf/gradKernels/index.js';
import type { SegmentationMetrics } from '../../evaluation/metrics.js';
import { buildSegClsModel, modelNumClasses } from '../../model/network/architecture.js';
import { importTorchWeights, readSafetensorsFile } from '../../model/network/importWeights.js';
import { loadLayersModel, saveLayersModel } from '../../model/network/tfjsIO.js';
import {
  type EpochRecord,
  clearCheckpoint,
  hasCheckpoint,
  identityDifferences,
  loadCheckpoint,
  saveCheckpoint,
  trainingCodeVersion,
} from './checkpoint.js';
import { ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, ADAM_LEARNING_RATE } from './hyperparameters.js';
import { classWeights } from './losses.js';
import { DataParallel } from './dataParallel.js';
import { trainableVariables, trainStep } from './step.js';
import { buildBatch, epochOrder, pixelCounts, selectPatches, type Setting, type TrainingItems } from './trainingData.js';

export interface FitOptions {
  readonly setting: Setting;
  /** Share of the segmentation patches used, in percent (Sec. 3.3's s). */
  readonly segPercent: number;
  readonly epochs: number;
  readonly seed: number;
  readonly batchSize: number;
  readonly numClasses: number;
  /** Work folder: checkpoint/ and best/. */
  readonly workDir: string;
  /** ImageNet ResNet-18 safetensors for the encoder (importWeights). */
  readonly initWeights?: string;
  /** Folder of a TF.js model (a repository version's tfjs/) to start from. */
  readonly baseModel?: string;
  /** Continue from workDir's checkpoint. */
  readonly resume?: boolean;
  /** Cap on steps per epoch (tests and smoke runs). */
  readonly maxStepsPerEpoch?: number;
  /** What else identifies the run (the data's hash, say): a checkpoint of another identity is not resumed. */
  readonly identity?: Record<string, unknown>;
  /** Where TF.js trains: cpu (wasm, default) or webgpu; an unavailable device fails, never falls back. */
  readonly device?: TfDevice;
  /** webgpu: accept a software adapter (lavapipe). */
  readonly allowSoftwareGpu?: boolean;
  /**
   * cpu: data-parallel training workers (dataParallel.ts), default 1 = train on this thread. Above 1, each batch
   * is cut into `shards` (default: one per worker) whose gradients are summed.
   */
  readonly workers?: number;
  readonly shards?: number;
}

export type FitEvent =
  | { kind: 'start'; epochsDone: number; epochs: number; stepsPerEpoch: number; resumed: boolean }
  | { kind: 'step'; epoch: number; epochs: number; step: number; stepsPerEpoch: number; loss: number; seg: number; cls: number }
  | { kind: 'epoch'; record: EpochRecord; epochs: number; best: boolean; imagesPerSecond: number };

export interface FitHooks {
  onProgress?(event: FitEvent): void;
  /** Aborting stops the run between steps with the signal's reason; the last finished epoch's checkpoint stays. */
  readonly signal?: AbortSignal;
  /** Scores the model after each epoch (null: no validation data, the latest epoch is kept). */
  validate?(model: tf.LayersModel): Promise<SegmentationMetrics | null>;
}

export interface FitResult {
  /** The best epoch's weights (the caller owns and disposes it). */
  model: tf.LayersModel;
  /** 1-based best epoch; the last epoch when there is no validation. */
  bestEpoch: number;
  /** Validation metrics of the best weights, or null without validation. */
  validation: SegmentationMetrics | null;
  history: EpochRecord[];
  classWeights: number[];
  counts: { segPatches: number; clsPatches: number; segAvailable: number; clsAvailable: number };
  backend: string;
  /** Images per second over the epochs this call ran (training steps only, no validation). */
  imagesPerSecond: number | null;
  /** Epoch-0 first-step loss of this call (reproducibility checks). */
  firstStepLoss: number | null;
}

const BEST_DIR = 'best';

async function hasBest(workDir: string): Promise<boolean> {
  return stat(join(workDir, BEST_DIR, 'model.json')).then(
    () => true,
    () => false,
  );
}

/** What a checkpoint must match to be resumed: the settings, the caller's identity (dataset hash) and the code. */
async function runIdentity(o: FitOptions): Promise<Record<string, unknown>> {
  return {
    settings: {
      setting: o.setting,
      segPercent: o.segPercent,
      seed: o.seed,
      batchSize: o.batchSize,
      numClasses: o.numClasses,
      initWeights: o.initWeights ?? null,
      baseModel: o.baseModel ?? null,
      maxStepsPerEpoch: o.maxStepsPerEpoch ?? null,
    },
    ...(o.identity ?? {}),
    code: await trainingCodeVersion(),
  };
}

export async function fit(items: TrainingItems, o: FitOptions, hooks: FitHooks = {}): Promise<FitResult> {
  if (!Number.isInteger(o.epochs) || o.epochs < 1) throw new Error(`epochs must be a positive integer, got ${o.epochs}`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new Error(`batch size must be a positive integer, got ${o.batchSize}`);
  hooks.signal?.throwIfAborted();
  const device = o.device ?? 'cpu';
  const workers = o.workers ?? 1;
  const shards = o.shards ?? workers;
  if (device !== 'cpu' && (workers > 1 || shards > 1)) throw new Error(`data-parallel workers are for the cpu device; ${device} trains on one thread`);
  const backend = await selectTfBackend({ device, allowSoftwareGpu: o.allowSoftwareGpu });
  // This thread's convs (training on one worker, or validation while the workers wait) may use the cores the workers would.
  if (backend === 'wasm') registerWasmTrainingKernels({ convThreads: workers });
  const numClasses = o.numClasses;
  await mkdir(o.workDir, { recursive: true });
  const selection = selectPatches(o.setting, items.seg.length, items.cls.length, o.segPercent, o.seed);
  const total = selection.seg.length + selection.cls.length;
  if (total === 0) {
    throw new Error(
      `nothing to train on: setting ${o.setting} at ${o.segPercent}% selects no patches ` +
        `(${items.seg.length} segmentation and ${items.cls.length} class patches available)`,
    );
  }
  const weights = classWeights(pixelCounts(items, selection, numClasses));
  const validate = hooks.validate ?? (async () => null);

  const optimizer = tf.train.adam(ADAM_LEARNING_RATE, ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON);
  const identity = await runIdentity(o);
  const config = JSON.stringify(identity);
  let model: tf.LayersModel;
  let epochsDone = 0;
  let history: EpochRecord[] = [];
  let best: { epoch: number; score: number } | null = null;
  const resumed = o.resume === true && (await hasCheckpoint(o.workDir));
  if (resumed) {
    const ck = await loadCheckpoint(o.workDir, optimizer);
    const differences = ck.state.identity ? identityDifferences(ck.state.identity, identity) : ['identity (the checkpoint predates identity checks)'];
    const bestMissing = ck.state.best !== null && !(await hasBest(o.workDir));
    if (differences.length > 0 || bestMissing) {
      ck.model.dispose();
      optimizer.dispose();
      throw new Error(
        differences.length > 0
          ? `refusing to resume: the checkpoint in ${o.workDir} is from a different run; it differs in ${differences.join('; ')}. ` +
              'Run without --resume to start afresh (that clears it), or use another work folder'
          : `refusing to resume: the checkpoint in ${o.workDir} has no best/ model beside it; run without --resume to start afresh`,
      );
    }
    model = ck.model;
    ({ epochsDone, history, best } = ck.state);
  } else {
    // A fresh run starts clean: a previous run's checkpoint must not be resumed later as if it were this one's.
    await clearCheckpoint(o.workDir);
    await rm(join(o.workDir, BEST_DIR), { recursive: true, force: true });
    model = o.baseModel ? await loadLayersModel(o.baseModel) : buildSegClsModel({ numClasses, seed: o.seed });
    if (modelNumClasses(model) !== numClasses) {
      const got = modelNumClasses(model);
      model.dispose();
      optimizer.dispose();
      throw new Error(`the base model has ${got} classes, the data ${numClasses}`);
    }
    if (o.initWeights) importTorchWeights(model, await readSafetensorsFile(o.initWeights));
  }

  const stepsPerEpoch = Math.min(Math.ceil(total / o.batchSize), o.maxStepsPerEpoch ?? Infinity);
  hooks.onProgress?.({ kind: 'start', epochsDone, epochs: o.epochs, stepsPerEpoch, resumed });
  const vars = trainableVariables(model);
  const parallel = workers > 1 || shards > 1 ? await DataParallel.start(workers, numClasses, shards) : undefined;
  let trainSeconds = 0;
  let trainImages = 0;
  let firstStepLoss: number | null = null;
  try {
    for (let epoch = epochsDone; epoch < o.epochs; epoch++) {
      const order = epochOrder(selection, o.seed, epoch);
      const sums = { total: 0, seg: 0, cls: 0, images: 0 };
      const t0 = performance.now();
      for (let step = 0; step < stepsPerEpoch; step++) {
        hooks.signal?.throwIfAborted();
        const refs = order.slice(step * o.batchSize, (step + 1) * o.batchSize);
        const b = buildBatch(items, refs, weights);
        const l = parallel ? await parallel.step(model, optimizer, vars, b) : await trainStep(model, optimizer, vars, b);
        const [totalV, segV, clsV] = [l.total, l.seg, l.cls];
        if (!Number.isFinite(totalV)) throw new Error(`loss is ${totalV} at epoch ${epoch + 1}, step ${step + 1}`);
        if (firstStepLoss === null) firstStepLoss = totalV;
        sums.total += totalV;
        sums.seg += segV;
        sums.cls += clsV;
        sums.images += b.n;
        hooks.onProgress?.({ kind: 'step', epoch: epoch + 1, epochs: o.epochs, step: step + 1, stepsPerEpoch, loss: totalV, seg: segV, cls: clsV });
      }
      hooks.signal?.throwIfAborted();
      await parallel?.sync(model, optimizer); // the workers' weights and Adam state, for validation and the checkpoint
      const seconds = (performance.now() - t0) / 1000;
      trainSeconds += seconds;
      trainImages += sums.images;
      const metrics = await validate(model);
      const record: EpochRecord = {
        epoch: epoch + 1,
        steps: stepsPerEpoch,
        lossTotal: sums.total / stepsPerEpoch,
        lossSeg: sums.seg / stepsPerEpoch,
        lossCls: sums.cls / stepsPerEpoch,
        seconds,
        macroF1: metrics?.macroF1 ?? null,
        bachScore: metrics?.bachScore ?? null,
      };
      history = [...history, record];
      // Best epoch by validation macro F1 (the BACH score breaks ties); without validation, the latest.
      const score = metrics ? (metrics.macroF1 ?? 0) + 1e-6 * (metrics.bachScore ?? 0) : epoch;
      const isBest = best === null || score > best.score;
      if (isBest) {
        best = { epoch: epoch + 1, score };
        await saveLayersModel(model, join(o.workDir, BEST_DIR));
      }
      await saveCheckpoint(o.workDir, model, optimizer, { epochsDone: epoch + 1, config, identity, best: best!, history });
      hooks.onProgress?.({ kind: 'epoch', record, epochs: o.epochs, best: isBest, imagesPerSecond: sums.images / seconds });
    }
  } catch (err) {
    model.dispose();
    throw err;
  } finally {
    optimizer.dispose();
    await parallel?.close();
  }
  model.dispose();
  if (best === null) throw new Error('no epoch finished');
  if (backend === 'webgpu') {
    // The GPU is done: the best weights are read on wasm, where export and checks can read synchronously, and the
    // device is released so the process can exit.
    releaseTfBackend();
    await selectTfBackend({ device: 'cpu' });
  }
  const bestModel = await loadLayersModel(join(o.workDir, BEST_DIR));
  return {
    model: bestModel,
    bestEpoch: best.epoch,
    validation: await validate(bestModel),
    history,
    classWeights: weights,
    counts: {
      segPatches: selection.seg.length,
      clsPatches: selection.cls.length,
      segAvailable: items.seg.length,
      clsAvailable: items.cls.length,
    },
    backend,
    imagesPerSecond: trainSeconds > 0 ? trainImages / trainSeconds : null,
    firstStepLoss,
  };
}
