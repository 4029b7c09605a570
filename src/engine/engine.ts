import type { GpuAdapterInfo } from '../util/gpuAdapter.js';

/**
 * The one interface the batcher sees. Engines run in worker threads (see workerPool.ts), because
 * onnxruntime-node's run() blocks the thread it runs on.
 */

/** A batch of n tiles, NCHW float32, ImageNet-normalised, INPUT_SIZE x INPUT_SIZE. */
export interface EngineInput {
  readonly data: Float32Array;
  readonly n: number;
}

/**
 * Raw logits: mask NCHW [n, C, maskSize, maskSize] and class logits [n, C]. maskSize is INPUT_SIZE, or SEG16_SIZE
 * for engines asked for the decoder output before its nearest upsampling (argmax commutes with it).
 */
export interface EngineOutput {
  readonly mask: Float32Array;
  readonly cls: Float32Array;
  readonly maskSize: number;
}

/** Which mask an engine returns: the paper's full-size mask logits, or the 16x16 decoder output. */
export type MaskOutput = 'mask' | 'seg16';

export interface Engine {
  /** "onnx", "tfjs/wasm", "tfjs/tensorflow" (tfjs-node), ... */
  readonly name: string;
  readonly numClasses: number;
  /** GPU engines: the adapter they run on (logged at load). */
  readonly adapter?: GpuAdapterInfo;
  run(input: EngineInput): Promise<EngineOutput>;
  dispose(): Promise<void>;
}

export const ENGINE_KINDS = ['onnx', 'tfjs'] as const;
/** Where an engine runs; which (engine, device) pairs exist, and their worker policy, is engineDevices.ts's table. */
export const DEVICES = ['cpu', 'cuda', 'webgpu'] as const;
export type Device = (typeof DEVICES)[number];
export type EngineKind = (typeof ENGINE_KINDS)[number];

/** ||actual - expected|| / ||expected||: how parity checks compare one engine's outputs with a reference's. */
export function relativeL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) {
    throw new Error(`relativeL2: lengths differ (${actual.length} vs ${expected.length})`);
  }
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i]! - expected[i]!) ** 2;
    den += expected[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}
