// train --resume resumes only its own run; checkpoints and model versions survive a crash at any point.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readDataset } from '../src/data/datasets/readDataset.js';
import { removeStaleTemporaries } from '../src/model/repository.js';
import { writeSynthDataset } from '../src/synth/dataset.js';
import { hasCheckpoint, recoverCheckpoint } from '../src/training/fit/checkpoint.js';
import { train, type TrainOptions } from '../src/training/jobs/trainOnDataset.js';
import { selectTfBackend } from '../src/tf/backend.js';

describe('train --resume and crash leftovers', () => {
  let root: string;
  let base: Omit<TrainOptions, 'workDir' | 'epochs'>;

  before(async () => {
    await selectTfBackend();
    root = await mkdtemp(join(tmpdir(), 'histoseg-resume-'));
    await writeSynthDataset({ seed: 4, out: join(root, 'data'), slides: 3, size: 256, patchesPerClass: 2 });
    base = { dataset: await readDataset(join(root, 'data')), setting: 'S+C*', segPercent: 100, seed: 5, batchSize: 2, maxStepsPerEpoch: 1, log: () => {} };
  });

  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('a fresh run clears the previous run\'s checkpoint, even when it is stopped before its first epoch ends', async () => {
    const work = join(root, 'fresh');
    (await train({ ...base, epochs: 1, workDir: work })).model.dispose();
    assert.ok(await hasCheckpoint(work));
    const ctrl = new AbortController();
    await assert.rejects(
      train({ ...base, epochs: 1, workDir: work }, { signal: ctrl.signal, onProgress: (e) => e.kind === 'step' && ctrl.abort(new Error('killed')) }),
      /killed/,
    );
    assert.equal(await hasCheckpoint(work), false, 'the old run\'s checkpoint is gone, so --resume cannot pick it up');
  });

  it('--resume refuses a checkpoint of other data or other settings, naming what differs', async () => {
    const work = join(root, 'other');
    (await train({ ...base, epochs: 1, workDir: work })).model.dispose();
    // The same folder with one slide's pixels changed: same path, different data.
    const changed = join(root, 'data-changed');
    await cp(join(root, 'data'), changed, { recursive: true });
    const slide = (await readdir(join(changed, 'slides')))[0]!;
    await writeFile(join(changed, 'slides', slide), Buffer.concat([Buffer.from('x')]), { flag: 'a' });
    await rm(join(root, 'data'), { recursive: true });
    await rename(changed, join(root, 'data'));
    try {
      await assert.rejects(train({ ...base, epochs: 2, workDir: work, resume: true }), (err: Error) => {
        assert.match(err.message, /refusing to resume.*differs in datasetHash \(checkpoint "sha256:[0-9a-f]+", now "sha256:[0-9a-f]+"\)/);
        return true;
      });
      await assert.rejects(train({ ...base, seed: 6, epochs: 2, workDir: work, resume: true }), /settings\.seed \(checkpoint 5, now 6\)/);
    } finally {
      await writeSynthDataset({ seed: 4, out: join(root, 'data'), slides: 3, size: 256, patchesPerClass: 2, force: true });
    }
  });

  it('a checkpoint swap interrupted at any point leaves one whole checkpoint', async () => {
    const work = join(root, 'swap');
    (await train({ ...base, epochs: 1, workDir: work })).model.dispose();
    const ck = join(work, 'checkpoint');
    // Crash after the old one was renamed aside, before the new (incomplete) one was renamed in: the old comes back.
    await rename(ck, `${ck}.old`);
    await mkdir(`${ck}.tmp/model`, { recursive: true });
    assert.equal(await hasCheckpoint(work), true);
    assert.equal(existsSync(`${ck}.old`) || existsSync(`${ck}.tmp`), false, 'leftovers removed');
    // Crash after the new (complete) one was written, the old renamed aside: the new one is taken.
    await cp(ck, `${ck}.tmp`, { recursive: true });
    await rename(ck, `${ck}.old`);
    await recoverCheckpoint(work);
    assert.equal(existsSync(join(ck, 'state.json')), true);
    assert.equal(existsSync(`${ck}.old`), false);
    const resumed = await train({ ...base, epochs: 2, workDir: work, resume: true });
    resumed.model.dispose();
    assert.deepEqual(resumed.history.map((h) => h.epoch), [1, 2]);
  });

  it('removes version folders a crashed writer left behind, and keeps a live writer\'s', async () => {
    const models = join(root, 'models');
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const stale = join(models, 'tiny', `.tmp-1.1.0-${dead}-1700000000000`);
    const live = join(models, 'tiny', `.tmp-1.2.0-${process.ppid}-1700000000000`);
    await mkdir(stale, { recursive: true });
    await mkdir(live, { recursive: true });
    await writeFile(join(stale, 'model.onnx'), 'half');
    assert.deepEqual(await removeStaleTemporaries(models), [stale]);
    assert.equal(existsSync(stale), false);
    assert.equal(existsSync(live), true, 'a running process\'s folder stays');
  });
});
