import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { relativeL2 } from '../src/engine/engine.js';
import { buildSegClsModel } from '../src/model/network/architecture.js';
import { initWasmBackend } from '../src/tf/backend.js';
import { registerWasmTrainingKernels } from '../src/tf/gradKernels/index.js';
import { jointLoss } from '../src/training/fit/losses.js';
import { batchGradients, blockTargets, trainableVariables } from '../src/training/fit/step.js';
import type { BatchArrays } from '../src/training/fit/trainingData.js';
import { INPUT_SIZE, SEG16_SIZE } from '../src/util/constants.js';
import { Rng } from '../src/util/rng.js';

// Training computes the segmentation loss on seg16 with the pixel targets summed over each cell's 8x8 block
// (step.ts), not on the upsampled 128x128 mask. The two are the same sum; this holds them to it, loss and gradients.

const C = 4;
const WEIGHTS = [0.4, 1.3, 2.2, 0.1];

function batch(): BatchArrays {
  const rng = new Rng(11);
  const n = 3;
  const pixels = INPUT_SIZE * INPUT_SIZE;
  const x = Float32Array.from({ length: n * pixels * 3 }, () => rng.range(-1, 1));
  const segTarget = new Float32Array(n * pixels * C);
  for (let i = 0; i < 2 * pixels; i++) {
    const k = Math.floor(rng.range(0, C));
    segTarget[i * C + k] = WEIGHTS[k]!;
  }
  const clsTarget = new Float32Array(n * C);
  clsTarget[2 * C + 1] = 1;
  return { n, x, segTarget, clsTarget };
}

before(async () => {
  assert.equal(await initWasmBackend(), 'wasm');
  registerWasmTrainingKernels();
});

test('blockTargets sums each 8x8 block of pixel targets into its seg16 cell', () => {
  const n = 2;
  const t = new Float32Array(n * INPUT_SIZE * INPUT_SIZE * C);
  t[((1 * INPUT_SIZE + 9) * INPUT_SIZE + 17) * C + 2] = 1.5; // image 1, pixel (9, 17): cell (1, 2)
  t[((1 * INPUT_SIZE + 15) * INPUT_SIZE + 23) * C + 2] = 0.25; // same cell, last pixel of the block
  t[((0 * INPUT_SIZE + 127) * INPUT_SIZE + 0) * C + 3] = 2; // image 0, cell (15, 0)
  const b = blockTargets(t, n, C);
  assert.equal(b.length, n * SEG16_SIZE * SEG16_SIZE * C);
  assert.equal(b[((1 * SEG16_SIZE + 1) * SEG16_SIZE + 2) * C + 2], 1.75);
  assert.equal(b[((0 * SEG16_SIZE + 15) * SEG16_SIZE + 0) * C + 3], 2);
  assert.equal(b.reduce((a, v) => a + v, 0), 3.75);
});

test('the loss on seg16 with block targets equals the loss on the 128x128 mask, and so do the gradients', async () => {
  const model = buildSegClsModel({ numClasses: C, seed: 5 });
  const vars = trainableVariables(model);
  const data = batch();
  try {
    const ours = await batchGradients(model, vars, data);
    const oursGrads = await Promise.all(ours.grads.map(async (g) => (await g.data()) as Float32Array));
    tf.dispose(ours.grads);
    // The loss as written in the paper: every pixel of the upsampled mask.
    const x = tf.tensor4d(data.x, [data.n, INPUT_SIZE, INPUT_SIZE, 3]);
    const segTarget = tf.tensor4d(data.segTarget, [data.n, INPUT_SIZE, INPUT_SIZE, C]);
    const clsTarget = tf.tensor2d(data.clsTarget, [data.n, C]);
    let seg = 0;
    const { value, grads } = tf.variableGrads(() => {
      const [mask, cls] = model.apply(x, { training: true }) as tf.Tensor[];
      const l = jointLoss(mask!, cls!, segTarget, clsTarget);
      seg = l.seg.dataSync()[0]!;
      return l.total;
    }, vars);
    const total = value.dataSync()[0]!;
    // Float32 sums over 3 x 128 x 128 x 4 terms against 3 x 16 x 16 x 4: equal to about 1e-5 (seen: 7e-6).
    assert.ok(Math.abs(ours.losses.total - total) <= 1e-4 * total, `loss ${ours.losses.total} vs ${total}`);
    assert.ok(Math.abs(ours.losses.seg - seg) <= 1e-4 * seg, `Lseg ${ours.losses.seg} vs ${seg}`);
    const worst = Math.max(...vars.map((v, i) => relativeL2(oursGrads[i]!, grads[v.name]!.dataSync())));
    assert.ok(worst <= 1e-4, `a gradient tensor differs by relative L2 ${worst.toExponential(2)}`);
    tf.dispose([x, segTarget, clsTarget, value, ...Object.values(grads)]);
  } finally {
    model.dispose();
  }
});
