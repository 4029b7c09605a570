// Deterministic synthetic BACH-like slides at the model's 1.25X scale: one seed fixes every pixel.
import { BACH_CLASSES, MODEL_MPP } from '../util/constants.js';
import { SlideCanvas, blur3 } from './canvas.js';
import {
  CLASS_BENIGN,
  CLASS_IN_SITU,
  CLASS_INVASIVE,
  CLASS_NORMAL,
  type Lesion,
  drawBenignCluster,
  drawInSituDuct,
  drawInvasive,
  drawNormalDuct,
  drawNormalLobule,
  findSpot,
} from './lesions.js';
import { Rng, coarseField, fbm } from '../util/rng.js';
import { type SlideStain, concentrationsToRgb, randomSlideStain } from './stain.js';
import { paintStroma, paintTissue, paintVessels, sprinkleStromalCells } from './tissue.js';

/** BACH's four classes; line order is the class index and index 0 is normal tissue and background. */
export const SYNTH_CLASSES: readonly string[] = BACH_CLASSES.map((c) => c.name);
/** Default slide side: at MODEL_MPP this is 11.5 mm, the size of a breast excision section. */
export const SYNTH_DEFAULT_SIZE = 1536;
export const SYNTH_MPP = MODEL_MPP;
/** Tissue area (px) of which the lesion counts below are quoted: a half-covered default-size slide. */
const REFERENCE_TISSUE_AREA = 0.5 * SYNTH_DEFAULT_SIZE * SYNTH_DEFAULT_SIZE;

export interface SynthSlide {
  readonly width: number;
  readonly height: number;
  /** Interleaved 8-bit RGB. */
  readonly rgb: Buffer;
  /** Class index per pixel. */
  readonly labels: Uint8Array;
  /** Tissue coverage 0..1 per pixel. */
  readonly tissue: Float32Array;
  /** Every drawn structure (class 0 entries are normal lobules), for centring class patches. */
  readonly lesions: readonly Lesion[];
  readonly stain: SlideStain;
}

