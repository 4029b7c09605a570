import type { EvaluateModelResult } from './evaluateModel.js';
import type { SegmentationMetrics } from './metrics.js';

/** The JSON shape `histoseg evaluate --json` prints; the key names are fixed (issue 3). */
export interface MetricsJson {
  accuracy: number | null;
  macro_f1: number | null;
  micro_f1: number | null;
  foreground_accuracy: number | null;
  bach_score: number | null;
  per_class: { accuracy: number | null; precision: number | null; recall: number | null; f1: number | null; iou: number | null }[];
  confusion: number[][];
  pixels: number;
}

export function metricsToJson(m: SegmentationMetrics): MetricsJson {
  return {
    accuracy: m.accuracy,
    macro_f1: m.macroF1,
    micro_f1: m.microF1,
    foreground_accuracy: m.foregroundAccuracy,
    bach_score: m.bachScore,
    per_class: m.perClass.map((c) => ({
      accuracy: c.accuracy,
      precision: c.precision,
      recall: c.recall,
      f1: c.f1,
      iou: c.iou,
    })),
    confusion: m.confusion,
    pixels: m.pixels,
  };
}

function fmt(v: number | null): string {
  return v === null ? '-' : v.toFixed(4);
}

/** A plain-text report: summary lines, a per-class table, and the confusion matrix. */
export function formatMetricsTable(m: SegmentationMetrics, classNames?: readonly string[]): string {
  const names = m.perClass.map((_, k) => classNames?.[k] ?? String(k));
  const nameWidth = Math.max(5, ...names.map((n) => n.length));
  const lines: string[] = [];
  lines.push(`pixels               ${m.pixels}`);
  lines.push(`accuracy             ${fmt(m.accuracy)}`);
  lines.push(`foreground accuracy  ${fmt(m.foregroundAccuracy)}`);
  lines.push(`macro F1             ${fmt(m.macroF1)}`);
  lines.push(`micro F1 (weighted)  ${fmt(m.microF1)}`);
  lines.push(`BACH score (Eq. 6)   ${fmt(m.bachScore)}`);
  lines.push('');
  const cols = ['accuracy', 'precision', 'recall', 'f1', 'iou'] as const;
  lines.push(['class'.padEnd(nameWidth), ...cols.map((c) => c.padStart(9))].join('  '));
  m.perClass.forEach((c, k) => {
    lines.push([names[k]!.padEnd(nameWidth), ...cols.map((col) => fmt(c[col]).padStart(9))].join('  '));
  });
  lines.push('');
  lines.push('confusion (rows = truth, columns = prediction)');
  const cellWidth = Math.max(6, ...m.confusion.flat().map((v) => String(v).length), ...names.map((n) => n.length));
  lines.push([''.padEnd(nameWidth), ...names.map((n) => n.padStart(cellWidth))].join('  '));
  m.confusion.forEach((row, k) => {
    lines.push([names[k]!.padEnd(nameWidth), ...row.map((v) => String(v).padStart(cellWidth))].join('  '));
  });
  return lines.join('\n') + '\n';
}

/** A model's held-out scores beside the all-background prediction, as markdown (models/<name>/<version>/report.md). */
export function formatModelReport(r: EvaluateModelResult): string {
  const m = r.manifest;
  const settings = Object.entries(m.lineage.settings)
    .filter(([, v]) => typeof v !== 'object')
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const rows: [string, (m: SegmentationMetrics) => number | null][] = [
    ['accuracy', (m) => m.accuracy],
    ['macro F1', (m) => m.macroF1],
    ['micro F1 (weighted by class pixels)', (m) => m.microF1],
    ['foreground accuracy', (m) => m.foregroundAccuracy],
    ['BACH score (Eq. 6)', (m) => m.bachScore],
  ];
  return [
    `# ${r.model}: held-out metrics`,
    '',
    m.trained
      ? `Trained ${m.createdAt} (${settings}); dataset ${m.lineage.datasetHash ?? 'unknown'}; parent ${m.lineage.parent ?? 'none'}.`
      : 'UNTRAINED: random weights.',
    '',
    `Slides: ${r.slides.join(', ')} (${r.metrics.pixels} pixels at the model's scale), segmented through the serving path (\`histoseg evaluate --model\`).`,
    '',
    '| metric | this model | all background |',
    '|---|---|---|',
    ...rows.map(([name, f]) => `| ${name} | ${fmt(f(r.metrics))} | ${fmt(f(r.allBackground))} |`),
    '',
    '| class | precision | recall | F1 | IoU |',
    '|---|---|---|---|---|',
    ...r.metrics.perClass.map((c, k) => `| ${r.classes[k] ?? k} | ${fmt(c.precision)} | ${fmt(c.recall)} | ${fmt(c.f1)} | ${fmt(c.iou)} |`),
    '',
    'Confusion (rows = truth, columns = prediction):',
    '',
    '```',
    ...r.metrics.confusion.map((row, k) => `${(r.classes[k] ?? String(k)).padEnd(10)} ${row.map((v) => String(v).padStart(9)).join(' ')}`),
    '```',
    '',
  ].join('\n');
}
