// Data-parallel CPU training: any number of workers gives the numbers of one worker running the same shards, one
// shard on a worker gives the numbers of training on this thread, and syncing the workers' state to this thread
// and back changes nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { relativeL2 } from '../src/engine/engine.js';
import { buildSegClsModel } from '../src/model/network/architecture.js';
import { selectTfBackend } from '../src/tf/backend.js';
import { registerWasmTrainingKernels } from '../src/tf/gradKernels/index.js';
import { DataParallel } from '../src/training/fit/dataParallel.js';
import { ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, ADAM_LEARNING_RATE } from '../src/training/fit/hyperparameters.js';
import { trainableVariables, trainStep, type StepLosses } from '../src/training/fit/step.js';
import type { BatchArrays } from '../src/training/fit/trainingData.js';
import { INPUT_SIZE } from '../src/util/constants.js';
import { Rng } from '../src/util/rng.js';

const C = 4;
const PIXELS = INPUT_SIZE * INPUT_SIZE;

/** n items: even ones segmentation patches, odd ones class patches. */
function batch(seed: number, n = 2): BatchArrays {
  const rng = new Rng(seed);
  const x = Float32Array.from({ length: n * PIXELS * 3 }, () => rng.range(-2, 2));
  const segTarget = new Float32Array(n * PIXELS * C);
  const clsTarget = new Float32Array(n * C);
  for (let b = 0; b < n; b++) {
    if (b % 2 === 0) for (let i = 0; i < PIXELS; i++) segTarget[(b * PIXELS + i) * C + Math.floor(rng.range(0, C))] = 0.5 + b;
    else clsTarget[b * C + (b % C)] = 1;
  }
  return { n, x, segTarget, clsTarget };
}

/** Two steps from the same start; returns the losses and every weight after them. */
async function run(
  step: (m: tf.LayersModel, o: tf.AdamOptimizer, v: tf.Variable[], b: BatchArrays) => Promise<StepLosses>,
  sync?: (m: tf.LayersModel, o: tf.AdamOptimizer) => Promise<void>,
  syncBetween = false,
) {
  const model = buildSegClsModel({ numClasses: C, seed: 8 });
  const optimizer = tf.train.adam(ADAM_LEARNING_RATE, ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON);
  const vars = trainableVariables(model);
  const losses = [await step(model, optimizer, vars, batch(1))];
  if (syncBetween) await sync?.(model, optimizer);
  losses.push(await step(model, optimizer, vars, batch(2)));
  await sync?.(model, optimizer);
  const weights = await Promise.all(model.weights.map(async (w) => (await w.read().data()) as Float32Array));
  optimizer.dispose();
  model.dispose();
  return { losses, weights };
}

function assertSame(a: Awaited<ReturnType<typeof run>>, b: Awaited<ReturnType<typeof run>>, tolerance: number, what: string): void {
  a.losses.forEach((l, i) => assert.ok(Math.abs(l.total - b.losses[i]!.total) <= tolerance * Math.abs(l.total), `${what}: step ${i + 1} loss ${l.total} vs ${b.losses[i]!.total}`));
  const worst = Math.max(...a.weights.map((w, i) => relativeL2(b.weights[i]!, w)));
  assert.ok(worst <= tolerance, `${what}: weights differ by relative L2 ${worst.toExponential(2)}`);
}

test('two workers give what one worker gives on the same shards; one shard gives what this thread gives', async () => {
  assert.equal(await selectTfBackend(), 'wasm');
  registerWasmTrainingKernels();
  const withPool = async (workers: number, shards: number, syncBetween = false) => {
    const pool = await DataParallel.start(workers, C, shards);
    try {
      return await run(
        (m, o, v, b) => pool.step(m, o, v, b),
        (m, o) => pool.sync(m, o),
        syncBetween,
      );
    } finally {
      await pool.close();
    }
  };
  const two = await withPool(2, 2);
  const one = await withPool(1, 2);
  assertSame(two, one, 1e-6, '2 workers vs 1 worker, 2 shards');
  // The trainer syncs every epoch (to validate and checkpoint); handing the state to this thread and back is exact.
  assertSame(await withPool(2, 2, true), two, 0, 'a sync between the steps');
  const start = buildSegClsModel({ numClasses: C, seed: 8 });
  const initial = (await start.weights[0]!.read().data())[0];
  start.dispose();
  assert.ok(two.weights[0]![0] !== initial, 'the steps moved the weights');

  const single = await withPool(1, 1);
  const local = await run((m, o, v, b) => trainStep(m, o, v, b));
  assertSame(single, local, 1e-5, '1 shard on a worker vs this thread');
});
