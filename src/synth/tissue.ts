// Background layers of a synthetic slide: the tissue section's outline, fibrous stroma, fat, vessels, stromal cells.
import { OCCUPANT_EPITHELIUM, OCCUPANT_LUMEN, OCCUPANT_STROMA, SlideCanvas } from './canvas.js';
import { Rng, cellBorderDistance, clamp01, coarseField, fbm, smoothstep, valueNoise } from '../util/rng.js';

/** Eosin concentration of plain collagenous stroma (decadic OD); structures are tuned against it. */
export const STROMA_EOSIN = 0.3;
/** Adipocytes are 70-100 um across, so at 7.5 um/px the fat lattice has cells of about 11 px. */
const ADIPOCYTE_CELL_PX = 11;

/**
 * The section's outline: one to three overlapping lobes plus fractal noise, thresholded with an anti-aliased edge.
 * Also cuts a few small tears, as microtomy leaves in real sections.
 */
export function paintTissue(c: SlideCanvas, rng: Rng): void {
  const { width, height } = c;
  const side = Math.min(width, height);
  const lobes: { x: number; y: number; rx: number; ry: number; cos: number; sin: number; w: number }[] = [];
  const nLobes = rng.int(1, 3);
  for (let k = 0; k < nLobes; k++) {
    const a = rng.range(0, Math.PI);
    lobes.push({
      x: width * rng.range(0.38, 0.62),
      y: height * rng.range(0.38, 0.62),
      rx: side * rng.range(0.28, 0.4),
      ry: side * rng.range(0.22, 0.36),
      cos: Math.cos(a),
      sin: Math.sin(a),
      w: 1,
    });
  }
  // Small detached fragments near the rim of the main section.
  const nFragments = rng.int(0, 2);
  for (let k = 0; k < nFragments; k++) {
    const a = rng.range(0, 2 * Math.PI);
    const b = rng.range(0, Math.PI);
    lobes.push({
      x: width * (0.5 + 0.4 * Math.cos(a)),
      y: height * (0.5 + 0.4 * Math.sin(a)),
      rx: side * rng.range(0.04, 0.08),
      ry: side * rng.range(0.03, 0.06),
      cos: Math.cos(b),
      sin: Math.sin(b),
      // A shallow envelope, so the noise frays small fragments as much as the main section.
      w: 0.15,
    });
  }
  const sShape = rng.seed();
  const sWarp = rng.seed();
  const sFine = rng.seed();
  const coarse = coarseField(width, height, 4, (x, y) => {
    // Domain warp bends the lobes into organic, non-elliptical shapes.
    const wx = x + side * 0.12 * (fbm(x, y, side * 0.35, 3, sWarp) - 0.5);
    const wy = y + side * 0.12 * (fbm(x, y, side * 0.35, 3, sWarp ^ 7) - 0.5);
    let env = -1;
    for (const l of lobes) {
      const u = ((wx - l.x) * l.cos + (wy - l.y) * l.sin) / l.rx;
      const v = (-(wx - l.x) * l.sin + (wy - l.y) * l.cos) / l.ry;
      env = Math.max(env, l.w * (1 - (u * u + v * v)));
    }
    return env + 0.7 * (fbm(x, y, side * 0.25, 3, sShape) - 0.5) + 0.25 * (fbm(x, y, 60, 3, sShape ^ 3) - 0.5);
  });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      let f = coarse[i]!;
      if (f > -0.06 && f < 0.06) f += 0.04 * (fbm(x, y, 12, 2, sFine) - 0.5);
      c.tissue[i] = clamp01(0.5 + f / 0.01);
    }
  }
  // A few tears from microtomy: thin, tapered, gently curving gaps.
  for (let k = rng.int(0, 3); k > 0; k--) {
    let x = width * rng.range(0.25, 0.75);
    let y = height * rng.range(0.25, 0.75);
    let dir = rng.range(0, 2 * Math.PI);
    const length = side * rng.range(0.03, 0.15);
    const maxWidth = rng.range(0.8, 2.2);
    for (let t = 0; t < length; t += 0.5) {
      dir += rng.range(-0.04, 0.04);
      x += 0.5 * Math.cos(dir);
      y += 0.5 * Math.sin(dir);
      const w = maxWidth * Math.sin((Math.PI * t) / length) + 0.2;
      const ext = Math.ceil(w) + 1;
      for (let py = Math.floor(y) - ext; py <= Math.floor(y) + ext; py++) {
        for (let px = Math.floor(x) - ext; px <= Math.floor(x) + ext; px++) {
          if (!c.inside(px, py)) continue;
          const cov = clamp01(w - Math.hypot(px + 0.5 - x, py + 0.5 - y) + 0.5);
          const j = py * width + px;
          c.tissue[j] = Math.min(c.tissue[j]!, 1 - cov);
        }
      }
    }
  }
}

