// Sample pictures of a synthetic slide for the docs: the slide, its colour-coded mask, an overlay, class crops.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { BACH_CLASSES } from '../util/constants.js';
import { SYNTH_CLASSES, type SynthSlide } from './slides.js';

/** The paper's display colours (normal white, benign red, in situ green, invasive blue), as RGB triples. */
export const CLASS_COLOURS: readonly (readonly number[])[] = BACH_CLASSES.map((c) =>
  [1, 3, 5].map((k) => parseInt(c.color.slice(k, k + 2), 16)),
);
/** Side of the downscaled overview pictures and of the full-resolution class crops. */
const OVERVIEW_SIDE = 768;
const CROP_SIDE = 192;

function colourMask(labels: Uint8Array): Buffer {
  const out = Buffer.alloc(labels.length * 3);
  for (let i = 0; i < labels.length; i++) {
    const c = CLASS_COLOURS[labels[i]!] ?? [0, 0, 0];
    out[i * 3] = c[0]!;
    out[i * 3 + 1] = c[1]!;
    out[i * 3 + 2] = c[2]!;
  }
  return out;
}

/** Lesion pixels tinted with their class colour, and their borders drawn solid. */
function overlay(slide: SynthSlide): Buffer {
  const { width, height, labels, rgb } = slide;
  const out = Buffer.from(rgb);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const k = labels[i]!;
      if (k === 0) continue;
      const c = CLASS_COLOURS[k]!;
      let edge = false;
      for (const [dx, dy] of [[-2, 0], [2, 0], [0, -2], [0, 2]] as const) {
        const nx = x + dx;
        const ny = y + dy;
        if (nx >= 0 && ny >= 0 && nx < width && ny < height && labels[ny * width + nx] !== k) edge = true;
      }
      const a = edge ? 1 : 0.3;
      for (let ch = 0; ch < 3; ch++) out[i * 3 + ch] = Math.round(out[i * 3 + ch]! * (1 - a) + c[ch]! * a);
    }
  }
  return out;
}

/** Writes synth-slide.png, synth-mask.png, synth-overlay.png and synth-crop-<class>.png into `dir`. */
export async function writeSynthSamples(slide: SynthSlide, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const raw = { raw: { width: slide.width, height: slide.height, channels: 3 as const } };
  const side = Math.min(OVERVIEW_SIDE, slide.width);
  const written: string[] = [];
  const save = async (img: Sharp, file: string, palette = false) => {
    // The overviews are quantised to a palette: a third of the bytes in the repository, no visible change.
    await img.png(palette ? { palette: true, quality: 95, effort: 10, dither: 0.6 } : { compressionLevel: 9 }).toFile(join(dir, file));
    written.push(join(dir, file));
  };
  await save(sharp(slide.rgb, raw).resize(side), 'synth-slide.png', true);
  await save(sharp(colourMask(slide.labels), raw).resize(side, undefined, { kernel: 'nearest' }), 'synth-mask.png');
  await save(sharp(overlay(slide), raw).resize(side), 'synth-overlay.png', true);
  for (let cls = 0; cls < SYNTH_CLASSES.length; cls++) {
    const mine = slide.lesions.filter((l) => l.cls === cls);
    if (mine.length === 0) continue;
    const s = Math.min(CROP_SIDE, slide.width, slide.height);
    // The crop that shows the most of its class (normal: the most tissue around a lobule).
    let best = { left: 0, top: 0, score: -1 };
    for (const l of mine) {
      const left = Math.max(0, Math.min(slide.width - s, Math.round(l.x - s / 2)));
      const top = Math.max(0, Math.min(slide.height - s, Math.round(l.y - s / 2)));
      let score = 0;
      for (let y = top; y < top + s; y++) {
        for (let x = left; x < left + s; x++) {
          const i = y * slide.width + x;
          if (cls === 0 ? slide.tissue[i]! > 0.5 && slide.labels[i] === 0 : slide.labels[i] === cls) score++;
        }
      }
      if (score > best.score) best = { left, top, score };
    }
    const { left, top } = best;
    const name = SYNTH_CLASSES[cls]!.replace(/\s+/g, '-');
    await save(sharp(slide.rgb, raw).extract({ left, top, width: s, height: s }), `synth-crop-${name}.png`);
  }
  return written;
}
