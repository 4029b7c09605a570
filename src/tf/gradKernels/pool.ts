import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { assertFloat32, heapF32, kernelInputs, WASM, type KernelArgs } from './shared.js';

/**
 * MaxPoolGrad for the wasm backend. The native one starts its running max at +1.2e-38 and compares with >=, so a
 * window of non-positive values loses its gradient. Here each window routes dy to its first maximum in row-major
 * order (as TF and the cpu backend do); padding never wins. NHWC, dilation 1.
 */
function maxPoolGrad(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { dy, input } = kernelInputs(tf.MaxPoolGrad, args, 'dy', 'input');
  const attrs = args.attrs as unknown as tf.MaxPoolGradAttrs;
  assertFloat32('MaxPoolGrad', dy, input);
  const info = tf.backend_util.computePool2DInfo(
    input.shape as [number, number, number, number],
    attrs.filterSize,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
  );
  const { batchSize: n, inHeight: h, inWidth: w, inChannels: c, outHeight: oh, outWidth: ow } = info;
  const { strideHeight: sh, strideWidth: sw, filterHeight: fh, filterWidth: fw } = info;
  const { top, left } = info.padInfo;
  if (dy.shape.join() !== [n, oh, ow, c].join()) {
    throw new Error(`MaxPoolGrad: dy shape [${dy.shape}] does not match the pooled shape [${[n, oh, ow, c]}]`);
  }

  const dx = backend.makeOutput(input.shape, 'float32');
  const { heap, offsets } = heapF32(backend, dx, input, dy);
  const [dxOff, xOff, dyOff] = offsets;
  heap.fill(0, dxOff, dxOff + n * h * w * c);
  const best = new Float32Array(c);
  const where = new Int32Array(c);
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < oh; y++) {
      const h0 = Math.max(0, y * sh - top);
      const h1 = Math.min(h, y * sh - top + fh);
      for (let x = 0; x < ow; x++) {
        const w0 = Math.max(0, x * sw - left);
        const w1 = Math.min(w, x * sw - left + fw);
        best.fill(-Infinity);
        where.fill(-1);
        for (let i = h0; i < h1; i++) {
          for (let j = w0; j < w1; j++) {
            const base = ((b * h + i) * w + j) * c;
            for (let k = 0; k < c; k++) {
              const v = heap[xOff + base + k];
              if (v > best[k]) {
                best[k] = v;
                where[k] = base + k;
              }
            }
          }
        }
        const dyBase = dyOff + ((b * oh + y) * ow + x) * c;
        for (let k = 0; k < c; k++) {
          if (where[k] >= 0) heap[dxOff + where[k]] += heap[dyBase + k];
        }
      }
    }
  }
  return dx;
}

export const maxPoolGradConfig: tf.KernelConfig = {
  kernelName: tf.MaxPoolGrad,
  backendName: WASM,
  kernelFunc: maxPoolGrad,
};
