// A data-parallel training worker: one model replica on this thread's TF.js wasm backend. Weights, Adam's moments
// and the shards' gradients live in shared memory (SharedState). Each step the worker loads the weights, runs the
// shards it is sent and writes their gradients and batch-norm statistics into their slots; then each worker sums
// the slots and applies Adam over its own range of the weights.
import { parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { buildSegClsModel } from '../../model/network/architecture.js';
import { initWasmBackend } from '../../tf/backend.js';
import { registerWasmTrainingKernels } from '../../tf/gradKernels/index.js';
import { adamUpdate, type AdamConstants } from './adamState.js';
import type { ParallelReply, ParallelRequest, ParallelWorkerInit, ShardRequest, SharedState, UpdateRequest } from './dataParallelProtocol.js';
import { readFlat, tensorsFromFlat, writeFlat } from './flatWeights.js';
import { batchGradients, trainableVariables } from './step.js';

const port = parentPort;
if (!port) throw new Error('dataParallelWorker must run in a worker thread');
const init = workerData as ParallelWorkerInit;

const sizeOf = (w: tf.LayerVariable): number => w.shape.reduce((a, b) => a! * b!, 1)!;

let model: tf.LayersModel;
try {
  const backend = await initWasmBackend();
  registerWasmTrainingKernels({ convs: init.convs, convThreads: 1 }); // one worker per core
  model = buildSegClsModel({ numClasses: init.numClasses, seed: 0 }); // weights come from the shared state
  port.postMessage({
    type: 'ready',
    backend,
    trainableSizes: model.trainableWeights.map(sizeOf),
    statSizes: model.nonTrainableWeights.map(sizeOf),
  } satisfies ParallelReply);
} catch (err) {
  port.postMessage({ type: 'failed', message: (err as Error).message } satisfies ParallelReply);
  process.exit(1);
}

const vars = trainableVariables(model);
const stats = model.nonTrainableWeights;
const nTrainable = vars.reduce((n, v) => n + v.size, 0);
const nStats = stats.reduce((n, w) => n + sizeOf(w), 0);

interface Views {
  trainable: Float32Array;
  stats: Float32Array;
  m: Float32Array;
  v: Float32Array;
  grads: Float32Array;
  shardStats: Float32Array;
  adam: AdamConstants;
}
let views: Views | undefined;
let loadedStep = -1;
/** This step's batch-norm statistics: every shard starts from them, whichever worker runs it. */
let stepStats: tf.Tensor[] = [];

function attach(shared: SharedState, adam: AdamConstants): Views {
  const v = {
    trainable: new Float32Array(shared.trainable),
    stats: new Float32Array(shared.stats),
    m: new Float32Array(shared.m),
    v: new Float32Array(shared.v),
    grads: new Float32Array(shared.grads),
    shardStats: new Float32Array(shared.shardStats),
    adam,
  };
  if (v.trainable.length !== nTrainable || v.stats.length !== nStats) {
    throw new Error(`shared state holds ${v.trainable.length} + ${v.stats.length} weights, the replica ${nTrainable} + ${nStats}`);
  }
  return v;
}

/** Copies the shared weights into the replica (a tensor is a copy in the wasm heap). */
function load(s: Views): void {
  readFlat(s.trainable, vars);
  tf.dispose(stepStats);
  stepStats = tensorsFromFlat(s.stats, stats.map((w) => w.shape as number[]));
}

async function shard(s: Views, msg: ShardRequest): Promise<ParallelReply> {
  if (msg.step !== loadedStep) {
    load(s);
    loadedStep = msg.step;
  }
  stats.forEach((w, i) => {
    const t = tf.clone(stepStats[i]!);
    w.write(t);
    t.dispose();
  });
  const { losses, grads } = await batchGradients(model, vars, { n: msg.n, x: msg.x, segTarget: msg.segTarget, clsTarget: msg.clsTarget }, msg.denominators);
  try {
    await writeFlat(grads, s.grads, msg.slot * nTrainable);
  } finally {
    tf.dispose(grads);
  }
  await writeFlat(stats.map((w) => w.read()), s.shardStats, msg.slot * nStats);
  return { type: 'shard', id: msg.id, losses };
}

/** Slot 0 becomes the sum of the slots (in slot order, float32 as the one-worker sum), then Adam over the range. */
function update(s: Views, msg: UpdateRequest): ParallelReply {
  const [lo, hi] = msg.trainable;
  const g = s.grads;
  for (let slot = 1; slot < msg.slots; slot++) {
    const base = slot * nTrainable;
    for (let i = lo; i < hi; i++) g[i]! += g[base + i]!;
  }
  adamUpdate(s.adam, msg.oneMinusAccBeta1, msg.oneMinusAccBeta2, s.trainable, s.m, s.v, g, lo, hi);
  const [a, b] = msg.stats;
  const st = s.shardStats;
  for (let i = a; i < b; i++) {
    let sum = st[i]!;
    for (let slot = 1; slot < msg.slots; slot++) sum = Math.fround(sum + st[slot * nStats + i]!);
    s.stats[i] = sum / msg.slots;
  }
  return { type: 'updated', id: msg.id };
}

// One message at a time, in order.
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
  if (msg.type === 'attach') {
    views = attach(msg.shared, msg.adam);
    loadedStep = -1;
    return;
  }
  try {
    if (!views) throw new Error('no shared state attached');
    port!.postMessage(msg.type === 'shard' ? await shard(views, msg) : update(views, msg));
  } catch (err) {
    port!.postMessage({ type: 'error', id: msg.id, message: (err as Error).message } satisfies ParallelReply);
  }
}
