// A data-parallel training worker: one model replica on this thread's TF.js wasm backend. Each step the coordinator
// sends the weights, then shards of the batch; the worker answers each shard's gradients and batch-norm statistics.
import { parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { buildSegClsModel } from '../../model/network/architecture.js';
import { initWasmBackend } from '../../tf/backend.js';
import { registerWasmTrainingKernels } from '../../tf/gradKernels/index.js';
import type { ParallelReply, ParallelRequest, ParallelWorkerInit } from './dataParallelProtocol.js';
import { batchGradients, trainableVariables } from './step.js';

const port = parentPort;
if (!port) throw new Error('dataParallelWorker must run in a worker thread');
const init = workerData as ParallelWorkerInit;

let model: tf.LayersModel;
try {
  const backend = await initWasmBackend();
  registerWasmTrainingKernels({ convs: init.convs, convThreads: 1 }); // one worker per core
  model = buildSegClsModel({ numClasses: init.numClasses, seed: 0 }); // weights come from the coordinator
  port.postMessage({ type: 'ready', backend, sizes: model.weights.map((w) => w.shape.reduce((a, b) => a! * b!, 1)!) } satisfies ParallelReply);
} catch (err) {
  port.postMessage({ type: 'failed', message: (err as Error).message } satisfies ParallelReply);
  process.exit(1);
}

const vars = trainableVariables(model);
const stats = model.nonTrainableWeights;
/** This step's batch-norm statistics: every shard starts from them, whichever worker runs it. */
let stepStats: tf.Tensor[] = [];

function setWeights(flat: Float32Array): void {
  let o = 0;
  tf.dispose(stepStats);
  stepStats = [];
  for (const w of model.weights) {
    const size = w.shape.reduce((a, b) => a! * b!, 1)!;
    const t = tf.tensor(flat.subarray(o, o + size), w.shape as number[]);
    o += size;
    w.write(t);
    if (!w.trainable) stepStats.push(tf.clone(t));
    t.dispose();
  }
}

function flatten(arrays: (Float32Array | Int32Array | Uint8Array)[]): Float32Array {
  const out = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
  let o = 0;
  for (const a of arrays) {
    out.set(a, o);
    o += a.length;
  }
  return out;
}

// One message at a time, in order: a shard's reply reads the statistics its own forward pass left.
let chain: Promise<void> = Promise.resolve();
port.on('message', (msg: ParallelRequest) => {
  chain = chain.then(() => handle(msg));
});

async function handle(msg: ParallelRequest): Promise<void> {
  if (msg.type === 'close') {
    model.dispose();
    port!.close();
    return;
  }
  if (msg.type === 'weights') {
    setWeights(msg.flat);
    return;
  }
  try {
    stats.forEach((w, i) => {
      const t = tf.clone(stepStats[i]!);
      w.write(t);
      t.dispose();
    });
    const { losses, grads } = await batchGradients(model, vars, { n: msg.n, x: msg.x, segTarget: msg.segTarget, clsTarget: msg.clsTarget }, msg.denominators);
    const g = flatten(await Promise.all(grads.map((t) => t.data() as Promise<Float32Array>)));
    tf.dispose(grads);
    const s = flatten(await Promise.all(stats.map((w) => w.read().data() as Promise<Float32Array>)));
    port!.postMessage({ type: 'shard', id: msg.id, losses, grads: g, stats: s } satisfies ParallelReply, [g.buffer as ArrayBuffer, s.buffer as ArrayBuffer]);
  } catch (err) {
    port!.postMessage({ type: 'error', id: msg.id, message: (err as Error).message } satisfies ParallelReply);
  }
}
