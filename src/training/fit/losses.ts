import * as tf from '@tensorflow/tfjs';
import { CLASS_WEIGHT_MAX } from './hyperparameters.js';

/**
 * Class weights of the segmentation loss from the training pixels' class distribution (Sec. 2.3: "weights
 * proportional to the pixelwise class distributions"; in practice inverse frequency, so rare classes weigh more):
 *   w_c = min(N / (C n_c), maxWeight)   (n_c = 0 gives maxWeight),  then w_c / mean(w)  so the mean weight is 1.
 * N = all pixels, C = classes, n_c = pixels of class c. Balanced classes all get 1.
 */
export function classWeights(pixelCounts: readonly number[], maxWeight = CLASS_WEIGHT_MAX): number[] {
  const c = pixelCounts.length;
  if (c < 2) throw new Error(`class weights need at least 2 classes, got ${c}`);
  if (pixelCounts.some((n) => !(n >= 0))) throw new Error(`pixel counts must be non-negative: ${pixelCounts.join(', ')}`);
  const total = pixelCounts.reduce((a, b) => a + b, 0);
  if (total === 0) return new Array<number>(c).fill(1);
  const raw = pixelCounts.map((n) => (n === 0 ? maxWeight : Math.min(total / (c * n), maxWeight)));
  const mean = raw.reduce((a, b) => a + b, 0) / c;
  return raw.map((w) => w / mean);
}

/**
 * Pixelwise weighted cross-entropy (Sec. 2.2-2.3), reduced as PyTorch's CrossEntropyLoss(weight=w) does:
 *   Lseg = sum_i w_{y_i} (-log softmax(z_i)_{y_i}) / sum_i w_{y_i}.
 * `target` [B,H,W,C] holds w_{y_i} at the true class's channel and 0 elsewhere (or, for logits shared by a block of
 * pixels, those pixels' sum: training passes seg16 and step.ts's blockTargets); items that are not segmentation
 * patches have all-zero rows, so they add nothing. No segmentation pixels at all gives 0.
 */
export function weightedPixelCrossEntropy(maskLogits: tf.Tensor, target: tf.Tensor, denominator?: number): tf.Scalar {
  return tf.tidy(() => {
    const num = tf.neg(tf.sum(tf.mul(target, tf.logSoftmax(maskLogits))));
    return tf.div(num, denominator === undefined ? tf.maximum(tf.sum(target), 1e-12) : Math.max(denominator, 1e-12)) as tf.Scalar;
  });
}

/**
 * Cross-entropy on the class logits, averaged over the classification items (Sec. 2.2: "per item"). `target`
 * [B,C] is one-hot for classification patches and all zeros for segmentation patches; none at all gives 0.
 */
export function itemCrossEntropy(clsLogits: tf.Tensor, target: tf.Tensor, denominator?: number): tf.Scalar {
  return tf.tidy(() => {
    const num = tf.neg(tf.sum(tf.mul(target, tf.logSoftmax(clsLogits))));
    return tf.div(num, denominator === undefined ? tf.maximum(tf.sum(target), 1) : Math.max(denominator, 1)) as tf.Scalar;
  });
}

export interface JointLoss {
  /** Lcls + Lseg (Sec. 2.3), the quantity minimised. */
  total: tf.Scalar;
  seg: tf.Scalar;
  cls: tf.Scalar;
}

/**
 * The paper's objective: segmentation patches through encoder + decoder, class patches also through the classifier.
 * `denominators` (default: this batch's) lets a shard of a batch be normalised by the whole batch's sums.
 */
export function jointLoss(
  maskLogits: tf.Tensor,
  clsLogits: tf.Tensor,
  segTarget: tf.Tensor,
  clsTarget: tf.Tensor,
  denominators?: { seg: number; cls: number },
): JointLoss {
  const seg = weightedPixelCrossEntropy(maskLogits, segTarget, denominators?.seg);
  const cls = itemCrossEntropy(clsLogits, clsTarget, denominators?.cls);
  return { total: tf.add(seg, cls) as tf.Scalar, seg, cls };
}
