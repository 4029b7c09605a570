import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createEngine } from '../src/engine/createEngine.js';
import { ENGINE_DEVICES, enginePlacement, VALID_PAIRS } from '../src/engine/engineDevices.js';
import { buildSegClsModel } from '../src/model/network/architecture.js';
import { resolveModel, saveModelVersion, type ModelEntry } from '../src/model/repository.js';
import { loadConfig } from '../src/server/config.js';
import { selectTfBackend } from '../src/tf/backend.js';
import { BACH_CLASSES } from '../src/util/constants.js';
import { testManifest } from './support/manifest.js';
import { vulkanSkip } from './support/vulkan.js';

let root: string;
let entry: ModelEntry;

before(async () => {
  assert.equal(await selectTfBackend(), 'wasm');
  root = await mkdtemp(join(tmpdir(), 'histoseg-devices-'));
  const model = buildSegClsModel({ numClasses: 4, seed: 3 });
  await saveModelVersion(root, testManifest({ classes: BACH_CLASSES.map((c) => ({ ...c })) }), model);
  model.dispose();
  entry = await resolveModel(root);
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('the (engine, device) table', () => {
  it('has one row per pair and refuses others, listing the valid pairs', () => {
    assert.equal(new Set(VALID_PAIRS).size, ENGINE_DEVICES.length);
    assert.deepEqual(VALID_PAIRS, ['onnx/cpu', 'onnx/cuda', 'onnx/webgpu', 'tfjs/cpu', 'tfjs/cuda']);
    assert.throws(() => enginePlacement('tfjs', 'webgpu'), /engine "tfjs" does not run on device "webgpu"; valid engine\/device pairs: onnx\/cpu, onnx\/cuda, onnx\/webgpu, tfjs\/cpu, tfjs\/cuda/);
  });

  it('owns the worker policy: an engine per core on cpu, one engine with large batches queued on a GPU', () => {
    const cpu = enginePlacement('onnx', 'cpu');
    assert.equal(cpu.workers(4), 4);
    assert.equal(cpu.batchesPerWorker, 1);
    for (const device of ['cuda', 'webgpu'] as const) {
      const gpu = enginePlacement('onnx', device);
      assert.equal(gpu.workers(16), 1, `${device}: one engine owns the device`);
      assert.ok(gpu.maxBatch > cpu.maxBatch, `${device}: larger batches than cpu`);
      assert.ok(gpu.batchesPerWorker > 1, `${device}: the next batch waits in the worker`);
    }
  });

  it('the server configuration refuses an unsupported pair at start, and reads allowSoftwareGpu', () => {
    assert.throws(() => loadConfig({ engine: 'tfjs', device: 'webgpu' }, {}), /device \(--device \/ HISTOSEG_DEVICE\): engine "tfjs" does not run on device "webgpu"; valid/);
    assert.equal(loadConfig({}, {}).allowSoftwareGpu, false);
    const c = loadConfig({}, { HISTOSEG_DEVICE: 'webgpu', HISTOSEG_ALLOW_SOFTWARE_GPU: '1' });
    assert.equal(c.device, 'webgpu');
    assert.equal(c.allowSoftwareGpu, true);
    assert.equal(c.maxBatch, undefined, 'unset: the table decides');
  });

  it('createEngine refuses an unsupported pair, and the tfjs engine no longer ignores --device', async () => {
    await assert.rejects(createEngine('tfjs', entry.dir, entry.manifest, { threads: 1, device: 'webgpu' }), /valid engine\/device pairs/);
    // tfjs/cuda is a valid pair, but its package is not installed here: it says so instead of running on wasm.
    await assert.rejects(createEngine('tfjs', entry.dir, entry.manifest, { threads: 1, device: 'cuda' }), /cannot switch to cuda|@tensorflow\/tfjs-node-gpu, which is not installed/);
  });
});

describe('WebGPU adapter policy', { skip: vulkanSkip() }, () => {
  it('a software adapter is refused unless allowed, naming the adapter and the switch', async () => {
    await assert.rejects(
      createEngine('onnx', entry.dir, entry.manifest, { threads: 1, device: 'webgpu' }),
      /only a software adapter: mesa software \(llvmpipe.*HISTOSEG_ALLOW_SOFTWARE_GPU=1/,
    );
  });

  it('a missing GPU fails loudly, even when software adapters are allowed', async () => {
    const saved = process.env.VK_ICD_FILENAMES;
    process.env.VK_ICD_FILENAMES = join(root, 'no-such-icd.json'); // the Vulkan loader then finds no driver
    try {
      await assert.rejects(
        createEngine('onnx', entry.dir, entry.manifest, { threads: 1, device: 'webgpu', allowSoftwareGpu: true }),
        /WebGPU was requested but no GPU adapter was found.*NVIDIA_DRIVER_CAPABILITIES must include graphics/,
      );
    } finally {
      if (saved === undefined) delete process.env.VK_ICD_FILENAMES;
      else process.env.VK_ICD_FILENAMES = saved;
    }
  });
});
