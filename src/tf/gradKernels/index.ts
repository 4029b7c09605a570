import * as tf from '@tensorflow/tfjs';
import { conv2DBackpropFilterConfig, conv2DBackpropInputConfig } from './conv.js';
import { identityConfig, sliceConfig } from './memory.js';
import { maxPoolGradConfig } from './pool.js';
import { meanConfig, meanGradConfig, sumConfig } from './reduce.js';
import { nativeKernels, WASM } from './shared.js';
import { tileConfig } from './tile.js';
import {
  configureOrtConv,
  ortConv2DBackpropFilterConfig,
  ortConv2DBackpropInputConfig,
  ortConv2DConfig,
  ortFusedConv2DConfig,
} from '../ortConv/kernels.js';

export { conv2DBackpropFilterConfig, conv2DBackpropInputConfig, identityConfig, maxPoolGradConfig, meanConfig, meanGradConfig, sliceConfig, sumConfig, tileConfig };
export { ortConv2DBackpropFilterConfig, ortConv2DBackpropInputConfig, ortConv2DConfig, ortFusedConv2DConfig };

/**
 * Gradient kernels that training needs on the TF.js wasm backend (engine-notes.md, "Training on TF.js"):
 * Conv2DBackpropFilter is missing; the native MaxPoolGrad is wrong for non-positive windows; the native
 * Conv2DBackpropInput, Tile (batch norm's gradient) and Sum/Mean over leading axes are slow; the native Identity
 * (every tensor the tape saves) and Slice (padding's gradient) copy more than they need to.
 */
const MISSING: readonly tf.KernelConfig[] = [conv2DBackpropFilterConfig];
const REPLACEMENTS: readonly tf.KernelConfig[] = [maxPoolGradConfig, conv2DBackpropInputConfig, tileConfig, sumConfig, meanConfig, identityConfig, sliceConfig];
/** The convs and their gradients on onnxruntime's native CPU kernels (tf/ortConv), over the ones above. */
const ORT_CONVS: readonly tf.KernelConfig[] = [ortConv2DConfig, ortFusedConv2DConfig, ortConv2DBackpropInputConfig, ortConv2DBackpropFilterConfig];

/** Where training's convs run: onnxruntime's native CPU kernels (the default), or TF.js wasm (XNNPACK) alone. */
export const TRAINING_CONVS = ['onnxruntime', 'wasm'] as const;
export type TrainingConvs = (typeof TRAINING_CONVS)[number];

export interface WasmTrainingKernelOptions {
  /** Also replace the buggy or slow native kernels (default true); false only adds the missing kernel. */
  readonly replaceNative?: boolean;
  /** Default 'onnxruntime' (with replaceNative); 'wasm' keeps every conv in TF.js wasm. */
  readonly convs?: TrainingConvs;
  /** Threads of each onnxruntime conv (default 1: data-parallel workers run one per core). */
  readonly convThreads?: number;
}

/** TF.js's own gradient of Mean while meanGradConfig replaces it. */
let nativeMeanGrad: tf.GradConfig | undefined;

/** Puts back the kernel registered for `name` before we replaced it. */
function restoreNative(name: string): void {
  const native = nativeKernels.get(name);
  if (tf.getKernel(name, WASM) !== undefined) tf.unregisterKernel(name, WASM);
  if (native !== undefined) tf.registerKernel(native);
  nativeKernels.delete(name);
}

function restoreMeanGrad(): void {
  if (nativeMeanGrad !== undefined) tf.registerGradient(nativeMeanGrad);
  nativeMeanGrad = undefined;
}

/**
 * Registers the kernels on the wasm backend; idempotent. Call after the wasm backend is initialised
 * (selectTfBackend() returned 'wasm'): the replaced kernels' native versions stay callable for delegation.
 */
export function registerWasmTrainingKernels(options: WasmTrainingKernelOptions = {}): void {
  if (!(WASM in tf.engine().registry)) {
    throw new Error('registerWasmTrainingKernels: the TF.js wasm backend is not initialised (call selectTfBackend first)');
  }
  const replace = options.replaceNative !== false;
  const ort = replace && (options.convs ?? 'onnxruntime') === 'onnxruntime';
  const wanted = [...MISSING, ...(replace ? REPLACEMENTS : []), ...(ort ? ORT_CONVS : [])];
  if (ort) configureOrtConv(options.convThreads ?? 1);
  // Kernels replaced before but not wanted now get their native versions back.
  const names = new Set(wanted.map((c) => c.kernelName));
  for (const name of [...nativeKernels.keys()]) if (!names.has(name)) restoreNative(name);
  if (replace) {
    nativeMeanGrad ??= tf.getGradient(tf.Mean);
    tf.registerGradient(meanGradConfig);
  } else {
    restoreMeanGrad();
  }
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
  for (const name of [...nativeKernels.keys()]) restoreNative(name);
  restoreMeanGrad();
}
