// The segmentation painted over the slide: each non-background class in its colour, glass (no tissue) tinted apart
// from class-0 tissue (which is left as it is), and a legend naming every colour.
import sharp, { type OverlayOptions } from 'sharp';
import type { RgbImage } from '../../imaging/decode.js';

/** Opacity of the class colours painted over the image. */
export const OVERLAY_ALPHA = 0.45;
/** Glass is tinted this colour at GLASS_ALPHA, so it reads apart from the unpainted class-0 tissue. */
export const GLASS_COLOR: [number, number, number] = [150, 170, 200];
const GLASS_ALPHA = 0.35;

export interface OverlayClass {
  name: string;
  color: string;
}

function parseColor(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  return m ? [parseInt(m[1]!, 16), parseInt(m[2]!, 16), parseInt(m[3]!, 16)] : [0, 0, 0];
}

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function legendSvg(classes: readonly OverlayClass[], imageWidth: number): { svg: Buffer; width: number; height: number } {
  const font = Math.max(10, Math.min(28, Math.round(imageWidth / 60)));
  const row = Math.round(font * 1.5);
  const entries: { label: string; fill: string }[] = [
    { label: `${classes[0]?.name ?? 'class 0'} (tissue, unpainted)`, fill: 'none' },
    ...classes.slice(1).map((c) => ({ label: c.name, fill: c.color })),
    { label: 'glass (no tissue)', fill: `rgb(${GLASS_COLOR.join(',')})` },
  ];
  const width = Math.min(imageWidth, Math.round(font * 16));
  const height = row * entries.length + font;
  const items = entries
    .map((e, i) => {
      const y = Math.round(font / 2) + i * row;
      return `<rect x="${font / 2}" y="${y}" width="${font}" height="${font}" fill="${e.fill}" stroke="#000" stroke-width="1"/>` +
        `<text x="${font * 2}" y="${y + font * 0.85}" font-family="sans-serif" font-size="${font}" fill="#000">${xml(e.label)}</text>`;
    })
    .join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="100%" height="100%" fill="#fff" fill-opacity="0.85" stroke="#000"/>${items}</svg>`;
  return { svg: Buffer.from(svg), width, height };
}

/**
 * Writes `image` (the slide at the label map's size) with the classes painted in: labels and tissue (1 = tissue) are
 * width x height like the image. The legend goes in the top-left corner when the image is large enough to hold it.
 */
export async function writeOverlay(path: string, image: RgbImage, labels: Uint8Array, tissue: Uint8Array | null, classes: readonly OverlayClass[]): Promise<void> {
  const { width, height } = image;
  const colors = classes.map((c) => parseColor(c.color));
  const alpha = Math.round(OVERLAY_ALPHA * 255);
  const glassAlpha = Math.round(GLASS_ALPHA * 255);
  const layer = Buffer.alloc(width * height * 4);
  for (let i = 0; i < labels.length; i++) {
    const k = labels[i]!;
    if (k > 0 && k < colors.length) {
      const [r, g, b] = colors[k]!;
      layer[4 * i] = r;
      layer[4 * i + 1] = g;
      layer[4 * i + 2] = b;
      layer[4 * i + 3] = alpha;
    } else if (tissue && !tissue[i]) {
      layer[4 * i] = GLASS_COLOR[0];
      layer[4 * i + 1] = GLASS_COLOR[1];
      layer[4 * i + 2] = GLASS_COLOR[2];
      layer[4 * i + 3] = glassAlpha;
    }
  }
  const composites: OverlayOptions[] = [{ input: layer, raw: { width, height, channels: 4 } }];
  const legend = legendSvg(classes, width);
  if (legend.width <= width && legend.height <= height) composites.push({ input: legend.svg, left: 0, top: 0 });
  await sharp(image.data, { raw: { width, height, channels: 3 }, limitInputPixels: false }).composite(composites).png().toFile(path);
}
