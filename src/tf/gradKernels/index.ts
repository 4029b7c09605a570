import * as tf from '@tensorflow/tfjs';
import { conv2DBackpropFilterConfig, conv2DBackpropInputConfig } from './conv.js';
import { maxPoolGradConfig } from './pool.js';
import { meanConfig, sumConfig } from './reduce.js';
import { nativeKernels, WASM } from './shared.js';
import { tileConfig } from './tile.js';

export { conv2DBackpropFilterConfig, conv2DBackpropInputConfig, maxPoolGradConfig, meanConfig, sumConfig, tileConfig };

/**
 * Gradient kernels that training needs on the TF.js wasm backend (engine-notes.md, "Training on TF.js"):
 * Conv2DBackpropFilter is missing; the native MaxPoolGrad is wrong for non-positive windows; the native
 * Conv2DBackpropInput, Tile (batch norm's gradient) and Sum/Mean over leading axes are slow.
 */
const MISSING: readonly tf.KernelConfig[] = [conv2DBackpropFilterConfig];
const REPLACEMENTS: readonly tf.KernelConfig[] = [maxPoolGradConfig, conv2DBackpropInputConfig, tileConfig, sumConfig, meanConfig];

export interface WasmTrainingKernelOptions {
  /** Also replace the buggy or slow native kernels (default true); false only adds the missing kernel. */
  readonly replaceNative?: boolean;
}

/**
 * Registers the kernels on the wasm backend; idempotent. Call after the wasm backend is initialised
 * (selectTfBackend() returned 'wasm'): the replaced kernels' native versions stay callable for delegation.
 */
export function registerWasmTrainingKernels(options: WasmTrainingKernelOptions = {}): void {
  if (!(WASM in tf.engine().registry)) {
    throw new Error('registerWasmTrainingKernels: the TF.js wasm backend is not initialised (call selectTfBackend first)');
  }
  const wanted = options.replaceNative === false ? MISSING : [...MISSING, ...REPLACEMENTS];
  for (const config of wanted) {
    const current = tf.getKernel(config.kernelName, WASM);
    if (current?.kernelFunc === config.kernelFunc) continue;
    if (!nativeKernels.has(config.kernelName)) nativeKernels.set(config.kernelName, current);
    if (current !== undefined) tf.unregisterKernel(config.kernelName, WASM);
    tf.registerKernel(config);
  }
}

/** Puts back the kernels that were registered before registerWasmTrainingKernels (for comparisons and benchmarks). */
export function unregisterWasmTrainingKernels(): void {
  for (const [name, native] of nativeKernels) {
    if (tf.getKernel(name, WASM) !== undefined) tf.unregisterKernel(name, WASM);
    if (native !== undefined) tf.registerKernel(native);
  }
  nativeKernels.clear();
}
