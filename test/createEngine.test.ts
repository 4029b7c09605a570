import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { createEngine } from '../src/engine/createEngine.js';
import { relativeL2, type EngineKind } from '../src/engine/engine.js';
import { selectTfBackend } from '../src/tf/backend.js';
import { buildSegClsModel } from '../src/model/network/architecture.js';
import { BACH_CLASSES } from '../src/util/constants.js';
import { resolveModel, saveModelVersion, type ModelEntry } from '../src/model/repository.js';
import { testManifest } from './support/manifest.js';

let root: string;
let entry: ModelEntry;

before(async () => {
  assert.equal(await selectTfBackend(), 'wasm');
  root = await mkdtemp(join(tmpdir(), 'histoseg-engine-'));
  const manifest = testManifest({ classes: BACH_CLASSES.map((c) => ({ ...c })) });
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
    const err = relativeL2(a.mask, b.mask);
    assert.ok(err < 1e-4, `mask relative L2 ${err}`);
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
