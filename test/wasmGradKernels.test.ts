import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { relativeL2 } from '../src/engine/engine.js';
import { selectTfBackend } from '../src/tf/backend.js';
import {
  conv2DBackpropFilterConfig,
  conv2DBackpropInputConfig,
  maxPoolGradConfig,
  meanConfig,
  meanGradConfig,
  ortConv2DBackpropFilterConfig,
  ortConv2DBackpropInputConfig,
  ortConv2DConfig,
  ortFusedConv2DConfig,
  registerWasmTrainingKernels,
  TRAINING_CONVS,
  sumConfig,
  tileConfig,
  unregisterWasmTrainingKernels,
} from '../src/tf/gradKernels/index.js';
import { nchwcBlockSize, ortConvSessions } from '../src/tf/ortConv/kernels.js';
import { rng } from './support/random.js';

type Pad = 'same' | 'valid' | number | tf.backend_util.ExplicitPadding;
type Shape4 = [number, number, number, number];

const MAX_REL_L2 = 1e-4;

function randomArray(size: number, rand: () => number, lo = -1, hi = 1): Float32Array {
  return Float32Array.from({ length: size }, () => lo + (hi - lo) * rand());
}

interface ConvCase {
  readonly x: Shape4;
  readonly k: [number, number];
  readonly co: number;
  readonly stride: number | [number, number];
  readonly pad: Pad;
}

function convInfo(c: ConvCase) {
  return tf.backend_util.computeConv2DInfo(c.x, [c.k[0], c.k[1], c.x[3], c.co], c.stride, 1, c.pad);
}

/** y[n,oh,ow,co] = sum x[n, oh*s - top + i, ow*s - left + j, ci] * w[i,j,ci,co]: the brute-force forward. */
function convTerms(c: ConvCase, visit: (xi: number, wi: number, yi: number) => void): void {
  const info = convInfo(c);
  const [n, h, w, ci] = c.x;
  const [kh, kw] = c.k;
  for (let b = 0; b < n; b++)
    for (let oy = 0; oy < info.outHeight; oy++)
      for (let ox = 0; ox < info.outWidth; ox++)
        for (let i = 0; i < kh; i++) {
          const iy = oy * info.strideHeight - info.padInfo.top + i;
          if (iy < 0 || iy >= h) continue;
          for (let j = 0; j < kw; j++) {
            const ix = ox * info.strideWidth - info.padInfo.left + j;
            if (ix < 0 || ix >= w) continue;
            for (let a = 0; a < ci; a++)
              for (let o = 0; o < c.co; o++) {
                visit(((b * h + iy) * w + ix) * ci + a, ((i * kw + j) * ci + a) * c.co + o, ((b * info.outHeight + oy) * info.outWidth + ox) * c.co + o);
              }
          }
        }
}

function refConv(c: ConvCase, x: Float32Array, w: Float32Array): Float64Array {
  const y = new Float64Array(tf.util.sizeFromShape(convInfo(c).outShape));
  convTerms(c, (xi, wi, yi) => (y[yi] += x[xi] * w[wi]));
  return y;
}

function refFilterGrad(c: ConvCase, x: Float32Array, dy: Float32Array): Float64Array {
  const dw = new Float64Array(c.k[0] * c.k[1] * c.x[3] * c.co);
  convTerms(c, (xi, wi, yi) => (dw[wi] += x[xi] * dy[yi]));
  return dw;
}

function refInputGrad(c: ConvCase, w: Float32Array, dy: Float32Array): Float64Array {
  const dx = new Float64Array(tf.util.sizeFromShape(c.x));
  convTerms(c, (xi, wi, yi) => (dx[xi] += w[wi] * dy[yi]));
  return dx;
}

