// `histoseg train`: train on a dataset and write the result as a new model version (with ONNX parity checked).
import { relativeL2 } from '../engine/engine.js';
import { join } from 'node:path';
import { datasetHash } from '../data/datasets/datasetHash.js';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import type { FitEvent } from '../training/fit/trainer.js';
import type * as tfTypes from '@tensorflow/tfjs';
import { BACH_CLASSES, INPUT_SIZE, MODEL_MPP } from '../util/constants.js';
import type { Manifest } from '../model/manifest.js';
import type { ModelEntry } from '../model/repository.js';
import { BATCH_SIZE, EPOCHS } from '../training/fit/hyperparameters.js';
import { SETTINGS, type Setting } from '../training/fit/trainingData.js';

/** Relative L2 error the ONNX export may have against TF.js on random inputs before it is written. */
export const ONNX_PARITY_TOLERANCE = 1e-4;

export interface TrainCommandOptions {
  data: string;
  setting: Setting;
  /** Percent of the segmentation patches (Sec. 3.3's s). */
  segPercent: number;
  epochs: number;
  seed: number;
  name: string;
  /** Default: the next minor version after the newest of `name` (1.0.0 for a new name). */
  version?: string;
  models: string;
  init?: string;
  /** NAME@VERSION (or NAME for its newest version) in the repository. */
  base?: string;
  batch: number;
  resume: boolean;
  maxSteps?: number;
  /** Work folder for prepared patches and checkpoints; default `.histoseg-train/<name>`. */
  work?: string;
  log?: (line: string) => void;
  progress?: boolean;
}

/**
 * `--seg-fraction`: a fraction in (0, 1] ("0.05"), a percent above 1 ("5"), or an explicit percent ("5%", "0.5%").
 * Returns percent. 1 means all of them; write "1%" for one percent.
 */
export function parseSegFraction(value: string): number {
  const pct = value.trim().endsWith('%');
  const n = Number(pct ? value.trim().slice(0, -1) : value);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--seg-fraction must be a non-negative number, got ${JSON.stringify(value)}`);
  const percent = pct || n > 1 ? n : n * 100;
  if (percent > 100) throw new Error(`--seg-fraction must be at most 100%, got ${value}`);
  return percent;
}

export function parseSetting(value: string): Setting {
  const s = SETTINGS.find((x) => x.toLowerCase() === value.trim().toLowerCase());
  if (!s) throw new Error(`--setting must be one of ${SETTINGS.join(', ')}, got ${JSON.stringify(value)}`);
  return s;
}

/** sha256 of a dataset folder's files (moved to data/datasets; re-exported for callers of this module). */
export { datasetHash };

/** The next version of `name`: minor bump of the newest x.y.z, +1 of a plain integer, else 1.0.0 for a new name. */
export function nextVersion(existing: readonly string[]): string {
  const latest = existing.at(-1);
  if (latest === undefined) return '1.0.0';
  const semver = /^(\d+)\.(\d+)\.(\d+)$/.exec(latest);
  if (semver) return `${semver[1]}.${Number(semver[2]) + 1}.0`;
  if (/^\d+$/.test(latest)) return String(Number(latest) + 1);
  throw new Error(`cannot derive a version after ${latest}; pass --version`);
}

const PALETTE = ['#ffffff', '#ff0000', '#00ff00', '#0000ff', '#ffff00', '#ff00ff', '#00ffff', '#808080'];
function classColour(i: number): string {
  const bach = BACH_CLASSES[i]?.color;
  if (bach) return bach;
  if (i < PALETTE.length) return PALETTE[i]!;
  const v = (i * 0x9e3779b1) >>> 8;
  return `#${(v & 0xffffff).toString(16).padStart(6, '0')}`;
}

/** Exports the model to ONNX and compares onnxruntime with TF.js on random inputs; throws above the tolerance. */
export async function checkOnnxParity(model: tfTypes.LayersModel, numClasses: number, seed: number): Promise<{ mask: number; cls: number }> {
  const [tf, { exportOnnx }, { OnnxEngine }] = await Promise.all([
    import('@tensorflow/tfjs'),
    import('../model/network/onnxExport.js'),
    import('../engine/onnxEngine.js'),
  ]);
  const n = 2;
  const x = tf.randomNormal([n, INPUT_SIZE, INPUT_SIZE, 3], 0, 1, 'float32', seed);
  const [maskT, clsT] = tf.tidy(() => {
    const [mask, cls] = model.predict(x) as tfTypes.Tensor[];
    return [tf.transpose(mask!, [0, 3, 1, 2]), cls!];
  });
  const nchw = tf.transpose(x, [0, 3, 1, 2]);
  const input = nchw.dataSync() as Float32Array;
  const [tfMask, tfCls] = [maskT.dataSync(), clsT.dataSync()];
  tf.dispose([x, nchw, maskT, clsT]);
  const engine = await OnnxEngine.create(exportOnnx(model, numClasses), numClasses, { intraOpNumThreads: 1 });
  try {
    const out = await engine.run({ data: Float32Array.from(input), n });
    const err = { mask: relativeL2(out.mask, tfMask), cls: relativeL2(out.cls, tfCls) };
    if (!(err.mask < ONNX_PARITY_TOLERANCE && err.cls < ONNX_PARITY_TOLERANCE)) {
      throw new Error(
        `ONNX export differs from TF.js: relative L2 mask ${err.mask.toExponential(2)}, cls ${err.cls.toExponential(2)} ` +
          `(limit ${ONNX_PARITY_TOLERANCE})`,
      );
    }
    return err;
  } finally {
    await engine.dispose();
  }
}

