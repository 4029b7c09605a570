import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { Command } from 'commander';
import { OnnxEngine } from '../src/engine/onnxEngine.js';
import { selectTfBackend } from '../src/tf/backend.js';
import { readManifest } from '../src/model/manifest.js';
import { listModels } from '../src/model/repository.js';
import { loadLayersModel } from '../src/model/network/tfjsIO.js';
import { readDataset } from '../src/data/datasets/readDataset.js';
import { writeSynthDataset } from '../src/synth/dataset.js';
import { classWeights, itemCrossEntropy, weightedPixelCrossEntropy } from '../src/training/fit/losses.js';
import { epochOrder, fractionCount, selectPatches } from '../src/training/fit/trainingData.js';
import { train, type TrainOptions } from '../src/training/jobs/trainOnDataset.js';
import type { FitEvent } from '../src/training/fit/trainer.js';
import { parseSegFraction, registerTrain } from '../src/cli/trainCommand.js';

const logSoftmax = (z: number[]) => {
  const m = Math.max(...z);
  const lse = m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0));
  return z.map((v) => v - lse);
};

before(async () => {
  assert.equal(await selectTfBackend(), 'wasm', 'trainer tests run on wasm, never the cpu backend');
});

describe('losses (Sec. 2.2-2.3)', () => {
  it('weighted pixel cross-entropy matches a hand computation on a 2x2, 2-class example', () => {
    // Pixels (row-major) with logits [z0, z1], labels and class weights w = [0.5, 2].
    const logits = [
      [2, 0],
      [0, 1],
      [1, 1],
      [-1, 3],
    ];
    const labels = [0, 1, 1, 0];
    const w = [0.5, 2];
    const target = labels.flatMap((y) => [y === 0 ? w[0]! : 0, y === 1 ? w[1]! : 0]);
    let num = 0;
    let den = 0;
    logits.forEach((z, i) => {
      num += -w[labels[i]!]! * logSoftmax(z)[labels[i]!]!;
      den += w[labels[i]!]!;
    });
    const got = tf.tidy(() =>
      weightedPixelCrossEntropy(tf.tensor4d(logits.flat(), [1, 2, 2, 2]), tf.tensor4d(target, [1, 2, 2, 2])).dataSync()[0]!,
    );
    assert.ok(Math.abs(got - num / den) < 1e-5, `${got} vs ${num / den}`);
    // By hand: sum w*CE = 0.5*0.12693 + 2*0.31326 + 2*0.69315 + 0.5*4.01815 = 4.08536; sum w = 5.
    assert.ok(Math.abs(got - 0.817071) < 1e-5, `got ${got}`);
  });

  it('item cross-entropy averages over class items only; no items gives 0', () => {
    const z = [
      [1, 2, 3],
      [5, 5, 5],
    ];
    const got = tf.tidy(() => itemCrossEntropy(tf.tensor2d(z), tf.tensor2d([[0, 0, 1], [0, 0, 0]])).dataSync()[0]!);
    assert.ok(Math.abs(got - -logSoftmax(z[0]!)[2]!) < 1e-5);
    const none = tf.tidy(() => itemCrossEntropy(tf.tensor2d(z), tf.zeros([2, 3])).dataSync()[0]!);
    assert.equal(Math.abs(none), 0);
  });

  it('class weights: w_c = min(N / (C n_c), 10), normalised to mean 1', () => {
    const w = classWeights([900, 50, 40, 10]);
    const raw = [1000 / 3600, 1000 / 200, 1000 / 160, 10]; // the last is clipped from 25
    const mean = raw.reduce((a, b) => a + b) / 4;
    raw.forEach((r, i) => assert.ok(Math.abs(w[i]! - r / mean) < 1e-12));
    assert.ok(Math.abs(w.reduce((a, b) => a + b) / 4 - 1) < 1e-12);
    assert.deepEqual(classWeights([5, 5, 5]), [1, 1, 1]);
    const absent = classWeights([100, 0]);
    assert.ok(absent[1]! > absent[0]!, 'a class with no pixels gets the largest weight');
  });
});

