import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { conv2DBackpropFilterConfig, conv2DBackpropInputConfig } from '../gradKernels/conv.js';
import { kernelInputs, runNativeKernel, WASM, type KernelArgs } from '../gradKernels/shared.js';
import {
  filterGradientGraph,
  forwardGraph,
  geometryKey,
  inputGradientGraph,
  nchwcForwardFits,
  nchwcForwardGraph,
  nchwcInputGradientFits,
  nchwcInputGradientGraph,
  type ConvGeometry,
} from './graphs.js';
import { SessionCache, SyncSession, type Graph, type TensorView } from './syncSession.js';

/**
 * Conv2D, FusedConv2D and both conv gradients on the TF.js wasm backend, computed by onnxruntime's native CPU convs
 * (MLAS) on the wasm heap in place: inputs are read from it and outputs written into buffers allocated there, so
 * nothing is copied. Cases the graphs do not cover (NCHW, other activations, non-float32) go to the wasm kernels.
 * One session per conv geometry, the batch dimension symbolic.
 */

let cache: SessionCache | undefined;

/** Threads each onnxruntime conv may use: 1 in data-parallel workers (one per core), all cores when alone. */
export function configureOrtConv(threads: number): void {
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`onnxruntime conv threads must be a positive integer, got ${threads}`);
  cache?.clear();
  cache = new SessionCache(threads);
}

/** Releases the sessions (they are rebuilt on the next conv). */
export function releaseOrtConv(): void {
  cache?.clear();
}

/** Sessions built so far (for tests: one per geometry and kind, whatever the batch). */
export function ortConvSessions(): number {
  return cache?.size ?? 0;
}

let block: number | null | undefined;

/**
 * The channel block of onnxruntime's NCHWc convs on this CPU, or null where they do not run. Found by running the
 * NCHWc graph of a small conv for each candidate and keeping the one whose answer equals the plain graph's: a wrong
 * block lays the filter out wrongly, which changes the answer.
 */
export function nchwcBlockSize(): number | null {
  if (block !== undefined) return block;
  const c = 32;
  const g: ConvGeometry = {
    inHeight: 5, inWidth: 5, inChannels: c, outHeight: 5, outWidth: 5, outChannels: c, filterHeight: 3, filterWidth: 3,
    strideHeight: 1, strideWidth: 1, dilationHeight: 1, dilationWidth: 1, pad: { top: 1, bottom: 1, left: 1, right: 1 },
  };
  const xDims = [1, 5, 5, c];
  const wDims = [3, 3, c, c];
  const x = Float32Array.from({ length: 25 * c }, (_, i) => Math.sin(i * 0.37));
  const w = Float32Array.from({ length: 9 * c * c }, (_, i) => Math.cos(i * 0.91));
  const run = (graph: Graph): Float32Array => {
    const y = new Float32Array(25 * c);
    const s = new SyncSession(graph, 1);
    try {
      s.run({ x: { data: x, dims: xDims }, filter: { data: w, dims: wDims } }, { y: { data: y, dims: xDims } });
    } finally {
      s.dispose();
    }
    return y;
  };
  const expected = run(forwardGraph(g, false, false));
  block = null;
  for (const candidate of [16, 8, 4]) {
    let y: Float32Array;
    try {
      y = run(nchwcForwardGraph(g, false, false, candidate));
    } catch {
      continue; // this build of onnxruntime has no NCHWc operators
    }
    if (y.every((v, i) => Math.abs(v - expected[i]!) <= 1e-4 * (1 + Math.abs(expected[i]!)))) {
      block = candidate;
      break;
    }
  }
  return block;
}

function session(key: string, build: () => Graph) {
  if (cache === undefined) configureOrtConv(1);
  return cache!.get(key, build);
}

/** Runs a session on tensors of the wasm heap; outputs are allocated first, as a malloc may grow (and move) the heap. */
function runOnHeap(
  backend: BackendWasm,
  key: string,
  build: () => Graph,
  inputs: Record<string, tf.TensorInfo>,
  output: { name: string; shape: number[] },
): tf.TensorInfo {
  const s = session(key, build);
  const out = backend.makeOutput(output.shape, 'float32');
  if (tf.util.sizeFromShape(output.shape) === 0) return out;
  const view = (info: tf.TensorInfo): TensorView => ({ data: backend.typedArrayFromHeap(info) as Float32Array, dims: info.shape });
  const feeds: Record<string, TensorView> = {};
  for (const [name, info] of Object.entries(inputs)) feeds[name] = view(info);
  try {
    s.run(feeds, { [output.name]: view(out) });
  } catch (err) {
    backend.disposeData(out.dataId);
    throw err;
  }
  return out;
}

function geometry(info: tf.backend_util.Conv2DInfo): ConvGeometry {
  const { top, bottom, left, right } = info.padInfo;
  return {
    inHeight: info.inHeight,
    inWidth: info.inWidth,
    inChannels: info.inChannels,
    outHeight: info.outHeight,
    outWidth: info.outWidth,
    outChannels: info.outChannels,
    filterHeight: info.filterHeight,
    filterWidth: info.filterWidth,
    strideHeight: info.strideHeight,
    strideWidth: info.strideWidth,
    dilationHeight: info.dilationHeight,
    dilationWidth: info.dilationWidth,
    pad: { top, bottom, left, right },
  };
}