/**
 * Fibrous collagen (short wavy bundles: value noise stretched along two domain-warped directions) and fat (a lattice
 * of clear adipocytes bounded by thin eosinophilic membranes).
 */
export function paintStroma(c: SlideCanvas, rng: Rng, fatShare: number): void {
  const { width, height } = c;
  const sWarpX = rng.seed();
  const sWarpY = rng.seed();
  const sFib1 = rng.seed();
  const sFib2 = rng.seed();
  const sMix = rng.seed();
  const sVar = rng.seed();
  const sGrain = rng.seed();
  const sFat = rng.seed();
  const sCell = rng.seed();
  const sCleft = rng.seed();
  const a1 = rng.range(0, Math.PI);
  const a2 = a1 + rng.range(0.7, 1.6);
  const eBase = STROMA_EOSIN * rng.range(0.9, 1.1);
  const warpX = coarseField(width, height, 2, (x, y) => 30 * (fbm(x, y, 90, 3, sWarpX) - 0.5));
  const warpY = coarseField(width, height, 2, (x, y) => 30 * (fbm(x, y, 90, 3, sWarpY) - 0.5));
  const mix = coarseField(width, height, 8, (x, y) => smoothstep(0.3, 0.7, fbm(x, y, 200, 3, sMix)));
  const variation = coarseField(
    width,
    height,
    4,
    (x, y) => (0.7 + 0.6 * fbm(x, y, 90, 4, sVar)) * (0.75 + 0.5 * fbm(x, y, 400, 2, sVar ^ 5)),
  );
  const fatField = coarseField(width, height, 4, (x, y) => fbm(x, y, 200, 5, sFat));
  const fatThreshold = quantileInTissue(fatField, c.tissue, 1 - fatShare);
  const c1 = Math.cos(a1);
  const s1 = Math.sin(a1);
  const c2 = Math.cos(a2);
  const s2 = Math.sin(a2);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (c.tissue[i] === 0) continue;
      const wx = x + warpX[i]!;
      const wy = y + warpY[i]!;
      const m = mix[i]!;
      let fibre = 0;
      if (m < 0.99) {
        const u = wx * c1 + wy * s1;
        const v = -wx * s1 + wy * c1;
        fibre += (1 - m) * (0.65 * valueNoise(u / 14, v / 2.2, sFib1) + 0.35 * valueNoise(u / 6, v / 1.1, sFib1 ^ 1));
      }
      if (m > 0.01) {
        const u = wx * c2 + wy * s2;
        const v = -wx * s2 + wy * c2;
        fibre += m * (0.65 * valueNoise(u / 14, v / 2.2, sFib2) + 0.35 * valueNoise(u / 6, v / 1.1, sFib2 ^ 1));
      }
      const grain = valueNoise(x * 0.7, y * 0.7, sGrain) - 0.5;
      let e = eBase * variation[i]! * (0.45 + 1.1 * fibre * fibre + 0.2 * grain);
      // Clefts: white slits between collagen bundles.
      if (fibre < 0.22) {
        const cl = valueNoise(x / 20, y / 20, sCleft);
        if (cl > 0.55) e *= 0.2 + 0.8 * smoothstep(0.08, 0.22, fibre);
      }
      // Sharp-edged fat lobules; membranes vary in thickness and stain.
      const fa = smoothstep(fatThreshold, fatThreshold + 0.012, fatField[i]!);
      c.fat[i] = fa;
      if (fa > 0) {
        const d = cellBorderDistance(x, y, ADIPOCYTE_CELL_PX, sCell);
        const membrane = clamp01(1 - d / 0.45);
        const eFat = 0.01 + (0.17 + 0.25 * grain) * membrane;
        e += (eFat - e) * fa;
        if (fa > 0.5 && membrane < 0.3) c.occupant[i] = OCCUPANT_LUMEN;
      }
      c.e[i] = e;
    }
  }
}

