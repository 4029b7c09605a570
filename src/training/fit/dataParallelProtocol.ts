import type { TrainingConvs } from '../../tf/gradKernels/index.js';
import type { AdamConstants } from './adamState.js';
import type { StepLosses } from './step.js';

/** Messages between the data-parallel coordinator (dataParallel.ts) and its workers (dataParallelWorker.ts). */
export interface ParallelWorkerInit {
  numClasses: number;
  /** Where the worker's convs run. */
  convs: TrainingConvs;
}

/**
 * The state every replica shares, in SharedArrayBuffers (Float32): nothing of it is copied between threads.
 * trainable: the trainable weights flat, in model.trainableWeights order; stats: the non-trainable weights (batch-norm
 * moving statistics) flat; m, v: Adam's moments, trainable order; grads and shardStats: one slot per shard, each
 * the size of trainable and stats.
 */
export interface SharedState {
  trainable: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  m: SharedArrayBuffer;
  v: SharedArrayBuffer;
  grads: SharedArrayBuffer;
  shardStats: SharedArrayBuffer;
}

export interface ShardRequest {
  type: 'shard';
  id: number;
  /** The step: a replica loads the shared weights when this changes. */
  step: number;
  /** Where the shard's gradients and statistics go (grads and shardStats slot). */
  slot: number;
  n: number;
  x: Float32Array;
  segTarget: Float32Array;
  clsTarget: Float32Array;
  /** The whole batch's loss normalisers, so the shards' gradients add up to the batch's. */
  denominators: { seg: number; cls: number };
}

/**
 * Sum slots 0..slots-1 in slot order over [trainable[0], trainable[1]) and apply Adam there; average the slots'
 * statistics over [stats[0], stats[1]). Each worker takes its own ranges, so the update runs on every core.
 */
export interface UpdateRequest {
  type: 'update';
  id: number;
  slots: number;
  trainable: [number, number];
  stats: [number, number];
  /** 1 - beta^t as Adam's float32 arithmetic has it this step. */
  oneMinusAccBeta1: number;
  oneMinusAccBeta2: number;
}

export type ParallelRequest = { type: 'attach'; shared: SharedState; adam: AdamConstants } | ShardRequest | UpdateRequest | { type: 'close' };

export type ParallelReply =
  | { type: 'ready'; backend: string; trainableSizes: number[]; statSizes: number[] }
  | { type: 'failed'; message: string }
  | { type: 'shard'; id: number; losses: StepLosses }
  | { type: 'updated'; id: number }
  | { type: 'error'; id: number; message: string };
