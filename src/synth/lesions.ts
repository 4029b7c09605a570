// Epithelial structures of a synthetic slide, one function per BACH class. The classes differ by architecture:
// normal lobules of tiny acini, benign clusters of enlarged regular ducts, in-situ ducts filled with cells behind a
// sharp rim, and invasive cords and nests of atypical nuclei infiltrating desmoplastic stroma without a border.
import { OCCUPANT_EPITHELIUM, OCCUPANT_LUMEN, SlideCanvas } from './canvas.js';
import { Rng, clamp01, fbm, smoothstep } from '../util/rng.js';
import { STROMA_EOSIN } from './tissue.js';

export const CLASS_NORMAL = 0;
export const CLASS_BENIGN = 1;
export const CLASS_IN_SITU = 2;
export const CLASS_INVASIVE = 3;

/** One drawn structure: its class, centre and the radius that bounds it (px). */
export interface Lesion {
  readonly cls: number;
  readonly x: number;
  readonly y: number;
  readonly r: number;
}

/** Eosin of epithelial cytoplasm and of open lumens (decadic OD). */
const CYTOPLASM_EOSIN = 0.17;
const LUMEN_EOSIN = 0.02;

type RadiusAt = (angle: number) => number;

/** A closed organic outline: radius R modulated by a few random low harmonics. */
function makeOutline(rng: Rng, radius: number, irregularity: number): RadiusAt {
  const terms: { k: number; a: number; p: number }[] = [];
  for (let k = 2; k <= 6; k++) terms.push({ k, a: (irregularity * rng.range(0.3, 1)) / k ** 0.8, p: rng.range(0, 2 * Math.PI) });
  return (angle) => {
    let m = 1;
    for (const t of terms) m += t.a * Math.cos(t.k * angle + t.p);
    return radius * Math.max(0.35, m);
  };
}