/** Renders one slide. Sizes in the comments are at 7.5 um/px: a nucleus is about 1 px, a normal acinus 3-5 px. */
export function renderSynthSlide(seed: number, width: number, height = width): SynthSlide {
  const rng = new Rng(seed);
  const c = new SlideCanvas(width, height);
  const stain = randomSlideStain(rng);
  paintTissue(c, rng);
  paintStroma(c, rng, rng.range(0.05, 0.35));

  let area = 0;
  for (let i = 0; i < c.size; i++) area += c.tissue[i]!;
  const unit = area / REFERENCE_TISSUE_AREA;
  const side = Math.min(width, height);
  // Class proportions vary from slide to slide; every class appears at least once.
  const count = (perReference: number): number => Math.max(1, Math.round(unit * perReference * rng.range(0.4, 1.6)));
  const placed: Lesion[] = [];

  // Invasive carcinoma first: the largest regions, 50-200 px across.
  for (let k = count(4); k > 0; k--) {
    const r = Math.min(rng.range(25, 100), side * 0.14);
    const spot = findSpot(c, rng, r * 1.5, placed, 20, 0.45);
    if (!spot) continue;
    drawInvasive(c, rng, spot.x, spot.y, r, rng.range(0.9, 1.3));
    placed.push({ cls: CLASS_INVASIVE, x: spot.x, y: spot.y, r: r * 1.5 });
  }
  // In-situ carcinoma: groups of 1-4 distended ducts, 15-40 px across.
  for (let k = count(5); k > 0; k--) {
    const n = rng.int(1, 4);
    const r0 = rng.range(7.5, 20);
    const spot = findSpot(c, rng, r0 * 2.5, placed, 10, 0.3);
    if (!spot) continue;
    const group: Lesion[] = [{ cls: CLASS_IN_SITU, x: spot.x, y: spot.y, r: r0 }];
    for (let t = 0; t < 30 && group.length < n; t++) {
      const from = rng.pick(group);
      const r = rng.range(7.5, Math.min(20, r0 * 1.2));
      const a = rng.range(0, 2 * Math.PI);
      const dist = from.r + r + rng.range(3, 7);
      const gx = from.x + dist * Math.cos(a);
      const gy = from.y + dist * Math.sin(a);
      if (Math.hypot(gx - spot.x, gy - spot.y) + r > r0 * 2.5) continue;
      if (group.some((g) => Math.hypot(g.x - gx, g.y - gy) < g.r + r + 3)) continue;
      const j = Math.floor(gy) * width + Math.floor(gx);
      if (!(c.tissue[j]! > 0.95)) continue;
      group.push({ cls: CLASS_IN_SITU, x: gx, y: gy, r });
    }
    const grade = rng.range(0.9, 1.35);
    for (const g of group) drawInSituDuct(c, rng, g.x, g.y, g.r, grade * rng.range(0.95, 1.05));
    placed.push({ cls: CLASS_IN_SITU, x: spot.x, y: spot.y, r: r0 * 2.5 }, ...group.map((g) => ({ ...g, r: 0 })));
  }
  // Benign: clusters 35-90 px across of enlarged regular ducts.
  for (let k = count(5); k > 0; k--) {
    const r = rng.range(18, 45);
    const spot = findSpot(c, rng, r * 1.35, placed, 12, 0.3);
    if (!spot) continue;
    drawBenignCluster(c, rng, spot.x, spot.y, r);
    placed.push({ cls: CLASS_BENIGN, x: spot.x, y: spot.y, r: r * 1.35 });
  }
  // Normal lobules and solitary ducts fill the rest of the parenchyma.
  // Lobules come in groups along the branching duct tree.
  const lobules: Lesion[] = [];
  for (let k = Math.round(unit * rng.range(25, 45)); k > 0; k--) {
    const r = rng.range(10, 24);
    const anchor = lobules.length > 0 && rng.next() < 0.7 ? rng.pick(lobules) : null;
    const near = anchor ? { x: anchor.x, y: anchor.y, spread: anchor.r + r + 25 } : undefined;
    const spot = findSpot(c, rng, r * 1.3, placed, 4, 0.4, 30, near);
    if (!spot) continue;
    drawNormalLobule(c, rng, spot.x, spot.y, r);
    const lobule = { cls: CLASS_NORMAL, x: spot.x, y: spot.y, r: r * 1.3 };
    placed.push(lobule);
    lobules.push(lobule);
  }
  for (let k = Math.round(unit * rng.range(40, 80)); k > 0; k--) {
    const r = rng.range(2, 4.5);
    const spot = findSpot(c, rng, r + 1, placed, 3, 0.5, 20);
    if (!spot) continue;
    drawNormalDuct(c, rng, spot.x, spot.y, r);
    placed.push({ cls: CLASS_NORMAL, x: spot.x, y: spot.y, r: 0 });
  }
  paintVessels(c, rng, Math.round(area / 2500));
  sprinkleStromalCells(c, rng, 0.03);

  for (let i = 0; i < c.size; i++) {
    const t = c.tissue[i]!;
    c.h[i] = c.h[i]! * t;
    c.e[i] = c.e[i]! * t;
    if (t < 0.5) c.label[i] = CLASS_NORMAL;
  }
  blur3(c.h, width, height, 0.12);
  blur3(c.e, width, height, 0.12);
  const sLight = rng.seed();
  const illumination = coarseField(width, height, 16, (x, y) => 4 * (fbm(x, y, 400, 2, sLight) - 0.5));
  const rgb = concentrationsToRgb(c.h, c.e, stain, rng, 1.2, illumination);
  const lesions = placed.filter((p) => p.r > 0);
  return { width, height, rgb, labels: c.label, tissue: c.tissue, lesions, stain };
}
