import onnxProto from 'onnx-proto';
import { NCHWC_DOMAIN, type Graph } from './syncSession.js';

/**
 * ONNX graphs of one conv each, in TF.js's layouts (activations NHWC, filters [kh, kw, Cin, Cout]), with the batch
 * dimension symbolic so that one session serves every batch size. onnxruntime's CPU convs are NCHW, so the graphs
 * transpose around them; the filter gradient needs no transpose when it is written as GEMMs over shifted slices.
 */

const { onnx } = onnxProto;
type Node = onnxProto.onnx.INodeProto;
type Attr = onnxProto.onnx.IAttributeProto;
type Tensor = onnxProto.onnx.ITensorProto;

const str = (name: string, s: string): Attr => ({ name, type: onnx.AttributeProto.AttributeType.STRING, s: new TextEncoder().encode(s) });
const ints = (name: string, values: readonly number[]): Attr => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: [...values] });
const int = (name: string, i: number): Attr => ({ name, type: onnx.AttributeProto.AttributeType.INT, i });

const BATCH = 'N';

/** A float32 graph input or output; a string dimension is symbolic. */
export function floatValueInfo(name: string, dims: readonly (number | string)[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

class Builder {
  readonly nodes: Node[] = [];
  readonly constants: Tensor[] = [];
  private count = 0;

  node(opType: string, input: string[], attribute: Attr[] = [], output = `t${this.count++}`, domain?: string): string {
    this.nodes.push({ opType, input, output: [output], attribute, ...(domain === undefined ? {} : { domain }) });
    return output;
  }

  /** A node of onnxruntime's NCHWc operators (below). */
  nchwc(opType: string, input: string[], attribute: Attr[] = [], output?: string): string {
    return this.node(opType, input, attribute, output ?? `t${this.count++}`, NCHWC_DOMAIN);
  }

  int64(values: readonly number[]): string {
    const name = `c${this.count++}`;
    this.constants.push({ name, dims: [values.length], dataType: onnx.TensorProto.DataType.INT64, int64Data: [...values] });
    return name;
  }

  graph(inputs: onnxProto.onnx.IValueInfoProto[], outputs: onnxProto.onnx.IValueInfoProto[]): Graph {
    return { name: 'conv', node: this.nodes, initializer: this.constants, input: inputs, output: outputs };
  }
}

const NHWC_TO_NCHW = [0, 3, 1, 2];
const NCHW_TO_NHWC = [0, 2, 3, 1];
/** [kh, kw, Cin, Cout] to ONNX's [Cout, Cin, kh, kw]. */
const HWIO_TO_OIHW = [3, 2, 0, 1];

/** Explicit padding of a conv, as TF.js's computeConv2DInfo resolves it. */
export interface Padding {
  readonly top: number;
  readonly bottom: number;
  readonly left: number;
  readonly right: number;
}

export interface ConvGeometry {
  /** Input [H, W, Cin] (the batch is symbolic). */
  readonly inHeight: number;
  readonly inWidth: number;
  readonly inChannels: number;
  readonly outHeight: number;
  readonly outWidth: number;
  readonly outChannels: number;
  readonly filterHeight: number;
  readonly filterWidth: number;
  readonly strideHeight: number;
  readonly strideWidth: number;
  readonly dilationHeight: number;
  readonly dilationWidth: number;
  readonly pad: Padding;
}

export function geometryKey(g: ConvGeometry): string {
  const p = g.pad;
  return [g.inHeight, g.inWidth, g.inChannels, g.outHeight, g.outWidth, g.outChannels, g.filterHeight, g.filterWidth,
    g.strideHeight, g.strideWidth, g.dilationHeight, g.dilationWidth, p.top, p.bottom, p.left, p.right].join(',');
}

const inShape = (g: ConvGeometry) => [BATCH, g.inHeight, g.inWidth, g.inChannels];
const outShape = (g: ConvGeometry) => [BATCH, g.outHeight, g.outWidth, g.outChannels];
const filterShape = (g: ConvGeometry) => [g.filterHeight, g.filterWidth, g.inChannels, g.outChannels];
const onnxPads = (p: Padding) => [p.top, p.left, p.bottom, p.right];

/** y = act(conv(x, filter) + bias): inputs x, filter[, bias]; output y. */
export function forwardGraph(g: ConvGeometry, bias: boolean, relu: boolean): Graph {
  const b = new Builder();
  const x = b.node('Transpose', ['x'], [ints('perm', NHWC_TO_NCHW)]);
  const w = b.node('Transpose', ['filter'], [ints('perm', HWIO_TO_OIHW)]);
  let y = b.node('Conv', bias ? [x, w, 'bias'] : [x, w], [
    ints('pads', onnxPads(g.pad)),
    ints('strides', [g.strideHeight, g.strideWidth]),
    ints('dilations', [g.dilationHeight, g.dilationWidth]),
  ]);
  if (relu) y = b.node('Relu', [y]);
  b.node('Transpose', [y], [ints('perm', NCHW_TO_NHWC)], 'y');
  const inputs = [floatValueInfo('x', inShape(g)), floatValueInfo('filter', filterShape(g))];
  if (bias) inputs.push(floatValueInfo('bias', [g.outChannels]));
  return b.graph(inputs, [floatValueInfo('y', outShape(g))]);
}

/**
 * The rows (or columns) of the input that a strided conv never reads, past its last window: ConvTranspose's
 * output_padding, so that dx has the input's size. In [0, stride) for any padding computeConv2DInfo resolves.
 */
export function unreadTail(inSize: number, outSize: number, kernel: number, stride: number, dilation: number, before: number, after: number): number {
  return inSize - (stride * (outSize - 1) + (kernel - 1) * dilation + 1 - before - after);
}

/** dx = ConvTranspose(dy, filter): inputs dy, filter; output dx. */
export function inputGradientGraph(g: ConvGeometry): Graph {
  const tailH = unreadTail(g.inHeight, g.outHeight, g.filterHeight, g.strideHeight, g.dilationHeight, g.pad.top, g.pad.bottom);
  const tailW = unreadTail(g.inWidth, g.outWidth, g.filterWidth, g.strideWidth, g.dilationWidth, g.pad.left, g.pad.right);
  const b = new Builder();
  const dy = b.node('Transpose', ['dy'], [ints('perm', NHWC_TO_NCHW)]);
  // ConvTranspose's weight is [C of its input = forward Cout, C of its output = forward Cin, kh, kw]: the forward's.
  const w = b.node('Transpose', ['filter'], [ints('perm', HWIO_TO_OIHW)]);
  const dx = b.node('ConvTranspose', [dy, w], [
    ints('pads', onnxPads(g.pad)),
    ints('strides', [g.strideHeight, g.strideWidth]),
    ints('dilations', [g.dilationHeight, g.dilationWidth]),
    ints('output_padding', [tailH, tailW]),
  ]);
  b.node('Transpose', [dx], [ints('perm', NCHW_TO_NHWC)], 'dx');
  return b.graph([floatValueInfo('dy', outShape(g)), floatValueInfo('filter', filterShape(g))], [floatValueInfo('dx', inShape(g))]);
}

/**
 * Below this many input channels the filter gradient is a conv over the batch (each tap's GEMM would
 * be a few channels wide: the stem's 3).
 */
export const SLICE_GEMM_MIN_CHANNELS = 16;

/**
 * dW = sum over n, oh, ow of x[n, oh*s + kh - top, ow*s + kw - left, ci] * dy[n, oh, ow, co]: inputs x, dy; output dw.
 * Dilation 1 (TF.js's Conv2DBackpropFilter has none).
 */
export function filterGradientGraph(g: ConvGeometry): Graph {
  if (g.dilationHeight !== 1 || g.dilationWidth !== 1) throw new Error('filterGradientGraph: dilation must be 1');
  return g.inChannels >= SLICE_GEMM_MIN_CHANNELS ? filterGradientSlices(g) : filterGradientBatchConv(g);
}

/** The rows past the input that the last window reads (padding), or, negative, the input rows it never reads. */
function reach(inSize: number, outSize: number, kernel: number, stride: number, before: number): number {
  return kernel + stride * (outSize - 1) - before - inSize;
}

/**
 * One GEMM per filter tap: the tap's strided slice of the padded input, as [N*OH*OW, Cin], transposed times dy as
 * [N*OH*OW, Cout] is dW[kh, kw] ([Cin, Cout]); the taps' products stacked in (kh, kw) order are dW. (One GEMM over
 * the slices laid side by side, an im2col, gives the same sums but writes and reads kh*kw copies of the input.)
 */
function filterGradientSlices(g: ConvGeometry): Graph {
  const b = new Builder();
  const bottom = Math.max(0, reach(g.inHeight, g.outHeight, g.filterHeight, g.strideHeight, g.pad.top));
  const right = Math.max(0, reach(g.inWidth, g.outWidth, g.filterWidth, g.strideWidth, g.pad.left));
  let x = 'x';
  if (g.pad.top + g.pad.left + bottom + right > 0) x = b.node('Pad', [x, b.int64([0, g.pad.top, g.pad.left, 0, 0, bottom, right, 0])]);
  const axes = b.int64([1, 2]);
  const steps = b.int64([g.strideHeight, g.strideWidth]);
  const rows = b.int64([-1, g.inChannels]);
  const dy = b.node('Reshape', ['dy', b.int64([-1, g.outChannels])]);
  const taps: string[] = [];
  for (let kh = 0; kh < g.filterHeight; kh++) {
    for (let kw = 0; kw < g.filterWidth; kw++) {
      const starts = b.int64([kh, kw]);
      const ends = b.int64([kh + g.strideHeight * (g.outHeight - 1) + 1, kw + g.strideWidth * (g.outWidth - 1) + 1]);
      const slice = b.node('Reshape', [b.node('Slice', [x, starts, ends, axes, steps]), rows]);
      taps.push(b.node('Gemm', [slice, dy], [int('transA', 1)]));
    }
  }
  const dw = taps.length === 1 ? taps[0]! : b.node('Concat', taps, [int('axis', 0)]);
  b.node('Reshape', [dw, b.int64(filterShape(g))], [], 'dw');
  return b.graph([floatValueInfo('x', inShape(g)), floatValueInfo('dy', outShape(g))], [floatValueInfo('dw', filterShape(g))]);
}

/**
 * A conv of x as [Cin, N, H, W] with dy as a filter [Cout, N, OH, OW], dilated by the forward stride: [Cin, Cout, kh, kw].
 * Input rows the forward never read are cropped (ONNX pads cannot be negative).
 */
function filterGradientBatchConv(g: ConvGeometry): Graph {
  const b = new Builder();
  const bottom = reach(g.inHeight, g.outHeight, g.filterHeight, g.strideHeight, g.pad.top);
  const right = reach(g.inWidth, g.outWidth, g.filterWidth, g.strideWidth, g.pad.left);
  let x = 'x';
  if (bottom < 0 || right < 0) {
    x = b.node('Slice', [x, b.int64([0, 0]), b.int64([g.inHeight + Math.min(bottom, 0), g.inWidth + Math.min(right, 0)]), b.int64([1, 2])]);
  }
  const xt = b.node('Transpose', [x], [ints('perm', [3, 0, 1, 2])]);
  const dyt = b.node('Transpose', ['dy'], [ints('perm', [3, 0, 1, 2])]);
  const z = b.node('Conv', [xt, dyt], [
    ints('pads', [g.pad.top, g.pad.left, Math.max(bottom, 0), Math.max(right, 0)]),
    ints('dilations', [g.strideHeight, g.strideWidth]),
  ]);
  b.node('Transpose', [z], [ints('perm', [2, 3, 0, 1])], 'dw');
  return b.graph([floatValueInfo('x', inShape(g)), floatValueInfo('dy', outShape(g))], [floatValueInfo('dw', filterShape(g))]);
}

/*
 * onnxruntime's NCHWc convs (MLAS's direct convs over channel blocks, the com.microsoft.nchwc operators). Its graph
 * optimiser uses them only for a Conv whose filter is a constant, which a trained filter is not, so these graphs
 * call them directly and lay the filter out in the graph: [O/B][I/B][kh][kw][Bi][Bo] (input channels in blocks), or
 * [O/B][I][kh][kw][Bo] for an input of fewer channels than a block (the stem's 3), which the conv reads as NCHW.
 * B is the CPU's block size (8 with AVX2, 16 with AVX-512), found by `nchwcBlockSize` in kernels.ts.
 */

/** The forward conv fits the NCHWc graph: output channels in whole blocks, input channels too or under one block. */
export function nchwcForwardFits(g: ConvGeometry, block: number): boolean {
  return g.outChannels % block === 0 && (g.inChannels % block === 0 || g.inChannels < block);
}

/**
 * The input gradient fits the NCHWc graph: a stride-1, undilated conv whose padding is under the filter's size, so
 * that dx is the full conv of dy with the filter flipped and its channels swapped.
 */
export function nchwcInputGradientFits(g: ConvGeometry, block: number): boolean {
  const { top, bottom, left, right } = g.pad;
  return (
    g.strideHeight === 1 && g.strideWidth === 1 && g.dilationHeight === 1 && g.dilationWidth === 1 &&
    Math.max(top, bottom) < g.filterHeight && Math.max(left, right) < g.filterWidth &&
    g.inChannels % block === 0 && g.outChannels % block === 0
  );
}

/** A [kh, kw, I, O] filter in the NCHWc conv's layout; `swap`: flipped in space, I and O exchanged (for dx). */
function nchwcFilter(b: Builder, filter: string, g: ConvGeometry, block: number, swap = false): string {
  const { filterHeight: kh, filterWidth: kw, inChannels: ci, outChannels: co } = g;
  if (ci < block) {
    const blocked = b.node('Reshape', [filter, b.int64([kh, kw, ci, co / block, block])]);
    const t = b.node('Transpose', [blocked], [ints('perm', [3, 2, 0, 1, 4])]);
    return b.node('Reshape', [t, b.int64([co, ci, kh, kw])]);
  }
  let f = filter;
  if (swap && kh * kw > 1) {
    f = b.node('Slice', [f, b.int64([kh - 1, kw - 1]), b.int64([-(kh + 1), -(kw + 1)]), b.int64([0, 1]), b.int64([-1, -1])]);
  }
  const blocked = b.node('Reshape', [f, b.int64([kh, kw, ci / block, block, co / block, block])]);
  // [kh, kw, I/B, Bi, O/B, Bo] -> [O/B, I/B, kh, kw, Bi, Bo]; swapped, the conv's input is O and its output I.
  const t = b.node('Transpose', [blocked], [ints('perm', swap ? [2, 4, 0, 1, 5, 3] : [4, 2, 0, 1, 3, 5])]);
  return b.node('Reshape', [t, b.int64(swap ? [ci, co, kh, kw] : [co, ci, kh, kw])]);
}

/** As forwardGraph, on the NCHWc conv (check nchwcForwardFits first). */
export function nchwcForwardGraph(g: ConvGeometry, bias: boolean, relu: boolean, block: number): Graph {
  const b = new Builder();
  const x = g.inChannels < block ? b.node('Transpose', ['x'], [ints('perm', NHWC_TO_NCHW)]) : b.nchwc('ReorderInput', ['x'], [int('channels_last', 1)]);
  const w = nchwcFilter(b, 'filter', g, block);
  const attrs = [
    ints('pads', onnxPads(g.pad)),
    ints('strides', [g.strideHeight, g.strideWidth]),
    ints('dilations', [g.dilationHeight, g.dilationWidth]),
  ];
  if (relu) attrs.push(str('activation', 'Relu'));
  const y = b.nchwc('Conv', bias ? [x, w, 'bias'] : [x, w], attrs);
  b.nchwc('ReorderOutput', [y], [int('channels_last', 1), int('channels', g.outChannels)], 'y');
  const inputs = [floatValueInfo('x', inShape(g)), floatValueInfo('filter', filterShape(g))];
  if (bias) inputs.push(floatValueInfo('bias', [g.outChannels]));
  return b.graph(inputs, [floatValueInfo('y', outShape(g))]);
}

/** As inputGradientGraph, on the NCHWc conv (check nchwcInputGradientFits first). */
export function nchwcInputGradientGraph(g: ConvGeometry, block: number): Graph {
  const b = new Builder();
  const dy = b.nchwc('ReorderInput', ['dy'], [int('channels_last', 1)]);
  const w = nchwcFilter(b, 'filter', g, block, true);
  const { top, bottom, left, right } = g.pad;
  const dx = b.nchwc('Conv', [dy, w], [
    ints('pads', [g.filterHeight - 1 - top, g.filterWidth - 1 - left, g.filterHeight - 1 - bottom, g.filterWidth - 1 - right]),
  ]);
  b.nchwc('ReorderOutput', [dx], [int('channels_last', 1), int('channels', g.inChannels)], 'dx');
  return b.graph([floatValueInfo('dy', outShape(g)), floatValueInfo('filter', filterShape(g))], [floatValueInfo('dx', inShape(g))]);
}