/** What a trained model's manifest says it was trained on. */
function trainedOnText(dataset: { layout: string; synthetic?: boolean; description?: string; slides: unknown[]; patches: unknown[] }, base?: ModelEntry): string {
  const what =
    dataset.description ??
    (dataset.synthetic ? 'synthetic slides, not real tissue' : `a ${dataset.layout} dataset of ${dataset.slides.length} slides and ${dataset.patches.length} patches`);
  return base ? `${what}, fine-tuned from ${base.name}@${base.version} (trained on ${base.manifest.trainedOn})` : what;
}

/** Trains and writes a new version; returns it. */
export async function runTrain(opts: TrainCommandOptions): Promise<ModelEntry> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  // TF.js loads only when this command runs, not whenever the CLI starts.
  const [{ readDataset }, { train }, { listModels, modelFilePath, removeStaleTemporaries, resolveModel, saveModelVersion }] = await Promise.all([
    import('../data/datasets/readDataset.js'),
    import('../training/jobs/trainOnDataset.js'),
    import('../model/repository.js'),
  ]);
  // A crashed run's half-written version folders go first (a live writer's are left alone).
  for (const dir of await removeStaleTemporaries(opts.models)) log(`removed ${dir}, left by a crashed run`);
  const existing = await listModels(opts.models).catch(() => [] as ModelEntry[]);
  const version = opts.version ?? nextVersion(existing.filter((e) => e.name === opts.name).map((e) => e.version));
  if (existing.some((e) => e.name === opts.name && e.version === version)) {
    throw new Error(`model ${opts.name}@${version} already exists in ${opts.models}`);
  }
  let base: ModelEntry | undefined;
  if (opts.base) {
    const [name, ver] = opts.base.split('@');
    base = await resolveModel(opts.models, name, ver);
  }
  const dataset = await readDataset(opts.data);
  for (const w of dataset.warnings) log(`warning: ${w}`);
  if (base && base.manifest.classes.length !== dataset.classes.length) {
    throw new Error(`--base ${opts.base} has ${base.manifest.classes.length} classes, the dataset ${dataset.classes.length}`);
  }
  const hash = await datasetHash(opts.data);
  const progress = trainProgress(opts.progress ?? process.stderr.isTTY === true, log);
  const result = await train({
    dataset,
    setting: opts.setting,
    segPercent: opts.segPercent,
    epochs: opts.epochs,
    seed: opts.seed,
    batchSize: opts.batch,
    workDir: opts.work ?? join('.histoseg-train', opts.name),
    initWeights: opts.init,
    baseModel: base ? modelFilePath(base.dir, base.manifest.files.tfjs) : undefined,
    resume: opts.resume,
    maxStepsPerEpoch: opts.maxSteps,
    datasetHash: hash,
    log,
  }, { onProgress: progress.onEvent }).finally(() => progress.stop());
  try {
    const parity = await checkOnnxParity(result.model, dataset.classes.length, opts.seed);
    const v = result.validation;
    const metrics: Record<string, number> = { bestEpoch: result.bestEpoch };
    if (v) {
      for (const k of ['macroF1', 'microF1', 'accuracy', 'foregroundAccuracy', 'bachScore'] as const) {
        if (v[k] !== null) metrics[k] = v[k];
      }
    }
    const manifest: Manifest = {
      schema: 1,
      name: opts.name,
      version,
      architecture: 'resnet18-layer3-segcls',
      classes: dataset.classes.map((name, i) => ({ name, color: base?.manifest.classes[i]?.color ?? classColour(i) })),
      inputSize: INPUT_SIZE,
      mpp: MODEL_MPP,
      trained: true,
      trainedOn: trainedOnText(dataset, base),
      demoOnly: dataset.synthetic === true || base?.manifest.demoOnly === true,
      stainReference: result.stainReference,
      createdAt: new Date().toISOString(),
      lineage: {
        parent: base ? `${base.name}@${base.version}` : null,
        datasetHash: hash,
        settings: {
          setting: opts.setting,
          segFractionPercent: opts.segPercent,
          epochs: opts.epochs,
          seed: opts.seed,
          batch: opts.batch,
          init: opts.init ? 'imagenet-safetensors' : base ? 'base' : 'random',
          ...(opts.maxSteps !== undefined ? { maxStepsPerEpoch: opts.maxSteps } : {}),
          segPatches: result.counts.segPatches,
          clsPatches: result.counts.clsPatches,
          classWeights: result.classWeights,
          backend: result.backend,
          onnxParity: parity,
        },
      },
      metrics,
      files: { tfjs: 'tfjs/model.json', onnx: 'model.onnx' },
    };
    const entry = await saveModelVersion(opts.models, manifest, result.model);
    log(
      `best epoch ${result.bestEpoch}` +
        (v ? `: validation macro F1 ${v.macroF1?.toFixed(4) ?? 'n/a'}, BACH ${v.bachScore?.toFixed(4) ?? 'n/a'}` : '') +
        (result.imagesPerSecond ? `; ${result.imagesPerSecond.toFixed(1)} images/s on ${result.backend}` : ''),
    );
    return entry;
  } finally {
    result.model.dispose();
  }
}

