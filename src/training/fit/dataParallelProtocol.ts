import type { TrainingConvs } from '../../tf/gradKernels/index.js';
import type { StepLosses } from './step.js';

/** Messages between the data-parallel coordinator (dataParallel.ts) and its workers (dataParallelWorker.ts). */
export interface ParallelWorkerInit {
  numClasses: number;
  /** Where the worker's convs run. */
  convs: TrainingConvs;
}

export interface ShardRequest {
  type: 'shard';
  id: number;
  n: number;
  x: Float32Array;
  segTarget: Float32Array;
  clsTarget: Float32Array;
  /** The whole batch's loss normalisers, so the shards' gradients add up to the batch's. */
  denominators: { seg: number; cls: number };
}

/** Every weight of the model (LayersModel.weights order), flat: the replica starts each step from these. */
export interface WeightsRequest {
  type: 'weights';
  flat: Float32Array;
}

export type ParallelRequest = ShardRequest | WeightsRequest | { type: 'close' };

export type ParallelReply =
  | { type: 'ready'; backend: string; sizes: number[] }
  | { type: 'failed'; message: string }
  /** grads: trainable weights' gradients, flat; stats: the non-trainable weights (batch-norm moving statistics) after the shard's forward pass. */
  | { type: 'shard'; id: number; losses: StepLosses; grads: Float32Array; stats: Float32Array }
  | { type: 'error'; id: number; message: string };
