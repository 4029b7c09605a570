import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import {
  assertFloat32,
  dispose,
  heapF32,
  kernelInputs,
  runNativeKernel,
  runWasmKernel,
  transpose,
  WASM,
  type KernelArgs,
} from './shared.js';

/**
 * Conv2D gradients on the wasm backend as compositions of its fast (XNNPACK) Conv2D. NHWC, dilation 1, any stride,
 * 'same' / 'valid' / numeric / explicit padding.
 */

type ExplicitPad = tf.backend_util.ExplicitPadding;

function explicitPad(top: number, bottom: number, left: number, right: number): ExplicitPad {
  return [[0, 0], [top, bottom], [left, right], [0, 0]];
}

/**
 * dW[kh,kw,ci,co] = sum over n,oh,ow of x[n, oh*s - top + kh, ow*s - left + kw, ci] * dy[n,oh,ow,co]: a Conv2D of x as
 * [Cin, H, W, N] with dy as a filter [OH, OW, N, Cout], dilated by the forward stride, giving [Cin, kh, kw, Cout].
 * wasm has no Conv2DBackpropFilter kernel at all.
 */
function conv2DBackpropFilter(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x, dy } = kernelInputs(tf.Conv2DBackpropFilter, args, 'x', 'dy');
  const attrs = args.attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  assertFloat32('Conv2DBackpropFilter', x, dy);
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    attrs.filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(attrs.dataFormat),
  );
  if (info.dataFormat !== 'channelsLast') throw new Error('Conv2DBackpropFilter (wasm training kernel) supports NHWC only');
  const [n, oh, ow, co] = dy.shape;
  if (n !== info.batchSize || oh !== info.outHeight || ow !== info.outWidth || co !== info.outChannels) {
    throw new Error(`Conv2DBackpropFilter: dy shape [${dy.shape}] does not match the forward output [${info.outShape}]`);
  }
  const { top, left } = info.padInfo;
  // Padding that makes the dilated conv produce exactly kh x kw; negative means input rows/cols the forward never read.
  const bottom = info.filterHeight + (oh - 1) * info.strideHeight - info.inHeight - top;
  const right = info.filterWidth + (ow - 1) * info.strideWidth - info.inWidth - left;

  let xt = transpose(backend, x, [3, 1, 2, 0]);
  if (bottom < 0 || right < 0) {
    const cropped = runWasmKernel(backend, 'Slice', { x: xt }, {
      begin: [0, 0, 0, 0],
      size: [info.inChannels, info.inHeight + Math.min(bottom, 0), info.inWidth + Math.min(right, 0), n],
    });
    dispose(backend, xt);
    xt = cropped;
  }
  const dyt = transpose(backend, dy, [1, 2, 0, 3]);
  const z = runWasmKernel(backend, 'Conv2D', { x: xt, filter: dyt }, {
    strides: [1, 1],
    pad: explicitPad(top, Math.max(bottom, 0), left, Math.max(right, 0)),
    dataFormat: 'NHWC',
    dilations: [info.strideHeight, info.strideWidth],
  });
  dispose(backend, xt, dyt);
  const dw = transpose(backend, z, [1, 2, 0, 3]);
  dispose(backend, z);
  return dw;
}

export const conv2DBackpropFilterConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropFilter,
  backendName: WASM,
  kernelFunc: conv2DBackpropFilter,
};

/** Which rows m of one stride residue r exist in dx, and the stride-1 conv that computes them. */
interface ResiduePlan {
  /** Filter taps of this residue: kernel rows r, r+s, r+2s, ... */
  readonly taps: number;
  /** dx rows of this residue are ih = m*s + r - padTop for m in [first, last]. */
  readonly first: number;
  readonly last: number;
  /** The conv computes m in [start, start + count); padBefore/padAfter are its explicit padding on dy. */
  readonly start: number;
  readonly count: number;
  readonly padBefore: number;
  readonly padAfter: number;
}

function planResidue(r: number, stride: number, kernel: number, padTop: number, inSize: number, outSize: number): ResiduePlan {
  const taps = r < kernel ? Math.ceil((kernel - r) / stride) : 0;
  const first = Math.ceil((padTop - r) / stride);
  const last = Math.floor((padTop + inSize - 1 - r) / stride);
  // dx[m] = sum_j dy[m - j] * w[r + s*j]: a correlation of dy with the reversed taps, dy padded by taps-1 before.
  const start = Math.min(first, taps - 1);
  const end = Math.max(last, outSize - 1);
  return { taps, first, last, start, count: end - start + 1, padBefore: taps - 1 - start, padAfter: end - outSize + 1 };
}

/**
 * dx of a strided conv, one fast stride-1 Conv2D per stride residue (sub-grid) of dx: residue (rh, rw) only sees the
 * filter taps kh = rh + s*j, kw = rw + s*i. The native kernel is a plain C loop (engine-notes: ~9x slower at stride 2).
 * At stride 1 this is a single conv with the flipped, channel-transposed filter and no copy.
 */
