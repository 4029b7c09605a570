import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { readDataset } from '../src/data/datasets/readDataset.js';
import { sizeAtMpp } from '../src/data/datasets/dataset.js';
import { writeSynthDataset } from '../src/synth/dataset.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'histoseg-eval-'));
  await writeSynthDataset({ seed: 3, out: join(dir, 'synth'), slides: 3, size: 384, patchesPerClass: 1 });
});
after(() => rm(dir, { recursive: true, force: true }));

test('evaluate --model segments the test slides through the serving engine and prints the fixed JSON keys', async () => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [join(ROOT, 'bin', 'histoseg.js'), 'evaluate', '--model', 'histoseg-bach@0.1.0', '--models', join(ROOT, 'models'), '--data', join(dir, 'synth'), '--split', 'test', '--json'],
    { cwd: ROOT },
  );
  const out = JSON.parse(stdout) as Record<string, unknown> & { confusion: number[][]; per_class: unknown[] };
  for (const key of ['accuracy', 'macro_f1', 'micro_f1', 'foreground_accuracy', 'bach_score', 'per_class', 'confusion']) {
    assert.ok(key in out, `missing ${key}`);
  }
  assert.equal(out.per_class.length, 4);
  // Every pixel of every test slide, at the model's scale, is counted once.
  const ds = await readDataset(join(dir, 'synth'));
  const expected = ds.slides.filter((s) => s.split === 'test').reduce((n, s) => {
    const z = sizeAtMpp(s, 7.5);
    return n + z.width * z.height;
  }, 0);
  assert.equal(out.confusion.flat().reduce((a, b) => a + b, 0), expected);
});
