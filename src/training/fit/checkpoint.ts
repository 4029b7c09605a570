// Training checkpoints: weights (with BN statistics), Adam state, epochs done and the run's bookkeeping, written
// after every epoch so an interrupted run resumes where it stopped.
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { loadLayersModel, saveLayersModel } from '../../model/network/tfjsIO.js';

export const CHECKPOINT_DIR = 'checkpoint';
const STATE_FILE = 'state.json';
const OPTIMIZER_FILE = 'optimizer.bin';
const MODEL_DIR = 'model';

const EpochRecordSchema = z.object({
  epoch: z.number().int(),
  steps: z.number().int(),
  lossTotal: z.number(),
  lossSeg: z.number(),
  lossCls: z.number(),
  seconds: z.number(),
  macroF1: z.number().nullable(),
  bachScore: z.number().nullable(),
});
export type EpochRecord = z.infer<typeof EpochRecordSchema>;

export const CheckpointStateSchema = z.object({
  format: z.literal(1),
  /** Epochs completed; the next epoch to run is this number (0-based). */
  epochsDone: z.number().int().nonnegative(),
  /** The run's configuration as JSON: a resume must match it. */
  config: z.string(),
  /** Adam's bias-correction accumulators beta^t, saved exactly: setWeights would recompute them with pow(). */
  accBeta1: z.number(),
  accBeta2: z.number(),
  optimizerTensors: z.array(z.object({ name: z.string(), shape: z.array(z.number().int()), dtype: z.enum(['float32', 'int32']) })),
  best: z.object({ epoch: z.number().int(), score: z.number() }).nullable(),
  history: z.array(EpochRecordSchema),
});
export type CheckpointState = z.infer<typeof CheckpointStateSchema>;

/** Adam's private bias-correction variables (tfjs-core AdamOptimizer); read and restored for an exact resume. */
interface AdamInternals {
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
}

function adamInternals(optimizer: tf.AdamOptimizer): AdamInternals {
  const o = optimizer as unknown as Partial<AdamInternals>;
  if (!(o.accBeta1 instanceof tf.Variable) || !(o.accBeta2 instanceof tf.Variable)) {
    throw new Error('this TF.js version has no AdamOptimizer.accBeta1/accBeta2; checkpoints cannot restore Adam exactly');
  }
  return o as AdamInternals;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

export async function hasCheckpoint(outDir: string): Promise<boolean> {
  return exists(join(outDir, CHECKPOINT_DIR, STATE_FILE));
}

/** Writes the checkpoint into a temporary folder and swaps it in, so a crash leaves the previous one whole. */
export async function saveCheckpoint(
  outDir: string,
  model: tf.LayersModel,
  optimizer: tf.AdamOptimizer,
  state: Omit<CheckpointState, 'format' | 'accBeta1' | 'accBeta2' | 'optimizerTensors'>,
): Promise<void> {
  const dir = join(outDir, CHECKPOINT_DIR);
  const tmp = `${dir}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await saveLayersModel(model, join(tmp, MODEL_DIR));
  const named = await optimizer.getWeights();
  const parts: Uint8Array[] = [];
  const optimizerTensors: CheckpointState['optimizerTensors'] = [];
  for (const { name, tensor } of named) {
    const dtype = tensor.dtype === 'int32' ? 'int32' : 'float32';
    // Read asynchronously: a GPU backend cannot read synchronously in Node.
    const values = await tensor.data();
    const data = dtype === 'int32' ? Int32Array.from(values) : Float32Array.from(values);
    parts.push(new Uint8Array(data.buffer));
    optimizerTensors.push({ name, shape: tensor.shape, dtype });
  }
  // saveIterations() makes a fresh scalar; the moments are the optimizer's own variables and must stay.
  if (named[0]?.name === 'iter') named[0].tensor.dispose();
  const { accBeta1, accBeta2 } = adamInternals(optimizer);
  const [beta1, beta2] = await Promise.all([accBeta1.data(), accBeta2.data()]);
  const full: CheckpointState = {
    format: 1,
    ...state,
    accBeta1: beta1[0]!,
    accBeta2: beta2[0]!,
    optimizerTensors,
  };
  await writeFile(join(tmp, OPTIMIZER_FILE), Buffer.concat(parts));
  await writeFile(join(tmp, STATE_FILE), JSON.stringify(CheckpointStateSchema.parse(full), null, 1) + '\n');
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
}

/** Loads the checkpoint's model and restores `optimizer` (a fresh Adam with the run's hyperparameters). */
export async function loadCheckpoint(
  outDir: string,
  optimizer: tf.AdamOptimizer,
): Promise<{ model: tf.LayersModel; state: CheckpointState }> {
  const dir = join(outDir, CHECKPOINT_DIR);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8'));
  } catch (err) {
    throw new Error(`cannot read checkpoint ${dir}: ${(err as Error).message}`);
  }
  const parsed = CheckpointStateSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`invalid checkpoint ${dir}: ${z.prettifyError(parsed.error)}`);
  const state = parsed.data;
  const model = await loadLayersModel(join(dir, MODEL_DIR));
  const bytes = await readFile(join(dir, OPTIMIZER_FILE));
  let offset = 0;
  const named: { name: string; tensor: tf.Tensor }[] = [];
  for (const spec of state.optimizerTensors) {
    const count = spec.shape.reduce((a, b) => a * b, 1);
    const slice = bytes.buffer.slice(bytes.byteOffset + offset, bytes.byteOffset + offset + count * 4);
    if (slice.byteLength !== count * 4) throw new Error(`checkpoint ${dir}: ${OPTIMIZER_FILE} is shorter than its state says`);
    offset += count * 4;
    const data = spec.dtype === 'int32' ? new Int32Array(slice) : new Float32Array(slice);
    named.push({ name: spec.name, tensor: tf.tensor(data, spec.shape, spec.dtype) });
  }
  if (offset !== bytes.byteLength) throw new Error(`checkpoint ${dir}: ${OPTIMIZER_FILE} is longer than its state says`);
  if (named.length > 0) await optimizer.setWeights(named);
  // setWeights made variables of the moments; the source tensors are ours to free.
  tf.dispose(named.map((n) => n.tensor));
  const { accBeta1, accBeta2 } = adamInternals(optimizer);
  tf.tidy(() => {
    accBeta1.assign(tf.scalar(state.accBeta1));
    accBeta2.assign(tf.scalar(state.accBeta2));
  });
  return { model, state };
}
