import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  MACENKO_IO,
  STAIN_SAMPLE_PIXELS,
  StainEstimationError,
  StainEstimator,
  angleDegrees,
  estimateStain,
  normalizeStain,
  symmetricEigen3,
  type StainParams,
} from '../src/imaging/macenko.js';
import { rng } from './support/random.js';
import { STAIN_PAIR_VARIANTS } from './support/testData.js';

const unit = (v: number[]): number[] => {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
};
// torchstain's reference H&E vectors, and a second, visibly different stain.
const H1 = unit([0.5626, 0.7201, 0.4062]);
const E1 = unit([0.2159, 0.8012, 0.5581]);
const H2 = unit([0.65, 0.7, 0.29]);
const E2 = unit([0.3, 0.85, 0.45]);

/** Concentrations: 20% pure H, 20% pure E, 50% mixtures, 10% glass. */
function concentrations(n: number, seed: number): Float64Array {
  const rnd = rng(seed);
  const c = new Float64Array(2 * n);
  for (let i = 0; i < n; i++) {
    const k = rnd();
    if (k < 0.2) c[2 * i] = 0.8 + 1.2 * rnd();
    else if (k < 0.4) c[2 * i + 1] = 0.8 + 0.7 * rnd();
    else if (k < 0.9) {
      c[2 * i] = 0.2 + 1.3 * rnd();
      c[2 * i + 1] = 0.2 + 1.3 * rnd();
    }
  }
  return c;
}

/** Beer-Lambert: I = Io exp(-(cH H + cE E)) - 1, 8-bit. */
function render(c: Float64Array, h: number[], e: number[]): Uint8Array {
  const n = c.length / 2;
  const out = new Uint8ClampedArray(n * 3);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < 3; k++) out[3 * i + k] = MACENKO_IO * Math.exp(-(c[2 * i]! * h[k]! + c[2 * i + 1]! * e[k]!)) - 1;
  }
  return new Uint8Array(out.buffer);
}

test('symmetricEigen3 returns orthonormal eigenvectors, largest eigenvalue first', () => {
  const a = [
    [4, 1, -2],
    [1, 2, 0.5],
    [-2, 0.5, 3],
  ];
  const { values, vectors } = symmetricEigen3(a);
  assert.ok(values[0]! >= values[1]! && values[1]! >= values[2]!);
  assert.ok(Math.abs(values[0]! + values[1]! + values[2]! - 9) < 1e-9, 'trace is preserved');
  for (let i = 0; i < 3; i++) {
    const v = vectors[i]!;
    for (let r = 0; r < 3; r++) {
      const av = a[r]![0]! * v[0]! + a[r]![1]! * v[1]! + a[r]![2]! * v[2]!;
      assert.ok(Math.abs(av - values[i]! * v[r]!) < 1e-9, 'A v = lambda v');
    }
    for (let j = 0; j < 3; j++) {
      const dot = v[0]! * vectors[j]![0]! + v[1]! * vectors[j]![1]! + v[2]! * vectors[j]![2]!;
      assert.ok(Math.abs(dot - (i === j ? 1 : 0)) < 1e-9, 'orthonormal');
    }
  }
});

test('stain vectors of an image built from known stains are recovered, H first', () => {
  const n = 120 * 120;
  const p = estimateStain(render(concentrations(n, 1), H1, E1), n);
  assert.ok(angleDegrees(p.stainMatrix[0]!, H1) < 3, `H off by ${angleDegrees(p.stainMatrix[0]!, H1)} deg`);
  assert.ok(angleDegrees(p.stainMatrix[1]!, E1) < 3, `E off by ${angleDegrees(p.stainMatrix[1]!, E1)} deg`);
  assert.ok(p.maxConcentrations.every((c) => c > 0.5 && c < 3), `max concentrations ${p.maxConcentrations}`);
});

test('normalising with the true stains reproduces the image rendered under the target stain', () => {
  const n = 64 * 64;
  const c = concentrations(n, 2);
  const source: StainParams = { stainMatrix: [H1, E1], maxConcentrations: [1, 1] };
  const target: StainParams = { stainMatrix: [H2, E2], maxConcentrations: [1, 1] };
  const out = normalizeStain(render(c, H1, E1), n, source, target);
  const want = render(c, H2, E2);
  let worst = 0;
  for (let i = 0; i < out.length; i++) worst = Math.max(worst, Math.abs(out[i]! - want[i]!));
  assert.ok(worst <= 6, `largest channel difference ${worst}`);
  // Doubling the target's max concentrations doubles every concentration.
  const darker = normalizeStain(render(c, H1, E1), n, source, { ...target, maxConcentrations: [2, 2] });
  const c2 = c.map((v) => 2 * v);
  const want2 = render(c2, H2, E2);
  let worst2 = 0;
  for (let i = 0; i < out.length; i++) worst2 = Math.max(worst2, Math.abs(darker[i]! - want2[i]!));
  assert.ok(worst2 <= 8, `largest channel difference ${worst2}`);
});