/** Shapes as the paper's model has them (explicit zero padding + 'valid') and the generic cases, at odd sizes. */
const CONV_CASES: ConvCase[] = [];
for (const stride of [1, 2] as const) {
  for (const k of [[3, 3], [1, 1], [7, 7], [2, 3]] as [number, number][]) {
    for (const pad of ['same', 'valid'] as const) {
      CONV_CASES.push({ x: [2, 7, 9, 3], k, co: 5, stride, pad });
    }
  }
  CONV_CASES.push({ x: [3, 9, 9, 4], k: [3, 3], co: 6, stride, pad: 1 });
  CONV_CASES.push({ x: [2, 11, 8, 3], k: [7, 7], co: 4, stride, pad: 3 });
  CONV_CASES.push({ x: [2, 8, 7, 5], k: [3, 3], co: 3, stride, pad: [[0, 0], [0, 2], [1, 0], [0, 0]] });
  CONV_CASES.push({ x: [2, 10, 10, 6], k: [3, 3], co: 8, stride, pad: 'valid' }); // zeroPadding2d(1) + 'valid'
  // 16+ input channels: onnxruntime's filter gradient as one GEMM per filter tap (tf/ortConv/graphs.ts).
  for (const pad of ['same', 'valid', 1, [[0, 0], [0, 2], [1, 0], [0, 0]]] as Pad[]) {
    CONV_CASES.push({ x: [2, 9, 8, 17], k: [3, 3], co: 6, stride, pad });
  }
  CONV_CASES.push({ x: [2, 8, 8, 16], k: [1, 1], co: 12, stride, pad: 'valid' });
  // Channels in whole blocks of 16 (and so of 8): onnxruntime's NCHWc convs, forward and (stride 1) input gradient.
  for (const pad of ['same', 'valid', 1, [[0, 0], [0, 2], [1, 0], [0, 0]]] as Pad[]) {
    CONV_CASES.push({ x: [2, 9, 8, 16], k: [3, 3], co: 32, stride, pad });
  }
  CONV_CASES.push({ x: [2, 8, 7, 32], k: [1, 1], co: 16, stride, pad: 'valid' });
  CONV_CASES.push({ x: [2, 6, 6, 16], k: [1, 1], co: 16, stride, pad: 1 }); // padding past the filter: dx not NCHWc
  CONV_CASES.push({ x: [2, 12, 11, 3], k: [7, 7], co: 16, stride, pad: 3 }); // the stem: input read as NCHW
}
CONV_CASES.push({ x: [2, 7, 9, 3], k: [3, 3], co: 5, stride: [2, 1], pad: 'same' });
CONV_CASES.push({ x: [1, 16, 16, 8], k: [1, 1], co: 16, stride: 2, pad: 'valid' }); // the downsample shortcut
CONV_CASES.push({ x: [2, 5, 6, 3], k: [3, 3], co: 2, stride: 3, pad: 'same' });

const label = (c: ConvCase) => `x ${c.x.join('x')} k ${c.k.join('x')} co ${c.co} stride ${c.stride} pad ${JSON.stringify(c.pad)}`;

function runKernel(name: string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap): tf.Tensor {
  return tf.engine().runKernel(name, inputs, attrs) as tf.Tensor;
}

/** The backend's live buffers: a kernel must leave none behind besides its output. */
function liveDataIds(): number {
  return tf.engine().backend.numDataIds();
}

before(async () => {
  assert.equal(await selectTfBackend(), 'wasm');
  registerWasmTrainingKernels();
});

