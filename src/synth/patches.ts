// Class-labelled patches cut from synthetic slides, like BACH part A: each image shows one class.
import { INPUT_SIZE } from '../util/constants.js';
import { CLASS_NORMAL, type Lesion } from './lesions.js';
import { Rng } from '../util/rng.js';
import type { SynthSlide } from './slides.js';

/** Patch side D = 128 px at 1.25X (Appendix B); a BACH part-A photo (2048x1536 at 0.42 um/px) is about this size. */
export const SYNTH_PATCH_SIZE = INPUT_SIZE;
/** Patches with less than 75% tissue are discarded (Appendix B). */
export const SYNTH_PATCH_MIN_TISSUE = 0.75;
/** A lesion patch must show at least this share of its class and almost none of another lesion class. */
const MIN_CLASS_SHARE = 0.02;
const MAX_OTHER_SHARE = 0.005;
/** Patches of one class on one slide keep at least this far apart (px), so they are not near-duplicates. */
const MIN_CENTRE_DISTANCE = 24;

export interface SynthPatch {
  readonly cls: number;
  /** Top-left corner in the slide. */
  readonly left: number;
  readonly top: number;
  /** Interleaved RGB, SYNTH_PATCH_SIZE square. */
  readonly rgb: Buffer;
}

interface CropStats {
  tissue: number;
  shares: number[];
}

function cropStats(slide: SynthSlide, left: number, top: number, size: number, classes: number): CropStats {
  const counts = new Array<number>(classes).fill(0);
  let tissue = 0;
  for (let y = top; y < top + size; y++) {
    const row = y * slide.width;
    for (let x = left; x < left + size; x++) {
      counts[slide.labels[row + x]!]! += 1;
      tissue += slide.tissue[row + x]!;
    }
  }
  const n = size * size;
  return { tissue: tissue / n, shares: counts.map((c) => c / n) };
}

function crop(slide: SynthSlide, left: number, top: number, size: number): Buffer {
  const out = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++) {
    const from = ((top + y) * slide.width + left) * 3;
    slide.rgb.copy(out, y * size * 3, from, from + size * 3);
  }
  return out;
}

/**
 * Up to `perClass` patches of each class: lesion classes centred (with jitter) on their lesions, normal ones on
 * normal lobules or anywhere in lesion-free tissue. Fewer come back when a slide has too little of a class.
 */
export function cutClassPatches(slide: SynthSlide, rng: Rng, perClass: number, classes: number): SynthPatch[] {
  const size = SYNTH_PATCH_SIZE;
  if (slide.width < size || slide.height < size) return [];
  const out: SynthPatch[] = [];
  for (let cls = 0; cls < classes; cls++) {
    const anchors: Lesion[] = slide.lesions.filter((l) => l.cls === cls);
    if (cls !== CLASS_NORMAL && anchors.length === 0) continue;
    const centres: { x: number; y: number }[] = [];
    for (let t = 0; t < perClass * 25 && centres.length < perClass; t++) {
      let cx: number;
      let cy: number;
      if (anchors.length > 0 && (cls !== CLASS_NORMAL || rng.next() < 0.6)) {
        const a = anchors[t % anchors.length]!;
        const jitter = size * 0.3;
        cx = a.x + rng.range(-jitter, jitter);
        cy = a.y + rng.range(-jitter, jitter);
      } else {
        cx = rng.range(0, slide.width);
        cy = rng.range(0, slide.height);
      }
      const left = Math.max(0, Math.min(slide.width - size, Math.round(cx - size / 2)));
      const top = Math.max(0, Math.min(slide.height - size, Math.round(cy - size / 2)));
      const mid = { x: left + size / 2, y: top + size / 2 };
      if (centres.some((c) => Math.hypot(c.x - mid.x, c.y - mid.y) < MIN_CENTRE_DISTANCE)) continue;
      const stats = cropStats(slide, left, top, size, classes);
      if (stats.tissue < SYNTH_PATCH_MIN_TISSUE) continue;
      const others = stats.shares.some((s, k) => k !== cls && k !== CLASS_NORMAL && s > MAX_OTHER_SHARE);
      if (others) continue;
      if (cls !== CLASS_NORMAL && stats.shares[cls]! < MIN_CLASS_SHARE) continue;
      centres.push(mid);
      out.push({ cls, left, top, rgb: crop(slide, left, top, size) });
    }
  }
  return out;
}
