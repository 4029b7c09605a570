/**
 * One training step (forward + backward + Adam) of the real model on the TF.js wasm backend, with only the missing
 * Conv2DBackpropFilter kernel (--native) or with the replacement kernels too. A measurement by hand, not a test:
 *   npx tsx bench/train-step.ts [--native] [--batch 20] [--steps 3] [--profile]
 */
import { Command } from 'commander';
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { selectTfBackend } from '../src/engine/tfjsBackend.js';
import { registerWasmTrainingKernels } from '../src/engine/wasmGradKernels.js';
import { buildSegClsModel } from '../src/model/architecture.js';
import { INPUT_SIZE } from '../src/model/constants.js';

const opts = new Command()
  .option('--native', 'keep the native MaxPoolGrad and Conv2DBackpropInput (only add the missing kernel)')
  .option('--batch <n>', 'batch size', '20')
  .option('--steps <n>', 'timed steps after one warm-up step', '3')
  .option('--profile', 'print the kernels that took the most time in one step')
  .parse()
  .opts<{ native?: boolean; batch: string; steps: string; profile?: boolean }>();

const NUM_CLASSES = 4;
const batch = Number(opts.batch);

const backend = await selectTfBackend();
if (backend !== 'wasm') throw new Error(`this measures the wasm backend, got ${backend}`);
registerWasmTrainingKernels({ replaceNative: !opts.native });

const model = buildSegClsModel({ numClasses: NUM_CLASSES, seed: 1 });
const optimizer = tf.train.adam(1e-4, 0.9, 0.999);
const x = tf.randomNormal([batch, INPUT_SIZE, INPUT_SIZE, 3], 0, 1, 'float32', 1);
const maskLabels = tf.oneHot(tf.randomUniform([batch, INPUT_SIZE, INPUT_SIZE], 0, NUM_CLASSES, 'int32', 2), NUM_CLASSES);
const clsLabels = tf.oneHot(tf.randomUniform([batch], 0, NUM_CLASSES, 'int32', 3), NUM_CLASSES);

function wasmHeapBytes(): number {
  return (tf.backend() as BackendWasm).typedArrayFromHeap(x).buffer.byteLength;
}

function step(): number {
  const loss = optimizer.minimize(() => {
    const [mask, cls] = model.apply(x, { training: true }) as tf.Tensor[];
    return tf.add(tf.losses.softmaxCrossEntropy(maskLabels, mask), tf.losses.softmaxCrossEntropy(clsLabels, cls)) as tf.Scalar;
  }, true);
  const value = loss!.dataSync()[0];
  loss!.dispose();
  return value;
}

step(); // warm-up: XNNPACK operator creation, Adam slots
const times: number[] = [];
for (let i = 0; i < Number(opts.steps); i++) {
  const t0 = performance.now();
  step();
  times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const median = times[Math.floor(times.length / 2)];
console.log(
  `${opts.native ? 'native kernels + missing Conv2DBackpropFilter' : 'replacement kernels'}: batch ${batch}, ` +
    `step median ${(median / 1000).toFixed(2)} s (${times.map((t) => (t / 1000).toFixed(2)).join(', ')}), ` +
    `${((batch * 1000) / median).toFixed(1)} images/s, wasm heap ${(wasmHeapBytes() / 2 ** 20).toFixed(0)} MiB`,
);

if (opts.profile) {
  const info = await tf.profile(() => {
    step();
  });
  const byKernel = new Map<string, number>();
  for (const k of info.kernels) byKernel.set(k.name, (byKernel.get(k.name) ?? 0) + Number(k.kernelTimeMs));
  const top = [...byKernel].sort((a, b) => b[1] - a[1]).slice(0, 15);
  for (const [name, ms] of top) console.log(`${name.padEnd(28)} ${ms.toFixed(0).padStart(6)} ms`);
}
