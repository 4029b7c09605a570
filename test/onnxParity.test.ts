import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import onnxProto from 'onnx-proto';
import { relativeL2 } from '../src/engine/engine.js';
import { OnnxEngine } from '../src/engine/onnxEngine.js';
import { selectTfBackend } from '../src/tf/backend.js';
import { TfjsEngine } from '../src/engine/tfjsEngine.js';
import { buildSegClsModel } from '../src/model/network/architecture.js';
import { exportOnnx } from '../src/model/network/onnxExport.js';

const C = 4;

before(async () => {
  assert.equal(await selectTfBackend(), 'wasm');
});

/** Non-trivial BN statistics, as the PyTorch reference's randomize_bn: otherwise folding is trivially right. */
function randomizeBatchNorm(model: tf.LayersModel, seed: number): void {
  let s = seed;
  for (const layer of model.layers.filter((l) => l.getClassName() === 'BatchNormalization')) {
    const n = layer.getWeights()[0].shape[0];
    const gamma = tf.add(1, tf.mul(0.1, tf.randomNormal([n], 0, 1, 'float32', s++)));
    const beta = tf.mul(0.1, tf.randomNormal([n], 0, 1, 'float32', s++));
    const mean = tf.mul(0.1, tf.randomNormal([n], 0, 1, 'float32', s++));
    const variance = tf.add(1, tf.mul(0.1, tf.randomUniform([n], 0, 1, 'float32', s++)));
    layer.setWeights([gamma, beta, mean, variance]);
    tf.dispose([gamma, beta, mean, variance]);
  }
}

test('ONNX export (BN folded) matches TF.js on a random batch of 2', async (t) => {
  const model = buildSegClsModel({ numClasses: C, seed: 3 });
  randomizeBatchNorm(model, 100);
  const bytes = exportOnnx(model, C);

  const graph = onnxProto.onnx.ModelProto.decode(bytes).graph!;
  const ops = new Set(graph.node!.map((n) => n.opType));
  assert.ok(!ops.has('BatchNormalization'), 'every batch norm is folded');
  assert.deepEqual(graph.input!.map((i) => i.name), ['input']);
  assert.deepEqual(graph.output!.map((o) => o.name), ['mask', 'cls', 'seg16']);
  assert.equal(graph.input![0].type!.tensorType!.shape!.dim![0].dimParam, 'N', 'dynamic batch');

  const onnxEngine = await OnnxEngine.create(bytes, C, { intraOpNumThreads: 1 });
  const tfjsEngine = TfjsEngine.fromModel(model, C);
  const n = 2;
  const x = tf.randomNormal([n, 3, 128, 128], 0, 1, 'float32', 123);
  const data = x.dataSync() as Float32Array;
  x.dispose();
  try {
    const ref = await tfjsEngine.run({ data, n });
    const got = await onnxEngine.run({ data, n });
    assert.equal(got.mask.length, n * C * 128 * 128);
    assert.equal(got.cls.length, n * C);
    const maskErr = relativeL2(got.mask, ref.mask);
    const clsErr = relativeL2(got.cls, ref.cls);
    t.diagnostic(`relative L2: mask ${maskErr.toExponential(2)}, cls ${clsErr.toExponential(2)}`);
    assert.ok(maskErr < 1e-4, `mask relative L2 ${maskErr}`);
    assert.ok(clsErr < 1e-4, `cls relative L2 ${clsErr}`);

    // The batch axis is dynamic: one tile alone gives the first tile's results.
    const one = await onnxEngine.run({ data: data.subarray(0, 3 * 128 * 128), n: 1 });
    assert.ok(relativeL2(one.mask, got.mask.subarray(0, C * 128 * 128)) < 1e-5);
  } finally {
    await onnxEngine.dispose();
    await tfjsEngine.dispose();
  }
});

test('engines reject a batch whose size does not match its data', async () => {
  const model = buildSegClsModel({ numClasses: C });
  const engine = TfjsEngine.fromModel(model, C);
  await assert.rejects(engine.run({ data: new Float32Array(10), n: 1 }), /need 49152 floats/);
  await engine.dispose();
});