describe('settings (Sec. 3.3)', () => {
  it('S / S+C / S+C* select s% seg, (100-s)% cls and all cls, sharing the seg subset', () => {
    const s = selectPatches('S', 40, 20, 25, 7);
    const sc = selectPatches('S+C', 40, 20, 25, 7);
    const scs = selectPatches('S+C*', 40, 20, 25, 7);
    assert.deepEqual([s.seg.length, s.cls.length], [10, 0]);
    assert.deepEqual([sc.seg.length, sc.cls.length], [10, 15]);
    assert.deepEqual([scs.seg.length, scs.cls.length], [10, 20]);
    assert.deepEqual(s.seg, sc.seg);
    assert.deepEqual(s.seg, scs.seg);
    assert.deepEqual(selectPatches('S', 40, 20, 25, 7), s, 'same seed, same subset');
    assert.notDeepEqual(selectPatches('S', 40, 20, 25, 8).seg, s.seg, 'another seed, another subset');
    assert.equal(fractionCount(40, 2.5), 1);
    assert.equal(fractionCount(3, 1), 1, 'a positive share keeps at least one patch');
    assert.equal(selectPatches('S+C', 40, 20, 100, 1).cls.length, 0);
  });

  it('epoch order is a pure function of seed and epoch', () => {
    const sel = selectPatches('S+C*', 30, 10, 50, 3);
    assert.deepEqual(epochOrder(sel, 3, 4), epochOrder(sel, 3, 4));
    assert.notDeepEqual(epochOrder(sel, 3, 4), epochOrder(sel, 3, 5));
    assert.equal(epochOrder(sel, 3, 0).length, 25);
  });

  it('--seg-fraction takes a fraction, a percent above 1, or N%', () => {
    assert.equal(parseSegFraction('0.05'), 5);
    assert.equal(parseSegFraction('5'), 5);
    assert.equal(parseSegFraction('2.5%'), 2.5);
    assert.equal(parseSegFraction('1'), 100);
    assert.equal(parseSegFraction('1%'), 1);
    assert.throws(() => parseSegFraction('150'));
  });
});

