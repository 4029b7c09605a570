import assert from 'node:assert/strict';
import { before, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectTfBackend } from '../src/tf/backend.js';
import { registerWasmTrainingKernels } from '../src/tf/gradKernels/index.js';
import { BN_EPSILON, BN_MOMENTUM } from '../src/util/constants.js';
import { rng } from './support/random.js';

/**
 * Whole-backward-pass check on a small variant of the paper's model (the layer types of src/model/architecture.ts:
 * zeroPadding2d + 'valid' conv, BN in training mode, ReLU, max-pool, residual add with a strided 1x1 shortcut,
 * nearest upsampling, global average pooling, the 1x1 classifier): TF.js wasm gradients with the registered kernels
 * against central finite differences of an independent float64 forward pass in plain TypeScript.
 */

const SIZE = 32;
const BATCH = 3; // > 1 catches batch-offset bugs
const C = 3;
const W0 = 6; // stem and first block
const W1 = 8; // strided block and decoder
const CLS_HIDDEN = 4;
const MASK_UP = 4;
/** Float32 gradients vs float64 differences; measured worst is far below (see the printed diagnostic). */
const MAX_REL_ERR = 1e-2;
const DIRECTIONS = 4;
/** Small enough that a step rarely crosses a ReLU or max-pool kink, large against float64 rounding. */
const FD_STEP = 1e-6;

