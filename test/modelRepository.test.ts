import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { writeManifest, type Manifest } from '../src/model/manifest.js';
import {
  compareVersions,
  InvalidModelRefError,
  listModels,
  ModelNotFoundError,
  modelFilePath,
  resolveModel,
} from '../src/model/repository.js';
import { testManifest } from './support/manifest.js';

let root: string;

const manifest = (name: string, version: string): Manifest => testManifest({ name, version });

async function addVersion(r: string, name: string, version: string, m = manifest(name, version)): Promise<void> {
  await mkdir(join(r, name, version), { recursive: true });
  await writeManifest(join(r, name, version, 'manifest.json'), m);
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'histoseg-repo-'));
  const models = join(root, 'models');
  for (const v of ['0.9.0', '0.10.0', '0.10.0-rc.1']) await addVersion(models, 'alpha', v);
  await addVersion(models, 'beta', '1.0.0');
  await mkdir(join(models, 'gamma', '1.0.0'), { recursive: true }); // no manifest: not a version
  await mkdir(join(models, '.hidden', '1.0.0'), { recursive: true });
  // A model outside the repository that traversal would reach.
  await addVersion(root, 'outside', '1.0.0');
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

test('versions sort naturally, pre-releases before their release', () => {
  assert.ok(compareVersions('0.10.0', '0.9.0') > 0);
  assert.ok(compareVersions('1.0.0-rc.1', '1.0.0') < 0);
  assert.ok(compareVersions('1.0.0-rc.2', '1.0.0-rc.10') < 0);
  assert.equal(compareVersions('2.0.0', '2.0.0'), 0);
});

test('listModels finds versions with a manifest, sorted', async () => {
  const entries = await listModels(join(root, 'models'));
  assert.deepEqual(
    entries.map((e) => `${e.name}@${e.version}`),
    ['alpha@0.9.0', 'alpha@0.10.0-rc.1', 'alpha@0.10.0', 'beta@1.0.0'],
  );
});

test('resolves the newest version, an exact one, and the default model', async () => {
  const models = join(root, 'models');
  assert.equal((await resolveModel(models, 'alpha')).version, '0.10.0');
  assert.equal((await resolveModel(models, 'alpha', '0.9.0')).version, '0.9.0');
  assert.equal((await resolveModel(models, '', '')).name, 'alpha', 'no default.json: the first model');
  await writeFile(join(models, 'default.json'), JSON.stringify({ name: 'beta' }));
  try {
    const def = await resolveModel(models);
    assert.equal(`${def.name}@${def.version}`, 'beta@1.0.0');
    assert.equal(def.dir, join(models, 'beta', '1.0.0'));
  } finally {
    await rm(join(models, 'default.json'));
  }
});

test('unknown models and versions are NOT_FOUND errors listing what exists', async () => {
  const models = join(root, 'models');
  await assert.rejects(resolveModel(models, 'gamma'), (e: Error) => e instanceof ModelNotFoundError && /alpha, beta/.test(e.message));
  await assert.rejects(resolveModel(models, 'alpha', '3.0.0'), (e: Error) => e instanceof ModelNotFoundError && /0\.9\.0/.test(e.message));
});

test('names and versions that could traverse paths are rejected before touching the disk', async () => {
  const models = join(root, 'models');
  const bad: [string | undefined, string | undefined][] = [
    ['../outside', undefined],
    ['..', undefined],
    [join(root, 'outside'), undefined],
    ['/etc', undefined],
    ['alpha/../beta', undefined],
    ['alpha', '../../outside/1.0.0'],
    ['alpha', '..'],
    ['alpha', '/tmp'],
    ['Alpha', undefined],
  ];
  for (const [name, version] of bad) {
    await assert.rejects(resolveModel(models, name, version), InvalidModelRefError, `${name} ${version}`);
  }
  // A valid-looking name that exists only outside the repository is still not found.
  await assert.rejects(resolveModel(models, 'outside'), ModelNotFoundError);
});

test('manifest files resolve inside their version folder only', () => {
  const dir = join(root, 'models', 'alpha', '0.9.0');
  assert.equal(modelFilePath(dir, 'tfjs/model.json'), join(dir, 'tfjs', 'model.json'));
  assert.throws(() => modelFilePath(dir, '../0.10.0/model.onnx'), /outside its folder/);
  assert.throws(() => modelFilePath(dir, '/etc/passwd'), /outside its folder/);
});

test('a manifest that disagrees with its folder is an error', async () => {
  const r = join(root, 'mismatch');
  await addVersion(r, 'alpha', '1.0.0', manifest('alpha', '2.0.0'));
  await assert.rejects(listModels(r), /says alpha\/2\.0\.0/);
});

test('the bundled repository serves the trained demo model by default, with its untrained ancestor beside it', async () => {
  const root = fileURLToPath(new URL('../models', import.meta.url));
  const entry = await resolveModel(root);
  assert.equal(`${entry.name}@${entry.version}`, 'histoseg-bach@1.1.0');
  assert.deepEqual(
    entry.manifest.classes.map((c) => c.name),
    ['normal', 'benign', 'in situ', 'invasive'],
  );
  assert.equal(entry.manifest.trained, true);
  assert.ok(entry.manifest.stainReference, 'a trained model carries its training stain reference');
  assert.equal(entry.manifest.lineage.settings.setting, 'S+C*');
  const untrained = await resolveModel(root, 'histoseg-bach', '0.1.0');
  assert.equal(untrained.manifest.trained, false);
  assert.deepEqual(untrained.manifest.stainReference?.maxConcentrations, [1.9705, 1.0308]);
});
