// One training step on TF.js WebGPU (Mesa's lavapipe in CI) gives wasm's gradients and updated weights.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { buildSegClsModel } from '../src/model/network/architecture.js';
import { initWasmBackend, releaseTfBackend, selectTfBackend, tfGpuAdapter } from '../src/tf/backend.js';
import { registerWasmTrainingKernels } from '../src/tf/gradKernels/index.js';
import { ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, ADAM_LEARNING_RATE } from '../src/training/fit/hyperparameters.js';
import { applyGradients, batchGradients, trainableVariables } from '../src/training/fit/step.js';
import type { BatchArrays } from '../src/training/fit/trainingData.js';
import { relativeL2 } from '../src/engine/engine.js';
import { INPUT_SIZE } from '../src/util/constants.js';
import { Rng } from '../src/util/rng.js';
import { vulkanSkip } from './support/vulkan.js';

const TOLERANCE = 1e-4;
const C = 4;
const PIXELS = INPUT_SIZE * INPUT_SIZE;

/** A segmentation patch and a class patch, random but fixed. */
function batch(): BatchArrays {
  const rng = new Rng(21);
  const n = 2;
  const x = Float32Array.from({ length: n * PIXELS * 3 }, () => rng.range(-2, 2));
  const segTarget = new Float32Array(n * PIXELS * C);
  for (let i = 0; i < PIXELS; i++) segTarget[i * C + Math.floor(rng.range(0, C))] = 1;
  const clsTarget = new Float32Array(n * C);
  clsTarget[C + 2] = 1;
  return { n, x, segTarget, clsTarget };
}

interface StepResult {
  loss: number;
  grads: Float32Array[];
  updated: Float32Array[];
  /** Largest change of a weight in the step. */
  moved: number;
}

async function step(initial: Float32Array[] | undefined): Promise<{ result: StepResult; initial: Float32Array[] }> {
  const model = buildSegClsModel({ numClasses: C, seed: 5 });
  if (initial) model.setWeights(model.getWeights().map((w, i) => tf.tensor(initial[i]!, w.shape)));
  const start = await Promise.all(model.getWeights().map(async (w) => (await w.data()) as Float32Array));
  const vars = trainableVariables(model);
  const optimizer = tf.train.adam(ADAM_LEARNING_RATE, ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON);
  const before = await Promise.all(vars.map(async (v) => (await v.data()) as Float32Array));
  const { losses, grads } = await batchGradients(model, vars, batch());
  const g = await Promise.all(grads.map(async (t) => (await t.data()) as Float32Array));
  applyGradients(optimizer, vars, grads);
  tf.dispose(grads);
  const updated = await Promise.all(vars.map(async (v) => (await v.data()) as Float32Array));
  optimizer.dispose();
  model.dispose();
  let moved = 0;
  updated.forEach((u, i) => u.forEach((v, j) => (moved = Math.max(moved, Math.abs(v - before[i]![j]!)))));
  return { result: { loss: losses.total, grads: g, updated, moved }, initial: start };
}

after(() => releaseTfBackend());

test('one training step on WebGPU matches wasm: gradients and updated weights within 1e-4', { skip: vulkanSkip() }, async () => {
  assert.equal(await initWasmBackend(), 'wasm');
  // The reference keeps its convs in TF.js wasm: on this batch a 1e-6 relative change of the conv outputs flips one
  // max-pool/ReLU decision and moves the stem's gradients by ~1e-2 (measured by perturbing XNNPACK's own outputs), so
  // onnxruntime's convs (tf/ortConv, within 1e-5 of XNNPACK per kernel) are checked apart, in trainingConvs.test.ts.
  registerWasmTrainingKernels({ convs: 'wasm' });
  const { result: wasm, initial } = await step(undefined);

  assert.equal(await selectTfBackend({ device: 'webgpu', allowSoftwareGpu: true }), 'webgpu');
  assert.equal(tfGpuAdapter()?.software, true, 'CI runs on lavapipe');
  const { result: gpu } = await step(initial);

  assert.ok(Math.abs(gpu.loss - wasm.loss) <= TOLERANCE * Math.abs(wasm.loss), `loss ${gpu.loss} vs ${wasm.loss}`);
  assert.equal(gpu.grads.length, wasm.grads.length);
  const concat = (xs: Float32Array[]) => {
    const out = new Float32Array(xs.reduce((n, x) => n + x.length, 0));
    xs.reduce((o, x) => (out.set(x, o), o + x.length), 0);
    return out;
  };
  const gradAll = relativeL2(concat(gpu.grads), concat(wasm.grads));
  const gradWorst = Math.max(...wasm.grads.map((g, i) => relativeL2(gpu.grads[i]!, g)));
  const weightWorst = Math.max(...wasm.updated.map((w, i) => relativeL2(gpu.updated[i]!, w)));
  assert.ok(gradAll <= TOLERANCE, `gradients differ by relative L2 ${gradAll.toExponential(2)} (limit ${TOLERANCE})`);
  // Per tensor, the kernel of the classifier's first 1x1 convolution sits before a batch norm: its gradient is a
  // difference of large sums over the batch's pixels, and float32 summation order shows at ~5e-4 of its norm.
  assert.ok(gradWorst <= 10 * TOLERANCE, `a gradient tensor differs by relative L2 ${gradWorst.toExponential(2)} (limit ${10 * TOLERANCE})`);
  // Adam's first step moves each weight by about lr * sign(g): weights whose gradient is float noise may move either
  // way, so the weights are compared tensor by tensor in relative L2, not element by element.
  assert.ok(weightWorst <= TOLERANCE, `an updated weight tensor differs by relative L2 ${weightWorst.toExponential(2)} (limit ${TOLERANCE})`);
  assert.ok(wasm.moved > 0.5 * ADAM_LEARNING_RATE && gpu.moved > 0.5 * ADAM_LEARNING_RATE, 'the step moved the weights');
  assert.ok(wasm.grads.some((g) => g.some((v) => v !== 0)), 'the gradients are not all zero');
});