function gaussian(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

// ---- The TF.js model ----

type Sym = tf.SymbolicTensor;
const apply = (layer: tf.layers.Layer, x: Sym | Sym[]) => layer.apply(x) as Sym;

function buildSmallModel(): tf.LayersModel {
  const conv = (x: Sym, name: string, filters: number, kernel: number, stride: number, pad: number, useBias = false) => {
    const p = pad > 0 ? apply(tf.layers.zeroPadding2d({ padding: [[pad, pad], [pad, pad]], name: `${name}.pad` }), x) : x;
    return apply(tf.layers.conv2d({ name, filters, kernelSize: kernel, strides: stride, padding: 'valid', useBias }), p);
  };
  const bn = (x: Sym, name: string) => apply(tf.layers.batchNormalization({ name, axis: -1, momentum: BN_MOMENTUM, epsilon: BN_EPSILON }), x);
  const relu = (x: Sym, name: string) => apply(tf.layers.reLU({ name }), x);

  const input = tf.input({ shape: [SIZE, SIZE, 3], name: 'input' });
  let x = relu(bn(conv(input, 'conv1', W0, 7, 2, 3), 'bn1'), 'relu');
  x = apply(tf.layers.zeroPadding2d({ padding: [[1, 1], [1, 1]], name: 'maxpool.pad' }), x);
  x = apply(tf.layers.maxPooling2d({ name: 'maxpool', poolSize: 3, strides: 2, padding: 'valid' }), x);
  for (const b of [
    { name: 'a', out: W0, stride: 1 },
    { name: 'b', out: W1, stride: 2 },
  ]) {
    let y = relu(bn(conv(x, `${b.name}.conv1`, b.out, 3, b.stride, 1), `${b.name}.bn1`), `${b.name}.relu1`);
    y = bn(conv(y, `${b.name}.conv2`, b.out, 3, 1, 1), `${b.name}.bn2`);
    const shortcut = b.stride === 1 ? x : bn(conv(x, `${b.name}.down`, b.out, 1, b.stride, 0), `${b.name}.downbn`);
    x = relu(apply(tf.layers.add({ name: `${b.name}.add` }), [y, shortcut]), `${b.name}.relu2`);
  }
  let s = relu(bn(conv(x, 'dec', W1, 3, 1, 1), 'decbn'), 'decrelu');
  s = apply(tf.layers.upSampling2d({ name: 'decup', size: [2, 2], interpolation: 'nearest' }), s);
  const seg = conv(s, 'seg', C, 1, 1, 0, true);
  const mask = apply(tf.layers.upSampling2d({ name: 'mask', size: [MASK_UP, MASK_UP], interpolation: 'nearest' }), seg);
  let c = apply(tf.layers.globalAveragePooling2d({ name: 'gap' }), seg);
  c = apply(tf.layers.reshape({ name: 'gapr', targetShape: [1, 1, C] }), c);
  c = relu(bn(conv(c, 'cls1', CLS_HIDDEN, 1, 1, 0), 'clsbn'), 'clsrelu');
  c = conv(c, 'cls2', C, 1, 1, 0);
  const cls = apply(tf.layers.flatten({ name: 'cls' }), c);
  return tf.model({ inputs: input, outputs: [mask, cls] });
}

// ---- The float64 reference forward pass ----

interface T64 {
  readonly d: Float64Array;
  readonly n: number;
  readonly h: number;
  readonly w: number;
  readonly c: number;
}

const t64 = (n: number, h: number, w: number, c: number): T64 => ({ d: new Float64Array(n * h * w * c), n, h, w, c });

function zeroPad(x: T64, p: number): T64 {
  const y = t64(x.n, x.h + 2 * p, x.w + 2 * p, x.c);
  for (let b = 0; b < x.n; b++)
    for (let i = 0; i < x.h; i++)
      for (let j = 0; j < x.w; j++)
        for (let k = 0; k < x.c; k++) y.d[((b * y.h + i + p) * y.w + j + p) * y.c + k] = x.d[((b * x.h + i) * x.w + j) * x.c + k];
  return y;
}

/** 'valid' conv, kernel [kh, kw, cin, cout] (TF.js layout). */
function conv(x: T64, kernel: Float64Array, k: number, cout: number, stride: number, bias?: Float64Array): T64 {
  const oh = Math.floor((x.h - k) / stride) + 1;
  const ow = Math.floor((x.w - k) / stride) + 1;
  const y = t64(x.n, oh, ow, cout);
  for (let b = 0; b < x.n; b++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        const out = ((b * oh + i) * ow + j) * cout;
        for (let o = 0; o < cout; o++) y.d[out + o] = bias ? bias[o] : 0;
        for (let u = 0; u < k; u++)
          for (let v = 0; v < k; v++) {
            const inp = ((b * x.h + i * stride + u) * x.w + j * stride + v) * x.c;
            for (let a = 0; a < x.c; a++) {
              const xv = x.d[inp + a];
              const wb = ((u * k + v) * x.c + a) * cout;
              for (let o = 0; o < cout; o++) y.d[out + o] += xv * kernel[wb + o];
            }
          }
      }
  return y;
}

/** Batch norm in training mode: batch statistics over N, H, W, biased variance. */
function batchNorm(x: T64, gamma: Float64Array, beta: Float64Array): T64 {
  const y = t64(x.n, x.h, x.w, x.c);
  const count = x.n * x.h * x.w;
  for (let k = 0; k < x.c; k++) {
    let mean = 0;
    for (let p = 0; p < count; p++) mean += x.d[p * x.c + k];
    mean /= count;
    let v = 0;
    for (let p = 0; p < count; p++) v += (x.d[p * x.c + k] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / count + BN_EPSILON);
    for (let p = 0; p < count; p++) y.d[p * x.c + k] = (x.d[p * x.c + k] - mean) * inv * gamma[k] + beta[k];
  }
  return y;
}

const map = (x: T64, f: (v: number, i: number) => number): T64 => ({ ...x, d: x.d.map(f) });
const relu = (x: T64) => map(x, (v) => Math.max(v, 0));
const add = (x: T64, y: T64) => map(x, (v, i) => v + y.d[i]);

function maxPool(x: T64, k: number, stride: number): T64 {
  const oh = Math.floor((x.h - k) / stride) + 1;
  const ow = Math.floor((x.w - k) / stride) + 1;
  const y = t64(x.n, oh, ow, x.c);
  for (let b = 0; b < x.n; b++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++)
        for (let a = 0; a < x.c; a++) {
          let m = -Infinity;
          for (let u = 0; u < k; u++)
            for (let v = 0; v < k; v++) m = Math.max(m, x.d[((b * x.h + i * stride + u) * x.w + j * stride + v) * x.c + a]);
          y.d[((b * oh + i) * ow + j) * x.c + a] = m;
        }
  return y;
}

function upsample(x: T64, f: number): T64 {
  const y = t64(x.n, x.h * f, x.w * f, x.c);
  for (let b = 0; b < x.n; b++)
    for (let i = 0; i < y.h; i++)
      for (let j = 0; j < y.w; j++)
        for (let a = 0; a < x.c; a++) y.d[((b * y.h + i) * y.w + j) * x.c + a] = x.d[((b * x.h + Math.floor(i / f)) * x.w + Math.floor(j / f)) * x.c + a];
  return y;
}

function globalAvgPool(x: T64): T64 {
  const y = t64(x.n, 1, 1, x.c);
  for (let b = 0; b < x.n; b++)
    for (let p = 0; p < x.h * x.w; p++) for (let a = 0; a < x.c; a++) y.d[b * x.c + a] += x.d[(b * x.h * x.w + p) * x.c + a] / (x.h * x.w);
  return y;
}

type Params = Map<string, Float64Array>;

function forward64(p: Params, input: T64): { mask: T64; cls: T64 } {
  const w = (name: string) => {
    const v = p.get(name);
    if (v === undefined) throw new Error(`no weight ${name}`);
    return v;
  };
  const cv = (x: T64, name: string, cout: number, k: number, stride: number, pad: number, bias = false) =>
    conv(pad > 0 ? zeroPad(x, pad) : x, w(`${name}/kernel`), k, cout, stride, bias ? w(`${name}/bias`) : undefined);
  const bn = (x: T64, name: string) => batchNorm(x, w(`${name}/gamma`), w(`${name}/beta`));

  let x = relu(bn(cv(input, 'conv1', W0, 7, 2, 3), 'bn1'));
  x = maxPool(zeroPad(x, 1), 3, 2);
  for (const b of [
    { name: 'a', out: W0, stride: 1 },
    { name: 'b', out: W1, stride: 2 },
  ]) {
    let y = relu(bn(cv(x, `${b.name}.conv1`, b.out, 3, b.stride, 1), `${b.name}.bn1`));
    y = bn(cv(y, `${b.name}.conv2`, b.out, 3, 1, 1), `${b.name}.bn2`);
    const shortcut = b.stride === 1 ? x : bn(cv(x, `${b.name}.down`, b.out, 1, b.stride, 0), `${b.name}.downbn`);
    x = relu(add(y, shortcut));
  }
  const s = upsample(relu(bn(cv(x, 'dec', W1, 3, 1, 1), 'decbn')), 2);
  const seg = cv(s, 'seg', C, 1, 1, 0, true);
  const c = relu(bn(cv(globalAvgPool(seg), 'cls1', CLS_HIDDEN, 1, 1, 0), 'clsbn'));
  return { mask: upsample(seg, MASK_UP), cls: cv(c, 'cls2', C, 1, 1, 0) };
}

// ---- The loss, in both: class-weighted pixel cross-entropy on the mask + cross-entropy on the class logits ----

interface Targets {
  readonly pixelLabels: Int32Array;
  readonly classWeights: Float64Array;
  readonly imageLabels: Int32Array;
}

function crossEntropy64(logits: Float64Array, at: number, label: number): number {
  let m = -Infinity;
  for (let k = 0; k < C; k++) m = Math.max(m, logits[at + k]);
  let z = 0;
  for (let k = 0; k < C; k++) z += Math.exp(logits[at + k] - m);
  return Math.log(z) + m - logits[at + label];
}

function loss64(p: Params, input: T64, t: Targets): number {
  const { mask, cls } = forward64(p, input);
  let seg = 0;
  for (let i = 0; i < t.pixelLabels.length; i++) seg += t.classWeights[t.pixelLabels[i]] * crossEntropy64(mask.d, i * C, t.pixelLabels[i]);
  let clsLoss = 0;
  for (let b = 0; b < BATCH; b++) clsLoss += crossEntropy64(cls.d, b * C, t.imageLabels[b]);
  return seg / t.pixelLabels.length + clsLoss / BATCH;
}

function lossTf(model: tf.LayersModel, input: tf.Tensor4D, t: Targets): tf.Scalar {
  const [mask, cls] = model.apply(input, { training: true }) as tf.Tensor[];
  const pixelOneHot = tf.oneHot(tf.tensor1d(t.pixelLabels, 'int32'), C).reshape(mask.shape);
  const pixelWeight = tf.tensor1d(Array.from(t.pixelLabels, (l) => t.classWeights[l])).reshape([BATCH, SIZE, SIZE]);
  const seg = tf.mean(tf.mul(tf.neg(tf.sum(tf.mul(pixelOneHot, tf.logSoftmax(mask)), -1)), pixelWeight));
  const clsLoss = tf.mean(tf.neg(tf.sum(tf.mul(tf.oneHot(tf.tensor1d(t.imageLabels, 'int32'), C), tf.logSoftmax(cls)), -1)));
  return tf.add(seg, clsLoss) as tf.Scalar;
}

before(async () => {
  assert.equal(await selectTfBackend(), 'wasm');
  registerWasmTrainingKernels();
});

it('whole backward pass of a small segmentation + classification model matches float64 finite differences', (t) => {
  const rand = rng(7);
  const model = buildSmallModel();
  // Random weights everywhere (BN gamma/beta and biases too), so no gradient is trivially zero or symmetric.
  const params: Params = new Map();
  const variables: { key: string; variable: tf.Variable }[] = [];
  for (const layer of model.layers) {
    const values = layer.getWeights().map((wt, i) => {
      const name = `${layer.name}/${layer.weights[i].originalName.split('/').pop()}`;
      const fanIn = wt.shape.length === 4 ? wt.shape[0] * wt.shape[1] * wt.shape[2] : 1;
      const v = Float32Array.from({ length: wt.size }, () => {
        if (name.endsWith('/kernel')) return gaussian(rand) * Math.sqrt(2 / fanIn);
        if (name.endsWith('/gamma') || name.endsWith('/moving_variance')) return 0.5 + rand();
        return 0.2 * (rand() - 0.5);
      });
      params.set(name, Float64Array.from(v));
      return tf.tensor(v, wt.shape);
    });
    if (values.length > 0) layer.setWeights(values);
    tf.dispose(values);
    for (const lw of layer.trainableWeights) {
      variables.push({ key: `${layer.name}/${lw.originalName.split('/').pop()}`, variable: lw.read() as tf.Variable });
    }
  }
  // 10 conv kernels, 1 bias, 8 batch norms x (gamma, beta).
  assert.equal(variables.length, 27, 'every trainable weight of the small model is checked');

  const inputData = Float32Array.from({ length: BATCH * SIZE * SIZE * 3 }, () => gaussian(rand));
  const pixelLabels = Int32Array.from({ length: BATCH * SIZE * SIZE }, () => Math.floor(rand() * C));
  const targets: Targets = {
    pixelLabels,
    classWeights: Float64Array.from({ length: C }, () => 0.5 + rand()),
    imageLabels: Int32Array.from({ length: BATCH }, () => Math.floor(rand() * C)),
  };
  const input64: T64 = { d: Float64Array.from(inputData), n: BATCH, h: SIZE, w: SIZE, c: 3 };

  const input = tf.tensor4d(inputData, [BATCH, SIZE, SIZE, 3]);
  const { value, grads } = tf.variableGrads(() => lossTf(model, input, targets), variables.map((v) => v.variable));
  const lossValue = value.dataSync()[0];
  const base = loss64(params, input64, targets);
  assert.ok(Math.abs(lossValue - base) < 1e-4 * Math.abs(base), `float32 loss ${lossValue} vs float64 ${base}`);

  let worst = { err: 0, key: '' };
  for (const { key, variable } of variables) {
    const g = grads[variable.name].dataSync() as Float32Array;
    const p = params.get(key)!;
    const analytic: number[] = [];
    const numeric: number[] = [];
    for (let dir = 0; dir < DIRECTIONS; dir++) {
      const d = Float64Array.from(p, () => gaussian(rand));
      const original = p.slice();
      p.set(original.map((v, i) => v + FD_STEP * d[i]));
      const plus = loss64(params, input64, targets);
      p.set(original.map((v, i) => v - FD_STEP * d[i]));
      const minus = loss64(params, input64, targets);
      p.set(original);
      numeric.push((plus - minus) / (2 * FD_STEP));
      analytic.push(g.reduce((s, gv, i) => s + gv * d[i], 0));
    }
    // Relative L2 over the directions: one unlucky near-zero directional derivative cannot dominate.
    const err = Math.hypot(...analytic.map((a, i) => a - numeric[i])) / Math.hypot(...numeric);
    if (!(err <= worst.err)) worst = { err, key };
  }
  t.diagnostic(`worst relative error ${worst.err.toExponential(2)} (${worst.key}) over ${variables.length} variables`);
  assert.ok(worst.err < MAX_REL_ERR, `worst relative error ${worst.err} at ${worst.key}`);
  tf.dispose([input, value, ...Object.values(grads)]);
  model.dispose();
});