describe('training on a tiny synthetic dataset', () => {
  let root: string;
  let base: Omit<TrainOptions, 'workDir' | 'epochs'>;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'histoseg-trainer-'));
    await writeSynthDataset({ seed: 3, out: join(root, 'data'), slides: 3, size: 256, patchesPerClass: 2 });
    base = {
      dataset: await readDataset(join(root, 'data')),
      setting: 'S+C*',
      segPercent: 100,
      seed: 5,
      batchSize: 2,
      maxStepsPerEpoch: 1,
      log: () => {},
    };
  });
  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  async function checkpointWeights(work: string): Promise<Float32Array[]> {
    const m = await loadLayersModel(join(work, 'checkpoint', 'model'));
    const w = m.getWeights().map((t) => t.dataSync() as Float32Array);
    m.dispose();
    return w;
  }

  it('same seed gives the same first-step loss; resume after 1 epoch equals 2 uninterrupted epochs bitwise', async () => {
    const full = await train({ ...base, epochs: 2, workDir: join(root, 'full') });
    full.model.dispose();
    assert.ok(full.firstStepLoss !== null && Number.isFinite(full.firstStepLoss));
    assert.equal(full.history.length, 2);
    assert.ok(full.validation !== null && full.validation.macroF1 !== null, 'the validation slide is scored');

    const first = await train({ ...base, epochs: 1, workDir: join(root, 'split') });
    first.model.dispose();
    assert.equal(first.firstStepLoss, full.firstStepLoss, 'same seed, same first-step loss');
    const resumed = await train({ ...base, epochs: 2, workDir: join(root, 'split'), resume: true });
    resumed.model.dispose();
    assert.deepEqual(resumed.history.map((h) => h.epoch), [1, 2]);
    assert.equal(resumed.history[1]!.lossTotal, full.history[1]!.lossTotal, 'epoch 2 sees the same batch and weights');

    const [a, b] = [await checkpointWeights(join(root, 'full')), await checkpointWeights(join(root, 'split'))];
    assert.equal(a.length, b.length);
    a.forEach((w, i) => assert.deepEqual(w, b[i], `weight ${i} differs after resume`));
  });

  it('fit reports through hooks and stops between steps when aborted', async () => {
    const events: FitEvent[] = [];
    const ctrl = new AbortController();
    let failure: unknown;
    try {
      await train(
        { ...base, maxStepsPerEpoch: 3, epochs: 2, workDir: join(root, 'abort'), log: undefined },
        {
          onProgress: (e) => {
            events.push(e);
            if (e.kind === 'step' && e.step === 1) ctrl.abort(new Error('cancelled by the test'));
          },
          signal: ctrl.signal,
        },
      );
    } catch (e) {
      failure = e;
    }
    assert.match(String((failure as Error)?.message), /cancelled by the test/);
    assert.deepEqual(events.map((e) => e.kind), ['start', 'step'], 'no step, validation or checkpoint after the abort');
  });

  it('histoseg train writes a trained version with lineage whose ONNX matches TF.js', async () => {
    const models = join(root, 'models');
    const program = new Command().exitOverride();
    registerTrain(program);
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => (out.push(String(chunk)), true)) as typeof process.stdout.write;
    const errWrite = process.stderr.write.bind(process.stderr);
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      await program.parseAsync(
        ['train', '--data', join(root, 'data'), '--setting', 'S+C', '--seg-fraction', '0.5', '--epochs', '1', '--seed', '2',
          '--name', 'tiny', '--models', models, '--batch', '2', '--max-steps', '1', '--work', join(root, 'work-cli')],
        { from: 'user' },
      );
    } finally {
      process.stdout.write = write;
      process.stderr.write = errWrite;
    }
    assert.match(out.join(''), /wrote .*tiny[/\\]1\.0\.0/);
    const [entry] = await listModels(models);
    assert.ok(entry);
    const m = await readManifest(join(entry.dir, 'manifest.json'));
    assert.equal(m.trained, true);
    assert.deepEqual(m.classes.map((c) => c.name), base.dataset.classes);
    assert.ok(m.stainReference !== null, 'the training stain reference is recorded');
    assert.equal(m.lineage.parent, null);
    assert.match(m.lineage.datasetHash ?? '', /^sha256:[0-9a-f]{64}$/);
    assert.equal(m.lineage.settings.setting, 'S+C');
    assert.equal(m.lineage.settings.segFractionPercent, 50);
    assert.equal(m.metrics.bestEpoch, 1);
    assert.equal(typeof m.metrics.macroF1, 'number');

    // The written ONNX file against the written TF.js model.
    const model = await loadLayersModel(join(entry.dir, m.files.tfjs));
    const x = tf.randomNormal([1, 128, 128, 3], 0, 1, 'float32', 9);
    const [mask] = model.predict(x) as tf.Tensor[];
    const want = tf.transpose(mask!, [0, 3, 1, 2]).dataSync();
    const input = tf.transpose(x, [0, 3, 1, 2]).dataSync() as Float32Array;
    const engine = await OnnxEngine.create(await readFile(join(entry.dir, m.files.onnx)), 4, { intraOpNumThreads: 1 });
    const got = (await engine.run({ data: Float32Array.from(input), n: 1 })).mask;
    await engine.dispose();
    model.dispose();
    let num = 0;
    let den = 0;
    for (let i = 0; i < got.length; i++) {
      num += (got[i]! - want[i]!) ** 2;
      den += want[i]! ** 2;
    }
    assert.ok(Math.sqrt(num / den) < 1e-4, `ONNX vs TF.js relative L2 ${Math.sqrt(num / den)}`);
  });
});
