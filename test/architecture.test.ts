import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectTfBackend } from '../src/tf/backend.js';
import { buildSegClsModel, ENCODER_BLOCKS, LAYER, modelNumClasses } from '../src/model/network/architecture.js';

before(async () => {
  assert.equal(await selectTfBackend(), 'wasm');
});

test('parameter count matches torchvision ResNet-18 to layer3 + decoder + classifier (C=4)', () => {
  const model = buildSegClsModel({ numClasses: 4, seed: 1 });
  const trainable = model.trainableWeights.reduce((sum, w) => sum + w.shape.reduce<number>((a, b) => a * (b ?? 0), 1), 0);
  // ResNet-18 to layer3: 2,782,784; decoder 147,456 + 128 + 260; classifier 32 + 16 + 32 (= PyTorch parameters()).
  assert.equal(trainable, 2_930_708);
  // Plus BN moving mean/variance (PyTorch buffers): 2 x (2240 encoder + 64 + 8) channels.
  assert.equal(model.countParams(), 2_935_332);
  model.dispose();
});

test('outputs are mask [N,128,128,C] and cls [N,C]; seg16 is reachable by name', () => {
  const model = buildSegClsModel({ numClasses: 5 });
  assert.deepEqual(model.outputs[0].shape, [null, 128, 128, 5]);
  assert.deepEqual(model.outputs[1].shape, [null, 5]);
  assert.deepEqual(model.getLayer(LAYER.seg16).outputShape, [null, 16, 16, 5]);
  assert.equal(modelNumClasses(model), 5);
  const [mask, cls] = model.predict(tf.zeros([2, 128, 128, 3])) as tf.Tensor[];
  assert.deepEqual(mask.shape, [2, 128, 128, 5]);
  assert.deepEqual(cls.shape, [2, 5]);
  tf.dispose([mask, cls]);
  model.dispose();
});

test('layers carry torchvision names and shapes, with symmetric padding and no conv biases', () => {
  const model = buildSegClsModel({ numClasses: 4 });
  const kernel = (name: string) => model.getLayer(name).getWeights()[0].shape;
  assert.deepEqual(kernel(LAYER.conv1), [7, 7, 3, 64]);
  assert.deepEqual(kernel('layer2.0.downsample.0'), [1, 1, 64, 128]);
  assert.deepEqual(kernel('layer3.1.conv2'), [3, 3, 256, 256]);
  assert.deepEqual(kernel(LAYER.classifierConv1), [1, 1, 4, 8]);
  assert.deepEqual(model.getLayer('conv1.pad').getConfig().padding, [[3, 3], [3, 3]]);
  assert.deepEqual(model.getLayer('maxpool.pad').getConfig().padding, [[1, 1], [1, 1]]);
  assert.deepEqual(model.getLayer('layer2.0.conv1.pad').getConfig().padding, [[1, 1], [1, 1]]);
  for (const b of ENCODER_BLOCKS) assert.equal(model.getLayer(`${b.name}.conv1`).getWeights().length, 1);
  assert.equal(model.getLayer(LAYER.seg16).getWeights().length, 2, 'seg16 conv has a bias');
  const bn = model.getLayer('layer1.0.bn1').getConfig();
  assert.equal(bn.epsilon, 1e-5);
  assert.equal(bn.momentum, 0.9);
  assert.deepEqual(model.getLayer('layer3.1.relu2').outputShape, [null, 8, 8, 256]);
  model.dispose();
});

test('a seed makes the weights reproducible', () => {
  const a = buildSegClsModel({ numClasses: 4, seed: 7 });
  const b = buildSegClsModel({ numClasses: 4, seed: 7 });
  const c = buildSegClsModel({ numClasses: 4, seed: 8 });
  const w = (m: tf.LayersModel) => m.getLayer('layer2.1.conv2').getWeights()[0].dataSync();
  assert.deepEqual(w(a), w(b));
  assert.notDeepEqual(w(a), w(c));
  [a, b, c].forEach((m) => m.dispose());
});

test('rejects fewer than 2 classes', () => {
  assert.throws(() => buildSegClsModel({ numClasses: 1 }), /numClasses/);
});
