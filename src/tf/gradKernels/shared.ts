import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

/** Helpers for gradient kernels composed, on the wasm backend, of kernels it already has. */

export const WASM = 'wasm';

/** What TF.js passes a kernel function. */
export type KernelArgs = Parameters<tf.KernelFunc>[0];

/** The named inputs of a kernel call, checked present. */
export function kernelInputs<K extends string>(kernelName: string, args: KernelArgs, ...names: K[]): Record<K, tf.TensorInfo> {
  const out = {} as Record<K, tf.TensorInfo>;
  for (const name of names) {
    const info = args.inputs[name];
    if (info === undefined) throw new Error(`${kernelName}: missing input ${name}`);
    out[name] = info;
  }
  return out;
}

/** The wasm kernels we replace, as registered before we replaced them (for delegation and restoring). */
export const nativeKernels = new Map<string, tf.KernelConfig | undefined>();

/** Runs the kernel currently registered for wasm; the caller owns (and must dispose) the result. */
export function runWasmKernel(
  backend: BackendWasm,
  kernelName: string,
  inputs: tf.NamedTensorInfoMap,
  attrs: tf.NamedAttrMap = {},
): tf.TensorInfo {
  const config = tf.getKernel(kernelName, WASM);
  if (config === undefined) throw new Error(`wasm backend has no ${kernelName} kernel`);
  return config.kernelFunc({ inputs, backend, attrs }) as tf.TensorInfo;
}

/** Runs the native kernel that a replacement shadows (e.g. for cases the replacement does not cover). */
export function runNativeKernel(
  backend: BackendWasm,
  kernelName: string,
  inputs: tf.NamedTensorInfoMap,
  attrs: tf.NamedAttrMap,
): tf.TensorInfo {
  const config = nativeKernels.has(kernelName) ? nativeKernels.get(kernelName) : tf.getKernel(kernelName, WASM);
  if (config === undefined) throw new Error(`wasm backend has no native ${kernelName} kernel`);
  return config.kernelFunc({ inputs, backend, attrs }) as tf.TensorInfo;
}

export function transpose(backend: BackendWasm, x: tf.TensorInfo, perm: number[]): tf.TensorInfo {
  return runWasmKernel(backend, 'Transpose', { x }, { perm });
}

export function dispose(backend: BackendWasm, ...infos: tf.TensorInfo[]): void {
  for (const info of infos) backend.disposeData(info.dataId);
}

/**
 * The whole wasm heap as float32, and the element offset of each tensor in it. Take it after the last allocation:
 * a malloc may grow the heap and detach older views.
 */
export function heapF32(backend: BackendWasm, ...infos: tf.TensorInfo[]): { heap: Float32Array; offsets: number[] } {
  const views = infos.map((info) => backend.typedArrayFromHeap(info));
  const heap = new Float32Array(views[0].buffer);
  return { heap, offsets: views.map((v) => v.byteOffset / Float32Array.BYTES_PER_ELEMENT) };
}

export function assertFloat32(kernelName: string, ...infos: tf.TensorInfo[]): void {
  for (const info of infos) {
    if (info.dtype !== 'float32') throw new Error(`${kernelName} (wasm training kernel) expects float32, got ${info.dtype}`);
  }
}

/** Attributes as the ops pass them, typed for computeConv2DInfo. */
export type PadAttr = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
export type RoundingAttr = 'floor' | 'round' | 'ceil' | undefined;