test('glass stays neutral after normalisation', () => {
  const source: StainParams = { stainMatrix: [H1, E1], maxConcentrations: [1.5, 1] };
  const target: StainParams = { stainMatrix: [H2, E2], maxConcentrations: [2, 0.8] };
  const out = normalizeStain(new Uint8Array([255, 255, 255, 250, 245, 252]), 2, source, target);
  assert.deepEqual([...out], [239, 239, 239, 239, 239, 239]);
});

test('too little tissue and degenerate stain params are clear errors', () => {
  const white = new Uint8Array(100 * 100 * 3).fill(250);
  assert.throws(() => estimateStain(white, 100 * 100), (e: unknown) => e instanceof StainEstimationError && /too few tissue pixels/.test(e.message));
  const flat = new Uint8Array(100 * 100 * 3).fill(90);
  assert.throws(() => estimateStain(flat, 100 * 100), StainEstimationError);
  const bad: StainParams = { stainMatrix: [H1, H1], maxConcentrations: [1, 1] };
  assert.throws(() => normalizeStain(white, 10, bad, bad), /parallel/);
  assert.throws(() => normalizeStain(white, 10, { stainMatrix: [H1], maxConcentrations: [1, 1] }, bad), RangeError);
});

for (const variant of STAIN_PAIR_VARIANTS) {
  test(`${variant.kind} H&E: normalising source to target moves its stain vectors to the target`, async () => {
    const { source: src, target: tgt } = await variant.load();
    const ps = estimateStain(src.data, src.width * src.height);
    const pt = estimateStain(tgt.data, tgt.width * tgt.height);
    for (const p of [ps, pt]) {
      const [h, e] = p.stainMatrix as [number[], number[]];
      assert.ok(h[0]! > e[0]!, 'H absorbs more red than E');
      assert.ok(e[1]! > e[0]! && e[1]! > e[2]!, 'E absorbs green most');
    }
    const out = normalizeStain(src.data, src.width * src.height, ps, pt);
    assert.equal(out.length, src.data.length);
    const pn = estimateStain(out, src.width * src.height);
    for (const k of [0, 1]) {
      const before = angleDegrees(ps.stainMatrix[k]!, pt.stainMatrix[k]!);
      const after = angleDegrees(pn.stainMatrix[k]!, pt.stainMatrix[k]!);
      assert.ok(after < before, `${k ? 'E' : 'H'}: ${after.toFixed(2)} deg after vs ${before.toFixed(2)} before`);
    }
  });
}

test('StainEstimator: provisional before ready, then one frozen estimate per slide', () => {
  const side = 128;
  const tiles = Array.from({ length: 8 }, (_, i) => render(concentrations(side * side, 10 + i), H1, E1));
  const est = new StainEstimator();
  assert.equal(est.ready, false);
  assert.equal(est.tryParams(), null);
  assert.throws(() => est.params(), StainEstimationError);
  est.add(tiles[0]!, side * side, new Uint8Array(side * side));
  assert.equal(est.sampledPixels, 0, 'masked-out pixels are not sampled');

  est.add(tiles[0]!, side * side);
  assert.equal(est.ready, false);
  const early = est.params();
  assert.ok(angleDegrees(early.stainMatrix[0]!, H1) < 5, 'a provisional estimate from one tile');
  let i = 1;
  while (!est.ready && i < tiles.length) est.add(tiles[i++]!, side * side);
  assert.equal(est.ready, true);
  assert.equal(est.sampledPixels, STAIN_SAMPLE_PIXELS);
  const frozen = est.params();
  assert.ok(angleDegrees(frozen.stainMatrix[0]!, H1) < 3 && angleDegrees(frozen.stainMatrix[1]!, E1) < 3);
  est.add(render(concentrations(side * side, 99), H2, E2), side * side);
  assert.equal(est.params(), frozen, 'frozen: later tiles change nothing');

  const again = new StainEstimator();
  for (let j = 0; j < i; j++) again.add(tiles[j]!, side * side);
  assert.deepEqual(again.params(), frozen, 'sampling is deterministic');
});