function conv2DBackpropInput(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { dy, filter } = kernelInputs(tf.Conv2DBackpropInput, args, 'dy', 'filter');
  const attrs = args.attrs as unknown as tf.Conv2DBackpropInputAttrs;
  const info = tf.backend_util.computeConv2DInfo(
    attrs.inputShape,
    filter.shape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(attrs.dataFormat),
  );
  if (info.dataFormat !== 'channelsLast' || dy.dtype !== 'float32' || filter.dtype !== 'float32') {
    return runNativeKernel(backend, tf.Conv2DBackpropInput, args.inputs, args.attrs ?? {});
  }
  const { batchSize: n, inHeight: h, inWidth: w, inChannels: ci, outChannels: co, filterHeight: kh, filterWidth: kw } = info;
  const { strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;

  // Filter as [kh, kw, Cout, Cin]: the conv below maps dy's Cout channels to dx's Cin channels.
  const wt = transpose(backend, filter, [0, 1, 3, 2]);
  const block = co * ci;
  const parts: { conv: tf.TensorInfo; rows: ResiduePlan; cols: ResiduePlan; rh: number; rw: number }[] = [];
  const empty: { rows: ResiduePlan; cols: ResiduePlan; rh: number; rw: number }[] = [];
  try {
    for (let rh = 0; rh < sh; rh++) {
      const rows = planResidue(rh, sh, kh, top, h, info.outHeight);
      if (rows.last < rows.first) continue; // no dx row has this residue
      for (let rw = 0; rw < sw; rw++) {
        const cols = planResidue(rw, sw, kw, left, w, info.outWidth);
        if (cols.last < cols.first) continue;
        if (rows.taps === 0 || cols.taps === 0) {
          empty.push({ rows, cols, rh, rw }); // no tap reaches these dx positions: zero gradient
          continue;
        }
        const sub = backend.makeOutput([rows.taps, cols.taps, co, ci], 'float32');
        const { heap, offsets } = heapF32(backend, sub, wt);
        const [subOff, wtOff] = offsets;
        for (let th = 0; th < rows.taps; th++) {
          for (let tw = 0; tw < cols.taps; tw++) {
            const src = wtOff + ((rh + sh * (rows.taps - 1 - th)) * kw + (rw + sw * (cols.taps - 1 - tw))) * block;
            heap.copyWithin(subOff + (th * cols.taps + tw) * block, src, src + block);
          }
        }
        const conv = runWasmKernel(backend, 'Conv2D', { x: dy, filter: sub }, {
          strides: [1, 1],
          pad: explicitPad(rows.padBefore, rows.padAfter, cols.padBefore, cols.padAfter),
          dataFormat: 'NHWC',
          dilations: [1, 1],
        });
        dispose(backend, sub);
        parts.push({ conv, rows, cols, rh, rw });
      }
    }
    // Stride 1 with ordinary padding: the single conv is dx already.
    if (parts.length === 1 && empty.length === 0) {
      const { conv, rows, cols } = parts[0];
      if (sh === 1 && sw === 1 && rows.start === rows.first && rows.count === h && cols.start === cols.first && cols.count === w) {
        parts.length = 0;
        return conv;
      }
    }
    const dx = backend.makeOutput([n, h, w, ci], 'float32');
    const { heap, offsets } = heapF32(backend, dx, ...parts.map((p) => p.conv));
    const dxOff = offsets[0];
    parts.forEach((p, i) => {
      const cOff = offsets[i + 1];
      for (let b = 0; b < n; b++) {
        for (let m = p.rows.first; m <= p.rows.last; m++) {
          const ih = m * sh + p.rh - top;
          for (let mw = p.cols.first; mw <= p.cols.last; mw++) {
            const iw = mw * sw + p.rw - left;
            const src = cOff + ((b * p.rows.count + (m - p.rows.start)) * p.cols.count + (mw - p.cols.start)) * ci;
            heap.copyWithin(dxOff + ((b * h + ih) * w + iw) * ci, src, src + ci);
          }
        }
      }
    });
    for (const e of empty) {
      for (let b = 0; b < n; b++) {
        for (let m = e.rows.first; m <= e.rows.last; m++) {
          for (let mw = e.cols.first; mw <= e.cols.last; mw++) {
            const dst = dxOff + ((b * h + m * sh + e.rh - top) * w + mw * sw + e.rw - left) * ci;
            heap.fill(0, dst, dst + ci);
          }
        }
      }
    }
    return dx;
  } finally {
    dispose(backend, wt, ...parts.map((p) => p.conv));
  }
}

export const conv2DBackpropInputConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropInput,
  backendName: WASM,
  kernelFunc: conv2DBackpropInput,
};
