import * as tf from '@tensorflow/tfjs';
import {
  BN_EPSILON,
  BN_MOMENTUM,
  CLASSIFIER_CHANNELS,
  DECODER_CHANNELS,
  ENCODER_CHANNELS,
  INPUT_SIZE,
  SEG16_SIZE,
} from '../../util/constants.js';

/**
 * The paper's model (Sec. 2.2, Appendix A): torchvision ResNet-18 up to layer3, the segmentation module (Table A.1)
 * and the classification module on seg16 (Table A.2). Layers carry torchvision's state_dict names (encoder) and the
 * PyTorch reference's names (decoder.N, classifier.N), so importing weights is a lookup by name.
 */

/** One torchvision BasicBlock. */
export interface ResBlockSpec {
  readonly name: string;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly stride: 1 | 2;
  /** The block has a 1x1 strided conv + BN shortcut: `${name}.downsample.0` and `.1`. */
  readonly downsample: boolean;
}

/** ResNet-18 stem: conv1 7x7/2 pad 3 to 64 channels, then maxpool 3x3/2 pad 1 (torchvision). */
export const STEM_CHANNELS = 64;
export const STEM_KERNEL = 7;
export const STEM_PAD = 3;
export const MAXPOOL_KERNEL = 3;
export const MAXPOOL_PAD = 1;

/** ResNet-18 layer1..layer3, two BasicBlocks each; layer4 is cut (Sec. 2.2). */
export const ENCODER_BLOCKS: readonly ResBlockSpec[] = [
  { name: 'layer1.0', inChannels: 64, outChannels: 64, stride: 1, downsample: false },
  { name: 'layer1.1', inChannels: 64, outChannels: 64, stride: 1, downsample: false },
  { name: 'layer2.0', inChannels: 64, outChannels: 128, stride: 2, downsample: true },
  { name: 'layer2.1', inChannels: 128, outChannels: 128, stride: 1, downsample: false },
  { name: 'layer3.0', inChannels: 128, outChannels: 256, stride: 2, downsample: true },
  { name: 'layer3.1', inChannels: 256, outChannels: 256, stride: 1, downsample: false },
];

/** Layer names the exporter, the weight importer and training look up. */
export const LAYER = {
  conv1: 'conv1',
  bn1: 'bn1',
  decoderConv: 'decoder.0',
  decoderBn: 'decoder.1',
  /** Conv 1x1 64->C with bias; its output is seg16 [N,16,16,C]. */
  seg16: 'decoder.4',
  classifierConv1: 'classifier.1',
  classifierBn: 'classifier.2',
  classifierConv2: 'classifier.4',
  /** Output 0: nearest upsampling of seg16 to INPUT_SIZE. */
  mask: 'mask',
  /** Output 1: class logits [N,C]. */
  cls: 'cls',
} as const;

export interface BuildOptions {
  readonly numClasses: number;
  /** Seeds every initialiser (each layer gets its own derived seed); absent: random. */
  readonly seed?: number;
}

type Sym = tf.SymbolicTensor;

