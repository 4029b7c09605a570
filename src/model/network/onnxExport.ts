import * as tf from '@tensorflow/tfjs';
import onnxProto from 'onnx-proto';
import { ENCODER_BLOCKS, LAYER } from './architecture.js';
import { INPUT_SIZE, SEG16_SIZE } from '../../util/constants.js';
import { ONNX_INPUT, ONNX_OUTPUTS, ONNX_SEG16 } from './onnxInterface.js';
import { floatValueInfo } from '../../tf/ortConv/graphs.js';

const { onnx } = onnxProto;
type Attr = onnxProto.onnx.IAttributeProto;

/**
 * Writes the paper's model as an ONNX graph with the PyTorch reference's interface
 * (shared/tools/torch-reference/export_onnx.py): input "input" NCHW [N,3,128,128], outputs "mask" [N,C,128,128] and
 * "cls" [N,C]. Every batch norm is folded into the conv before it, so the graph is Conv/Relu/MaxPool/Add/Resize only.
 * The architecture is fixed, so the exporter walks it by layer name rather than converting arbitrary graphs.
 */
export const ONNX_OPSET = 13;
/** IR version 7 goes with opset 13. */
export const ONNX_IR_VERSION = 7;
export { ONNX_INPUT, ONNX_OUTPUTS };

const attr = {
  ints: (name: string, ints: number[]): Attr => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints }),
  int: (name: string, i: number): Attr => ({ name, type: onnx.AttributeProto.AttributeType.INT, i }),
  str: (name: string, s: string): Attr => ({
    name,
    type: onnx.AttributeProto.AttributeType.STRING,
    s: new TextEncoder().encode(s),
  }),
};

/** A layer's weights by their Keras short name (kernel, bias, gamma, beta, moving_mean, moving_variance). */
function layerWeights(model: tf.LayersModel, name: string): Map<string, { shape: number[]; data: Float32Array }> {
  const layer = model.getLayer(name);
  const values = layer.getWeights();
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  layer.weights.forEach((v, i) => {
    const short = v.originalName.split('/').pop() ?? v.originalName;
    out.set(short, { shape: values[i].shape, data: values[i].dataSync() as Float32Array });
  });
  return out;
}

function need<T>(m: Map<string, T>, key: string, layer: string): T {
  const v = m.get(key);
  if (v === undefined) throw new Error(`layer ${layer} has no weight '${key}'`);
  return v;
}

function findLayer(model: tf.LayersModel, name: string): tf.layers.Layer | undefined {
  return model.layers.find((l) => l.name === name);
}

/** Symmetric padding of the zeroPadding2d layer `${conv}.pad`, or 0 where there is none. */
function paddingBefore(model: tf.LayersModel, name: string): number {
  const pad = findLayer(model, `${name}.pad`);
  if (!pad) return 0;
  const p = (pad.getConfig() as { padding: [[number, number], [number, number]] }).padding;
  if (p[0][0] !== p[0][1] || p[1][0] !== p[1][1] || p[0][0] !== p[1][0]) {
    throw new Error(`${name}.pad is not symmetric: ${JSON.stringify(p)}`);
  }
  return p[0][0];
}

class GraphBuilder {
  readonly nodes: onnxProto.onnx.INodeProto[] = [];
  readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private count = 0;

  constructor(private readonly model: tf.LayersModel) {}

  initializer(name: string, dims: number[], data: Float32Array): string {
    const bytes = new Uint8Array(data.length * 4);
    const view = new DataView(bytes.buffer);
    data.forEach((v, i) => view.setFloat32(i * 4, v, true)); // ONNX raw_data is little-endian
    this.initializers.push({ name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: bytes });
    return name;
  }

  node(opType: string, inputs: string[], attributes: Attr[] = [], output?: string): string {
    const out = output ?? `${opType.toLowerCase()}_${this.count++}`;
    this.nodes.push({ name: `${opType}_${this.nodes.length}`, opType, input: inputs, output: [out], attribute: attributes });
    return out;
  }

