import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { createEngine } from '../src/engine/createEngine.js';
import type { EngineKind } from '../src/engine/engine.js';
import { selectTfBackend } from '../src/engine/tfjsBackend.js';
import { buildSegClsModel } from '../src/model/architecture.js';
import { BACH_CLASSES } from '../src/model/constants.js';
import type { Manifest } from '../src/model/manifest.js';
import { resolveModel, saveModelVersion, type ModelEntry } from '../src/model/repository.js';

let root: string;
let entry: ModelEntry;

before(async () => {
  assert.equal(await selectTfBackend(), 'wasm');
  root = await mkdtemp(join(tmpdir(), 'histoseg-engine-'));
  const manifest: Manifest = {
    schema: 1,
    name: 'test-model',
    version: '1.0.0',
    architecture: 'resnet18-layer3-segcls',
    classes: BACH_CLASSES.map((c) => ({ ...c })),
    inputSize: 128,
    mpp: 7.5,
    trained: false,
    stainReference: null,
    createdAt: '2026-01-01T00:00:00Z',
    lineage: { parent: null, datasetHash: null, settings: {} },
    metrics: {},
    files: { tfjs: 'tfjs/model.json', onnx: 'model.onnx' },
  };
  const model = buildSegClsModel({ numClasses: 4, seed: 5 });
  await saveModelVersion(root, manifest, model);
  await assert.rejects(saveModelVersion(root, manifest, model), /already exists/);
  model.dispose();
  entry = await resolveModel(root);
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

test('saveModelVersion writes manifest, TF.js and ONNX files and no temporary folder', async () => {
  assert.deepEqual((await readdir(entry.dir)).sort(), ['manifest.json', 'model.onnx', 'tfjs']);
  assert.deepEqual((await readdir(join(entry.dir, 'tfjs'))).sort(), ['model.json', 'weights.bin']);
  assert.deepEqual(await readdir(join(root, 'test-model')), ['1.0.0']);
});

test('both engines load the saved version and agree', async () => {
  const [onnx, tfjs] = await Promise.all(
    (['onnx', 'tfjs'] as const).map((k) => createEngine(k, entry.dir, entry.manifest, { threads: 1 })),
  );
  try {
    assert.equal(onnx.name, 'onnx');
    assert.equal(tfjs.name, 'tfjs/wasm');
    const x = tf.randomUniform([1, 3, 128, 128], -2, 2, 'float32', 9);
    const data = x.dataSync() as Float32Array;
    x.dispose();
    const a = await onnx.run({ data, n: 1 });
    const b = await tfjs.run({ data, n: 1 });
    let num = 0;
    let den = 0;
    b.mask.forEach((v, i) => {
      num += (a.mask[i] - v) ** 2;
      den += v ** 2;
    });
    assert.ok(Math.sqrt(num / den) < 1e-4, `mask relative L2 ${Math.sqrt(num / den)}`);
    assert.equal(a.cls.length, 4);
  } finally {
    await onnx.dispose();
    await tfjs.dispose();
  }
});

test('an unknown engine kind fails loudly, listing the valid ones', async () => {
  await assert.rejects(
    createEngine('tensorrt' as EngineKind, entry.dir, entry.manifest, { threads: 1 }),
    /unknown engine "tensorrt"; valid engines: onnx, tfjs/,
  );
});

test('a manifest whose class count disagrees with the model is refused', async () => {
  const wrong = { ...entry.manifest, classes: entry.manifest.classes.slice(0, 3) };
  await assert.rejects(createEngine('tfjs', entry.dir, wrong, { threads: 1 }), /4 classes, the manifest says 3/);
});
