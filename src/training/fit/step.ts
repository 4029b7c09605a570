// One training step, split so that data-parallel workers can share it: the gradients of a batch (no update), and
// the update from gradients. `trainStep` is the two together, which is what optimizer.minimize does.
import * as tf from '@tensorflow/tfjs';
import { LAYER } from '../../model/network/architecture.js';
import { INPUT_SIZE, SEG16_SIZE } from '../../util/constants.js';
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

const trainingViews = new WeakMap<tf.LayersModel, tf.LayersModel>();

/**
 * The model with seg16 (the decoder's logits before the nearest upsampling to the mask) and the class logits as
 * outputs, sharing its layers and weights. Built once per model; never disposed (that would dispose the shared layers).
 */
function trainingView(model: tf.LayersModel): tf.LayersModel {
  let view = trainingViews.get(model);
  if (view === undefined) {
    const outputs = [LAYER.seg16, LAYER.cls].map((name) => model.getLayer(name).output as tf.SymbolicTensor);
    view = tf.model({ name: `${model.name}-training`, inputs: model.inputs, outputs });
    trainingViews.set(model, view);
  }
  return view;
}

/**
 * The weighted one-hot pixel targets [n, INPUT_SIZE, INPUT_SIZE, c] summed over each SEG16 cell's block of pixels:
 * [n, SEG16_SIZE, SEG16_SIZE, c]. The mask is seg16 upsampled by repetition, so each pixel of a block has its cell's
 * log-softmax, and the loss over the block's pixels is the cell's log-softmax times the block's summed targets: the
 * same sum, computed on 1/64 of the values, with no upsampling forward or backward.
 */
export function blockTargets(segTarget: Float32Array, n: number, c: number): Float32Array {
  const f = INPUT_SIZE / SEG16_SIZE;
  const out = new Float64Array(n * SEG16_SIZE * SEG16_SIZE * c);
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < INPUT_SIZE; y++) {
      const row = (b * SEG16_SIZE + Math.floor(y / f)) * SEG16_SIZE * c;
      const src = (b * INPUT_SIZE + y) * INPUT_SIZE * c;
      for (let x = 0; x < INPUT_SIZE; x++) {
        const o = row + Math.floor(x / f) * c;
        const i = src + x * c;
        for (let k = 0; k < c; k++) out[o + k] += segTarget[i + k]!;
      }
    }
  }
  return Float32Array.from(out);
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
  const segTarget = tf.tensor4d(blockTargets(batch.segTarget, batch.n, c), [batch.n, SEG16_SIZE, SEG16_SIZE, c]);
  const view = trainingView(model);
  const clsTarget = tf.tensor2d(batch.clsTarget, [batch.n, c]);
  let parts: tf.Scalar[] = [];
  try {
    const { value, grads } = tf.variableGrads(() => {
      const [seg16, cls] = view.apply(x, { training: true }) as tf.Tensor[];
      const l = jointLoss(seg16!, cls!, segTarget, clsTarget, denominators);
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
