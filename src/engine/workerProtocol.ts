import type { Manifest } from '../model/manifest.js';
import type { Device, EngineKind } from './engine.js';
import type { GpuAdapterInfo } from '../util/gpuAdapter.js';

export interface WorkerInit {
  kind: EngineKind;
  modelDir: string;
  manifest: Manifest;
  threads: number;
  device: Device;
  allowSoftwareGpu: boolean;
}

/** rgb: n windows of size x size RGB bytes (HWC); the worker normalises them into the engine's float input. */
/** crash: the worker exits at once with code 70, as a crash would (tests and failure drills; see EnginePool.killWorker). */
export type WorkerRequest = { type: 'run'; id: number; rgb: Uint8Array; n: number } | { type: 'dispose' } | { type: 'crash' };

export type WorkerReply =
  | { type: 'ready'; engine: string; adapter?: GpuAdapterInfo }
  | { type: 'failed'; message: string }
  /** rgb: the request's buffer, handed back so the batcher can fill it again. */
  | { type: 'result'; id: number; mask: Float32Array; cls: Float32Array; maskSize: number; seconds: number; rgb: Uint8Array }
  | { type: 'error'; id: number; message: string };
