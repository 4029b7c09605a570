import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { describeAdapter, requireGpuAdapter, type GpuAdapterInfo } from '../util/gpuAdapter.js';

/**
 * Where TF.js runs in this thread:
 * - cpu: the native binding @tensorflow/tfjs-node where it is installed (an optional dependency), else wasm;
 * - cuda: @tensorflow/tfjs-node-gpu, which must load;
 * - webgpu: @tensorflow/tfjs-backend-webgpu over Dawn for Node (the `webgpu` package), on a hardware adapter
 *   unless `allowSoftwareGpu`.
 * Never the stock 'cpu' backend: it is slow and computes wrong gradients (engine-notes.md). A package that is
 * installed but fails to load, or a device asked for that cannot be had, fails with the reason: no fallback.
 */
export const TF_DEVICES = ['cpu', 'cuda', 'webgpu'] as const;
export type TfDevice = (typeof TF_DEVICES)[number];

export interface TfBackendOptions {
  readonly device?: TfDevice;
  /** webgpu: accept a software adapter (lavapipe) rather than refusing it. */
  readonly allowSoftwareGpu?: boolean;
}

let selected: { device: TfDevice; name: Promise<string> } | undefined;
let adapter: GpuAdapterInfo | undefined;

/** Selects and initialises the backend once per thread; later calls for the same device return the same name. */
export function selectTfBackend(opts: TfBackendOptions = {}): Promise<string> {
  const device = opts.device ?? 'cpu';
  if (selected) {
    if (selected.device !== device) {
      return Promise.reject(new Error(`TF.js already runs on ${selected.device} in this thread; cannot switch to ${device}`));
    }
    return selected.name;
  }
  const name = select(device, opts.allowSoftwareGpu ?? false).catch((err: unknown) => {
    selected = undefined;
    throw err;
  });
  selected = { device, name };
  return name;
}

/** The adapter the webgpu backend runs on (after selectTfBackend({device: 'webgpu'})). */
export function tfGpuAdapter(): GpuAdapterInfo | undefined {
  return adapter;
}

function installed(pkg: string): boolean {
  try {
    createRequire(import.meta.url).resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

async function loadNative(pkg: string): Promise<string> {
  try {
    // A variable specifier: these packages are optional and usually absent, so they have no types here.
    const specifier: string = pkg;
    await import(specifier); // registers the 'tensorflow' backend on import
  } catch (err) {
    throw new Error(`${pkg} is installed but failed to load: ${(err as Error).message}`);
  }
  if (!(await tf.setBackend('tensorflow'))) throw new Error(`${pkg} loaded but its 'tensorflow' backend failed to initialise`);
  await tf.ready();
  return tf.getBackend();
}

async function select(device: TfDevice, allowSoftwareGpu: boolean): Promise<string> {
  switch (device) {
    case 'cpu':
      return installed('@tensorflow/tfjs-node') ? loadNative('@tensorflow/tfjs-node') : initWasmBackend();
    case 'cuda':
      if (!installed('@tensorflow/tfjs-node-gpu')) throw new Error('TF.js on cuda needs @tensorflow/tfjs-node-gpu, which is not installed');
      return loadNative('@tensorflow/tfjs-node-gpu');
    case 'webgpu':
      return initWebGpuBackend(allowSoftwareGpu);
    default:
      throw new Error(`unknown TF.js device ${JSON.stringify(device)}; valid: ${TF_DEVICES.join(', ')}`);
  }
}

/** The wasm backend alone, skipping the native bindings (benchmarks compare engines in one process each). */
export async function initWasmBackend(): Promise<string> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // Point at the package's own .wasm files by file path, so a bundled or relocated entry still finds them.
  const wasmDir = dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm'));
  wasm.setWasmPaths(`${wasmDir}/`);
  if (!(await tf.setBackend('wasm'))) {
    throw new Error(`TF.js wasm backend failed to initialise (wasm files in ${wasmDir})`);
  }
  await tf.ready();
  return tf.getBackend();
}

/**
 * TF.js on WebGPU in Node. Three traps: the backend registers itself only if navigator.gpu exists when it is
 * imported; Dawn's queue.writeBuffer fails on views of a SharedArrayBuffer (they are copied first); and Node does not
 * exit while a GPU device is referenced (releaseTfBackend destroys it).
 */
async function initWebGpuBackend(allowSoftwareGpu: boolean): Promise<string> {
  adapter = await requireGpuAdapter(allowSoftwareGpu);
  const { create, globals } = await import('webgpu');
  for (const [k, v] of Object.entries(globals)) if (!(k in globalThis)) Object.defineProperty(globalThis, k, { value: v, writable: true, configurable: true });
  const queue = (globals as Record<string, { prototype: Record<string, unknown> }>).GPUQueue!.prototype;
  const writeBuffer = queue.writeBuffer as (...a: unknown[]) => void;
  if (!(writeBuffer as { sabSafe?: boolean }).sabSafe) {
    const safe = function (this: unknown, buffer: unknown, offset: number, data: ArrayBufferView | ArrayBuffer, ...rest: unknown[]) {
      const shared = ArrayBuffer.isView(data) ? data.buffer instanceof SharedArrayBuffer : data instanceof SharedArrayBuffer;
      const copy = !shared ? data : ArrayBuffer.isView(data) ? new (data.constructor as new (a: ArrayBufferView) => ArrayBufferView)(data) : new Uint8Array(new Uint8Array(data)).buffer;
      return writeBuffer.call(this, buffer, offset, copy, ...rest);
    };
    (safe as { sabSafe?: boolean }).sabSafe = true;
    queue.writeBuffer = safe;
  }
  const nav = ((globalThis as { navigator?: object }).navigator ??= {}) as { gpu?: unknown };
  if (!nav.gpu) Object.defineProperty(nav, 'gpu', { value: create([]), configurable: true });
  await import('@tensorflow/tfjs-backend-webgpu');
  let ok = false;
  try {
    ok = await tf.setBackend('webgpu');
  } catch (err) {
    throw new Error(`TF.js webgpu backend failed on ${describeAdapter(adapter)}: ${(err as Error).message}`);
  }
  if (!ok) throw new Error(`TF.js webgpu backend failed to initialise on ${describeAdapter(adapter)}`);
  await tf.ready();
  return tf.getBackend();
}

/** Lets the process exit after GPU work: destroys the webgpu backend's device (a no-op on other backends). */
export function releaseTfBackend(): void {
  if (selected?.device !== 'webgpu' || tf.getBackend() !== 'webgpu') return;
  const device = (tf.backend() as unknown as { device?: { destroy(): void } }).device;
  tf.removeBackend('webgpu');
  device?.destroy();
  selected = undefined;
}