describe('wasm gradient kernels', () => {
  it('registers idempotently, switches conv modes and restores the native kernels', () => {
    registerWasmTrainingKernels();
    registerWasmTrainingKernels();
    for (const config of [conv2DBackpropFilterConfig, maxPoolGradConfig, conv2DBackpropInputConfig, tileConfig, sumConfig, meanConfig]) {
      const expected = config === conv2DBackpropFilterConfig ? ortConv2DBackpropFilterConfig : config === conv2DBackpropInputConfig ? ortConv2DBackpropInputConfig : config;
      assert.equal(tf.getKernel(config.kernelName, 'wasm')?.kernelFunc, expected.kernelFunc, config.kernelName);
    }
    assert.equal(tf.getKernel(tf.Conv2D, 'wasm')?.kernelFunc, ortConv2DConfig.kernelFunc);
    assert.equal(tf.getKernel(tf.FusedConv2D, 'wasm')?.kernelFunc, ortFusedConv2DConfig.kernelFunc);
    registerWasmTrainingKernels({ convs: 'wasm' });
    assert.equal(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm')?.kernelFunc, conv2DBackpropFilterConfig.kernelFunc);
    assert.equal(tf.getKernel(tf.Conv2DBackpropInput, 'wasm')?.kernelFunc, conv2DBackpropInputConfig.kernelFunc);
    assert.notEqual(tf.getKernel(tf.Conv2D, 'wasm')?.kernelFunc, ortConv2DConfig.kernelFunc, 'wasm Conv2D restored');
    assert.notEqual(tf.getKernel(tf.FusedConv2D, 'wasm')?.kernelFunc, ortFusedConv2DConfig.kernelFunc, 'wasm FusedConv2D restored');
    unregisterWasmTrainingKernels();
    assert.equal(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm'), undefined, 'wasm has no native Conv2DBackpropFilter');
    assert.notEqual(tf.getKernel(tf.MaxPoolGrad, 'wasm')?.kernelFunc, maxPoolGradConfig.kernelFunc);
    assert.ok(tf.getKernel(tf.Conv2DBackpropInput, 'wasm'), 'native Conv2DBackpropInput restored');
    registerWasmTrainingKernels({ replaceNative: false });
    assert.equal(tf.getKernel(tf.Conv2DBackpropFilter, 'wasm')?.kernelFunc, conv2DBackpropFilterConfig.kernelFunc);
    assert.notEqual(tf.getKernel(tf.Conv2DBackpropInput, 'wasm')?.kernelFunc, conv2DBackpropInputConfig.kernelFunc);
    assert.notEqual(tf.getKernel(tf.Conv2D, 'wasm')?.kernelFunc, ortConv2DConfig.kernelFunc);
    registerWasmTrainingKernels();
    assert.equal(tf.getKernel(tf.Conv2DBackpropInput, 'wasm')?.kernelFunc, ortConv2DBackpropInputConfig.kernelFunc);
  });
});

for (const convs of TRAINING_CONVS) {
  describe(`conv kernels, convs on ${convs}`, () => {
    before(() => registerWasmTrainingKernels({ convs }));

    it('brute-force conv reference matches wasm Conv2D (pins the padding convention)', () => {
      const rand = rng(1);
      for (const c of CONV_CASES) {
        const x = randomArray(tf.util.sizeFromShape(c.x), rand);
        const w = randomArray(c.k[0] * c.k[1] * c.x[3] * c.co, rand);
        const y = tf.tidy(() => tf.conv2d(tf.tensor4d(x, c.x), tf.tensor4d(w, [c.k[0], c.k[1], c.x[3], c.co]), c.stride, c.pad).dataSync());
        assert.ok(relativeL2(y, refConv(c, x, w)) < MAX_REL_L2, label(c));
      }
      });

      it('Conv2DBackpropFilter matches brute force', () => {
      const rand = rng(2);
      for (const c of CONV_CASES) {
        const info = convInfo(c);
        const x = randomArray(tf.util.sizeFromShape(c.x), rand);
        const dy = randomArray(tf.util.sizeFromShape(info.outShape), rand);
        const [xt, dyt] = [tf.tensor4d(x, c.x), tf.tensor(dy, info.outShape)];
        const live = liveDataIds();
        const dw = runKernel(tf.Conv2DBackpropFilter, { x: xt, dy: dyt }, {
          strides: c.stride,
          pad: c.pad,
          dataFormat: 'NHWC',
          filterShape: [c.k[0], c.k[1], c.x[3], c.co],
        });
        assert.equal(liveDataIds(), live + 1, `leaked buffers: ${label(c)}`);
        assert.deepEqual(dw.shape, [c.k[0], c.k[1], c.x[3], c.co]);
        const err = relativeL2(dw.dataSync(), refFilterGrad(c, x, dy));
        assert.ok(err < MAX_REL_L2, `${label(c)}: rel L2 ${err}`);
        tf.dispose([xt, dyt, dw]);
      }
      });

      it('Conv2DBackpropInput matches brute force', () => {
      const rand = rng(3);
      for (const c of CONV_CASES) {
        const info = convInfo(c);
        const w = randomArray(c.k[0] * c.k[1] * c.x[3] * c.co, rand);
        const dy = randomArray(tf.util.sizeFromShape(info.outShape), rand);
        const [wt, dyt] = [tf.tensor4d(w, [c.k[0], c.k[1], c.x[3], c.co]), tf.tensor(dy, info.outShape)];
        const live = liveDataIds();
        const dx = runKernel(tf.Conv2DBackpropInput, { dy: dyt, filter: wt }, {
          strides: c.stride,
          pad: c.pad,
          dataFormat: 'NHWC',
          inputShape: c.x,
        });
        assert.equal(liveDataIds(), live + 1, `leaked buffers: ${label(c)}`);
        assert.deepEqual(dx.shape, c.x);
        const err = relativeL2(dx.dataSync(), refInputGrad(c, w, dy));
        assert.ok(err < MAX_REL_L2, `${label(c)}: rel L2 ${err}`);
        tf.dispose([wt, dyt, dx]);
      }
      });

      it('conv gradients through tf.grad match brute force (batch > 1)', () => {
      const rand = rng(4);
      const c: ConvCase = { x: [3, 9, 7, 4], k: [3, 3], co: 5, stride: 2, pad: 'valid' };
      const info = convInfo(c);
      const x = randomArray(tf.util.sizeFromShape(c.x), rand);
      const w = randomArray(c.k[0] * c.k[1] * c.x[3] * c.co, rand);
      const dy = randomArray(tf.util.sizeFromShape(info.outShape), rand);
      const [gx, gw] = tf.tidy(() => {
        const f = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad);
        return tf.grads(f)([tf.tensor4d(x, c.x), tf.tensor4d(w, [3, 3, 4, 5])], tf.tensor(dy, info.outShape)).map((g) => g.dataSync());
      });
      assert.ok(relativeL2(gx, refInputGrad(c, w, dy)) < MAX_REL_L2);
      assert.ok(relativeL2(gw, refFilterGrad(c, x, dy)) < MAX_REL_L2);
      });

      it('Conv2D and FusedConv2D (bias, relu) match brute force', () => {
        const rand = rng(6);
        for (const c of CONV_CASES) {
          const x = randomArray(tf.util.sizeFromShape(c.x), rand);
          const w = randomArray(c.k[0] * c.k[1] * c.x[3] * c.co, rand);
          const bias = randomArray(c.co, rand);
          const ref = refConv(c, x, w);
          const [xt, wt, bt] = [tf.tensor4d(x, c.x), tf.tensor4d(w, [c.k[0], c.k[1], c.x[3], c.co]), tf.tensor1d(bias)];
          const live = liveDataIds();
          const y = tf.conv2d(xt, wt, c.stride, c.pad);
          assert.equal(liveDataIds(), live + 1, `leaked buffers: ${label(c)}`);
          assert.ok(relativeL2(y.dataSync(), ref) < MAX_REL_L2, label(c));
          const fused = tf.fused.conv2d({ x: xt, filter: wt, strides: c.stride, pad: c.pad, bias: bt, activation: 'relu' });
          const expected = ref.map((v, i) => Math.max(0, v + bias[i % c.co]!));
          assert.ok(relativeL2(fused.dataSync(), expected) < MAX_REL_L2, `fused ${label(c)}`);
          tf.dispose([xt, wt, bt, y, fused]);
        }
      });
  });
}

describe('onnxruntime convs', () => {
  before(() => registerWasmTrainingKernels());

  it('find the NCHWc conv block on x64 (the cases above with 16 or 32 channels ran on it)', () => {
    const block = nchwcBlockSize();
    if (process.arch === 'x64') assert.ok(block === 8 || block === 16, `block ${block}`);
  });

  it('build one session per conv geometry, whatever the batch size', () => {
    const w = tf.randomNormal([3, 3, 4, 6]) as tf.Tensor4D;
    tf.tidy(() => tf.conv2d(tf.randomNormal([1, 9, 9, 4]) as tf.Tensor4D, w, 2, 'same').dataSync());
    const sessions = ortConvSessions();
    for (const n of [2, 5, 20]) tf.tidy(() => tf.conv2d(tf.randomNormal([n, 9, 9, 4]) as tf.Tensor4D, w, 2, 'same').dataSync());
    assert.equal(ortConvSessions(), sessions);
    w.dispose();
  });

  it('delegates what its graphs do not cover (an elu activation) to the wasm kernel', () => {
    const [x, w] = [tf.randomNormal([2, 6, 6, 3]) as tf.Tensor4D, tf.randomNormal([3, 3, 3, 4]) as tf.Tensor4D];
    const y = tf.fused.conv2d({ x, filter: w, strides: 1, pad: 'same', activation: 'elu' });
    const expected = tf.elu(tf.conv2d(x, w, 1, 'same'));
    assert.ok(relativeL2(y.dataSync(), expected.dataSync()) < MAX_REL_L2);
    tf.dispose([x, w, y, expected]);
  });
});

interface PoolCase {
  readonly x: Shape4;
  readonly size: [number, number];
  readonly stride: number;
  readonly pad: Pad;
}

/** dx of max pooling: each window's dy goes to its first maximum in row-major order; padding never wins. */
function refMaxPoolGrad(c: PoolCase, x: Float32Array, dy: Float32Array): Float64Array {
  const info = tf.backend_util.computePool2DInfo(c.x, c.size, c.stride, 1, c.pad);
  const [n, h, w, ch] = c.x;
  const dx = new Float64Array(x.length);
  for (let b = 0; b < n; b++)
    for (let oy = 0; oy < info.outHeight; oy++)
      for (let ox = 0; ox < info.outWidth; ox++)
        for (let k = 0; k < ch; k++) {
          let best = -Infinity;
          let at = -1;
          for (let i = 0; i < c.size[0]; i++)
            for (let j = 0; j < c.size[1]; j++) {
              const iy = oy * c.stride - info.padInfo.top + i;
              const ix = ox * c.stride - info.padInfo.left + j;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              const idx = ((b * h + iy) * w + ix) * ch + k;
              if (x[idx] > best) {
                best = x[idx];
                at = idx;
              }
            }
          if (at >= 0) dx[at] += dy[((b * info.outHeight + oy) * info.outWidth + ox) * ch + k];
        }
  return dx;
}

describe('wasm MaxPoolGrad', () => {
  const cases: PoolCase[] = [];
  for (const stride of [1, 2]) {
    for (const pad of ['same', 'valid'] as const) {
      cases.push({ x: [2, 7, 9, 3], size: [3, 3], stride, pad });
      cases.push({ x: [3, 8, 8, 5], size: [2, 2], stride, pad });
    }
  }
  cases.push({ x: [2, 9, 9, 4], size: [3, 3], stride: 2, pad: 1 });

  const inputs: { name: string; values: (size: number, rand: () => number) => Float32Array }[] = [
    { name: 'random', values: (size, rand) => randomArray(size, rand) },
    { name: 'all negative', values: (size, rand) => randomArray(size, rand, -3, -0.5) },
    // Few distinct values, zeros included: windows with ties and with only zeros and negatives.
    { name: 'ties', values: (size, rand) => Float32Array.from({ length: size }, () => Math.floor(rand() * 3) - 2) },
  ];

  for (const input of inputs) {
    it(`matches brute force on ${input.name} inputs`, () => {
      const rand = rng(5);
      for (const c of cases) {
        const x = input.values(tf.util.sizeFromShape(c.x), rand);
        const xt = tf.tensor4d(x, c.x);
        const y = tf.maxPool(xt, c.size, c.stride, c.pad);
        const dy = randomArray(y.size, rand, 0.5, 1.5);
        const dyt = tf.tensor(dy, y.shape);
        const dx = runKernel(tf.MaxPoolGrad, { dy: dyt, input: xt, output: y }, { filterSize: c.size, strides: c.stride, pad: c.pad });
        const expected = refMaxPoolGrad(c, x, dy);
        const err = relativeL2(dx.dataSync(), expected);
        assert.ok(err < MAX_REL_L2, `${input.name} x ${c.x.join('x')} pool ${c.size} stride ${c.stride} pad ${c.pad}: rel L2 ${err}`);
        // Every window routes its gradient somewhere: nothing is lost, whatever the sign.
        const total = dy.reduce((a, v) => a + v, 0);
        assert.ok(Math.abs(dx.sum().dataSync()[0] - total) < 1e-3 * total);
        tf.dispose([xt, y, dyt, dx]);
      }
    });
  }
});

describe('wasm Identity and Slice', () => {
  it('Identity shares the buffer, and it lives until the last holder disposes it', () => {
    registerWasmTrainingKernels();
    const x = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
    const live = liveDataIds();
    const y = tf.engine().runKernel(tf.Identity, { x }) as tf.Tensor;
    assert.equal(liveDataIds(), live, 'no new buffer');
    x.dispose();
    assert.deepEqual(Array.from(y.dataSync()), [1, 2, 3, 4, 5, 6]);
    const z = y.add(1);
    y.dispose();
    assert.equal(liveDataIds(), live, 'the buffer is freed with its last holder (z took its own)');
    z.dispose();
  });

  it('Slice matches brute force for every rank, whole and cut inner dims', () => {
    const rand = rng(8);
    const cases: { shape: number[]; begin: number[]; size: number[] }[] = [
      { shape: [7], begin: [2], size: [4] },
      { shape: [4, 5], begin: [1, 0], size: [2, 5] },
      { shape: [4, 5], begin: [1, 2], size: [3, -1] },
      { shape: [2, 6, 6, 3], begin: [0, 1, 1, 0], size: [2, 4, 4, 3] }, // zero padding's gradient
      { shape: [2, 6, 6, 3], begin: [1, 0, 0, 0], size: [1, 6, 6, 3] },
      { shape: [2, 6, 6, 3], begin: [0, 2, 0, 1], size: [2, 3, 6, 2] },
      { shape: [3, 2, 4, 5, 2], begin: [1, 0, 1, 2, 0], size: [2, 2, 2, 3, 2] },
    ];
    for (const c of cases) {
      for (const dtype of ['float32', 'int32'] as const) {
        const values = Array.from({ length: tf.util.sizeFromShape(c.shape) }, () => Math.floor(rand() * 1000) - 500);
        const x = tf.tensor(values, c.shape, dtype);
        const got = tf.slice(x, c.begin, c.size);
        const size = c.size.map((v, i) => (v === -1 ? c.shape[i]! - c.begin[i]! : v));
        assert.deepEqual(got.shape, size);
        assert.equal(got.dtype, dtype);
        const strides = tf.util.computeStrides(c.shape);
        const expected = Array.from({ length: tf.util.sizeFromShape(size) }, (_, o) => {
          let rest = o;
          let at = 0;
          for (let d = size.length - 1; d >= 0; d--) {
            const i = rest % size[d]!;
            rest = Math.floor(rest / size[d]!);
            at += (c.begin[d]! + i) * (d === c.shape.length - 1 ? 1 : strides[d]!);
          }
          return values[at];
        });
        assert.deepEqual(Array.from(got.dataSync()), expected, JSON.stringify(c));
        tf.dispose([x, got]);
      }
    }
  });
});

describe('wasm Tile, Sum and Mean', () => {
  it("Mean's gradient (dy / n broadcast) equals TF.js's own, and unregistering puts TF.js's back", () => {
    const rand = rng(9);
    const x = tf.tensor4d(randomArray(2 * 5 * 4 * 3, rand), [2, 5, 4, 3]);
    const cases: (number | number[] | undefined)[] = [[0, 1, 2], 1, [1, 3], undefined];
    const grads = () =>
      cases.map((axis) => tf.tidy(() => tf.grad((t: tf.Tensor) => tf.mul(tf.mean(t, axis), tf.range(1, 1 + tf.mean(t, axis).size).reshape(tf.mean(t, axis).shape)).sum())(x).dataSync()));
    registerWasmTrainingKernels();
    const ours = grads();
    unregisterWasmTrainingKernels();
    assert.notEqual(tf.getGradient(tf.Mean), meanGradConfig, "TF.js's gradient restored");
    const theirs = grads();
    registerWasmTrainingKernels();
    assert.equal(tf.getGradient(tf.Mean), meanGradConfig);
    ours.forEach((g, i) => assert.deepEqual(Array.from(g), Array.from(theirs[i]!), `axis ${JSON.stringify(cases[i])}`));
    x.dispose();
  });

  it('Tile matches brute force for every dtype and rank', () => {
    const rand = rng(6);
    const cases: { shape: number[]; reps: number[] }[] = [
      { shape: [1, 1, 1, 5], reps: [3, 7, 9, 1] }, // batch norm's gradient
      { shape: [2, 3, 4], reps: [2, 1, 3] },
      { shape: [3, 1, 2, 2], reps: [1, 4, 1, 3] },
      { shape: [5], reps: [4] },
      { shape: [2, 2], reps: [1, 1] },
      { shape: [2, 0, 3], reps: [2, 2, 2] },
    ];
    for (const dtype of ['float32', 'int32', 'bool'] as const) {
      for (const c of cases) {
        const size = tf.util.sizeFromShape(c.shape);
        const values = Array.from({ length: size }, () => (dtype === 'float32' ? rand() : Math.floor(rand() * (dtype === 'bool' ? 2 : 100))));
        const x = tf.tensor(values, c.shape, dtype);
        const y = tf.tile(x, c.reps);
        const outShape = c.shape.map((d, i) => d * c.reps[i]);
        assert.deepEqual(y.shape, outShape);
        const got = y.dataSync();
        const xStrides = tf.util.computeStrides(c.shape);
        for (let i = 0; i < got.length; i++) {
          const idx = tf.util.indexToLoc(i, outShape.length, tf.util.computeStrides(outShape));
          const src = idx.reduce((a, v, d) => a + (v % c.shape[d]) * (d < xStrides.length ? xStrides[d] : 1), 0);
          assert.equal(got[i], dtype === 'float32' ? Math.fround(values[src]) : values[src], `${dtype} ${c.shape} x ${c.reps} at ${i}`);
        }
        tf.dispose([x, y]);
      }
    }
  });

  const reduceCases: { shape: number[]; axis: number | number[]; keepDims: boolean }[] = [
    { shape: [3, 7, 9, 5], axis: [0, 1, 2], keepDims: false }, // batch norm statistics
    { shape: [3, 7, 9, 5], axis: [2, 0, 1], keepDims: true },
    { shape: [4, 6], axis: 0, keepDims: false },
    { shape: [4, 6, 2], axis: [0, 1, 2], keepDims: false },
    { shape: [1, 1, 8, 3], axis: [0, 1, 2], keepDims: true },
    { shape: [3, 7, 9, 5], axis: -1, keepDims: false }, // trailing: native path
    { shape: [3, 7, 9, 5], axis: [1, 2], keepDims: true }, // not leading: native path
  ];
  for (const op of ['sum', 'mean'] as const) {
    it(`${op} matches brute force over leading and other axes`, () => {
      const rand = rng(op === 'sum' ? 8 : 9);
      for (const c of reduceCases) {
        const values = randomArray(tf.util.sizeFromShape(c.shape), rand, 0, 2);
        const x = tf.tensor(values, c.shape);
        const live = liveDataIds();
        const y = op === 'sum' ? tf.sum(x, c.axis, c.keepDims) : tf.mean(x, c.axis, c.keepDims);
        assert.equal(liveDataIds(), live + 1, `leaked buffers: ${c.shape} axis ${c.axis}`);
        const axes = tf.util.parseAxisParam(c.axis, c.shape);
        const outShape = c.keepDims ? c.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : c.shape.filter((_, i) => !axes.includes(i));
        assert.deepEqual(y.shape, outShape);
        const expected = new Float64Array(tf.util.sizeFromShape(outShape));
        const strides = tf.util.computeStrides(c.shape);
        const keptShape = c.shape.map((d, i) => (axes.includes(i) ? 1 : d));
        const keptStrides = tf.util.computeStrides(keptShape);
        const count = axes.reduce((a, i) => a * c.shape[i], 1);
        for (let i = 0; i < values.length; i++) {
          const loc = tf.util.indexToLoc(i, c.shape.length, strides).map((v, d) => (axes.includes(d) ? 0 : v));
          const at = keptStrides.length === 0 ? 0 : tf.util.locToIndex(loc, keptShape.length, keptStrides);
          expected[at] += op === 'sum' ? values[i] : values[i] / count;
        }
        const err = relativeL2(y.dataSync(), expected);
        assert.ok(err < MAX_REL_L2, `${op} ${c.shape} axis ${c.axis}: rel L2 ${err}`);
        tf.dispose([x, y]);
      }
    });
  }

  it('sum of int32 keeps its dtype and exact value', () => {
    const x = tf.tensor([[1, 2], [3, 4], [5, 6]], [3, 2], 'int32');
    const y = tf.sum(x, 0);
    assert.equal(y.dtype, 'int32');
    assert.deepEqual(Array.from(y.dataSync()), [9, 12]);
    tf.dispose([x, y]);
  });
});
