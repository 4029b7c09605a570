// Training checkpoints: weights (with BN statistics), Adam state, epochs done and the run's bookkeeping, written
// after every epoch so an interrupted run resumes where it stopped.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { loadLayersModel, saveLayersModel } from '../../model/network/tfjsIO.js';
import { fsyncPath, fsyncTree } from '../../util/durableFile.js';
import { adamInternals } from './adamState.js';

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
  /** What identifies the run (settings, dataset hash, code version), compared key by key on resume. */
  identity: z.record(z.string(), z.unknown()).optional(),
  /** Adam's bias-correction accumulators beta^t, saved exactly: setWeights would recompute them with pow(). */
  accBeta1: z.number(),
  accBeta2: z.number(),
  optimizerTensors: z.array(z.object({ name: z.string(), shape: z.array(z.number().int()), dtype: z.enum(['float32', 'int32']) })),
  best: z.object({ epoch: z.number().int(), score: z.number() }).nullable(),
  history: z.array(EpochRecordSchema),
});
export type CheckpointState = z.infer<typeof CheckpointStateSchema>;

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

export async function hasCheckpoint(outDir: string): Promise<boolean> {
  await recoverCheckpoint(outDir);
  return exists(join(outDir, CHECKPOINT_DIR, STATE_FILE));
}

const tmpDir = (outDir: string) => join(outDir, `${CHECKPOINT_DIR}.tmp`);
const oldDir = (outDir: string) => join(outDir, `${CHECKPOINT_DIR}.old`);

/**
 * Finishes or undoes a checkpoint swap a crash interrupted (saveCheckpoint: old -> .old, .tmp -> checkpoint, rm
 * .old). With checkpoint/ in place, leftovers go; without it, a complete .tmp (its state file is written last) is
 * renamed in, else .old is put back. Every writer of the work folder calls this first.
 */
export async function recoverCheckpoint(outDir: string): Promise<void> {
  const dir = join(outDir, CHECKPOINT_DIR);
  if (!(await exists(dir))) {
    if (await exists(join(tmpDir(outDir), STATE_FILE))) await rename(tmpDir(outDir), dir);
    else if (await exists(oldDir(outDir))) await rename(oldDir(outDir), dir);
  }
  await rm(tmpDir(outDir), { recursive: true, force: true });
  await rm(oldDir(outDir), { recursive: true, force: true });
}

/** Removes a work folder's checkpoint and any half-swapped leftovers (a fresh run starts clean). */
export async function clearCheckpoint(outDir: string): Promise<void> {
  for (const d of [join(outDir, CHECKPOINT_DIR), tmpDir(outDir), oldDir(outDir)]) await rm(d, { recursive: true, force: true });
}

/**
 * The version of the training code: the package version, TF.js's, and a hash of the sources (or compiled files)
 * of training/fit and model/network, which decide what a step computes. A checkpoint from other code is not resumed.
 */
export async function trainingCodeVersion(): Promise<string> {
  const here = dirname(fileURLToPath(import.meta.url));
  const h = createHash('sha256');
  for (const dir of [here, join(here, '../../model/network')]) {
    const files = (await readdir(dir)).filter((f) => /\.(ts|js)$/.test(f)).sort();
    for (const f of files) h.update(`${f}\0`).update(await readFile(join(dir, f)));
  }
  let pkg = 'unknown';
  try {
    pkg = (JSON.parse(await readFile(join(here, '../../../package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // dist/ layout: one folder deeper.
    pkg = (JSON.parse(await readFile(join(here, '../../../../package.json'), 'utf8').catch(() => '{"version":"unknown"}')) as { version: string }).version;
  }
  return `histoseg ${pkg}, tfjs ${tf.version.tfjs}, code sha256:${h.digest('hex').slice(0, 16)}`;
}

/** The keys (dotted, one level into objects) whose values differ between two identities, with both values. */
export function identityDifferences(saved: Record<string, unknown>, now: Record<string, unknown>): string[] {
  const out: string[] = [];
  const show = (v: unknown) => (v === undefined ? 'absent' : JSON.stringify(v));
  for (const key of [...new Set([...Object.keys(saved), ...Object.keys(now)])].sort()) {
    const a = saved[key];
    const b = now[key];
    if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
      for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
        const x = (a as Record<string, unknown>)[k];
        const y = (b as Record<string, unknown>)[k];
        if (JSON.stringify(x) !== JSON.stringify(y)) out.push(`${key}.${k} (checkpoint ${show(x)}, now ${show(y)})`);
      }
    } else if (JSON.stringify(a) !== JSON.stringify(b)) {
      out.push(`${key} (checkpoint ${show(a)}, now ${show(b)})`);
    }
  }
  return out;
}

/**
 * Writes the checkpoint into a temporary folder, fsyncs it, and swaps it in: the old one is renamed aside, the new
 * one renamed in, and only then is the old one removed, so a crash at any point leaves one whole checkpoint
 * (recoverCheckpoint picks it).
 */
export async function saveCheckpoint(
  outDir: string,
  model: tf.LayersModel,
  optimizer: tf.AdamOptimizer,
  state: Omit<CheckpointState, 'format' | 'accBeta1' | 'accBeta2' | 'optimizerTensors'>,
): Promise<void> {
  const dir = join(outDir, CHECKPOINT_DIR);
  const tmp = tmpDir(outDir);
  await recoverCheckpoint(outDir);
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
  // The state file last: a .tmp with one is complete.
  await writeFile(join(tmp, STATE_FILE), JSON.stringify(CheckpointStateSchema.parse(full), null, 1) + '\n');
  await fsyncTree(tmp);
  if (await exists(dir)) await rename(dir, oldDir(outDir));
  await rename(tmp, dir);
  await fsyncPath(outDir);
  await rm(oldDir(outDir), { recursive: true, force: true });
}

/** Loads the checkpoint's model and restores `optimizer` (a fresh Adam with the run's hyperparameters). */
export async function loadCheckpoint(
  outDir: string,
  optimizer: tf.AdamOptimizer,
): Promise<{ model: tf.LayersModel; state: CheckpointState }> {
  const dir = join(outDir, CHECKPOINT_DIR);
  await recoverCheckpoint(outDir);
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
