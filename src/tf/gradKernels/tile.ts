import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { kernelInputs, runNativeKernel, WASM, type KernelArgs } from './shared.js';

/**
 * Tile as block copies on the wasm heap. Batch norm's gradient tiles a [1,1,1,C] vector to the full NHWC shape for
 * every BN layer; the native kernel took 231 ms for one [20,64,64,64] tile (measured here), this takes a memcpy.
 */
function tile(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x } = kernelInputs(tf.Tile, args, 'x');
  const { reps } = args.attrs as unknown as tf.TileAttrs;
  if (x.dtype === 'string') return runNativeKernel(backend, tf.Tile, args.inputs, args.attrs ?? {});
  const rank = x.shape.length;
  const shape = x.shape.map((d, i) => d * reps[i]);
  const out = backend.makeOutput(shape, x.dtype);
  if (tf.util.sizeFromShape(shape) === 0) return out;
  // Views after the allocation: a malloc may grow the heap.
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  if (rank === 0) {
    dst.set(src);
    return out;
  }
  const xStride = (d: number) => (d === rank - 1 ? 1 : tf.util.sizeFromShape(x.shape.slice(d + 1)));
  const oStride = (d: number) => (d === rank - 1 ? 1 : tf.util.sizeFromShape(shape.slice(d + 1)));
  const xs = Array.from({ length: rank }, (_, d) => xStride(d));
  const os = Array.from({ length: rank }, (_, d) => oStride(d));
  // Lay out one copy of x's block at this dim, then double it in place until it is repeated reps[dim] times.
  const fill = (dim: number, xOff: number, oOff: number): void => {
    if (dim === rank - 1) dst.set(src.subarray(xOff, xOff + x.shape[dim]), oOff);
    else for (let i = 0; i < x.shape[dim]; i++) fill(dim + 1, xOff + i * xs[dim], oOff + i * os[dim]);
    const len = x.shape[dim] * os[dim];
    const total = len * reps[dim];
    for (let have = len; have < total; have *= 2) dst.copyWithin(oOff + have, oOff, oOff + Math.min(have, total - have));
  };
  fill(0, 0, 0);
  return out;
}

export const tileConfig: tf.KernelConfig = { kernelName: tf.Tile, backendName: WASM, kernelFunc: tile };
