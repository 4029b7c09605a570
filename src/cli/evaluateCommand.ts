import { type Command, InvalidArgumentError } from 'commander';
import { SPLITS, type Split } from '../data/datasets/dataset.js';
import { evaluateModel } from '../evaluation/evaluateModel.js';
import { readLabelMap } from '../data/labels/labelMap.js';
import { ConfusionAccumulator, type SegmentationMetrics } from '../evaluation/metrics.js';
import { writeFile } from 'node:fs/promises';
import { formatMetricsTable, formatModelReport, metricsToJson } from '../evaluation/report.js';

interface EvaluateOptions {
  pred?: string;
  truth?: string;
  classes?: number;
  json?: boolean;
  model?: string;
  data?: string;
  split?: string;
  models?: string;
  report?: string;
}

function parseClassCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 2 || n > 256) throw new InvalidArgumentError('must be an integer in 2..256');
  return n;
}

/** Scores one predicted label map against its ground truth. */
export async function evaluatePair(predPath: string, truthPath: string, numClasses: number): Promise<SegmentationMetrics> {
  const [pred, truth] = await Promise.all([readLabelMap(predPath), readLabelMap(truthPath)]);
  if (pred.width !== truth.width || pred.height !== truth.height) {
    throw new Error(
      `prediction ${predPath} is ${pred.width}x${pred.height} but truth ${truthPath} is ${truth.width}x${truth.height}`,
    );
  }
  const acc = new ConfusionAccumulator(numClasses);
  try {
    acc.add(truth.labels, pred.labels);
  } catch (err) {
    throw new Error(`${predPath} vs ${truthPath}: ${(err as Error).message}`);
  }
  return acc.metrics();
}

async function runEvaluate(opts: EvaluateOptions): Promise<void> {
  const pairForm = opts.pred !== undefined || opts.truth !== undefined;
  const modelForm = opts.model !== undefined || opts.data !== undefined;
  if (pairForm && modelForm) throw new Error('use either --pred/--truth or --model/--data, not both');
  let metrics: SegmentationMetrics;
  if (modelForm) {
    if (opts.model === undefined || opts.data === undefined) throw new Error('--model and --data are both required');
    if (!(SPLITS as readonly string[]).includes(opts.split ?? '')) throw new Error(`--split must be one of ${SPLITS.join(', ')}`);
    const result = await evaluateModel({
      models: opts.models ?? process.env.HISTOSEG_MODELS ?? 'models',
      model: opts.model,
      data: opts.data,
      split: opts.split as Split,
      log: opts.json ? undefined : (line) => process.stderr.write(line + '\n'),
    });
    metrics = result.metrics;
    if (opts.report) await writeFile(opts.report, formatModelReport(result));
  } else {
    if (opts.pred === undefined || opts.truth === undefined) throw new Error('--pred and --truth are both required');
    if (opts.classes === undefined) throw new Error('--classes N is required with --pred/--truth');
    metrics = await evaluatePair(opts.pred, opts.truth, opts.classes);
  }
  process.stdout.write(opts.json ? JSON.stringify(metricsToJson(metrics)) + '\n' : formatMetricsTable(metrics));
}

export function registerEvaluate(program: Command): void {
  program
    .command('evaluate')
    .description('score a predicted label map against ground truth (paper Sec. 3.2 metrics)')
    .option('--pred <png>', 'predicted label map: 8-bit greyscale PNG, pixel = class index')
    .option('--truth <png>', 'ground-truth label map of the same size')
    .option('--classes <n>', 'number of classes', parseClassCount)
    .option('--json', 'print one JSON object instead of a table')
    .option('--model <name[@version]>', 'segment a dataset split through the serving engine and score it, pooled over its slides')
    .option('--models <dir>', 'model repository for --model (default: $HISTOSEG_MODELS or models)')
    .option('--report <file.md>', 'with --model: also write a markdown report beside the all-background baseline')
    .option('--data <dir>', 'dataset to score with --model')
    .option('--split <split>', 'dataset split to score with --model', 'test')
    .action(async (opts: EvaluateOptions) => runEvaluate(opts));
}
