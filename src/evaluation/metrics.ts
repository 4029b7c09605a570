// Segmentation metrics of the paper (Sec. 3.2, Eq. 1-6), accumulable over several slides.

/** The "small constant" of Eq. 6 (Sec. 3.2); the paper gives no value, any tiny one only guards 0/0. */
export const BACH_SCORE_EPSILON = 1e-9;

export interface ClassMetrics {
  /** (tp + tn) / N, Eq. 1. Defined whenever N > 0. */
  accuracy: number | null;
  /** tp / (tp + fp), Eq. 2. */
  precision: number | null;
  /** tp / (tp + fn), Eq. 3. */
  recall: number | null;
  /** 2PR / (P + R), Eq. 4. */
  f1: number | null;
  /** tp / (tp + fn + fp), Eq. 5. */
  iou: number | null;
}

export interface SegmentationMetrics {
  /** Pixels compared. */
  pixels: number;
  accuracy: number | null;
  /** Mean F1 over the classes present in truth or prediction. */
  macroF1: number | null;
  /** The paper's "micro" F1: per-class F1 weighted by ground-truth pixel share (scikit-learn's average='weighted'). */
  microF1: number | null;
  /** Accuracy over pixels whose truth is not class 0; null when there are none. */
  foregroundAccuracy: number | null;
  /** Eq. 6 with |gt - 3| generalised to |gt - (C - 1)|. */
  bachScore: number | null;
  perClass: ClassMetrics[];
  /** confusion[truth][prediction] pixel counts. */
  confusion: number[][];
}

/** Pools the confusion matrix and the Eq. 6 sums over any number of label-map pairs. */
export class ConfusionAccumulator {
  readonly numClasses: number;
  /** Row-major, rows = truth, columns = prediction. Float64 so counts stay exact past 2^32. */
  readonly counts: Float64Array;
  /** Sum of |pred - gt| over all pixels (numerator of Eq. 6). */
  bachNumerator = 0;
  /** Sum of max(gt, |gt - (C-1)|) over pixels where pred or gt is foreground (denominator of Eq. 6, less eps). */
  bachDenominator = 0;

  constructor(numClasses: number) {
    if (!Number.isInteger(numClasses) || numClasses < 2 || numClasses > 256) {
      throw new Error(`number of classes must be an integer in 2..256, got ${numClasses}`);
    }
    this.numClasses = numClasses;
    this.counts = new Float64Array(numClasses * numClasses);
  }

  /** Adds one pair of label maps of equal length (pixel value = class index). */
  add(truth: Uint8Array, pred: Uint8Array): void {
    if (truth.length !== pred.length) {
      throw new Error(`label maps differ in size: truth has ${truth.length} pixels, prediction ${pred.length}`);
    }
    const c = this.numClasses;
    const last = c - 1;
    // Integer pixel counts per (gt, pred) pair are enough for every metric, Eq. 6 included.
    const local = new Float64Array(c * c);
    for (let i = 0; i < truth.length; i++) {
      const g = truth[i]!;
      const p = pred[i]!;
      if (g >= c || p >= c) {
        const which = g >= c ? `truth value ${g}` : `prediction value ${p}`;
        throw new Error(`pixel ${i} has ${which}, but there are only ${c} classes (0..${last})`);
      }
      local[g * c + p]! += 1;
    }
    for (let g = 0; g < c; g++) {
      const weight = Math.max(g, Math.abs(g - last));
      for (let p = 0; p < c; p++) {
        const n = local[g * c + p]!;
        if (n === 0) continue;
        this.counts[g * c + p]! += n;
        this.bachNumerator += n * Math.abs(p - g);
        if (g > 0 || p > 0) this.bachDenominator += n * weight;
      }
    }
  }

  /** Adds another accumulator's counts (e.g. one slide's) into this one. */
  merge(other: ConfusionAccumulator): void {
    if (other.numClasses !== this.numClasses) {
      throw new Error(`cannot merge ${other.numClasses}-class counts into ${this.numClasses}-class counts`);
    }
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += other.counts[i]!;
    this.bachNumerator += other.bachNumerator;
    this.bachDenominator += other.bachDenominator;
  }

  confusion(): number[][] {
    const c = this.numClasses;
    return Array.from({ length: c }, (_, g) => Array.from(this.counts.subarray(g * c, (g + 1) * c)));
  }

  metrics(): SegmentationMetrics {
    return metricsFromConfusion(this.confusion(), this.bachNumerator, this.bachDenominator);
  }
}

/** 0/0 -> null; the callers below decide what null means for each metric. */
function ratio(num: number, den: number): number | null {
  return den === 0 ? null : num / den;
}

/**
 * All metrics from a confusion matrix (rows = truth) and the Eq. 6 sums.
 * 0/0 rule: a class absent from both truth and prediction gets null precision, recall, F1 and IoU and is left out of
 * the macro average. A class present in only one of them has a 0/0 precision or recall, which counts as 0
 * (scikit-learn's zero_division=0), so a missed or invented class pulls the macro F1 down.
 */
export function metricsFromConfusion(
  confusion: number[][],
  bachNumerator: number,
  bachDenominator: number,
): SegmentationMetrics {
  const c = confusion.length;
  const rowSums = confusion.map((row) => row.reduce((a, b) => a + b, 0));
  const colSums = Array.from({ length: c }, (_, p) => confusion.reduce((a, row) => a + row[p]!, 0));
  const total = rowSums.reduce((a, b) => a + b, 0);
  let correct = 0;
  for (let k = 0; k < c; k++) correct += confusion[k]![k]!;

  const perClass: ClassMetrics[] = [];
  let macroSum = 0;
  let macroCount = 0;
  let weightedSum = 0;
  for (let k = 0; k < c; k++) {
    const tp = confusion[k]![k]!;
    const fn = rowSums[k]! - tp;
    const fp = colSums[k]! - tp;
    const tn = total - tp - fn - fp;
    const accuracy = ratio(tp + tn, total);
    if (tp + fn + fp === 0) {
      perClass.push({ accuracy, precision: null, recall: null, f1: null, iou: null });
      continue;
    }
    const precision = ratio(tp, tp + fp) ?? 0;
    const recall = ratio(tp, tp + fn) ?? 0;
    const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
    const iou = tp / (tp + fn + fp);
    perClass.push({ accuracy, precision, recall, f1, iou });
    macroSum += f1;
    macroCount += 1;
    weightedSum += f1 * rowSums[k]!;
  }

  let fgTotal = 0;
  let fgCorrect = 0;
  for (let k = 1; k < c; k++) {
    fgTotal += rowSums[k]!;
    fgCorrect += confusion[k]![k]!;
  }

  return {
    pixels: total,
    accuracy: ratio(correct, total),
    macroF1: ratio(macroSum, macroCount),
    microF1: ratio(weightedSum, total),
    foregroundAccuracy: ratio(fgCorrect, fgTotal),
    // With no pixels there is nothing to score; otherwise a 0 denominator implies a 0 numerator and a score of 1.
    bachScore: total === 0 ? null : 1 - bachNumerator / (bachDenominator + BACH_SCORE_EPSILON),
    perClass,
    confusion: confusion.map((row) => [...row]),
  };
}

/** One pair of label maps, scored on their own. */
export function computeMetrics(truth: Uint8Array, pred: Uint8Array, numClasses: number): SegmentationMetrics {
  const acc = new ConfusionAccumulator(numClasses);
  acc.add(truth, pred);
  return acc.metrics();
}
