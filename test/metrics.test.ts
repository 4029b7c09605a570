import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Command } from 'commander';
import sharp from 'sharp';
import { registerEvaluate } from '../src/cli/evaluateCommand.js';
import { writeLabelMap } from '../src/data/labels/labelMap.js';
import { ConfusionAccumulator, computeMetrics } from '../src/evaluation/metrics.js';

const u8 = (xs: number[]) => Uint8Array.from(xs);
const close = (actual: number | null, expected: number, msg?: string) => {
  assert.ok(actual !== null, msg ?? `expected ${expected}, got null`);
  assert.ok(Math.abs(actual - expected) < 1e-9, `${msg ?? ''} expected ${expected}, got ${actual}`);
};

test('perfect prediction scores 1 everywhere', () => {
  const t = u8([0, 0, 1, 2, 2, 3]);
  const m = computeMetrics(t, t, 4);
  close(m.accuracy, 1);
  close(m.macroF1, 1);
  close(m.microF1, 1);
  close(m.foregroundAccuracy, 1);
  close(m.bachScore, 1);
  for (const c of m.perClass) {
    close(c.f1, 1);
    close(c.iou, 1);
  }
  assert.deepEqual(m.confusion, [
    [2, 0, 0, 0],
    [0, 1, 0, 0],
    [0, 0, 2, 0],
    [0, 0, 0, 1],
  ]);
});

test('all background: absent classes are null and out of the macro average; BACH score 1', () => {
  const t = new Uint8Array(10);
  const m = computeMetrics(t, t, 4);
  close(m.accuracy, 1);
  close(m.perClass[0]!.f1, 1);
  for (const k of [1, 2, 3]) {
    assert.equal(m.perClass[k]!.precision, null);
    assert.equal(m.perClass[k]!.recall, null);
    assert.equal(m.perClass[k]!.f1, null);
    assert.equal(m.perClass[k]!.iou, null);
    close(m.perClass[k]!.accuracy, 1);
  }
  close(m.macroF1, 1);
  close(m.microF1, 1);
  assert.equal(m.foregroundAccuracy, null);
  close(m.bachScore, 1);
});

test('worst prediction scores 0', () => {
  // Each pixel predicted as the class farthest from its truth.
  const truth = u8([0, 3, 1, 2]);
  const pred = u8([3, 0, 3, 0]);
  const m = computeMetrics(truth, pred, 4);
  close(m.accuracy, 0);
  close(m.macroF1, 0);
  close(m.microF1, 0);
  close(m.foregroundAccuracy, 0);
  close(m.bachScore, 0, 'bach');
  for (const c of m.perClass) close(c.iou, 0);
});

test('a class absent from both truth and prediction; hand-computed values', () => {
  const truth = u8([0, 0, 1, 1, 1, 3]);
  const pred = u8([0, 1, 1, 1, 0, 3]);
  const m = computeMetrics(truth, pred, 4);
  const [c0, c1, c2, c3] = m.perClass;
  close(c0!.precision, 0.5);
  close(c0!.recall, 0.5);
  close(c0!.f1, 0.5);
  close(c0!.iou, 1 / 3);
  close(c0!.accuracy, 4 / 6);
  close(c1!.precision, 2 / 3);
  close(c1!.recall, 2 / 3);
  close(c1!.f1, 2 / 3);
  close(c1!.iou, 0.5);
  assert.equal(c2!.f1, null);
  assert.equal(c2!.iou, null);
  close(c2!.accuracy, 1);
  close(c3!.f1, 1);
  close(m.macroF1, (0.5 + 2 / 3 + 1) / 3);
  close(m.microF1, (0.5 * 2 + (2 / 3) * 3 + 1 * 1) / 6);
  close(m.accuracy, 4 / 6);
  close(m.foregroundAccuracy, 3 / 4);
  // |pred-gt| sums to 2; weights: (0,1) 3, (1,1) 2+2, (1,0) 2, (3,3) 3 -> 12.
  close(m.bachScore, 1 - 2 / 12);
});

test('a class only predicted, never true, counts 0 in the macro average', () => {
  const m = computeMetrics(u8([0, 0, 0, 0]), u8([0, 0, 0, 2]), 3);
  close(m.perClass[2]!.precision, 0);
  close(m.perClass[2]!.recall, 0);
  close(m.perClass[2]!.f1, 0);
  assert.equal(m.perClass[1]!.f1, null);
  const f1bg = (2 * 1 * 0.75) / 1.75;
  close(m.macroF1, (f1bg + 0) / 2);
  close(m.microF1, f1bg);
});