/** Finds a free centre in tissue, away from fat and from already placed structures; null when none fits. */
export function findSpot(
  c: SlideCanvas,
  rng: Rng,
  r: number,
  placed: readonly Lesion[],
  gap: number,
  maxFat: number,
  tries = 80,
  near?: { x: number; y: number; spread: number },
): { x: number; y: number } | null {
  const margin = r + 3;
  if (c.width <= 2 * margin || c.height <= 2 * margin) return null;
  for (let t = 0; t < tries; t++) {
    const x = near ? near.x + rng.range(-near.spread, near.spread) : rng.range(margin, c.width - margin);
    const y = near ? near.y + rng.range(-near.spread, near.spread) : rng.range(margin, c.height - margin);
    if (x < margin || y < margin || x > c.width - margin || y > c.height - margin) continue;
    let ok = true;
    for (const p of placed) {
      if (Math.hypot(p.x - x, p.y - y) < p.r + r + gap) {
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    let tissue = c.tissue[Math.floor(y) * c.width + Math.floor(x)]!;
    let fat = c.fat[Math.floor(y) * c.width + Math.floor(x)]!;
    for (let k = 0; k < 8 && tissue > 0.9; k++) {
      const a = (k * Math.PI) / 4;
      const j = Math.floor(y + 0.85 * r * Math.sin(a)) * c.width + Math.floor(x + 0.85 * r * Math.cos(a));
      tissue = Math.min(tissue, c.tissue[j]!);
      fat = Math.max(fat, c.fat[j]! - 0.15);
    }
    if (tissue > 0.9 && fat < maxFat) return { x, y };
  }
  return null;
}

interface DuctSpec {
  x: number;
  y: number;
  /** Outer radius and lumen radius (px). */
  r: number;
  lumen: number;
  ecc: number;
  angle: number;
  lumenE: number;
  /** Rows of nuclei in the epithelium, their spacing along a row (px) and hematoxylin mass each. */
  layers: number;
  spacing: number;
  amount: number;
}

/** A duct or acinus: a ring of epithelium with nuclei in rows, around an open lumen. */
function drawDuct(c: SlideCanvas, rng: Rng, s: DuctSpec): void {
  const ca = Math.cos(s.angle);
  const sa = Math.sin(s.angle);
  const stretch = 1 + s.ecc;
  const ext = Math.ceil((s.r + 1.5) * stretch) + 1;
  c.forEachNear(s.x, s.y, ext, (i, _px, _py, dx, dy) => {
    const u = dx * ca + dy * sa;
    const v = -dx * sa + dy * ca;
    const d = Math.hypot(u / stretch, v * stretch);
    // Basement membrane: a faint denser band just outside the epithelium.
    const rim = clamp01(s.r + 0.8 - d + 0.5) - clamp01(s.r - d + 0.5);
    if (rim > 0) c.blendE(i, STROMA_EOSIN * 1.35, rim * 0.6);
    const covOuter = clamp01(s.r - d + 0.5);
    if (covOuter <= 0) return;
    c.blendE(i, CYTOPLASM_EOSIN, covOuter);
    if (covOuter > 0.4) c.occupant[i] = OCCUPANT_EPITHELIUM;
    const covLumen = clamp01(s.lumen - d + 0.5);
    if (covLumen > 0) {
      c.blendE(i, s.lumenE, covLumen);
      c.h[i] = c.h[i]! * (1 - covLumen);
      if (covLumen > 0.5) c.occupant[i] = OCCUPANT_LUMEN;
    }
  });
  for (let l = 0; l < s.layers; l++) {
    const rho = s.lumen + ((l + 0.5) * (s.r - s.lumen)) / s.layers;
    const n = Math.max(3, Math.round((2 * Math.PI * rho) / s.spacing));
    const off = rng.range(0, 2 * Math.PI);
    for (let k = 0; k < n; k++) {
      const a = off + (2 * Math.PI * k) / n + rng.range(-0.15, 0.15);
      const rr = rho + rng.range(-0.2, 0.2);
      const u = rr * stretch * Math.cos(a);
      const v = (rr / stretch) * Math.sin(a);
      c.nucleus(s.x + u * ca - v * sa, s.y + u * sa + v * ca, s.amount * rng.range(0.8, 1.2));
    }
  }
}

/** Fills pixels inside an outline: callback gets pixel index, coverage 0..1 and normalised radius d/R. */
function forOutline(
  c: SlideCanvas,
  x: number,
  y: number,
  outline: RadiusAt,
  maxR: number,
  fn: (i: number, cov: number, rel: number) => void,
): void {
  const ext = Math.ceil(maxR) + 2;
  c.forEachNear(x, y, ext, (i, _px, _py, dx, dy) => {
    const d = Math.hypot(dx, dy);
    const rr = outline(Math.atan2(dy, dx));
    const cov = clamp01(rr - d + 0.5);
    if (cov > 0) fn(i, cov, d / rr);
  });
}

function setLabel(c: SlideCanvas, i: number, cls: number): void {
  if (c.tissue[i]! >= 0.5) c.label[i] = cls;
}

/** Normal terminal duct-lobular unit: a cluster of tiny acini in pale, loose intralobular stroma. Class 0. */
export function drawNormalLobule(c: SlideCanvas, rng: Rng, x: number, y: number, radius: number): void {
  const outline = makeOutline(rng, radius, 0.35);
  const loose = STROMA_EOSIN * rng.range(0.45, 0.6);
  forOutline(c, x, y, outline, radius * 1.8, (i, cov) => c.blendE(i, loose, cov));
  const acini: Lesion[] = [];
  const target = Math.round((radius * radius) / 5);
  for (let t = 0; t < target * 6 && acini.length < target; t++) {
    const r = rng.range(1.4, 2.3);
    const a = rng.range(0, 2 * Math.PI);
    const rho = Math.sqrt(rng.next()) * (outline(a) - r - 0.5);
    if (rho < 0) continue;
    const ax = x + rho * Math.cos(a);
    const ay = y + rho * Math.sin(a);
    if (acini.some((p) => Math.hypot(p.x - ax, p.y - ay) < p.r + r + 0.4)) continue;
    acini.push({ cls: CLASS_NORMAL, x: ax, y: ay, r });
    drawDuct(c, rng, {
      x: ax, y: ay, r, lumen: rng.range(0.25, 0.65), ecc: rng.range(0, 0.25), angle: rng.range(0, Math.PI),
      lumenE: LUMEN_EOSIN, layers: 1, spacing: 1.1, amount: rng.range(0.6, 0.8),
    });
  }
  // Intralobular lymphocytes and fibroblasts.
  forOutline(c, x, y, outline, radius * 1.8, (i, cov) => {
    if (cov > 0.5 && c.occupant[i] === 0 && rng.next() < 0.1) {
      c.nucleus((i % c.width) + rng.next(), Math.floor(i / c.width) + rng.next(), rng.range(0.4, 0.7));
    }
  });
}

/** A solitary normal duct in the stroma: open lumen, a single layer of epithelial nuclei. Class 0. */
export function drawNormalDuct(c: SlideCanvas, rng: Rng, x: number, y: number, r: number): void {
  drawDuct(c, rng, {
    x, y, r, lumen: r - rng.range(1.1, 1.5), ecc: rng.range(0, 0.5), angle: rng.range(0, Math.PI),
    lumenE: LUMEN_EOSIN, layers: 1, spacing: 1.2, amount: rng.range(0.55, 0.75),
  });
}

/** Benign lesion: a cluster of enlarged but regular, round ducts with open lumens, some cystic. Class 1. */
export function drawBenignCluster(c: SlideCanvas, rng: Rng, x: number, y: number, radius: number): void {
  const outline = makeOutline(rng, radius, 0.3);
  const edema = STROMA_EOSIN * rng.range(0.6, 0.8);
  forOutline(c, x, y, outline, radius * 1.8, (i, cov) => {
    c.blendE(i, edema, cov * 0.8);
    if (cov > 0.5) setLabel(c, i, CLASS_BENIGN);
  });
  const ducts: Lesion[] = [];
  const baseR = rng.range(3.5, 6);
  const fill = rng.range(0.35, 0.5);
  const cystShare = rng.range(0.05, 0.25);
  let area = 0;
  for (let t = 0; t < 400 && area < fill * Math.PI * radius * radius; t++) {
    const cyst = rng.next() < cystShare;
    const r = cyst ? rng.range(6, 11) : baseR * rng.range(0.7, 1.4);
    const a = rng.range(0, 2 * Math.PI);
    const rho = Math.sqrt(rng.next()) * (outline(a) - r - 1);
    if (rho < 0) continue;
    const dx = x + rho * Math.cos(a);
    const dy = y + rho * Math.sin(a);
    if (ducts.some((p) => Math.hypot(p.x - dx, p.y - dy) < p.r + r + rng.range(1, 3))) continue;
    ducts.push({ cls: CLASS_BENIGN, x: dx, y: dy, r });
    area += Math.PI * r * r;
    const wall = cyst ? rng.range(0.9, 1.2) : rng.range(1.5, 2.4);
    drawDuct(c, rng, {
      x: dx, y: dy, r, lumen: r - wall, ecc: rng.range(0, cyst ? 0.15 : 0.35), angle: rng.range(0, Math.PI),
      // Some lumens hold pale eosinophilic secretion.
      lumenE: cyst || rng.next() < 0.3 ? rng.range(0.05, 0.12) : LUMEN_EOSIN,
      layers: cyst ? 1 : 2, spacing: 1.25, amount: rng.range(0.55, 0.85),
    });
  }
}

/** In-situ carcinoma: ducts distended by atypical cells, behind a sharp rim; solid, comedo or cribriform. Class 2. */
export function drawInSituDuct(c: SlideCanvas, rng: Rng, x: number, y: number, r: number, grade: number): void {
  const ecc = rng.range(0, 0.2);
  const angle = rng.range(0, Math.PI);
  const ca = Math.cos(angle);
  const sa = Math.sin(angle);
  const stretch = 1 + ecc;
  const variant = r > 10 && rng.next() < 0.35 ? 'comedo' : rng.next() < 0.3 ? 'cribriform' : 'solid';
  const necrosis = variant === 'comedo' ? r * rng.range(0.3, 0.5) : 0;
  const cleft = rng.next() < 0.5;
  const holes: { x: number; y: number; r: number }[] = [];
  if (variant === 'cribriform') {
    const n = Math.round((r * r) / 14);
    for (let t = 0; t < n * 5 && holes.length < n; t++) {
      const hr = rng.range(0.8, 1.7);
      const a = rng.range(0, 2 * Math.PI);
      const rho = Math.sqrt(rng.next()) * (r - hr - 2);
      const hx = rho * Math.cos(a);
      const hy = rho * Math.sin(a);
      if (holes.some((h) => Math.hypot(h.x - hx, h.y - hy) < h.r + hr + 1.5)) continue;
      holes.push({ x: hx, y: hy, r: hr });
    }
  }
  const ext = Math.ceil((r + 2) * stretch) + 1;
  const spacing = rng.range(1.25, 1.55);
  const cellProb = 1 / (spacing * spacing);
  c.forEachNear(x, y, ext, (i, px, py, dx, dy) => {
    const u = dx * ca + dy * sa;
    const v = -dx * sa + dy * ca;
    const d = Math.hypot(u / stretch, v * stretch);
    // Sharp rim: dense basement membrane and myoepithelium around the duct.
    const rim = clamp01(r + 1.1 - d + 0.5) - clamp01(r - d + 0.5);
    if (rim > 0) c.blendE(i, STROMA_EOSIN * 1.7, rim);
    if (d < r + 1.5) setLabel(c, i, CLASS_IN_SITU);
    const cov = clamp01(r - d + 0.5);
    if (cov <= 0) return;
    c.occupant[i] = OCCUPANT_EPITHELIUM;
    c.blendE(i, CYTOPLASM_EOSIN * 1.15, cov);
    c.h[i] = c.h[i]! + 0.08 * cov;
    if (cleft && d > r - 1.1 && d < r - 0.3) {
      // Retraction artefact between the cells and the rim.
      c.blendE(i, LUMEN_EOSIN * 3, 0.7);
      return;
    }
    if (d < necrosis) {
      // Comedo necrosis: eosinophilic debris with karyorrhectic dust.
      c.blendE(i, CYTOPLASM_EOSIN * 2.2, clamp01(necrosis - d + 0.5));
      if (rng.next() < 0.12) c.nucleus(px + rng.next(), py + rng.next(), rng.range(0.2, 0.45));
      return;
    }
    let inHole = false;
    for (const h of holes) {
      const hd = Math.hypot(u - h.x, v - h.y);
      if (hd < h.r + 0.5) {
        const hc = clamp01(h.r - hd + 0.5);
        c.blendE(i, LUMEN_EOSIN, hc);
        c.h[i] = c.h[i]! * (1 - hc);
        inHole = hd < h.r;
        if (inHole) c.occupant[i] = OCCUPANT_LUMEN;
      }
    }
    if (inHole || d > r - 0.3) return;
    if (rng.next() < cellProb) {
      c.nucleus(px + rng.next(), py + rng.next(), grade * rng.range(0.55, 1.0), rng.next() < 0.4 ? 0.6 : 0);
    }
  });
  // Flattened myoepithelial nuclei along the rim.
  const n = Math.round((2 * Math.PI * r) / 2.2);
  for (let k = 0; k < n; k++) {
    const a = (2 * Math.PI * k) / n + rng.range(-0.1, 0.1);
    const rr = r + 0.6;
    const u = rr * stretch * Math.cos(a);
    const v = (rr / stretch) * Math.sin(a);
    c.nucleus(x + u * ca - v * sa, y + u * sa + v * ca, rng.range(0.4, 0.6));
  }
  // A cuff of lymphocytes around some ducts.
  if (rng.next() < 0.4) {
    const m = Math.round(r * rng.range(2, 5));
    for (let k = 0; k < m; k++) {
      const a = rng.range(0, 2 * Math.PI);
      const rr = r + rng.range(2, 5);
      const px = x + rr * stretch * Math.cos(a) * ca - (rr / stretch) * Math.sin(a) * sa;
      const py = y + rr * stretch * Math.cos(a) * sa + (rr / stretch) * Math.sin(a) * ca;
      if (c.inside(Math.floor(px), Math.floor(py)) && c.occupant[Math.floor(py) * c.width + Math.floor(px)] === 0) {
        c.nucleus(px, py, rng.range(0.6, 0.9));
      }
    }
  }
}

/**
 * Invasive carcinoma: irregular nests and cords of large, dark, pleomorphic nuclei in pale desmoplastic stroma.
 * Cell density fades out at the edge, so the tumour spreads into the stroma without a border. Class 3.
 */
export function drawInvasive(c: SlideCanvas, rng: Rng, x: number, y: number, radius: number, grade: number): void {
  const outline = makeOutline(rng, radius, 0.55);
  const sEdge = rng.seed();
  const sNest = rng.seed();
  const sCord = rng.seed();
  const sDens = rng.seed();
  const nestScale = rng.range(6, 10);
  const nestThreshold = rng.range(0.52, 0.6);
  const cordScale = rng.range(10, 16);
  const desmo = STROMA_EOSIN * rng.range(0.6, 0.8);
  const ext = Math.ceil(radius * 1.9) + 4;
  c.forEachNear(x, y, ext, (i, px, py, dx, dy) => {
    if (c.occupant[i] !== 0 && c.occupant[i] !== OCCUPANT_EPITHELIUM) return;
    const rel = Math.hypot(dx, dy) / outline(Math.atan2(dy, dx));
    // Potential: > 0 inside the tumour; the noise term makes the front ragged, with tongues into the stroma.
    const p = 1 - rel + 0.45 * (fbm(px, py, 22, 3, sEdge) - 0.5);
    if (p < -0.12) return;
    if (p > 0) setLabel(c, i, CLASS_INVASIVE);
    const inner = smoothstep(-0.08, 0.2, p);
    c.blendE(i, desmo, 0.75 * inner);
    const nest = fbm(px, py, nestScale, 2, sNest);
    const ridge = 1 - Math.abs(2 * fbm(px, py, cordScale, 2, sCord) - 1);
    const cell = Math.max(smoothstep(nestThreshold, nestThreshold + 0.05, nest), smoothstep(0.84, 0.9, ridge));
    const density = cell * inner * (0.55 + 0.6 * fbm(px, py, 30, 2, sDens));
    if (density > 0.05) {
      c.blendE(i, CYTOPLASM_EOSIN * 1.1, Math.min(1, density));
      // Crowded nuclei below the resolution tint the whole nest purple.
      c.h[i] = c.h[i]! + 0.1 * Math.min(1, density);
      c.occupant[i] = OCCUPANT_EPITHELIUM;
      if (rng.next() < 0.5 * density) {
        // Pleomorphic: mass and size vary widely from cell to cell.
        const amount = grade * 0.9 * Math.exp(0.35 * rng.normal());
        c.nucleus(px + rng.next(), py + rng.next(), amount, rng.range(0.45, 1.0));
      }
    } else if (inner > 0.1 && rng.next() < 0.02 * inner) {
      // Single infiltrating cells and activated fibroblasts in the desmoplastic stroma.
      c.nucleus(px + rng.next(), py + rng.next(), grade * rng.range(0.6, 1.2), 0.6);
    } else if (p < 0.05 && p > -0.12 && rng.next() < 0.05) {
      // Lymphocytes at the invasive front.
      c.nucleus(px + rng.next(), py + rng.next(), rng.range(0.6, 0.9));
    }
  });
}
