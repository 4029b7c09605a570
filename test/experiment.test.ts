import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import {
  type ExperimentRun,
  findingSummary,
  METRICS,
  type MetricName,
  plotGeometry,
  plotSvg,
  relativeTable,
  renderPng,
  replaceBetweenMarkers,
  spread,
  TABLE_END,
  TABLE_START,
  tableMarkdown,
} from '../bench/experimentReport.js';
import type { Setting } from '../src/training/fit/trainingData.js';

function run(setting: Setting, percent: number, seed: number, macroF1: number, bachScore = macroF1): ExperimentRun {
  const metrics = Object.fromEntries(METRICS.map((m) => [m, 0.5])) as Record<MetricName, number | null>;
  return { setting, percent, seed, metrics: { ...metrics, macroF1, bachScore }, bestEpoch: 1, segPatches: 1, clsPatches: 0, trainSeconds: 1, evalSeconds: 1 };
}

// S at 100% averages 0.7 (macro F1) and 0.5 (BACH), the reference of every row.
const RUNS: ExperimentRun[] = [
  run('S', 100, 1, 0.8, 0.6),
  run('S', 100, 2, 0.6, 0.4),
  run('S', 5, 1, 0.42, 0.25),
  run('S', 5, 2, 0.35, 0.3),
  run('S+C', 5, 1, 0.63, 0.45),
  run('S+C', 5, 2, 0.56, 0.5),
  run('S+C*', 5, 1, 0.7, 0.5),
  run('S+C*', 5, 2, 0.7, 0.5),
];

test('spread: mean, min, max and sample standard deviation', () => {
  const s = spread([1, 2, 3, 6]);
  assert.equal(s.mean, 3);
  assert.equal(s.min, 1);
  assert.equal(s.max, 6);
  assert.ok(Math.abs(s.std - Math.sqrt(14 / 3)) < 1e-12);
  assert.equal(spread([4]).std, 0);
});

test('relativeTable divides every run by the mean of S at s = 100%', () => {
  const t = relativeTable(RUNS);
  assert.ok(Math.abs(t.reference.macroF1! - 0.7) < 1e-12);
  assert.ok(Math.abs(t.reference.bachScore! - 0.5) < 1e-12);
  assert.deepEqual(
    t.rows.map((r) => `${r.setting}@${r.percent}`),
    ['S@5', 'S@100', 'S+C@5', 'S+C*@5'],
  );
  const sc = t.rows.find((r) => r.setting === 'S+C')!;
  assert.deepEqual(sc.seeds, [1, 2]);
  const f1 = sc.relative.macroF1!;
  assert.ok(Math.abs(f1.mean - 0.85) < 1e-12);
  assert.ok(Math.abs(f1.min - 0.8) < 1e-12);
  assert.ok(Math.abs(f1.max - 0.9) < 1e-12);
  assert.ok(Math.abs(sc.relative.bachScore!.mean - 0.95) < 1e-12);
  // The reference row itself: mean exactly 1, spread from its own repetitions.
  const ref = t.rows.find((r) => r.setting === 'S' && r.percent === 100)!.relative.macroF1!;
  assert.ok(Math.abs(ref.mean - 1) < 1e-12);
  assert.ok(Math.abs(ref.max - 0.8 / 0.7) < 1e-12);
});

test('relativeTable: a missing value stays null, and no reference run is an error', () => {
  const withNull = [...RUNS, { ...run('S+C', 25, 1, 0.5), metrics: { ...run('S+C', 25, 1, 0.5).metrics, foregroundAccuracy: null } }];
  const row = relativeTable(withNull).rows.find((r) => r.percent === 25)!;
  assert.equal(row.relative.foregroundAccuracy, null);
  assert.ok(row.relative.macroF1 !== null);
  assert.throws(() => relativeTable(RUNS.filter((r) => r.percent !== 100)), /no S run at s = 100%/);
});

test('tableMarkdown: one row per (setting, s) with mean and range, and the finding against the paper', () => {
  const t = relativeTable(RUNS);
  const md = tableMarkdown(t, RUNS);
  assert.match(md, /\| S\+C \| 5% \| 2 \| 85\.0% \(80%-90%\) \|/);
  assert.match(md, /macro F1 0\.7000/);
  // S at 5%: 0.55 relative, S+C 0.85: the paper's levels.
  assert.match(findingSummary(t), /S 55\.0%, S\+C 85\.0%, S\+C\* 100\.0%.*holds here/);
  const worse = relativeTable(RUNS.map((r) => (r.setting === 'S+C' ? { ...r, metrics: { ...r.metrics, macroF1: 0.3 } } : r)));
  assert.match(findingSummary(worse), /does not hold here/);
});

test('replaceBetweenMarkers keeps the markers and what lies outside them', () => {
  const doc = `# T\n\n${TABLE_START}\nold\n${TABLE_END}\n\nafter\n`;
  const out = replaceBetweenMarkers(doc, 'new table');
  assert.equal(out, `# T\n\n${TABLE_START}\nnew table\n${TABLE_END}\n\nafter\n`);
  assert.equal(replaceBetweenMarkers(out, 'again'), `# T\n\n${TABLE_START}\nagain\n${TABLE_END}\n\nafter\n`);
  assert.throws(() => replaceBetweenMarkers('# no markers', 'x'), /markers/);
});

test('plot: log-x geometry, one line per setting at its mean, renders to PNG', async () => {
  const withMore = [...RUNS, run('S', 25, 1, 0.63), run('S', 25, 2, 0.63)];
  const t = relativeTable(withMore);
  const g = plotGeometry(t);
  assert.deepEqual(g.xTicks, [5, 25, 100]);
  // Log scale: 5 -> 25 and 25 -> 125 would be equal steps; 25 -> 100 is log10(4)/log10(5) of one.
  const step = g.x(25) - g.x(5);
  assert.ok(Math.abs((g.x(100) - g.x(25)) / step - Math.log10(4) / Math.log10(5)) < 1e-9);
  assert.ok(g.y(1) < g.y(0.5), 'higher values are higher up');
  assert.ok(g.yTicks.includes(0) && g.yTicks.at(-1)! >= 1.1);

  const svg = plotSvg(t);
  const series = [...svg.matchAll(/<polyline class="series" data-setting="([^"]+)" points="([^"]+)"/g)];
  // Two panels (macro F1, BACH) x three settings.
  assert.deepEqual(series.map((m) => m[1]), ['S', 'S+C', 'S+C*', 'S', 'S+C', 'S+C*']);
  const sPoints = series[0]![2]!.split(' ').map((p) => p.split(',').map(Number));
  assert.equal(sPoints.length, 3);
  // S at 25% has relative macro F1 0.9 in the first panel (offset 0 x, legend offset in a group transform).
  assert.ok(Math.abs(sPoints[1]![1]! - g.y(0.9)) < 0.06);
  assert.ok(Math.abs(sPoints[1]![0]! - g.x(25)) < 0.06);
  // Bands only for series of two or more points: S has three, S+C and S+C* one each, in both panels.
  assert.equal([...svg.matchAll(/class="band"/g)].length, 2);

  const png = await renderPng(svg);
  const meta = await sharp(png).metadata();
  assert.equal(meta.format, 'png');
  assert.equal(meta.width, 880 * 2); // the SVG's width at PLOT_DENSITY (2x 72 dpi)
  // Not a blank image: the lines put several colours on it.
  const stats = await sharp(png).stats();
  assert.ok(stats.channels[0]!.min < 100, 'something dark was drawn');
});
