// Stain model of the synthetic slides: concentration maps of hematoxylin (H) and eosin (E) are turned into RGB by
// Beer-Lambert with per-slide optical-density (OD) vectors, so stain hue and strength vary as in real H&E.
import { Rng } from '../util/rng.js';

export type Vec3 = readonly [number, number, number];

/** Macenko et al. 2009 reference H&E OD vectors (the usual defaults of Macenko normalisation). */
export const MACENKO_REFERENCE_H: Vec3 = [0.5626, 0.7201, 0.4062];
export const MACENKO_REFERENCE_E: Vec3 = [0.2159, 0.8012, 0.5581];

/** How far a slide's stains wander from the reference: hue rotation (radians) and strength factor ranges. */
export const STAIN_HUE_JITTER_RAD = 0.14;
export const STAIN_STRENGTH_RANGE = [0.75, 1.3] as const;

export interface SlideStain {
  /** Unit OD vector of hematoxylin and eosin. */
  readonly h: Vec3;
  readonly e: Vec3;
  /** Multipliers on the rendered concentrations: staining strength of this slide. */
  readonly hStrength: number;
  readonly eStrength: number;
  /** Illumination of bare glass per channel (0..255): the scanner's white point. */
  readonly white: Vec3;
}

function normalise(v: Vec3): Vec3 {
  const n = Math.hypot(v[0], v[1], v[2]);
  return [v[0] / n, v[1] / n, v[2] / n];
}

/** Rotates an OD vector about the grey axis (1,1,1): a change of hue that keeps its overall darkness. */
export function rotateHue(v: Vec3, angle: number): Vec3 {
  const k = 1 / Math.sqrt(3);
  const c = Math.cos(angle);
  const s = Math.sin(angle);
  const dot = k * (v[0] + v[1] + v[2]);
  // Rodrigues' rotation with unit axis (k, k, k).
  const cross: Vec3 = [k * (v[2] - v[1]), k * (v[0] - v[2]), k * (v[1] - v[0])];
  return normalise([
    v[0] * c + cross[0] * s + k * dot * (1 - c),
    v[1] * c + cross[1] * s + k * dot * (1 - c),
    v[2] * c + cross[2] * s + k * dot * (1 - c),
  ]);
}

/** Draws one slide's stain: reference vectors with jittered hue and strength, and a slightly varying glass white. */
export function randomSlideStain(rng: Rng): SlideStain {
  const [lo, hi] = STAIN_STRENGTH_RANGE;
  const base = rng.range(238, 247);
  return {
    h: rotateHue(normalise(MACENKO_REFERENCE_H), rng.range(-STAIN_HUE_JITTER_RAD, STAIN_HUE_JITTER_RAD)),
    e: rotateHue(normalise(MACENKO_REFERENCE_E), rng.range(-STAIN_HUE_JITTER_RAD, STAIN_HUE_JITTER_RAD)),
    hStrength: rng.range(lo, hi),
    eStrength: rng.range(lo, hi),
    white: [base + rng.range(-2, 1), base + rng.range(-2, 1), base + rng.range(-1, 2)],
  };
}

/**
 * Beer-Lambert: I = white * exp(-ln(10) * (cH * h + cE * e)), with OD in decadic units as in Macenko.
 * `noise` is per-pixel sensor noise (grey levels), drawn from `rng`. Writes interleaved RGB.
 */
export function concentrationsToRgb(
  hMap: Float32Array,
  eMap: Float32Array,
  stain: SlideStain,
  rng: Rng,
  noise: number,
  illumination?: Float32Array,
): Buffer {
  const n = hMap.length;
  const out = Buffer.alloc(n * 3);
  const ln10 = Math.LN10;
  const hr = stain.h[0] * stain.hStrength * ln10;
  const hg = stain.h[1] * stain.hStrength * ln10;
  const hb = stain.h[2] * stain.hStrength * ln10;
  const er = stain.e[0] * stain.eStrength * ln10;
  const eg = stain.e[1] * stain.eStrength * ln10;
  const eb = stain.e[2] * stain.eStrength * ln10;
  const [wr, wg, wb] = stain.white;
  for (let i = 0; i < n; i++) {
    const ch = hMap[i]!;
    const ce = eMap[i]!;
    const light = illumination ? illumination[i]! : 0;
    const grain = noise * rng.normal();
    const r = (wr + light) * Math.exp(-(ch * hr + ce * er)) + grain + noise * 0.5 * rng.normal();
    const g = (wg + light) * Math.exp(-(ch * hg + ce * eg)) + grain + noise * 0.5 * rng.normal();
    const b = (wb + light) * Math.exp(-(ch * hb + ce * eb)) + grain + noise * 0.5 * rng.normal();
    out[i * 3] = r < 0 ? 0 : r > 255 ? 255 : Math.round(r);
    out[i * 3 + 1] = g < 0 ? 0 : g > 255 ? 255 : Math.round(g);
    out[i * 3 + 2] = b < 0 ? 0 : b > 255 ? 255 : Math.round(b);
  }
  return out;
}
