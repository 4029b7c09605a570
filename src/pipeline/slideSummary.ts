// What a segmented slide's report says beyond per-class pixel shares: areas in mm², shares of the tissue alone
// (class 0 of the paper's model is "normal tissue or glass", so its share of the whole slide mostly measures glass),
// and one class for the slide.

/**
 * A class names the slide when it covers at least this share of the tissue; the slide takes the highest-index such
 * class (the classes run from normal to the most severe, as BACH's do), else class 0. Not from the paper, which
 * labels patches, not slides: a pathologist's report names the worst finding, and 1% keeps single stray tiles out.
 */
export const SLIDE_CLASS_MIN_TISSUE_SHARE = 0.01;

export interface ClassArea {
  /** Model-scale pixels of the class (glass included for class 0). */
  pixels: number;
  /** Area in mm², or null when the slide's scale is unknown. */
  areaMm2: number | null;
  /** Pixels of the class on tissue (by the paper's tissue mask, App. B.1). */
  tissuePixels: number;
  /** Share of the tissue. */
  tissueShare: number;
}

export interface SlideAreas {
  classes: ClassArea[];
  tissue: { pixels: number; areaMm2: number | null; share: number };
  glass: { pixels: number; areaMm2: number | null };
  slideClass: { index: number; rule: string };
}

/**
 * `labels` and `tissue` (1 = tissue) are the same model-scale grid; `mpp` is its microns per pixel (0 = unknown).
 * `answered` marks pixels of answered tiles (INVALID tiles are left out of every count), or null for all.
 */
export function slideAreas(labels: Uint8Array, tissue: Uint8Array, numClasses: number, mpp: number, answered: Uint8Array | null = null): SlideAreas {
  const pixels = new Array<number>(numClasses).fill(0);
  const onTissue = new Array<number>(numClasses).fill(0);
  let tissuePixels = 0;
  let glassPixels = 0;
  for (let i = 0; i < labels.length; i++) {
    if (answered && !answered[i]) continue;
    const k = labels[i]!;
    if (k >= numClasses) continue;
    pixels[k]!++;
    if (tissue[i]) {
      onTissue[k]!++;
      tissuePixels++;
    } else glassPixels++;
  }
  const mm2 = (n: number) => (mpp > 0 ? (n * mpp * mpp) / 1e6 : null);
  const total = tissuePixels + glassPixels;
  let slideClass = 0;
  for (let k = numClasses - 1; k > 0; k--) {
    if (tissuePixels > 0 && onTissue[k]! / tissuePixels >= SLIDE_CLASS_MIN_TISSUE_SHARE) {
      slideClass = k;
      break;
    }
  }
  return {
    classes: pixels.map((p, k) => ({ pixels: p, areaMm2: mm2(p), tissuePixels: onTissue[k]!, tissueShare: tissuePixels > 0 ? onTissue[k]! / tissuePixels : 0 })),
    tissue: { pixels: tissuePixels, areaMm2: mm2(tissuePixels), share: total > 0 ? tissuePixels / total : 0 },
    glass: { pixels: glassPixels, areaMm2: mm2(glassPixels) },
    slideClass: { index: slideClass, rule: `highest class covering >= ${SLIDE_CLASS_MIN_TISSUE_SHARE * 100}% of the tissue` },
  };
}
