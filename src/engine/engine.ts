/**
 * The one interface the batcher sees. Engines run in worker threads (see workerPool.ts), because
 * onnxruntime-node's run() blocks the thread it runs on.
 */

/** A batch of n tiles, NCHW float32, ImageNet-normalised, INPUT_SIZE x INPUT_SIZE. */
export interface EngineInput {
  readonly data: Float32Array;
  readonly n: number;
}

/** Raw logits: mask NCHW [n, C, size, size] and class logits [n, C]. */
export interface EngineOutput {
  readonly mask: Float32Array;
  readonly cls: Float32Array;
}

export interface Engine {
  /** "onnx", "tfjs/wasm", "tfjs/tensorflow" (tfjs-node), ... */
  readonly name: string;
  readonly numClasses: number;
  run(input: EngineInput): Promise<EngineOutput>;
  dispose(): Promise<void>;
}

export const ENGINE_KINDS = ['onnx', 'tfjs'] as const;
export type EngineKind = (typeof ENGINE_KINDS)[number];