  /** Conv (+ optional batch norm folded in: W' = W * s, b' = beta + (b - mean) * s, s = gamma / sqrt(var + eps)). */
  conv(x: string, convName: string, bnName: string | null, output?: string): string {
    const layer = this.model.getLayer(convName);
    const cfg = layer.getConfig() as { kernelSize: number[]; strides: number[]; padding: string };
    if (cfg.padding !== 'valid') throw new Error(`${convName}: expected padding 'valid', got '${cfg.padding}'`);
    const w = layerWeights(this.model, convName);
    const kernel = need(w, 'kernel', convName);
    const [kh, kw, cin, cout] = kernel.shape;
    const scale = new Float64Array(cout).fill(1);
    const shift = new Float64Array(cout);
    const bias = w.get('bias');
    if (bias) shift.set(bias.data);
    if (bnName) {
      const bn = layerWeights(this.model, bnName);
      const eps = (this.model.getLayer(bnName).getConfig() as { epsilon: number }).epsilon;
      const gamma = need(bn, 'gamma', bnName).data;
      const beta = need(bn, 'beta', bnName).data;
      const mean = need(bn, 'moving_mean', bnName).data;
      const variance = need(bn, 'moving_variance', bnName).data;
      for (let o = 0; o < cout; o++) {
        scale[o] = gamma[o] / Math.sqrt(variance[o] + eps);
        shift[o] = beta[o] + (shift[o] - mean[o]) * scale[o];
      }
    }
    // HWIO -> OIHW, scaled per output channel.
    const oihw = new Float32Array(kernel.data.length);
    for (let h = 0; h < kh; h++)
      for (let ww = 0; ww < kw; ww++)
        for (let i = 0; i < cin; i++)
          for (let o = 0; o < cout; o++) {
            oihw[((o * cin + i) * kh + h) * kw + ww] = kernel.data[((h * kw + ww) * cin + i) * cout + o] * scale[o];
          }
    const inputs = [x, this.initializer(`${convName}.weight`, [cout, cin, kh, kw], oihw)];
    if (bias || bnName) inputs.push(this.initializer(`${convName}.bias`, [cout], Float32Array.from(shift)));
    const p = paddingBefore(this.model, convName);
    return this.node(
      'Conv',
      inputs,
      [
        attr.ints('kernel_shape', [kh, kw]),
        attr.ints('strides', cfg.strides),
        attr.ints('pads', [p, p, p, p]),
        attr.ints('dilations', [1, 1]),
        attr.int('group', 1),
      ],
      output,
    );
  }

  /** Nearest upsampling by an integer factor: TF.js/PyTorch 'nearest' = floor(dst / factor), ONNX 'asymmetric' + 'floor'. */
  upsample(x: string, factor: number, output?: string): string {
    const name = `upsample_x${factor}.scales`;
    const scales = this.initializers.some((t) => t.name === name)
      ? name
      : this.initializer(name, [4], Float32Array.from([1, 1, factor, factor]));
    return this.node(
      'Resize',
      [x, '', scales],
      [
        attr.str('mode', 'nearest'),
        attr.str('coordinate_transformation_mode', 'asymmetric'),
        attr.str('nearest_mode', 'floor'),
      ],
      output,
    );
  }
}

/** Serialised ONNX ModelProto of a model built by buildSegClsModel (or loaded from its saved form). */
export function exportOnnx(model: tf.LayersModel, numClasses: number): Uint8Array {
  const g = new GraphBuilder(model);
  const seg16Channels = (model.getLayer(LAYER.seg16).outputShape as number[])[3];
  if (seg16Channels !== numClasses) {
    throw new Error(`model has ${seg16Channels} classes, exportOnnx was asked for ${numClasses}`);
  }

  let x = g.node('Relu', [g.conv(ONNX_INPUT, LAYER.conv1, LAYER.bn1)]);
  const pool = model.getLayer('maxpool').getConfig() as { poolSize: number[]; strides: number[] };
  const mp = paddingBefore(model, 'maxpool');
  // ONNX MaxPool pads with -inf, TF.js with zeros: equal here because the pool follows a ReLU.
  x = g.node('MaxPool', [x], [
    attr.ints('kernel_shape', pool.poolSize),
    attr.ints('strides', pool.strides),
    attr.ints('pads', [mp, mp, mp, mp]),
  ]);
  for (const b of ENCODER_BLOCKS) {
    const y = g.conv(g.node('Relu', [g.conv(x, `${b.name}.conv1`, `${b.name}.bn1`)]), `${b.name}.conv2`, `${b.name}.bn2`);
    const shortcut = b.downsample ? g.conv(x, `${b.name}.downsample.0`, `${b.name}.downsample.1`) : x;
    x = g.node('Relu', [g.node('Add', [y, shortcut])]);
  }

  let s = g.node('Relu', [g.conv(x, LAYER.decoderConv, LAYER.decoderBn)]);
  s = g.upsample(s, 2);
  const seg16 = g.conv(s, LAYER.seg16, null, ONNX_SEG16);
  g.upsample(seg16, INPUT_SIZE / SEG16_SIZE, ONNX_OUTPUTS.mask);

  let c = g.node('GlobalAveragePool', [seg16]);
  c = g.node('Relu', [g.conv(c, LAYER.classifierConv1, LAYER.classifierBn)]);
  c = g.conv(c, LAYER.classifierConv2, null);
  g.node('Flatten', [c], [attr.int('axis', 1)], ONNX_OUTPUTS.cls);

  const proto = onnx.ModelProto.create({
    irVersion: ONNX_IR_VERSION,
    opsetImport: [{ domain: '', version: ONNX_OPSET }],
    producerName: 'histoseg',
    graph: {
      name: model.name,
      node: g.nodes,
      initializer: g.initializers,
      input: [floatValueInfo(ONNX_INPUT, ['N', 3, INPUT_SIZE, INPUT_SIZE])],
      output: [
        floatValueInfo(ONNX_OUTPUTS.mask, ['N', numClasses, INPUT_SIZE, INPUT_SIZE]),
        floatValueInfo(ONNX_OUTPUTS.cls, ['N', numClasses]),
        floatValueInfo(ONNX_SEG16, ['N', numClasses, SEG16_SIZE, SEG16_SIZE]),
      ],
    },
    metadataProps: [{ key: 'numClasses', value: String(numClasses) }],
  });
  return onnx.ModelProto.encode(proto).finish();
}
