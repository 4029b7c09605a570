// The S vs S+C experiment's report (paper Sec. 3.3, Fig. 3): metrics relative to S at s = 100%, as a markdown table
// and a line plot. Pure functions of the recorded runs, so the report can be rebuilt from bench/results alone.
import sharp from 'sharp';
import { SETTINGS, type Setting } from '../src/training/fit/trainingData.js';

export const METRICS = ['macroF1', 'microF1', 'foregroundAccuracy', 'bachScore', 'accuracy'] as const;
export type MetricName = (typeof METRICS)[number];

export const METRIC_LABELS: Record<MetricName, string> = {
  macroF1: 'macro F1',
  microF1: 'micro F1 (paper: class-share weighted)',
  foregroundAccuracy: 'fg accuracy',
  bachScore: 'BACH score',
  accuracy: 'accuracy',
};

/** Fig. 3 reports every run relative to S trained on all segmentation patches (Sec. 3.3). */
export const REFERENCE: { setting: Setting; percent: number } = { setting: 'S', percent: 100 };

/** The paper's headline (Sec. 4): S+C reaches 85-90% of peak at s = 5-7.5%, S alone 55-70%. */
export const PAPER_FINDING = { percent: 5, scLow: 0.85, sHigh: 0.7 } as const;

/** Markers in docs/experiment.md between which the generated table goes. */
export const TABLE_START = '<!-- experiment-table:start -->';
export const TABLE_END = '<!-- experiment-table:end -->';

export interface ExperimentRun {
  setting: Setting;
  /** Sec. 3.3's s, in percent. */
  percent: number;
  seed: number;
  metrics: Record<MetricName, number | null>;
  bestEpoch: number;
  segPatches: number;
  clsPatches: number;
  trainSeconds: number;
  evalSeconds: number;
  /** Set when the run is provably identical to another one (S+C at s = 100% trains exactly S's patches). */
  sameAs?: string;
}

export interface Spread {
  mean: number;
  min: number;
  max: number;
  /** Sample standard deviation (0 for one value). */
  std: number;
  n: number;
}

export interface RelativeRow {
  setting: Setting;
  percent: number;
  seeds: number[];
  /** Each metric over the repetitions, divided by the reference's mean; null where a value is missing. */
  relative: Record<MetricName, Spread | null>;
}

export interface RelativeTable {
  /** The reference's absolute mean per metric. */
  reference: Record<MetricName, number | null>;
  rows: RelativeRow[];
}

export function spread(values: readonly number[]): Spread {
  if (values.length === 0) throw new Error('spread of no values');
  const n = values.length;
  const mean = values.reduce((s, v) => s + v, 0) / n;
  const std = n > 1 ? Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, min: Math.min(...values), max: Math.max(...values), std, n };
}

function mean(values: readonly number[]): number {
  return values.reduce((s, v) => s + v, 0) / values.length;
}

export function runKey(r: { setting: Setting; percent: number; seed: number }): string {
  return `${r.setting}@${r.percent}#${r.seed}`;
}

/**
 * Groups runs by (setting, s) and divides each metric by the mean of the reference runs (S at s = 100%). Rows come
 * in SETTINGS order, then by s. Throws when there is no reference run.
 */
