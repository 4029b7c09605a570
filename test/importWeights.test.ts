import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectTfBackend } from '../src/tf/backend.js';
import { buildSegClsModel, LAYER } from '../src/model/network/architecture.js';
import { encodeSafetensors, importTorchWeights, parseSafetensors } from '../src/model/network/importWeights.js';

before(async () => {
  assert.equal(await selectTfBackend(), 'wasm');
});

type Tensors = Record<string, { shape: number[]; data: Float32Array }>;

/** A torchvision-style state_dict for the model's encoder (+ heads), every element a distinct integer. */
function stateDict(model: tf.LayersModel, withHeads: boolean): Tensors {
  let next = 1;
  const out: Tensors = {};
  const add = (key: string, shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    out[key] = { shape, data: Float32Array.from({ length: n }, () => next++) };
  };
  for (const layer of model.layers) {
    const isHead = layer.name.startsWith('decoder.') || layer.name.startsWith('classifier.');
    if (isHead && !withHeads) continue;
    for (const v of layer.weights) {
      const short = v.originalName.split('/').pop();
      const s = v.shape as number[];
      if (short === 'kernel') add(`${layer.name}.weight`, [s[3], s[2], s[0], s[1]]);
      else if (short === 'bias' || short === 'beta') add(`${layer.name}.bias`, s);
      else if (short === 'gamma') add(`${layer.name}.weight`, s);
      else if (short === 'moving_mean') add(`${layer.name}.running_mean`, s);
      else if (short === 'moving_variance') add(`${layer.name}.running_var`, s);
    }
  }
  add('fc.weight', [1000, 512]);
  add('layer4.0.conv1.weight', [512, 256, 3, 3]);
  return out;
}

function weight(model: tf.LayersModel, layer: string, i = 0): Float32Array {
  return model.getLayer(layer).getWeights()[i].dataSync() as Float32Array;
}

test('conv weights go OIHW -> HWIO and BN params to gamma/beta/moving stats', () => {
  const model = buildSegClsModel({ numClasses: 4, seed: 1 });
  const sd = stateDict(model, false);
  const tensors = parseSafetensors(encodeSafetensors(sd));
  const report = importTorchWeights(model, tensors);
  assert.equal(report.layers.length, 30, '15 convs and 15 batch norms up to layer3');
  assert.deepEqual(report.ignored.sort(), ['fc.weight', 'layer4.0.conv1.weight']);
  assert.deepEqual(report.unused, []);

  for (const name of [LAYER.conv1, 'layer2.0.downsample.0', 'layer3.1.conv2']) {
    const src = sd[`${name}.weight`];
    const [O, I, KH, KW] = src.shape;
    const kernel = weight(model, name);
    let mismatches = 0;
    for (let o = 0; o < O; o++)
      for (let i = 0; i < I; i++)
        for (let kh = 0; kh < KH; kh++)
          for (let kw = 0; kw < KW; kw++) {
            if (kernel[((kh * KW + kw) * I + i) * O + o] !== src.data[((o * I + i) * KH + kh) * KW + kw]) mismatches++;
          }
    assert.equal(mismatches, 0, `${name}: weight[o][i][kh][kw] lands at kernel[kh][kw][i][o]`);
  }
  for (const bn of [LAYER.bn1, 'layer3.1.bn2', 'layer2.0.downsample.1']) {
    assert.deepEqual(weight(model, bn, 0), sd[`${bn}.weight`].data);
    assert.deepEqual(weight(model, bn, 1), sd[`${bn}.bias`].data);
    assert.deepEqual(weight(model, bn, 2), sd[`${bn}.running_mean`].data);
    assert.deepEqual(weight(model, bn, 3), sd[`${bn}.running_var`].data);
  }
  model.dispose();
});

test('heads load only when asked for; otherwise their keys are ignored', () => {
  const model = buildSegClsModel({ numClasses: 4, seed: 1 });
  const before = weight(model, LAYER.seg16, 1).slice();
  const sd = stateDict(model, true);
  const tensors = parseSafetensors(encodeSafetensors(sd));
  const skipped = importTorchWeights(model, tensors);
  assert.ok(skipped.ignored.includes('decoder.4.bias'));
  assert.deepEqual(weight(model, LAYER.seg16, 1), before);
  const loaded = importTorchWeights(model, tensors, { heads: true });
  assert.equal(loaded.layers.length, 36);
  assert.deepEqual(weight(model, LAYER.seg16, 1), sd['decoder.4.bias'].data);
  assert.deepEqual(weight(model, LAYER.classifierBn, 3), sd['classifier.2.running_var'].data);
  model.dispose();
});

test('a mis-shaped or missing tensor is an error naming its key, and nothing changes', () => {
  const model = buildSegClsModel({ numClasses: 4, seed: 1 });
  const original = weight(model, LAYER.conv1).slice();
  const sd = stateDict(model, false);
  sd['layer2.0.conv1.weight'] = { shape: [128, 64, 3, 1], data: new Float32Array(128 * 64 * 3) };
  assert.throws(
    () => importTorchWeights(model, parseSafetensors(encodeSafetensors(sd))),
    /tensor layer2\.0\.conv1\.weight has shape \[128,64,3,1\], expected \[128,64,3,3\]/,
  );
  assert.deepEqual(weight(model, LAYER.conv1), original, 'validation happens before any weight is set');

  const sd2 = stateDict(model, false);
  delete sd2['layer3.1.bn2.running_var'];
  assert.throws(() => importTorchWeights(model, parseSafetensors(encodeSafetensors(sd2))), /missing tensor layer3\.1\.bn2\.running_var/);
  model.dispose();
});

/** Raw safetensors bytes with arbitrary dtypes, as PyTorch writes them. */
function rawSafetensors(entries: { key: string; dtype: string; shape: number[]; bytes: Uint8Array }[]): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const e of entries) {
    header[e.key] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.bytes.length] };
    offset += e.bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const e of entries) {
    out.set(e.bytes, at);
    at += e.bytes.length;
  }
  return out;
}

test('parses F16 and BF16, and leaves integer tensors undecoded until read', () => {
  const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3800, 0x0001]).buffer); // 1, -2, 0.5, 2^-24
  const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0xc040]).buffer); // 1, -3
  const i64 = new Uint8Array(new BigInt64Array([7n]).buffer);
  const t = parseSafetensors(
    rawSafetensors([
      { key: 'h', dtype: 'F16', shape: [2, 2], bytes: f16 },
      { key: 'b', dtype: 'BF16', shape: [2], bytes: bf16 },
      { key: 'bn1.num_batches_tracked', dtype: 'I64', shape: [], bytes: i64 },
    ]),
  );
  assert.deepEqual([...t.get('h')!.data], [1, -2, 0.5, 2 ** -24]);
  assert.deepEqual([...t.get('b')!.data], [1, -3]);
  assert.deepEqual(t.get('bn1.num_batches_tracked')!.shape, []);
  assert.throws(() => t.get('bn1.num_batches_tracked')!.data, /bn1\.num_batches_tracked has dtype I64/);
});

test('rejects truncated files', () => {
  const bytes = encodeSafetensors({ w: { shape: [4], data: new Float32Array(4) } });
  assert.throws(() => parseSafetensors(bytes.subarray(0, bytes.length - 1)), /tensor w .* bad data offsets/);
  assert.throws(() => parseSafetensors(bytes.subarray(0, 5)), /shorter than/);
});
