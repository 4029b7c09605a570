// Data-parallel training on the CPU: model replicas in worker threads (one per core), each batch cut into shards.
// Every shard's loss is normalised by the whole batch's sums, so the shards' gradients add up to the batch's
// gradient; they are summed in shard order, whichever worker ran them, so any number of workers gives the same
// numbers as one worker running the same shards. Batch norm sees each shard's own statistics (as PyTorch's
// DistributedDataParallel without SyncBatchNorm); the moving statistics are the mean over shards.
import { once } from 'node:events';
import type { Worker } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import type { TrainingConvs } from '../../tf/gradKernels/index.js';
import { startModuleWorker } from '../../util/moduleWorker.js';
import type { ParallelReply, ParallelRequest, ParallelWorkerInit, ShardRequest } from './dataParallelProtocol.js';
import { applyGradients, type StepLosses } from './step.js';
import type { BatchArrays } from './trainingData.js';

interface Waiter {
  resolve: (r: Extract<ParallelReply, { type: 'shard' }>) => void;
  reject: (e: Error) => void;
}

export class DataParallel {
  private nextId = 1;
  private readonly waiting = new Map<number, Waiter>();
  private failure: Error | undefined;

  private constructor(
    private readonly workers: Worker[],
    /** Shards per batch: the unit of work; fixed, so the numbers do not depend on the worker count. */
    readonly shards: number,
  ) {
    for (const w of workers) {
      w.on('message', (msg: ParallelReply) => {
        if (msg.type !== 'shard' && msg.type !== 'error') return;
        const waiter = this.waiting.get(msg.id);
        this.waiting.delete(msg.id);
        if (msg.type === 'shard') waiter?.resolve(msg);
        else waiter?.reject(new Error(`training worker: ${msg.message}`));
      });
      w.on('exit', (code) => this.fail(new Error(`a training worker exited (code ${code})`)));
      w.on('error', (err) => this.fail(err));
    }
  }

  get size(): number {
    return this.workers.length;
  }

  /**
   * Starts `workers` replicas; `shards` (default: one per worker) is how many parts each batch is cut into; `convs`
   * where the workers' convs run (default onnxruntime's native kernels, one thread each).
   */
  static async start(workers: number, numClasses: number, shards = workers, convs: TrainingConvs = 'onnxruntime'): Promise<DataParallel> {
    if (!Number.isInteger(workers) || workers < 1) throw new Error(`training workers must be a positive integer, got ${workers}`);
    if (!Number.isInteger(shards) || shards < 1) throw new Error(`shards must be a positive integer, got ${shards}`);
    const started: Worker[] = [];
    try {
      for (let i = 0; i < workers; i++) {
        const w = startModuleWorker(import.meta.url, 'dataParallelWorker', { numClasses, convs } satisfies ParallelWorkerInit);
        started.push(w);
        const [msg] = (await Promise.race([once(w, 'message'), once(w, 'error').then(([e]) => [{ type: 'failed', message: (e as Error).message }])])) as [ParallelReply];
        if (msg.type !== 'ready') throw new Error(`training worker failed to start: ${msg.type === 'failed' ? msg.message : msg.type}`);
      }
    } catch (err) {
      await Promise.all(started.map((w) => w.terminate()));
      throw err;
    }
    return new DataParallel(started, shards);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  /**
   * One step: the replicas take the model's weights, run the batch's shards, and the summed gradients update
   * `model` through `optimizer` on this thread. Returns the batch's losses.
   */
  async step(model: tf.LayersModel, optimizer: tf.Optimizer, vars: readonly tf.Variable[], batch: BatchArrays): Promise<StepLosses> {
    if (this.failure) throw this.failure;
    const flat = await flatWeights(model.weights.map((w) => w.read()));
    for (const w of this.workers) w.postMessage({ type: 'weights', flat } satisfies ParallelRequest);

    const denominators = { seg: sum(batch.segTarget), cls: sum(batch.clsTarget) };
    const c = batch.clsTarget.length / batch.n;
    const perItem = batch.x.length / batch.n;
    const parts = Math.min(this.shards, batch.n);
    const replies = Array.from({ length: parts }, (_, s) => {
      const [a, b] = [Math.floor((s * batch.n) / parts), Math.floor(((s + 1) * batch.n) / parts)];
      const req: ShardRequest = {
        type: 'shard',
        id: this.nextId++,
        n: b - a,
        x: batch.x.slice(a * perItem, b * perItem),
        segTarget: batch.segTarget.slice(a * (batch.segTarget.length / batch.n), b * (batch.segTarget.length / batch.n)),
        clsTarget: batch.clsTarget.slice(a * c, b * c),
        denominators,
      };
      return new Promise<Extract<ParallelReply, { type: 'shard' }>>((resolve, reject) => {
        this.waiting.set(req.id, { resolve, reject });
        this.workers[s % this.workers.length]!.postMessage(req, [req.x.buffer, req.segTarget.buffer, req.clsTarget.buffer] as ArrayBuffer[]);
      });
    });
    const results = await Promise.all(replies);

    // In shard order, so the sums are the same for any number of workers.
    const grads = results[0]!.grads;
    const stats = results[0]!.stats;
    const losses = { ...results[0]!.losses };
    for (const r of results.slice(1)) {
      for (let i = 0; i < grads.length; i++) grads[i]! += r.grads[i]!;
      for (let i = 0; i < stats.length; i++) stats[i]! += r.stats[i]!;
      losses.total += r.losses.total;
      losses.seg += r.losses.seg;
      losses.cls += r.losses.cls;
    }
    for (let i = 0; i < stats.length; i++) stats[i]! /= results.length;

    let o = 0;
    for (const w of model.nonTrainableWeights) {
      const size = w.shape.reduce((a, b) => a! * b!, 1)!;
      const t = tf.tensor(stats.subarray(o, o + size), w.shape as number[]);
      w.write(t);
      t.dispose();
      o += size;
    }
    o = 0;
    const gradTensors = vars.map((v) => {
      const t = tf.tensor(grads.subarray(o, o + v.size), v.shape);
      o += v.size;
      return t;
    });
    try {
      applyGradients(optimizer, vars, gradTensors);
    } finally {
      tf.dispose(gradTensors);
    }
    return losses;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

function sum(a: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return s;
}

async function flatWeights(tensors: tf.Tensor[]): Promise<Float32Array> {
  const out = new Float32Array(tensors.reduce((n, t) => n + t.size, 0));
  let o = 0;
  for (const t of tensors) {
    out.set((await t.data()) as Float32Array, o);
    o += t.size;
  }
  return out;
}