const float32 = (...infos: (tf.TensorInfo | undefined)[]) => infos.every((i) => i === undefined || i.dtype === 'float32');

function convInfo(
  xShape: number[],
  filterShape: number[],
  attrs: { strides: number | [number, number]; pad: unknown; dataFormat: 'NHWC' | 'NCHW'; dimRoundingMode?: 'floor' | 'round' | 'ceil' },
  dilations: number | [number, number],
): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    dilations,
    attrs.pad as 'same',
    attrs.dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(attrs.dataFormat),
  );
}

/** y = act(conv(x, filter) + bias) for Conv2D and FusedConv2D alike (they share sessions). */
function forward(backend: BackendWasm, info: tf.backend_util.Conv2DInfo, inputs: { x: tf.TensorInfo; filter: tf.TensorInfo; bias?: tf.TensorInfo }, relu: boolean): tf.TensorInfo {
  const g = geometry(info);
  const bias = inputs.bias !== undefined;
  const b = nchwcBlockSize();
  const [key, build] =
    b !== null && nchwcForwardFits(g, b) ? ['nfwd', () => nchwcForwardGraph(g, bias, relu, b)] : ['fwd', () => forwardGraph(g, bias, relu)];
  return runOnHeap(backend, `${key}|${bias}|${relu}|${geometryKey(g)}`, build, inputs, { name: 'y', shape: info.outShape });
}

function conv2D(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x, filter } = kernelInputs(tf.Conv2D, args, 'x', 'filter');
  const attrs = args.attrs as unknown as tf.Conv2DAttrs;
  const info = convInfo(x.shape, filter.shape, attrs, attrs.dilations);
  if (info.dataFormat !== 'channelsLast' || !float32(x, filter)) return runNativeKernel(backend, tf.Conv2D, args.inputs, args.attrs ?? {});
  return forward(backend, info, { x, filter }, false);
}

function fusedConv2D(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x, filter } = kernelInputs(tf.FusedConv2D, args, 'x', 'filter');
  const { bias, preluActivationWeights } = args.inputs;
  const attrs = args.attrs as unknown as tf.FusedConv2DAttrs;
  const info = convInfo(x.shape, filter.shape, attrs, attrs.dilations);
  const relu = attrs.activation === 'relu';
  const supported =
    info.dataFormat === 'channelsLast' &&
    float32(x, filter, bias) &&
    preluActivationWeights === undefined &&
    (relu || attrs.activation === 'linear' || attrs.activation === undefined) &&
    (bias === undefined || tf.util.sizeFromShape(bias.shape) === info.outChannels);
  if (!supported) return runNativeKernel(backend, tf.FusedConv2D, args.inputs, args.attrs ?? {});
  return forward(backend, info, bias === undefined ? { x, filter } : { x, filter, bias }, relu);
}

function conv2DBackpropInput(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { dy, filter } = kernelInputs(tf.Conv2DBackpropInput, args, 'dy', 'filter');
  const attrs = args.attrs as unknown as tf.Conv2DBackpropInputAttrs;
  const info = convInfo(attrs.inputShape, filter.shape, attrs, 1);
  if (info.dataFormat !== 'channelsLast' || !float32(dy, filter)) return conv2DBackpropInputConfig.kernelFunc(args) as tf.TensorInfo;
  const g = geometry(info);
  const b = nchwcBlockSize();
  const [key, build] =
    b !== null && nchwcInputGradientFits(g, b) ? ['ndx', () => nchwcInputGradientGraph(g, b)] : ['dx', () => inputGradientGraph(g)];
  return runOnHeap(backend, `${key}|${geometryKey(g)}`, build, { dy, filter }, { name: 'dx', shape: [...attrs.inputShape] });
}

function conv2DBackpropFilter(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x, dy } = kernelInputs(tf.Conv2DBackpropFilter, args, 'x', 'dy');
  const attrs = args.attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  const info = convInfo(x.shape, attrs.filterShape, attrs, 1);
  if (info.dataFormat !== 'channelsLast' || !float32(x, dy)) return conv2DBackpropFilterConfig.kernelFunc(args) as tf.TensorInfo;
  const g = geometry(info);
  return runOnHeap(backend, `dw|${geometryKey(g)}`, () => filterGradientGraph(g), { x, dy }, { name: 'dw', shape: [...attrs.filterShape] });
}

export const ortConv2DConfig: tf.KernelConfig = { kernelName: tf.Conv2D, backendName: WASM, kernelFunc: conv2D };
export const ortFusedConv2DConfig: tf.KernelConfig = { kernelName: tf.FusedConv2D, backendName: WASM, kernelFunc: fusedConv2D };
export const ortConv2DBackpropInputConfig: tf.KernelConfig = { kernelName: tf.Conv2DBackpropInput, backendName: WASM, kernelFunc: conv2DBackpropInput };
export const ortConv2DBackpropFilterConfig: tf.KernelConfig = { kernelName: tf.Conv2DBackpropFilter, backendName: WASM, kernelFunc: conv2DBackpropFilter };
