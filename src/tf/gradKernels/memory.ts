import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { kernelInputs, runNativeKernel, WASM, type KernelArgs } from './shared.js';

/**
 * Identity and Slice without needless copies. While a gradient tape records, TF.js clones every tensor a gradient
 * will need through Identity, which the wasm backend implements as a full copy (hundreds of copies per training step);
 * here a clone shares the buffer, reference-counted as the wasm backend's own Reshape does. The native Slice first copies the whole
 * input out of the heap (readSync) and then copies one innermost row at a time; here the output is copied straight
 * from the heap in the longest contiguous runs (padding's gradient slices whole rows of pixels).
 */

function identity(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x } = kernelInputs(tf.Identity, args, 'x');
  if (x.dtype === 'string') return runNativeKernel(backend, tf.Identity, args.inputs, args.attrs ?? {});
  backend.incRef(x.dataId); // as the wasm Reshape does; disposeData frees the buffer when its last holder lets go
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
}

function slice(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x } = kernelInputs(tf.Slice, args, 'x');
  const { begin, size } = args.attrs as unknown as tf.SliceAttrs;
  if (x.dtype === 'string') return runNativeKernel(backend, tf.Slice, args.inputs, args.attrs ?? {});
  const [b, s] = tf.slice_util.parseSliceParams(x as tf.Tensor, begin, size);
  const out = backend.makeOutput(s, x.dtype);
  const total = tf.util.sizeFromShape(s);
  if (total === 0) return out;
  // Views after the allocation: a malloc may grow the heap.
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const rank = x.shape.length;
  const strides = tf.util.computeStrides(x.shape);
  const stride = (d: number) => (d === rank - 1 ? 1 : strides[d]!);
  // Innermost dims taken whole join the run; the first dim from inside that is cut ends it.
  let d = rank - 1;
  while (d > 0 && b[d] === 0 && s[d] === x.shape[d]) d--;
  const run = s[d]! * stride(d);
  let offset = 0;
  for (let i = 0; i < d; i++) offset += b[i]! * stride(i);
  offset += b[d]! * stride(d);
  // Walk the outer dims [0, d) as an odometer.
  const index = new Array<number>(d).fill(0);
  for (let o = 0; o < total; o += run) {
    let from = offset;
    for (let i = 0; i < d; i++) from += index[i]! * stride(i);
    dst.set(src.subarray(from, from + run), o);
    for (let i = d - 1; i >= 0; i--) {
      if (++index[i]! < s[i]!) break;
      index[i] = 0;
    }
  }
  return out;
}

export const identityConfig: tf.KernelConfig = { kernelName: tf.Identity, backendName: WASM, kernelFunc: identity };
export const sliceConfig: tf.KernelConfig = { kernelName: tf.Slice, backendName: WASM, kernelFunc: slice };