/** The q-quantile of `field` over tissue pixels (sampled on a sparse grid): calibrates thresholds to shares. */
function quantileInTissue(field: Float32Array, tissue: Float32Array, q: number): number {
  const values: number[] = [];
  for (let i = 0; i < field.length; i += 37) if (tissue[i]! > 0.5) values.push(field[i]!);
  if (values.length === 0) return 1;
  values.sort((a, b) => a - b);
  return values[Math.min(values.length - 1, Math.floor(q * values.length))]!;
}

/** Small vessels: thin eosinophilic walls around open lumens, the smallest packed with red cells. */
export function paintVessels(c: SlideCanvas, rng: Rng, count: number): void {
  for (let k = 0; k < count; k++) {
    const x = rng.range(4, c.width - 4);
    const y = rng.range(4, c.height - 4);
    const i = Math.floor(y) * c.width + Math.floor(x);
    if (c.tissue[i]! < 0.95 || c.occupant[i] !== OCCUPANT_STROMA || c.fat[i]! > 0.3) continue;
    const big = rng.next() < 0.12;
    const r = big ? rng.range(3.5, 7) : rng.range(0.9, 2.6);
    const wall = big ? rng.range(1.2, 2.2) : 0.8;
    const ecc = rng.range(0, 0.45);
    const ang = rng.range(0, Math.PI);
    const blood = !big && rng.next() < 0.6;
    const ca = Math.cos(ang);
    const sa = Math.sin(ang);
    const ext = Math.ceil((r + wall) * (1 + ecc)) + 1;
    for (let py = Math.floor(y) - ext; py <= Math.floor(y) + ext; py++) {
      for (let px = Math.floor(x) - ext; px <= Math.floor(x) + ext; px++) {
        if (!c.inside(px, py)) continue;
        const u = (px + 0.5 - x) * ca + (py + 0.5 - y) * sa;
        const v = -(px + 0.5 - x) * sa + (py + 0.5 - y) * ca;
        const d = Math.hypot(u / (1 + ecc), v * (1 + ecc));
        const j = py * c.width + px;
        if (c.occupant[j] === OCCUPANT_EPITHELIUM) continue;
        const covWall = clamp01(r + wall - d + 0.5);
        const covLumen = clamp01(r - d + 0.5);
        if (covWall > 0) c.blendE(j, 0.42, covWall - covLumen);
        if (covLumen > 0) {
          c.blendE(j, blood ? 0.75 : 0.02, covLumen);
          if (covLumen > 0.5) c.occupant[j] = OCCUPANT_LUMEN;
        }
      }
    }
    const nEndo = Math.max(2, Math.round((2 * Math.PI * (r + wall / 2)) / 3));
    for (let n = 0; n < nEndo; n++) {
      const a = rng.range(0, 2 * Math.PI);
      const rr = r + wall * 0.4;
      const u = rr * (1 + ecc) * Math.cos(a);
      const v = (rr / (1 + ecc)) * Math.sin(a);
      c.nucleus(x + u * ca - v * sa, y + u * sa + v * ca, rng.range(0.35, 0.6));
    }
  }
}

/** Fibroblasts and scattered lymphocytes in the stroma, never inside ducts, lumens or fat vacuoles. */
export function sprinkleStromalCells(c: SlideCanvas, rng: Rng, perPixel: number): void {
  const n = Math.round(c.size * perPixel);
  const sDensity = rng.seed();
  for (let k = 0; k < n; k++) {
    const x = rng.range(0, c.width);
    const y = rng.range(0, c.height);
    const i = Math.floor(y) * c.width + Math.floor(x);
    if (c.occupant[i] !== OCCUPANT_STROMA || c.tissue[i]! < 0.5) continue;
    if (rng.next() < c.fat[i]! * 0.85) continue;
    // Cellularity varies: some stroma is dense and hyalinised, some loose and cellular.
    if (rng.next() > smoothstep(0.25, 0.75, fbm(x, y, 80, 2, sDensity))) continue;
    const lymphocyte = rng.next() < 0.15;
    c.nucleus(x, y, lymphocyte ? rng.range(0.55, 0.8) : rng.range(0.25, 0.5));
  }
}
