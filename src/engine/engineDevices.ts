import type { Device, EngineKind } from './engine.js';

/**
 * The one (engine, device) table: which pairs exist, what runs them, and the worker policy each wants. A pair
 * that is not here is refused with the list of valid ones; nothing falls back to another device in silence.
 */
export interface EnginePlacement {
  readonly engine: EngineKind;
  readonly device: Device;
  /** What runs the pair, for messages and docs. */
  readonly runtime: string;
  readonly gpu: boolean;
  /** Engine workers when the operator sets none, from the cores this process has. */
  workers(threads: number): number;
  /** Largest batch when the operator sets none. */
  readonly maxBatch: number;
  /**
   * Batches posted to one worker before the last comes back: above 1 the next batch waits inside the worker, so
   * a GPU never idles for a round trip between batches.
   */
  readonly batchesPerWorker: number;
}

// CPU: one single-threaded engine per core (no intra-op barriers to stall while the cores also decode tiles).
// GPU: one engine owns the device; large batches; a second batch queued behind the running one.
const CPU = { gpu: false, workers: (threads: number) => threads, maxBatch: 16, batchesPerWorker: 1 } as const;
const GPU = { gpu: true, workers: () => 1, maxBatch: 64, batchesPerWorker: 2 } as const;

export const ENGINE_DEVICES: readonly EnginePlacement[] = [
  { engine: 'onnx', device: 'cpu', runtime: 'onnxruntime-node, CPU provider', ...CPU },
  { engine: 'onnx', device: 'cuda', runtime: "onnxruntime-node, CUDA provider (installed in the CUDA image)", ...GPU },
  { engine: 'onnx', device: 'webgpu', runtime: "onnxruntime-node, its built-in WebGPU provider (Dawn over Vulkan)", ...GPU },
  { engine: 'tfjs', device: 'cpu', runtime: 'TF.js: @tensorflow/tfjs-node where installed, else wasm', ...CPU },
  { engine: 'tfjs', device: 'cuda', runtime: 'TF.js: @tensorflow/tfjs-node-gpu', ...GPU },
];

export const VALID_PAIRS = ENGINE_DEVICES.map((p) => `${p.engine}/${p.device}`);

export class UnsupportedPlacementError extends Error {}

/** The table's row for (engine, device); throws, naming the valid pairs, for any other. */
export function enginePlacement(engine: EngineKind, device: Device): EnginePlacement {
  const row = ENGINE_DEVICES.find((p) => p.engine === engine && p.device === device);
  if (!row) {
    throw new UnsupportedPlacementError(
      `engine ${JSON.stringify(engine)} does not run on device ${JSON.stringify(device)}; valid engine/device pairs: ${VALID_PAIRS.join(', ')}`,
    );
  }
  return row;
}