export function relativeTable(runs: readonly ExperimentRun[]): RelativeTable {
  const refRuns = runs.filter((r) => r.setting === REFERENCE.setting && r.percent === REFERENCE.percent);
  if (refRuns.length === 0) throw new Error(`no ${REFERENCE.setting} run at s = ${REFERENCE.percent}%: nothing to report relative to`);
  const reference = {} as Record<MetricName, number | null>;
  for (const m of METRICS) {
    const vals = refRuns.map((r) => r.metrics[m]).filter((v): v is number => v !== null);
    const ref = vals.length > 0 ? mean(vals) : null;
    reference[m] = ref !== null && ref !== 0 ? ref : null;
  }
  const groups = new Map<string, ExperimentRun[]>();
  for (const r of runs) {
    const k = `${r.setting}@${r.percent}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const rows: RelativeRow[] = [...groups.values()].map((g) => {
    const relative = {} as Record<MetricName, Spread | null>;
    for (const m of METRICS) {
      const ref = reference[m];
      const vals = g.map((r) => r.metrics[m]).filter((v): v is number => v !== null);
      relative[m] = ref === null || vals.length === 0 ? null : spread(vals.map((v) => v / ref));
    }
    return { setting: g[0]!.setting, percent: g[0]!.percent, seeds: g.map((r) => r.seed).sort((a, b) => a - b), relative };
  });
  rows.sort((a, b) => SETTINGS.indexOf(a.setting) - SETTINGS.indexOf(b.setting) || a.percent - b.percent);
  return { reference, rows };
}

const pct = (x: number, digits = 1) => `${(100 * x).toFixed(digits)}%`;

function cell(s: Spread | null): string {
  if (s === null) return 'n/a';
  return s.n > 1 ? `${pct(s.mean)} (${pct(s.min, 0)}-${pct(s.max, 0)})` : pct(s.mean);
}

/** One sentence comparing the table with the paper's headline at s = PAPER_FINDING.percent, on macro F1. */
export function findingSummary(table: RelativeTable): string {
  const at = (setting: Setting) => table.rows.find((r) => r.setting === setting && r.percent === PAPER_FINDING.percent)?.relative.macroF1 ?? null;
  const s = at('S');
  const sc = at('S+C');
  const scStar = at('S+C*');
  if (s === null || sc === null) return `No S and S+C runs at s = ${PAPER_FINDING.percent}% to compare with the paper's headline.`;
  const verdict =
    sc.mean >= PAPER_FINDING.scLow && s.mean <= PAPER_FINDING.sHigh
      ? 'holds here'
      : sc.mean > s.mean
        ? 'holds only in direction here (S+C beats S, but not at the paper\'s levels)'
        : 'does not hold here (S+C does not beat S)';
  const spreadNote =
    s.n > 1 && sc.n > 1 ? ` Spread over repetitions (max - min): S ${pct(s.max - s.min)}, S+C ${pct(sc.max - sc.min)} (paper: S+C varies less).` : '';
  return (
    `At s = ${PAPER_FINDING.percent}%, macro F1 relative to S at 100%: S ${pct(s.mean)}, S+C ${pct(sc.mean)}` +
    (scStar ? `, S+C* ${pct(scStar.mean)}` : '') +
    `. The paper's finding (S+C ${pct(PAPER_FINDING.scLow, 0)}-90% of peak at s = 5-7.5%, S 55-${pct(PAPER_FINDING.sHigh, 0)}) ${verdict}.` +
    spreadNote
  );
}

/** The markdown that goes between the markers: the reference's absolute values, the relative table, the finding. */
export function tableMarkdown(table: RelativeTable, runs: readonly ExperimentRun[]): string {
  const fmt = (v: number | null) => (v === null ? 'n/a' : v.toFixed(4));
  const lines = [
    `Reference, S at s = ${REFERENCE.percent}% (mean over its runs): ` + METRICS.map((m) => `${METRIC_LABELS[m]} ${fmt(table.reference[m])}`).join(', ') + '.',
    '',
    'Each cell: mean over the repetitions relative to that reference, with the min-max range in brackets.',
    '',
    `| setting | s | runs | ${METRICS.map((m) => METRIC_LABELS[m]).join(' | ')} |`,
    `|---|---|---|${METRICS.map(() => '---').join('|')}|`,
    ...table.rows.map((r) => `| ${r.setting} | ${r.percent}% | ${r.seeds.length} | ${METRICS.map((m) => cell(r.relative[m])).join(' | ')} |`),
    '',
    findingSummary(table),
  ];
  const aliased = runs.filter((r) => r.sameAs !== undefined).length;
  if (aliased > 0) lines.push('', `S+C at s = 100% selects no class patches, so it is S at 100% exactly; its ${aliased} run(s) reuse S's.`);
  return lines.join('\n');
}

/** Replaces what lies between the markers (kept) in `doc`; throws when they are missing. */
export function replaceBetweenMarkers(doc: string, content: string, start = TABLE_START, end = TABLE_END): string {
  const i = doc.indexOf(start);
  const j = doc.indexOf(end, i + start.length);
  if (i < 0 || j < 0) throw new Error(`the document has no ${start} ... ${end} markers`);
  return `${doc.slice(0, i + start.length)}\n${content.trim()}\n${doc.slice(j)}`;
}

// ---- the plot ----

export const PLOT_METRICS: readonly MetricName[] = ['macroF1', 'bachScore'];
export const SETTING_COLOURS: Record<Setting, string> = { S: '#1f77b4', 'S+C': '#d62728', 'S+C*': '#2ca02c' };
const PANEL = { width: 440, height: 340, left: 60, right: 15, top: 40, bottom: 50 };
const LEGEND_HEIGHT = 30;

export interface PlotGeometry {
  /** Pixel x of a percentage in a panel (log scale). */
  x: (percent: number) => number;
  /** Pixel y of a relative value. */
  y: (value: number) => number;
  yTicks: number[];
  xTicks: number[];
}

/** Log-x axis over the table's percentages; y from min(0, lowest) to max(1.1, highest), in steps of 0.2. */
export function plotGeometry(table: RelativeTable, metrics: readonly MetricName[] = PLOT_METRICS): PlotGeometry {
  const xTicks = [...new Set(table.rows.map((r) => r.percent))].filter((p) => p > 0).sort((a, b) => a - b);
  if (xTicks.length === 0) throw new Error('nothing to plot: no run with s > 0');
  let lo = Math.log10(xTicks[0]!);
  let hi = Math.log10(xTicks.at(-1)!);
  if (hi - lo < 1e-9) [lo, hi] = [lo - 0.3, hi + 0.3];
  const pad = 0.05 * (hi - lo);
  const values = table.rows.flatMap((r) => metrics.flatMap((m) => (r.relative[m] ? [r.relative[m].min, r.relative[m].max] : [])));
  const yLo = Math.floor(Math.min(0, ...values) / 0.2) * 0.2;
  const yHi = Math.ceil(Math.max(1.1, ...values) / 0.2) * 0.2;
  const plotW = PANEL.width - PANEL.left - PANEL.right;
  const plotH = PANEL.height - PANEL.top - PANEL.bottom;
  const yTicks: number[] = [];
  for (let v = yLo; v <= yHi + 1e-9; v += 0.2) yTicks.push(Math.round(v * 10) / 10);
  return {
    x: (p) => PANEL.left + ((Math.log10(p) - (lo - pad)) / (hi - lo + 2 * pad)) * plotW,
    y: (v) => PANEL.top + (1 - (v - yLo) / (yHi - yLo)) * plotH,
    yTicks,
    xTicks,
  };
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const f = (v: number) => v.toFixed(1);

function panel(table: RelativeTable, metric: MetricName, g: PlotGeometry, dx: number): string {
  const parts: string[] = [`<g transform="translate(${dx},${LEGEND_HEIGHT})">`];
  const [x0, x1] = [PANEL.left, PANEL.width - PANEL.right];
  const [y0, y1] = [PANEL.top, PANEL.height - PANEL.bottom];
  parts.push(`<text x="${(x0 + x1) / 2}" y="${PANEL.top - 14}" text-anchor="middle" font-size="15">${esc(METRIC_LABELS[metric])} relative to S at s = 100%</text>`);
  for (const t of g.yTicks) {
    parts.push(`<line x1="${x0}" x2="${x1}" y1="${f(g.y(t))}" y2="${f(g.y(t))}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${x0 - 6}" y="${f(g.y(t) + 4)}" text-anchor="end" font-size="11">${t.toFixed(1)}</text>`);
  }
  for (const p of g.xTicks) {
    parts.push(`<line x1="${f(g.x(p))}" x2="${f(g.x(p))}" y1="${y0}" y2="${y1}" stroke="#f0f0f0"/>`);
    parts.push(`<text x="${f(g.x(p))}" y="${y1 + 16}" text-anchor="middle" font-size="11">${p}</text>`);
  }
  parts.push(`<line class="reference" x1="${x0}" x2="${x1}" y1="${f(g.y(1))}" y2="${f(g.y(1))}" stroke="#555" stroke-dasharray="5,4"/>`);
  parts.push(`<rect x="${x0}" y="${y0}" width="${x1 - x0}" height="${y1 - y0}" fill="none" stroke="#333"/>`);
  parts.push(`<text x="${(x0 + x1) / 2}" y="${y1 + 36}" text-anchor="middle" font-size="12">s: share of segmentation patches (%, log scale)</text>`);
  for (const setting of SETTINGS) {
    const pts = table.rows
      .filter((r) => r.setting === setting && r.percent > 0 && r.relative[metric] !== null)
      .map((r) => ({ p: r.percent, s: r.relative[metric]! }));
    if (pts.length === 0) continue;
    const colour = SETTING_COLOURS[setting];
    if (pts.length > 1) {
      const band = [...pts.map((q) => `${f(g.x(q.p))},${f(g.y(q.s.max))}`), ...[...pts].reverse().map((q) => `${f(g.x(q.p))},${f(g.y(q.s.min))}`)];
      parts.push(`<polygon class="band" points="${band.join(' ')}" fill="${colour}" fill-opacity="0.15" stroke="none"/>`);
    }
    for (const q of pts) {
      parts.push(`<line class="whisker" x1="${f(g.x(q.p))}" x2="${f(g.x(q.p))}" y1="${f(g.y(q.s.min))}" y2="${f(g.y(q.s.max))}" stroke="${colour}" stroke-width="1.5"/>`);
    }
    parts.push(
      `<polyline class="series" data-setting="${esc(setting)}" points="${pts.map((q) => `${f(g.x(q.p))},${f(g.y(q.s.mean))}`).join(' ')}" fill="none" stroke="${colour}" stroke-width="2"/>`,
    );
    for (const q of pts) parts.push(`<circle cx="${f(g.x(q.p))}" cy="${f(g.y(q.s.mean))}" r="3.5" fill="${colour}"/>`);
  }
  parts.push('</g>');
  return parts.join('\n');
}

/** Fig. 3 at our scale: one panel per metric (relative macro F1 and BACH score), one line per setting, min-max bands. */
export function plotSvg(table: RelativeTable, metrics: readonly MetricName[] = PLOT_METRICS): string {
  const g = plotGeometry(table, metrics);
  const width = PANEL.width * metrics.length;
  const height = PANEL.height + LEGEND_HEIGHT;
  const legend = SETTINGS.filter((s) => table.rows.some((r) => r.setting === s)).map((s, i) => {
    const x = 70 + i * 130;
    return `<line x1="${x}" x2="${x + 28}" y1="18" y2="18" stroke="${SETTING_COLOURS[s]}" stroke-width="3"/><text x="${x + 34}" y="23" font-size="13">${esc(s)}</text>`;
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    ...legend,
    `<text x="${width - 10}" y="23" text-anchor="end" font-size="11" fill="#555">line: mean; band and bars: min-max over repetitions</text>`,
    ...metrics.map((m, i) => panel(table, m, g, i * PANEL.width)),
    '</svg>',
  ].join('\n');
}

/** Pixel density of the PNG: 2x the SVG's 72 dpi, for sharp text. */
export const PLOT_DENSITY = 144;

export function renderPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg), { density: PLOT_DENSITY }).png().toBuffer();
}