/**
 * A progress bar on stderr for a terminal, else one plain line per epoch. With a bar, the epoch lines wait until it
 * stops, so they do not tear it.
 */
function trainProgress(useBar: boolean, log: (line: string) => void): { onEvent: (e: FitEvent) => void; stop: () => void } {
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
  const lines: string[] = [];
  const fmt = (v: number | null) => (v === null ? 'n/a' : v.toFixed(4));
  return {
    onEvent(e) {
      if (e.kind === 'start') {
        bar?.start((e.epochs - e.epochsDone) * e.stepsPerEpoch, 0, { epoch: e.epochsDone + 1, epochs: e.epochs, loss: '-', seg: '-', cls: '-' });
      } else if (e.kind === 'step') {
        bar?.increment(1, { epoch: e.epoch, loss: e.loss.toFixed(4), seg: e.seg.toFixed(4), cls: e.cls.toFixed(4) });
      } else {
        const r = e.record;
        const line =
          `epoch ${r.epoch}/${e.epochs}: loss ${r.lossTotal.toFixed(4)} (seg ${r.lossSeg.toFixed(4)}, ` +
          `cls ${r.lossCls.toFixed(4)}), ${e.imagesPerSecond.toFixed(1)} images/s` +
          (r.macroF1 !== null || r.bachScore !== null ? `, validation macro F1 ${fmt(r.macroF1)}, BACH ${fmt(r.bachScore)}` : '') +
          (e.best ? ' (best)' : '');
        if (bar) {
          bar.update({ epoch: Math.min(r.epoch + 1, e.epochs) });
          lines.push(line);
        } else log(line);
      }
    },
    stop() {
      bar?.stop();
      lines.splice(0).forEach((l) => log(l));
    },
  };
}

function positiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a positive integer, got ${value}`);
  return n;
}

export function registerTrain(program: Command): void {
  program
    .command('train')
    .description('train the model jointly on segmentation and class patches (paper Sec. 2.2-2.3) into a new model version')
    .requiredOption('--data <dir>', 'dataset folder (generic or BACH layout)')
    .option('--setting <S|S+C|S+C*>', 'S: seg patches only; S+C: s% seg + (100-s)% cls; S+C*: s% seg + all cls (Sec. 3.3)', 'S+C*')
    .option('--seg-fraction <f>', 'share s of segmentation patches: 0.05, 5 or 5% (1 = all; 1% = one percent)', '1')
    .option('--epochs <n>', 'epochs', String(EPOCHS))
    .option('--seed <k>', 'seed of patch selection, order and initialisation', '1')
    .requiredOption('--name <name>', 'model name in the repository')
    .option('--version <v>', 'version to write (default: next after the newest of --name)')
    .option('--init <safetensors>', 'ImageNet ResNet-18 weights for the encoder')
    .option('--base <name@version>', 'start from this model version')
    .option('--models <dir>', 'model repository (default: $HISTOSEG_MODELS or models)')
    .option('--batch <n>', 'batch size', String(BATCH_SIZE))
    .option('--resume', 'continue the interrupted run in the work folder', false)
    .option('--max-steps <n>', 'at most this many steps per epoch (smoke runs and tests)')
    .option('--work <dir>', 'work folder for prepared patches and checkpoints (default .histoseg-train/<name>)')
    .action(async (f: Record<string, string | boolean | undefined>) => {
      const seed = Number(f.seed);
      if (!Number.isInteger(seed) || seed < 0) throw new Error(`--seed must be a non-negative integer, got ${String(f.seed)}`);
      if (f.init && f.base) throw new Error('use --init or --base, not both');
      const entry = await runTrain({
        data: String(f.data),
        setting: parseSetting(String(f.setting)),
        segPercent: parseSegFraction(String(f.segFraction)),
        epochs: positiveInt('--epochs', String(f.epochs)),
        seed,
        name: String(f.name),
        version: f.version as string | undefined,
        models: (f.models as string | undefined) ?? process.env.HISTOSEG_MODELS ?? 'models',
        init: f.init as string | undefined,
        base: f.base as string | undefined,
        batch: positiveInt('--batch', String(f.batch)),
        resume: f.resume === true,
        maxSteps: f.maxSteps === undefined ? undefined : positiveInt('--max-steps', String(f.maxSteps)),
        work: f.work as string | undefined,
      });
      process.stdout.write(`wrote ${entry.dir}\n`);
    });
}
