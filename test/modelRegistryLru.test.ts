import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelRegistry } from '../src/pipeline/modelRegistry.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { BASE, BUNDLED_MODELS } from './support/training.js';

describe('model registry: LRU unloading of idle versions', () => {
  let root: string;
  let registry: ModelRegistry;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'histoseg-lru-'));
    const dir = join(root, BASE.name);
    mkdirSync(dir);
    for (const v of ['0.1.0', '1.0.0']) cpSync(join(BUNDLED_MODELS, BASE.name, v), join(dir, v), { recursive: true });
    // A third version: the same files under another version number.
    cpSync(join(dir, '1.0.0'), join(dir, '1.0.1'), { recursive: true });
    const m = JSON.parse(readFileSync(join(dir, '1.0.1', 'manifest.json'), 'utf8'));
    writeFileSync(join(dir, '1.0.1', 'manifest.json'), JSON.stringify({ ...m, version: '1.0.1' }));
    writeFileSync(join(root, 'default.json'), JSON.stringify({ name: BASE.name, version: '1.0.0' }));
    registry = new ModelRegistry(
      { root, engine: 'onnx', device: 'cpu', threads: 1, workers: 1, maxBatch: 4, maxDelayMs: 1, queueCapacity: 64, maxLoadedModels: 1 },
      createLogger('silent'),
      new Metrics(undefined, { processMetrics: false }),
    );
    await registry.start();
  });
  after(async () => {
    await registry?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  const loaded = async () => (await registry.list()).filter((e) => e.loaded).map((e) => e.manifest.version).sort();

  it('never refuses a version because others are loaded, keeps held ones, and unloads idle ones after their batches', async () => {
    const old = await registry.acquire(BASE.name, '0.1.0');
    const newer = await registry.acquire(BASE.name, '1.0.1');
    // Over the limit of 1, but both are held and the default is never unloaded.
    assert.deepEqual(await loaded(), ['0.1.0', '1.0.0', '1.0.1']);
    // A batch in flight on 0.1.0 when its last holder lets go still finishes.
    const size = old.model.manifest.inputSize;
    const pending = old.model.batcher.enqueue(new Uint8Array(3 * size * size).fill(200));
    old.release();
    const result = await pending;
    assert.ok(result.mask.length > 0 && result.cls.length === 4);
    while ((await loaded()).includes('0.1.0')) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await loaded(), ['1.0.0', '1.0.1']);
    newer.release();
    while ((await loaded()).includes('1.0.1')) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await loaded(), ['1.0.0']);
    // An unloaded version loads again on demand.
    const again = await registry.acquire(BASE.name, '0.1.0');
    assert.equal(again.model.manifest.version, '0.1.0');
    again.release();
  });
});
