// A slide at the model's scale handed out region by region (the shape pipeline/segmentSlide.ts's SlideSource wants):
// each model-scale region is read from the pyramid level nearest the model's scale (the coarsest level still at
// least as fine) and resampled. Regions that the coarsest level shows to be glass are answered white without reading
// (over DICOMweb: without fetching) the finer frames; the segmenter answers white tiles as background anyway.
import sharp from 'sharp';
import type { RgbImage } from '../../imaging/decode.js';
import { tissueMask } from '../../imaging/tissue.js';
import { levelFor, readSlideRegion, type SlideInfo, type SlideRegion } from './slideReader.js';

/** Coarse pixels of margin around a region when asking the coarse tissue mask (tissue at a frame edge is kept). */
const TISSUE_MARGIN = 2;

export interface RegionSource {
  readonly width: number;
  readonly height: number;
  /** The pyramid level regions are read from. */
  readonly level: number;
  read(region: SlideRegion): Promise<RgbImage>;
  /** Frames are decoded this many times smaller than the level (DICOM; 1 otherwise). */
  readonly shrink: number;
  /** Regions answered white without reading, because the coarse level shows no tissue there. */
  readonly skipped: number;
}

export async function slideRegionSource(slide: SlideInfo, width: number, height: number, opts: { skipGlass?: boolean } = {}): Promise<RegionSource> {
  const level = levelFor(slide, width, height);
  const L = slide.levels[level]!;
  const sx = L.width / width;
  const sy = L.height / height;
  let coarse: { mask: Uint8Array; w: number; h: number; level: number } | null = null;
  const coarsest = slide.levels.length - 1;
  if (opts.skipGlass && coarsest !== level) {
    const C = slide.levels[coarsest]!;
    const rgb = await readSlideRegion(slide, coarsest, { left: 0, top: 0, width: C.width, height: C.height });
    coarse = { mask: tissueMask(rgb.data, C.width, C.height), w: C.width, h: C.height, level: coarsest };
  }
  const shrink = slide.format === 'dicom' && slide.dicom ? slide.dicom.shrinkFor(level, Math.floor(Math.min(sx, sy))) : 1;
  let skipped = 0;
  const hasTissue = (r: SlideRegion): boolean => {
    if (!coarse) return true;
    const fx = coarse.w / width;
    const fy = coarse.h / height;
    const x0 = Math.max(0, Math.floor(r.left * fx) - TISSUE_MARGIN);
    const y0 = Math.max(0, Math.floor(r.top * fy) - TISSUE_MARGIN);
    const x1 = Math.min(coarse.w, Math.ceil((r.left + r.width) * fx) + TISSUE_MARGIN);
    const y1 = Math.min(coarse.h, Math.ceil((r.top + r.height) * fy) + TISSUE_MARGIN);
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (coarse.mask[y * coarse.w + x]) return true;
    return false;
  };
  return {
    width,
    height,
    level,
    shrink,
    get skipped() {
      return skipped;
    },
    async read(r: SlideRegion): Promise<RgbImage> {
      if (!hasTissue(r)) {
        skipped++;
        return { data: new Uint8Array(r.width * r.height * 3).fill(255), width: r.width, height: r.height };
      }
      // The level region covering the model-scale region, resampled to it. DICOM frames are decoded up to `shrink`
      // times smaller on the way (still at least as fine as the model's scale).
      const fx = sx / shrink;
      const fy = sy / shrink;
      const lw = Math.ceil(L.width / shrink);
      const lh = Math.ceil(L.height / shrink);
      const left = Math.floor(r.left * fx);
      const top = Math.floor(r.top * fy);
      const right = Math.min(lw, Math.ceil((r.left + r.width) * fx));
      const bottom = Math.min(lh, Math.ceil((r.top + r.height) * fy));
      const region = { left, top, width: Math.max(1, right - left), height: Math.max(1, bottom - top) };
      const img = shrink > 1 ? await slide.dicom!.readRegion(level, region, shrink) : await readSlideRegion(slide, level, region);
      if (img.width === r.width && img.height === r.height) return img;
      const { data } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
        .resize(r.width, r.height, { fit: 'fill' })
        .raw()
        .toBuffer({ resolveWithObject: true });
      return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: r.width, height: r.height };
    },
  };
}
