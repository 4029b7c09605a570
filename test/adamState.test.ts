// Flat Adam (the data-parallel workers' update) against TF.js's AdamOptimizer, and the bridge between the two.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectTfBackend } from '../src/tf/backend.js';
import { adamConstants, adamStep, adamUpdate, readAdam, writeAdam, type AdamScalars } from '../src/training/fit/adamState.js';
import { ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, ADAM_LEARNING_RATE } from '../src/training/fit/hyperparameters.js';
import { Rng } from '../src/util/rng.js';

const SHAPES = [[3, 3, 4, 5], [5], [7, 2]];
const total = SHAPES.reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0);
const adam = () => tf.train.adam(ADAM_LEARNING_RATE, ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON);

function randomFlat(rng: Rng, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.range(-scale, scale));
}

function variables(flat: Float32Array): tf.Variable[] {
  let o = 0;
  return SHAPES.map((shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = tf.variable(tf.tensor(flat.slice(o, o + n), shape));
    o += n;
    return v;
  });
}

async function flatOf(vars: readonly tf.Tensor[]): Promise<Float32Array> {
  return Float32Array.from((await Promise.all(vars.map((v) => v.data()))).flatMap((d) => [...d]));
}

function tfStep(optimizer: tf.AdamOptimizer, vars: tf.Variable[], g: Float32Array): void {
  const grads = variables(g);
  optimizer.applyGradients(vars.map((v, i) => ({ name: v.name, tensor: grads[i]! })));
  tf.dispose(grads);
}

test('flat Adam follows TF.js Adam over several steps, within float32 rounding', async () => {
  await selectTfBackend();
  const rng = new Rng(3);
  const start = randomFlat(rng, total, 1);
  const grads = [1, 2, 3, 4].map(() => randomFlat(rng, total, 0.1));
  const optimizer = adam();
  const vars = variables(start);
  const w = start.slice();
  const m = new Float32Array(total);
  const v = new Float32Array(total);
  let s: AdamScalars = await readAdam(optimizer, vars, m, v);
  assert.deepEqual(m, new Float32Array(total), 'a fresh optimizer has zero moments');
  const k = adamConstants(optimizer);
  for (const g of grads) {
    tfStep(optimizer, vars, g);
    const step = adamStep(k, s);
    adamUpdate(k, step.oneMinusAccBeta1, step.oneMinusAccBeta2, w, m, v, g, 0, total);
    s = step.next;
  }
  const want = await flatOf(vars);
  let worst = 0;
  for (let i = 0; i < total; i++) worst = Math.max(worst, Math.abs(w[i]! - want[i]!) / Math.max(Math.abs(want[i]! - start[i]!), 1e-12));
  // The weights moved by ~4e-4 each; the two agree to float32 rounding of that move.
  assert.ok(worst < 1e-4, `flat Adam's moves differ from TF.js's by up to ${worst.toExponential(2)} of the move`);
  assert.ok(want.some((x, i) => x !== start[i]), 'the steps moved the weights');
  const back = await readAdam(optimizer, vars, new Float32Array(total), new Float32Array(total));
  assert.deepEqual(back, s, 'iterations and the running beta powers agree with TF.js');
  optimizer.dispose();
  tf.dispose(vars);
});

test('writeAdam then readAdam gives the state back, into a fresh optimizer and into one with moments', async () => {
  await selectTfBackend();
  const rng = new Rng(4);
  const vars = variables(randomFlat(rng, total, 1));
  const m = randomFlat(rng, total, 0.01);
  const v = randomFlat(rng, total, 0.01).map(Math.abs);
  const s = { iterations: 7, accBeta1: Math.fround(0.9 ** 8), accBeta2: Math.fround(0.999 ** 8) };
  for (const primed of [false, true]) {
    const optimizer = adam();
    if (primed) tfStep(optimizer, vars, randomFlat(rng, total, 0.1)); // moments exist: they are assigned, not recreated
    const before = tf.memory().numTensors;
    await writeAdam(optimizer, vars, m, v, s);
    if (primed) assert.equal(tf.memory().numTensors, before, 'writing into existing moments leaks no tensor');
    const m2 = new Float32Array(total);
    const v2 = new Float32Array(total);
    assert.deepEqual(await readAdam(optimizer, vars, m2, v2), s);
    assert.deepEqual(m2, m);
    assert.deepEqual(v2, v);
    optimizer.dispose();
  }
  tf.dispose(vars);
});