test('BACH score generalises |gt - 3| to |gt - (C - 1)|', () => {
  // C = 2: weights are max(gt, |gt - 1|) = 1 on every counted pixel; correct background (0,0) is not counted.
  const m = computeMetrics(u8([0, 1, 1, 0]), u8([1, 1, 0, 0]), 2);
  close(m.bachScore, 1 - 2 / 3);
});

test('accumulating two slides equals scoring them together', () => {
  const t1 = u8([0, 1, 2, 3, 3]);
  const p1 = u8([0, 2, 2, 3, 0]);
  const t2 = u8([1, 1, 0]);
  const p2 = u8([1, 0, 0]);
  const acc = new ConfusionAccumulator(4);
  acc.add(t1, p1);
  const other = new ConfusionAccumulator(4);
  other.add(t2, p2);
  acc.merge(other);
  const joint = computeMetrics(u8([...t1, ...t2]), u8([...p1, ...p2]), 4);
  assert.deepEqual(acc.metrics(), joint);
  assert.notEqual(joint.bachScore, 1);
});

test('a pixel value >= the class count is an error naming it', () => {
  assert.throws(() => computeMetrics(u8([0, 4]), u8([0, 0]), 4), /truth value 4.*only 4 classes/);
  assert.throws(() => computeMetrics(u8([0, 0]), u8([0, 0, 0]), 4), /differ in size/);
});

async function runCli(args: string[]): Promise<string> {
  const program = new Command().exitOverride();
  registerEvaluate(program);
  let out = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  }) as typeof process.stdout.write;
  try {
    await program.parseAsync(['evaluate', ...args], { from: 'user' });
  } finally {
    process.stdout.write = write;
  }
  return out;
}

test('histoseg evaluate compares two PNG label maps', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'histoseg-eval-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const truth = join(dir, 'truth.png');
  const pred = join(dir, 'pred.png');
  await writeLabelMap(truth, { labels: u8([0, 0, 1, 1, 1, 3]), width: 3, height: 2 });
  await writeLabelMap(pred, { labels: u8([0, 1, 1, 1, 0, 3]), width: 3, height: 2 });
  assert.equal((await sharp(truth).metadata()).channels, 1, 'label maps are written as one-channel greyscale');

  const json = JSON.parse(await runCli(['--pred', pred, '--truth', truth, '--classes', '4', '--json']));
  for (const key of ['accuracy', 'macro_f1', 'micro_f1', 'foreground_accuracy', 'bach_score', 'per_class', 'confusion']) {
    assert.ok(key in json, `missing key ${key}`);
  }
  close(json.bach_score, 5 / 6);
  assert.equal(json.per_class.length, 4);
  assert.deepEqual(Object.keys(json.per_class[1]).sort(), ['accuracy', 'f1', 'iou', 'precision', 'recall']);
  assert.deepEqual(json.confusion[1], [1, 2, 0, 0]);

  const table = await runCli(['--pred', pred, '--truth', truth, '--classes', '4']);
  assert.match(table, /BACH score \(Eq\. 6\)\s+0\.8333/);
  assert.match(table, /confusion \(rows = truth/);

  await assert.rejects(runCli(['--pred', pred, '--truth', truth, '--classes', '3']), /truth value 3.*only 3 classes/);

  const small = join(dir, 'small.png');
  await writeLabelMap(small, { labels: u8([0, 0]), width: 2, height: 1 });
  await assert.rejects(runCli(['--pred', small, '--truth', truth, '--classes', '4']), /is 2x1 but truth .* is 3x2/);

  const rgb = join(dir, 'rgb.png');
  await sharp(Buffer.from([255, 0, 0, 0, 0, 0]), { raw: { width: 2, height: 1, channels: 3 } }).png().toFile(rgb);
  await assert.rejects(runCli(['--pred', rgb, '--truth', small, '--classes', '4']), /colour image/);

  // The model form reads a dataset: a folder that is none says what it lacks.
  await assert.rejects(runCli(['--model', 'demo', '--data', dir]), /classes\.txt/);
  await assert.rejects(runCli(['--model', 'demo', '--pred', small]), /not both/);
});
