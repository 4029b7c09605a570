// The paper's joint trainer (Sec. 2.2-2.3, 3.3): segmentation and class patches in one loop, Lcls + Lseg, Adam,
// per-epoch validation picking the best epoch, checkpoints after every epoch.
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import cliProgress from 'cli-progress';
import { selectTfBackend } from '../../tf/backend.js';
import { registerWasmTrainingKernels } from '../../tf/gradKernels/index.js';
import type { SegmentationMetrics } from '../../evaluation/metrics.js';
import { buildSegClsModel, modelNumClasses } from '../../model/network/architecture.js';
import { importTorchWeights, readSafetensorsFile } from '../../model/network/importWeights.js';
import { INPUT_SIZE } from '../../util/constants.js';
import { StainReferenceSchema, type StainReference } from '../../model/manifest.js';
import { loadLayersModel, saveLayersModel } from '../../model/network/tfjsIO.js';
import { type EpochRecord, hasCheckpoint, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import type { Dataset } from '../../data/datasets/dataset.js';
import { ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, ADAM_LEARNING_RATE } from './hyperparameters.js';
import { classWeights, jointLoss } from './losses.js';
import { type PatchIndex, preparePatches } from '../prepare/patchPreparation.js';
import {
  buildBatch,
  epochOrder,
  loadTrainingItems,
  normalizeTrainingItems,
  pixelCounts,
  selectPatches,
  type Setting,
} from './trainingData.js';
import { loadValidationSlides, validate } from './validation.js';

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
  /** Progress bar on stderr; default: when stderr is a TTY. Plain lines go to `log` otherwise. */
  readonly progress?: boolean;
  readonly log?: (line: string) => void;
}

