// Data-parallel training on the CPU: model replicas in worker threads (one per core), each batch cut into shards.
// Every shard's loss is normalised by the whole batch's sums, so the shards' gradients add up to the batch's
// gradient; they are summed in shard order, whichever worker ran them, so any number of workers gives the same
// numbers as one worker running the same shards. Batch norm sees each shard's own statistics (as PyTorch's
// DistributedDataParallel without SyncBatchNorm); the moving statistics are the mean over shards.
//
// Weights, Adam's moments and the shards' gradients live in SharedArrayBuffers, and the update (the sum over
// shards, then TF.js's Adam formula, adamState.ts) runs on the workers, each over its own range:
// between steps nothing is copied between threads and this thread does no arithmetic. While the pool owns the
// state (from the first step until sync()), the model and optimizer on this thread are stale.
import { once } from 'node:events';
import type { Worker } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import type { TrainingConvs } from '../../tf/gradKernels/index.js';
import { startModuleWorker } from '../../util/moduleWorker.js';
import { adamConstants, adamStep, readAdam, writeAdam, type AdamScalars } from './adamState.js';
import type { ParallelReply, ParallelRequest, ShardRequest, SharedState, UpdateRequest } from './dataParallelProtocol.js';
import { readFlat, writeFlat } from './flatWeights.js';
import type { StepLosses } from './step.js';
import type { BatchArrays } from './trainingData.js';

type Answer = Extract<ParallelReply, { type: 'shard' | 'updated' }>;

interface Waiter {
  resolve: (r: Answer) => void;
  reject: (e: Error) => void;
}

/** Float32 views of the shared state. */
interface Shared {
  buffers: SharedState;
  trainable: Float32Array;
  stats: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

function sharedState(nTrainable: number, nStats: number, slots: number): Shared {
  const buf = (n: number) => new SharedArrayBuffer(4 * n);
  const buffers: SharedState = {
    trainable: buf(nTrainable),
    stats: buf(nStats),
    m: buf(nTrainable),
    v: buf(nTrainable),
    grads: buf(slots * nTrainable),
    shardStats: buf(slots * nStats),
  };
  const f = (b: SharedArrayBuffer) => new Float32Array(b);
  return { buffers, trainable: f(buffers.trainable), stats: f(buffers.stats), m: f(buffers.m), v: f(buffers.v) };
}

/** [lo, hi) of part `i` of `parts` over n elements. */
function range(n: number, i: number, parts: number): [number, number] {
  return [Math.floor((i * n) / parts), Math.floor(((i + 1) * n) / parts)];
}

export class DataParallel {
  private nextId = 1;
  private steps = 0;
  private readonly waiting = new Map<number, Waiter>();
  private failure: Error | undefined;
  /** Adam's scalars while the pool owns the state; undefined when this thread's model and optimizer are current. */
  private owned: AdamScalars | undefined;
  private readonly shared: Shared;

