// Adam over flat Float32Arrays, as TF.js defines it (tfjs-core AdamOptimizer.applyGradients), so data-parallel
// workers can update their share of the weights in place; and the bridge between that flat state and a TF.js
// AdamOptimizer, which checkpoints and single-thread training use.
import * as tf from '@tensorflow/tfjs';

const f = Math.fround;

/** Adam's private bias-correction variables (tfjs-core AdamOptimizer); read and restored for an exact resume. */
interface AdamInternals {
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
}

interface Moment {
  originalName: string;
  variable: tf.Variable;
}

interface AdamPrivate {
  accumulatedFirstMoment: Moment[];
  accumulatedSecondMoment: Moment[];
  iterations_: number | undefined;
}

export function adamInternals(optimizer: tf.AdamOptimizer): AdamInternals {
  const o = optimizer as unknown as Partial<AdamInternals>;
  if (!(o.accBeta1 instanceof tf.Variable) || !(o.accBeta2 instanceof tf.Variable)) {
    throw new Error('this TF.js version has no AdamOptimizer.accBeta1/accBeta2; checkpoints cannot restore Adam exactly');
  }
  return o as AdamInternals;
}

function adamPrivate(optimizer: tf.AdamOptimizer): AdamPrivate {
  const o = optimizer as unknown as Partial<AdamPrivate>;
  if (!Array.isArray(o.accumulatedFirstMoment) || !Array.isArray(o.accumulatedSecondMoment)) {
    throw new Error('this TF.js version keeps AdamOptimizer moments differently; flat Adam cannot share its state');
  }
  return o as AdamPrivate;
}

/** The hyperparameters as float32 scalars, as TF.js makes them when it multiplies by a number. */
export interface AdamConstants {
  beta1: number;
  beta2: number;
  oneMinusBeta1: number;
  oneMinusBeta2: number;
  epsilon: number;
  negLearningRate: number;
}

export function adamConstants(optimizer: tf.AdamOptimizer): AdamConstants {
  const c = optimizer.getConfig() as { learningRate: number; beta1: number; beta2: number; epsilon: number };
  return {
    beta1: f(c.beta1),
    beta2: f(c.beta2),
    oneMinusBeta1: f(1 - c.beta1),
    oneMinusBeta2: f(1 - c.beta2),
    epsilon: f(c.epsilon),
    negLearningRate: f(-c.learningRate),
  };
}

/** The step count and the running powers beta^(t+1) (float32, by repeated multiplication, as TF.js keeps them). */
export interface AdamScalars {
  iterations: number;
  accBeta1: number;
  accBeta2: number;
}

/** What one step uses (1 - accBeta, float32) and the scalars after it. */
export function adamStep(k: AdamConstants, s: AdamScalars): { oneMinusAccBeta1: number; oneMinusAccBeta2: number; next: AdamScalars } {
  return {
    oneMinusAccBeta1: f(1 - s.accBeta1),
    oneMinusAccBeta2: f(1 - s.accBeta2),
    next: { iterations: s.iterations + 1, accBeta1: f(s.accBeta1 * k.beta1), accBeta2: f(s.accBeta2 * k.beta2) },
  };
}

/**
 * Adam on elements [lo, hi): w, m and v updated in place from gradient g. TF.js's formula, bias corrections
 * included, with each element's arithmetic in double and rounded once when stored (TF.js rounds every operation to
 * float32; the two differ by a few units in the last place, and this is twice as fast).
 */
export function adamUpdate(
  k: AdamConstants,
  oneMinusAccBeta1: number,
  oneMinusAccBeta2: number,
  w: Float32Array,
  m: Float32Array,
  v: Float32Array,
  g: Float32Array,
  lo: number,
  hi: number,
): void {
  const { beta1, beta2, oneMinusBeta1, oneMinusBeta2, epsilon, negLearningRate } = k;
  const r1 = 1 / oneMinusAccBeta1;
  const r2 = 1 / oneMinusAccBeta2;
  for (let i = lo; i < hi; i++) {
    const gi = g[i]!;
    const mi = m[i]! * beta1 + gi * oneMinusBeta1;
    const vi = v[i]! * beta2 + gi * gi * oneMinusBeta2;
    m[i] = mi;
    v[i] = vi;
    w[i]! += ((mi * r1) / (Math.sqrt(vi * r2) + epsilon)) * negLearningRate;
  }
}

/** Reads `optimizer`'s state into flat moments m and v (vars order); a fresh optimizer gives zeros. */
export async function readAdam(optimizer: tf.AdamOptimizer, vars: readonly tf.Variable[], m: Float32Array, v: Float32Array): Promise<AdamScalars> {
  const p = adamPrivate(optimizer);
  const { accBeta1, accBeta2 } = adamInternals(optimizer);
  if (p.accumulatedFirstMoment.length === 0) {
    m.fill(0);
    v.fill(0);
  } else {
    if (p.accumulatedFirstMoment.length !== vars.length || p.accumulatedSecondMoment.length !== vars.length) {
      throw new Error(`the optimizer has moments for ${p.accumulatedFirstMoment.length} variables, the model ${vars.length}`);
    }
    let o = 0;
    for (let i = 0; i < vars.length; i++) {
      m.set((await p.accumulatedFirstMoment[i]!.variable.data()) as Float32Array, o);
      v.set((await p.accumulatedSecondMoment[i]!.variable.data()) as Float32Array, o);
      o += vars[i]!.size;
    }
  }
  const [b1, b2] = await Promise.all([accBeta1.data(), accBeta2.data()]);
  return { iterations: optimizer.iterations, accBeta1: b1[0]!, accBeta2: b2[0]! };
}

/** Writes flat moments and scalars into `optimizer`, so that it continues where the flat update left off. */
export async function writeAdam(optimizer: tf.AdamOptimizer, vars: readonly tf.Variable[], m: Float32Array, v: Float32Array, s: AdamScalars): Promise<void> {
  const p = adamPrivate(optimizer);
  let o = 0;
  const slices = vars.map((x) => {
    const r = { shape: x.shape, m: m.subarray(o, o + x.size), v: v.subarray(o, o + x.size) };
    o += x.size;
    return r;
  });
  if (p.accumulatedFirstMoment.length === vars.length) {
    tf.tidy(() => {
      slices.forEach((x, i) => {
        p.accumulatedFirstMoment[i]!.variable.assign(tf.tensor(x.m, x.shape));
        p.accumulatedSecondMoment[i]!.variable.assign(tf.tensor(x.v, x.shape));
      });
    });
  } else {
    const named = [
      ...slices.map((x, i) => ({ name: `${vars[i]!.name}/m`, tensor: tf.tensor(x.m, x.shape) })),
      ...slices.map((x, i) => ({ name: `${vars[i]!.name}/v`, tensor: tf.tensor(x.v, x.shape) })),
    ];
    const iter = { name: 'iter', tensor: tf.scalar(s.iterations, 'int32') };
    await optimizer.setWeights([iter, ...named]);
    tf.dispose([iter.tensor, ...named.map((n) => n.tensor)]); // setWeights made variables of the moments
  }
  p.iterations_ = s.iterations;
  const { accBeta1, accBeta2 } = adamInternals(optimizer);
  tf.tidy(() => {
    accBeta1.assign(tf.scalar(s.accBeta1));
    accBeta2.assign(tf.scalar(s.accBeta2));
  });
}
