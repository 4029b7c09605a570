// One training step, split so that data-parallel workers can share it: the gradients of a batch (no update), and
// the update from gradients. `trainStep` is the two together, which is what optimizer.minimize does.
import * as tf from '@tensorflow/tfjs';
import { INPUT_SIZE } from '../../util/constants.js';
import { jointLoss } from './losses.js';
import type { BatchArrays } from './trainingData.js';

export interface StepLosses {
  total: number;
  seg: number;
  cls: number;
}

/** The variables Adam updates: this model's trainable weights only, in a fixed order (its moments are by position). */
export function trainableVariables(model: tf.LayersModel): tf.Variable[] {
  return model.trainableWeights.map((w) => w.read() as tf.Variable);
}

/**
 * Losses and gradients of one batch, gradients in `vars` order (the caller disposes them). `denominators`
 * replaces the batch's own loss normalisers (sum of pixel weights, count of class items): data-parallel shards
 * pass the whole batch's, so that their gradients add up to the whole batch's loss gradient.
 */
export async function batchGradients(
  model: tf.LayersModel,
  vars: readonly tf.Variable[],
  batch: BatchArrays,
  denominators?: { seg: number; cls: number },
): Promise<{ losses: StepLosses; grads: tf.Tensor[] }> {
  const c = batch.clsTarget.length / batch.n;
  const x = tf.tensor4d(batch.x, [batch.n, INPUT_SIZE, INPUT_SIZE, 3]);
  const segTarget = tf.tensor4d(batch.segTarget, [batch.n, INPUT_SIZE, INPUT_SIZE, c]);
  const clsTarget = tf.tensor2d(batch.clsTarget, [batch.n, c]);
  let parts: tf.Scalar[] = [];
  try {
    const { value, grads } = tf.variableGrads(() => {
      const [mask, cls] = model.apply(x, { training: true }) as tf.Tensor[];
      const l = jointLoss(mask!, cls!, segTarget, clsTarget, denominators);
      parts = [tf.keep(l.seg), tf.keep(l.cls)];
      return l.total;
    }, [...vars]);
    // Read asynchronously: a GPU backend cannot read synchronously in Node.
    const [total, seg, cls] = await Promise.all([value.data(), parts[0]!.data(), parts[1]!.data()]);
    const losses = { total: total[0]!, seg: seg[0]!, cls: cls[0]! };
    value.dispose();
    return { losses, grads: vars.map((v) => grads[v.name]!) };
  } finally {
    tf.dispose([...parts, x, segTarget, clsTarget]);
  }
}

/** Applies gradients given in `vars` order (they stay the caller's). */
export function applyGradients(optimizer: tf.Optimizer, vars: readonly tf.Variable[], grads: readonly tf.Tensor[]): void {
  optimizer.applyGradients(vars.map((v, i) => ({ name: v.name, tensor: grads[i]! })));
}

/** Gradients and update of one batch on this thread's backend. */
export async function trainStep(model: tf.LayersModel, optimizer: tf.Optimizer, vars: readonly tf.Variable[], batch: BatchArrays): Promise<StepLosses> {
  const { losses, grads } = await batchGradients(model, vars, batch);
  try {
    applyGradients(optimizer, vars, grads);
  } finally {
    tf.dispose(grads);
  }
  return losses;
}