/** Select a TF.js backend (selectTfBackend) before calling this. */
export function buildSegClsModel(opts: BuildOptions): tf.LayersModel {
  const { numClasses } = opts;
  if (!Number.isInteger(numClasses) || numClasses < 2) {
    throw new Error(`numClasses must be an integer >= 2, got ${numClasses}`);
  }
  let nextSeed = 0;
  const seed = (): number | undefined => (opts.seed === undefined ? undefined : opts.seed * 1000 + nextSeed++);
  // torchvision's ResNet init: kaiming_normal_(mode='fan_out', nonlinearity='relu'); BN gamma 1, beta 0.
  const kernelInitializer = () =>
    tf.initializers.varianceScaling({ scale: 2, mode: 'fanOut', distribution: 'normal', seed: seed() });
  const apply = (layer: tf.layers.Layer, x: Sym | Sym[]): Sym => layer.apply(x) as Sym;

  const conv = (x: Sym, name: string, filters: number, kernel: number, stride: number, pad: number, useBias = false) => {
    // Symmetric padding as in PyTorch; Keras 'same' with stride 2 pads bottom/right only.
    const padded = pad > 0 ? apply(tf.layers.zeroPadding2d({ padding: [[pad, pad], [pad, pad]], name: `${name}.pad` }), x) : x;
    return apply(
      tf.layers.conv2d({
        name,
        filters,
        kernelSize: kernel,
        strides: stride,
        padding: 'valid',
        useBias,
        kernelInitializer: kernelInitializer(),
        biasInitializer: 'zeros',
      }),
      padded,
    );
  };
  const bn = (x: Sym, name: string) =>
    apply(tf.layers.batchNormalization({ name, axis: -1, momentum: BN_MOMENTUM, epsilon: BN_EPSILON }), x);
  const relu = (x: Sym, name: string) => apply(tf.layers.reLU({ name }), x);

  const input = tf.input({ shape: [INPUT_SIZE, INPUT_SIZE, 3], name: 'input' });

  // Encoder: stem. Zero padding before the max-pool equals PyTorch's -inf padding because the pool follows a ReLU.
  let x = relu(bn(conv(input, LAYER.conv1, STEM_CHANNELS, STEM_KERNEL, 2, STEM_PAD), LAYER.bn1), 'relu');
  x = apply(tf.layers.zeroPadding2d({ padding: [[MAXPOOL_PAD, MAXPOOL_PAD], [MAXPOOL_PAD, MAXPOOL_PAD]], name: 'maxpool.pad' }), x);
  x = apply(tf.layers.maxPooling2d({ name: 'maxpool', poolSize: MAXPOOL_KERNEL, strides: 2, padding: 'valid' }), x);

  for (const b of ENCODER_BLOCKS) {
    let y = relu(bn(conv(x, `${b.name}.conv1`, b.outChannels, 3, b.stride, 1), `${b.name}.bn1`), `${b.name}.relu1`);
    y = bn(conv(y, `${b.name}.conv2`, b.outChannels, 3, 1, 1), `${b.name}.bn2`);
    const shortcut = b.downsample
      ? bn(conv(x, `${b.name}.downsample.0`, b.outChannels, 1, b.stride, 0), `${b.name}.downsample.1`)
      : x;
    x = relu(apply(tf.layers.add({ name: `${b.name}.add` }), [y, shortcut]), `${b.name}.relu2`);
  }
  const lastBlock = ENCODER_BLOCKS[ENCODER_BLOCKS.length - 1];
  if (lastBlock.outChannels !== ENCODER_CHANNELS) throw new Error('encoder must end with ENCODER_CHANNELS channels');

  // Segmentation module (Table A.1).
  let s = relu(bn(conv(x, LAYER.decoderConv, DECODER_CHANNELS, 3, 1, 1), LAYER.decoderBn), 'decoder.2');
  s = apply(tf.layers.upSampling2d({ name: 'decoder.3', size: [2, 2], interpolation: 'nearest' }), s);
  const seg16 = conv(s, LAYER.seg16, numClasses, 1, 1, 0, true);
  const up = INPUT_SIZE / SEG16_SIZE;
  const mask = apply(tf.layers.upSampling2d({ name: LAYER.mask, size: [up, up], interpolation: 'nearest' }), seg16);

  // Classification module on seg16, before interpolation (Table A.2).
  let c = apply(tf.layers.globalAveragePooling2d({ name: 'classifier.0' }), seg16);
  c = apply(tf.layers.reshape({ name: 'classifier.0.reshape', targetShape: [1, 1, numClasses] }), c);
  c = relu(bn(conv(c, LAYER.classifierConv1, CLASSIFIER_CHANNELS, 1, 1, 0), LAYER.classifierBn), 'classifier.3');
  c = conv(c, LAYER.classifierConv2, numClasses, 1, 1, 0);
  const cls = apply(tf.layers.flatten({ name: LAYER.cls }), c);

  return tf.model({ name: 'resnet18-layer3-segcls', inputs: input, outputs: [mask, cls] });
}

/** Number of classes of a built or loaded model (channels of its class-logit output). */
export function modelNumClasses(model: tf.LayersModel): number {
  const shape = model.getLayer(LAYER.cls).outputShape as number[];
  return shape[shape.length - 1];
}
