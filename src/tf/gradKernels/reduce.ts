import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { dispose, heapF32, kernelInputs, runNativeKernel, runWasmKernel, WASM, type KernelArgs } from './shared.js';

/**
 * Sum and Mean over leading axes (batch norm's statistics and its gradients reduce NHWC over N, H, W) as XNNPACK
 * average pools. The native kernels transpose the whole tensor first: engine-notes measured 27 ms vs 1.4 ms.
 * Other reductions (trailing axes, integer dtypes) go to the native kernels.
 */

/** The leading-axes reduction as [outer, inner, rest] sizes, or undefined where this path does not apply. */
function leadingSplit(x: tf.TensorInfo, axis: number | number[]): { outer: number; inner: number; rest: number } | undefined {
  if (x.dtype !== 'float32' || x.shape.length === 0) return undefined;
  const axes = [...new Set(tf.util.parseAxisParam(axis, x.shape))].sort((a, b) => a - b);
  if (axes.length === 0 || axes.some((a, i) => a !== i)) return undefined;
  const k = axes.length;
  const inner = x.shape[k - 1];
  const outer = tf.util.sizeFromShape(x.shape.slice(0, k - 1));
  const rest = tf.util.sizeFromShape(x.shape.slice(k));
  if (outer * inner <= 1 || rest === 0) return undefined;
  return { outer, inner, rest };
}

/** Mean of x viewed as [outer, inner, rest] over the first two: two average pools (pairwise-like, more accurate). */
function leadingMean(backend: BackendWasm, x: tf.TensorInfo, split: { outer: number; inner: number; rest: number }): tf.TensorInfo {
  const { outer, inner, rest } = split;
  let cur: tf.TensorInfo = { dataId: x.dataId, shape: [1, outer, inner, rest], dtype: 'float32' };
  let owned = false;
  // XNNPACK refuses a 1x1 pool, so a stage of size 1 is skipped.
  for (const size of [outer, inner]) {
    if (size === 1) continue;
    const view: tf.TensorInfo = { dataId: cur.dataId, shape: [1, size, tf.util.sizeFromShape(cur.shape) / (size * rest), rest], dtype: 'float32' };
    const next = runWasmKernel(backend, 'AvgPool', { x: view }, { filterSize: [size, 1], strides: [1, 1], pad: 'valid' });
    if (owned) dispose(backend, cur);
    cur = next;
    owned = true;
  }
  return cur;
}

function outShape(x: tf.TensorInfo, axis: number | number[], keepDims: boolean): number[] {
  const axes = tf.util.parseAxisParam(axis, x.shape);
  return keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
}

/** Mean, or Sum as the mean times the count, over leading axes; other reductions go to the native kernel. */
function leadingReduce(kernelName: typeof tf.Mean | typeof tf.Sum, args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x } = kernelInputs(kernelName, args, 'x');
  const { axis, keepDims } = args.attrs as unknown as tf.MeanAttrs & tf.SumAttrs;
  const split = leadingSplit(x, axis);
  if (split === undefined) return runNativeKernel(backend, kernelName, args.inputs, args.attrs ?? {});
  const out = leadingMean(backend, x, split);
  if (kernelName === tf.Sum) {
    const { heap, offsets } = heapF32(backend, out);
    const count = split.outer * split.inner;
    for (let i = offsets[0]; i < offsets[0] + split.rest; i++) heap[i] *= count;
  }
  return { ...out, shape: outShape(x, axis, keepDims) };
}

const mean = (args: KernelArgs) => leadingReduce(tf.Mean, args);
const sum = (args: KernelArgs) => leadingReduce(tf.Sum, args);

export const meanConfig: tf.KernelConfig = { kernelName: tf.Mean, backendName: WASM, kernelFunc: mean };
export const sumConfig: tf.KernelConfig = { kernelName: tf.Sum, backendName: WASM, kernelFunc: sum };

/**
 * The gradient of Mean as dy / size broadcast to x's shape (one Tile: a memcpy here). TF.js's multiplies dy by a
 * tensor of ones of x's full shape and divides the product, three passes over batch norm's activations per layer;
 * the values are the same (dy * 1 / n is dy / n). Registered for every backend: gradients are backend-independent.
 */
export const meanGradConfig: tf.GradConfig = {
  kernelName: tf.Mean,
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved as tf.Tensor[];
    const { axis } = attrs as unknown as tf.MeanAttrs;
    const axes = tf.util.parseAxisParam(axis, x!.shape);
    const reduceSize = tf.util.sizeFromShape(axes.map((a) => x!.shape[a]!));
    const expanded = x!.shape.map((d, i) => (axes.includes(i) ? 1 : d));
    return { x: () => tf.broadcastTo(tf.div(tf.reshape(dy as tf.Tensor, expanded), reduceSize), x!.shape) };
  },
};