export interface TrainResult {
  /** The best epoch's weights (the caller owns and disposes it). */
  model: tf.LayersModel;
  classes: string[];
  stainReference: StainReference | null;
  /** 1-based best epoch; the last epoch when there is no validation slide. */
  bestEpoch: number;
  /** Validation metrics of the best weights, or null without validation slides. */
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

const PREPARED_DIR = 'prepared';
const BEST_DIR = 'best';

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

/** The variables Adam updates: this model's trainable weights only, in a fixed order (its moments are by position). */
function trainableVariables(model: tf.LayersModel): tf.Variable[] {
  return model.trainableWeights.map((w) => w.read() as tf.Variable);
}

function configKey(o: TrainOptions, numClasses: number): string {
  return JSON.stringify({
    root: o.dataset.root,
    setting: o.setting,
    segPercent: o.segPercent,
    seed: o.seed,
    batchSize: o.batchSize,
    numClasses,
    initWeights: o.initWeights ?? null,
    baseModel: o.baseModel ?? null,
    maxStepsPerEpoch: o.maxStepsPerEpoch ?? null,
  });
}

export async function train(o: TrainOptions): Promise<TrainResult> {
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  if (!Number.isInteger(o.epochs) || o.epochs < 1) throw new Error(`--epochs must be a positive integer, got ${o.epochs}`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new Error(`--batch must be a positive integer, got ${o.batchSize}`);
  const backend = await selectTfBackend();
  if (backend === 'wasm') registerWasmTrainingKernels();

  const classes = o.dataset.classes;
  const numClasses = classes.length;
  await mkdir(o.workDir, { recursive: true });
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
  const selection = selectPatches(o.setting, items.seg.length, items.cls.length, o.segPercent, o.seed);
  const total = selection.seg.length + selection.cls.length;
  if (total === 0) {
    throw new Error(
      `nothing to train on: setting ${o.setting} at ${o.segPercent}% selects no patches ` +
        `(${items.seg.length} segmentation and ${items.cls.length} class patches available)`,
    );
  }
  const weights = classWeights(pixelCounts(items, selection, numClasses));
  const valSlides = await loadValidationSlides(o.dataset, reference);
  if (valSlides.length === 0) log('no validation slide (dataset.json split "validation"): the last epoch is kept');

  const optimizer = tf.train.adam(ADAM_LEARNING_RATE, ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON);
  const config = configKey(o, numClasses);
  let model: tf.LayersModel;
  let epochsDone = 0;
  let history: EpochRecord[] = [];
  let best: { epoch: number; score: number } | null = null;
  if (o.resume && (await hasCheckpoint(o.workDir))) {
    const ck = await loadCheckpoint(o.workDir, optimizer);
    if (ck.state.config !== config) {
      ck.model.dispose();
      throw new Error(`the checkpoint in ${o.workDir} is from another configuration (${ck.state.config}); use another work folder`);
    }
    model = ck.model;
    ({ epochsDone, history, best } = ck.state);
    log(`resuming after epoch ${epochsDone}`);
  } else {
    if (o.resume) log(`no checkpoint in ${o.workDir}: starting from scratch`);
    await rm(join(o.workDir, BEST_DIR), { recursive: true, force: true });
    model = o.baseModel ? await loadLayersModel(o.baseModel) : buildSegClsModel({ numClasses, seed: o.seed });
    if (modelNumClasses(model) !== numClasses) {
      model.dispose();
      throw new Error(`the base model has ${modelNumClasses(model)} classes, the dataset ${numClasses}`);
    }
    if (o.initWeights) importTorchWeights(model, await readSafetensorsFile(o.initWeights));
  }

  const stepsPerEpoch = Math.min(Math.ceil(total / o.batchSize), o.maxStepsPerEpoch ?? Infinity);
  const useBar = o.progress ?? process.stderr.isTTY === true;
  const bar = useBar
    ? new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: 'epoch {epoch}/{epochs} |{bar}| {value}/{total} steps | loss {loss} (seg {seg}, cls {cls}) | ETA {eta_formatted}',
          etaBuffer: 50,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start((o.epochs - epochsDone) * stepsPerEpoch, 0, { epoch: epochsDone + 1, epochs: o.epochs, loss: '-', seg: '-', cls: '-' });
  const vars = trainableVariables(model);
  let trainSeconds = 0;
  let trainImages = 0;
  let firstStepLoss: number | null = null;
  // With a bar on stderr the epoch lines wait until it stops, so they do not tear it.
  const epochLines: string[] = [];
  try {
    for (let epoch = epochsDone; epoch < o.epochs; epoch++) {
      const order = epochOrder(selection, o.seed, epoch);
      const sums = { total: 0, seg: 0, cls: 0, images: 0 };
      const t0 = performance.now();
      for (let step = 0; step < stepsPerEpoch; step++) {
        const refs = order.slice(step * o.batchSize, (step + 1) * o.batchSize);
        const b = buildBatch(items, refs, weights);
        const x = tf.tensor4d(b.x, [b.n, INPUT_SIZE, INPUT_SIZE, 3]);
        const segTarget = tf.tensor4d(b.segTarget, [b.n, INPUT_SIZE, INPUT_SIZE, numClasses]);
        const clsTarget = tf.tensor2d(b.clsTarget, [b.n, numClasses]);
        let parts: tf.Scalar[] = [];
        const loss = optimizer.minimize(
          () => {
            const [mask, cls] = model.apply(x, { training: true }) as tf.Tensor[];
            const l = jointLoss(mask!, cls!, segTarget, clsTarget);
            parts = [tf.keep(l.seg), tf.keep(l.cls)];
            return l.total;
          },
          true,
          vars,
        );
        const [totalV, segV, clsV] = [loss!.dataSync()[0]!, parts[0]!.dataSync()[0]!, parts[1]!.dataSync()[0]!];
        tf.dispose([loss!, ...parts, x, segTarget, clsTarget]);
        if (!Number.isFinite(totalV)) throw new Error(`loss is ${totalV} at epoch ${epoch + 1}, step ${step + 1}`);
        if (firstStepLoss === null) firstStepLoss = totalV;
        sums.total += totalV;
        sums.seg += segV;
        sums.cls += clsV;
        sums.images += b.n;
        bar?.increment(1, { epoch: epoch + 1, loss: totalV.toFixed(4), seg: segV.toFixed(4), cls: clsV.toFixed(4) });
      }
      const seconds = (performance.now() - t0) / 1000;
      trainSeconds += seconds;
      trainImages += sums.images;
      const metrics = validate(model, valSlides, numClasses);
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
      if (best === null || score > best.score) {
        best = { epoch: epoch + 1, score };
        await saveLayersModel(model, join(o.workDir, BEST_DIR));
      }
      await saveCheckpoint(o.workDir, model, optimizer, { epochsDone: epoch + 1, config, best, history });
      const line =
        `epoch ${epoch + 1}/${o.epochs}: loss ${record.lossTotal.toFixed(4)} (seg ${record.lossSeg.toFixed(4)}, ` +
        `cls ${record.lossCls.toFixed(4)}), ${(sums.images / seconds).toFixed(1)} images/s` +
        (metrics ? `, validation macro F1 ${fmt(metrics.macroF1)}, BACH ${fmt(metrics.bachScore)}` : '') +
        (best.epoch === epoch + 1 ? ' (best)' : '');
      if (bar) {
        bar.update({ epoch: Math.min(epoch + 2, o.epochs) });
        epochLines.push(line);
      } else log(line);
    }
  } catch (err) {
    model.dispose();
    throw err;
  } finally {
    bar?.stop();
    epochLines.forEach((l) => log(l));
    optimizer.dispose();
  }
  model.dispose();
  if (best === null) throw new Error('no epoch finished');
  const bestModel = await loadLayersModel(join(o.workDir, BEST_DIR));
  return {
    model: bestModel,
    classes,
    stainReference: reference,
    bestEpoch: best.epoch,
    validation: validate(bestModel, valSlides, numClasses),
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

function fmt(v: number | null): string {
  return v === null ? 'n/a' : v.toFixed(4);
}
