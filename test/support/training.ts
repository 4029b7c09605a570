import { cpSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { encodeLabelMap } from '../../src/data/labels/labelMap.js';
import { ExampleSplit, type Example } from '../../src/proto/gen/histoseg/v1/training.js';
import { renderSynthSlide, SYNTH_CLASSES } from '../../src/synth/slides.js';

export const BUNDLED_MODELS = fileURLToPath(new URL('../../models', import.meta.url));
export const BASE = { name: 'histoseg-bach', version: '1.0.0' };
export const CLASSES = [...SYNTH_CLASSES];
export const TOKENS = { segment: 's'.repeat(20) + '-segment', train: 't'.repeat(20) + '-train', admin: 'a'.repeat(20) + '-admin' };

/** A temporary folder with models/ (the bundled trained version as the default), datasets/ and a tokens file. */
export function trainingSandbox(prefix = 'histoseg-train-rpc-'): { dir: string; models: string; datasets: string; tokensFile: string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const models = join(dir, 'models');
  mkdirSync(join(models, BASE.name), { recursive: true });
  cpSync(join(BUNDLED_MODELS, BASE.name, BASE.version), join(models, BASE.name, BASE.version), { recursive: true });
  writeFileSync(join(models, 'default.json'), JSON.stringify({ name: BASE.name, version: BASE.version }));
  const tokensFile = join(dir, 'tokens.txt');
  writeFileSync(tokensFile, Object.entries(TOKENS).map(([role, t]) => `${role} ${t}`).join('\n') + '\n');
  return { dir, models, datasets: join(dir, 'datasets'), tokensFile };
}

/**
 * Synthetic labelled tiles (src/synth): `side` px tiles cut from one rendered slide at the model's scale, each with
 * its label map, and class examples labelled with a tile's most frequent lesion class.
 */
export async function synthExamples(opts: { seed: number; tiles: number; validation?: number; classExamples?: number; side?: number }): Promise<Example[]> {
  const side = opts.side ?? 128;
  const cols = Math.ceil(Math.sqrt(opts.tiles + (opts.classExamples ?? 0)));
  const slide = renderSynthSlide(opts.seed, Math.max(256, cols * side));
  const out: Example[] = [];
  const total = opts.tiles + (opts.classExamples ?? 0);
  for (let i = 0; i < total; i++) {
    const x = (i % cols) * side;
    const y = Math.floor(i / cols) * side;
    if (x + side > slide.width || y + side > slide.height) break;
    const rgb = Buffer.alloc(side * side * 3);
    const labels = new Uint8Array(side * side);
    const counts = new Array<number>(CLASSES.length).fill(0);
    for (let r = 0; r < side; r++) {
      slide.rgb.copy(rgb, r * side * 3, ((y + r) * slide.width + x) * 3, ((y + r) * slide.width + x + side) * 3);
      labels.set(slide.labels.subarray((y + r) * slide.width + x, (y + r) * slide.width + x + side), r * side);
    }
    for (const v of labels) counts[v]! += 1;
    const image = await sharp(rgb, { raw: { width: side, height: side, channels: 3 } }).png().toBuffer();
    if (i < opts.tiles) {
      const validation = i >= opts.tiles - (opts.validation ?? 0);
      out.push({
        exampleId: `tile-${opts.seed}-${i}`,
        image,
        mpp: 0,
        mask: await encodeLabelMap({ labels, width: side, height: side }),
        classIndex: undefined,
        split: validation ? ExampleSplit.EXAMPLE_SPLIT_VALIDATION : ExampleSplit.EXAMPLE_SPLIT_TRAIN,
      });
    } else {
      const lesion = counts.slice(1).reduce((best, n, k) => (n > counts[best]! ? k + 1 : best), 0);
      out.push({ exampleId: `cls-${opts.seed}-${i}`, image, mpp: 0, mask: undefined, classIndex: lesion, split: ExampleSplit.EXAMPLE_SPLIT_TRAIN });
    }
  }
  return out;
}