  private constructor(
    private readonly workers: Worker[],
    /** Shards per batch: the unit of work; fixed, so the numbers do not depend on the worker count. */
    readonly shards: number,
    private readonly trainableSizes: number[],
    private readonly statSizes: number[],
  ) {
    const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
    this.shared = sharedState(sum(trainableSizes), sum(statSizes), shards);
    for (const w of workers) {
      w.on('message', (msg: ParallelReply) => {
        if (msg.type !== 'shard' && msg.type !== 'updated' && msg.type !== 'error') return;
        const waiter = this.waiting.get(msg.id);
        this.waiting.delete(msg.id);
        if (msg.type === 'error') waiter?.reject(new Error(`training worker: ${msg.message}`));
        else waiter?.resolve(msg);
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
    let sizes: Extract<ParallelReply, { type: 'ready' }> | undefined;
    try {
      for (let i = 0; i < workers; i++) {
        const w = startModuleWorker(import.meta.url, 'dataParallelWorker', { numClasses, convs });
        started.push(w);
        const [msg] = (await Promise.race([once(w, 'message'), once(w, 'error').then(([e]) => [{ type: 'failed', message: (e as Error).message }])])) as [ParallelReply];
        if (msg.type !== 'ready') throw new Error(`training worker failed to start: ${msg.type === 'failed' ? msg.message : msg.type}`);
        sizes = msg;
      }
    } catch (err) {
      await Promise.all(started.map((w) => w.terminate()));
      throw err;
    }
    return new DataParallel(started, shards, sizes!.trainableSizes, sizes!.statSizes);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  private ask(worker: Worker, req: ShardRequest | UpdateRequest, transfer: ArrayBuffer[] = []): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      this.waiting.set(req.id, { resolve, reject });
      worker.postMessage(req satisfies ParallelRequest, transfer);
    });
  }

  /** Takes this thread's weights and Adam state into the shared state. */
  private async adopt(model: tf.LayersModel, optimizer: tf.AdamOptimizer, vars: readonly tf.Variable[]): Promise<AdamScalars> {
    const check = (what: string, got: number[], want: number[]) => {
      if (got.join() !== want.join()) throw new Error(`the model's ${what} weights (${got.length}) do not match the replicas' (${want.length})`);
    };
    check('trainable', vars.map((v) => v.size), this.trainableSizes);
    check('non-trainable', model.nonTrainableWeights.map((w) => w.read().size), this.statSizes);
    await writeFlat(vars, this.shared.trainable);
    await writeFlat(model.nonTrainableWeights.map((w) => w.read()), this.shared.stats);
    const scalars = await readAdam(optimizer, vars, this.shared.m, this.shared.v);
    const adam = adamConstants(optimizer);
    for (const w of this.workers) w.postMessage({ type: 'attach', shared: this.shared.buffers, adam } satisfies ParallelRequest);
    return scalars;
  }

  /**
   * Writes the pool's weights and Adam state back into `model` and `optimizer` (before validating, checkpointing or
   * saving); the next step takes them up again.
   */
  async sync(model: tf.LayersModel, optimizer: tf.AdamOptimizer): Promise<void> {
    if (!this.owned) return;
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    readFlat(this.shared.trainable, vars);
    readFlat(this.shared.stats, model.nonTrainableWeights.map((w) => w.read() as tf.Variable));
    await writeAdam(optimizer, vars, this.shared.m, this.shared.v, this.owned);
    this.owned = undefined;
  }

  /**
   * One step: the replicas run the batch's shards from the shared weights, then update them with the summed
   * gradients. Returns the batch's losses. `model` and `optimizer` are read at the first step after start or
   * sync(), and are stale until the next sync().
   */
  async step(model: tf.LayersModel, optimizer: tf.AdamOptimizer, vars: readonly tf.Variable[], batch: BatchArrays): Promise<StepLosses> {
    if (this.failure) throw this.failure;
    this.owned ??= await this.adopt(model, optimizer, vars);
    const step = this.steps++;

    const denominators = { seg: sum(batch.segTarget), cls: sum(batch.clsTarget) };
    const c = batch.clsTarget.length / batch.n;
    const perItem = batch.x.length / batch.n;
    const perTarget = batch.segTarget.length / batch.n;
    const parts = Math.min(this.shards, batch.n);
    const results = await Promise.all(
      Array.from({ length: parts }, (_, s) => {
        const [a, b] = range(batch.n, s, parts);
        const req: ShardRequest = {
          type: 'shard',
          id: this.nextId++,
          step,
          slot: s,
          n: b - a,
          x: batch.x.slice(a * perItem, b * perItem),
          segTarget: batch.segTarget.slice(a * perTarget, b * perTarget),
          clsTarget: batch.clsTarget.slice(a * c, b * c),
          denominators,
        };
        return this.ask(this.workers[s % this.workers.length]!, req, [req.x.buffer, req.segTarget.buffer, req.clsTarget.buffer] as ArrayBuffer[]);
      }),
    );

    const { oneMinusAccBeta1, oneMinusAccBeta2, next } = adamStep(adamConstants(optimizer), this.owned);
    const nTrainable = this.shared.trainable.length;
    const nStats = this.shared.stats.length;
    await Promise.all(
      this.workers.map((w, i) =>
        this.ask(w, {
          type: 'update',
          id: this.nextId++,
          slots: parts,
          trainable: range(nTrainable, i, this.workers.length),
          stats: range(nStats, i, this.workers.length),
          oneMinusAccBeta1,
          oneMinusAccBeta2,
        }),
      ),
    );
    this.owned = next;

    // In shard order, so the sums are the same for any number of workers.
    const losses = { total: 0, seg: 0, cls: 0 };
    for (const r of results) {
      if (r.type !== 'shard') throw new Error(`a training worker answered ${r.type} to a shard`);
      losses.total += r.losses.total;
      losses.seg += r.losses.seg;
      losses.cls += r.losses.cls;
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
