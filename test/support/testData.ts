// Test data beyond the slide (see slideTiles.ts): each fixture is made synthetically, always, and also read from
// ../shared/data when that folder is present, so that no test depends on ../shared.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { EBHI_CLASSES } from '../../src/data/datasets/ebhi.js';
import { decodeImage, type RgbImage } from '../../src/imaging/decode.js';
import { renderSynthSlide } from '../../src/synth/slides.js';
import { describedTiff } from './slideTiles.js';

const SHARED = fileURLToPath(new URL('../../../shared/data/', import.meta.url));

export interface Variant<T> {
  kind: 'real' | 'synthetic';
  load: () => Promise<T>;
}

/** The synthetic variant always, then the real one when its files exist. */
function variants<T>(synthetic: () => Promise<T>, realFiles: string[], real: () => Promise<T>): Variant<T>[] {
  const have = realFiles.every((f) => existsSync(join(SHARED, f)));
  return [{ kind: 'synthetic', load: synthetic }, ...(have ? [{ kind: 'real' as const, load: real }] : [])];
}

let tempDir: string | undefined;
/** A folder for this process's synthetic files, removed at exit. */
function temp(name: string): string {
  if (!tempDir) {
    const dir = mkdtempSync(join(tmpdir(), 'histoseg-test-data-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    tempDir = dir;
  }
  return join(tempDir, name);
}

const load = (path: string): Promise<RgbImage> => decodeImage(readFileSync(path), { maxPixels: 1 << 24 });

/**
 * Two H&E images stained differently. Synthetic: two slides of src/synth, whose per-slide stains differ (seeds 3 and
 * 4: their eosin vectors are about 5 degrees apart as Macenko estimates them).
 */
export const STAIN_PAIR_VARIANTS: Variant<{ source: RgbImage; target: RgbImage }>[] = variants(
  async () => {
    const side = 256;
    const image = (seed: number): RgbImage => {
      const s = renderSynthSlide(seed, side);
      return { data: new Uint8Array(s.rgb.buffer, s.rgb.byteOffset, s.rgb.length), width: side, height: side };
    };
    return { source: image(3), target: image(4) };
  },
  ['stain/he_source.png', 'stain/he_target.png'],
  async () => ({ source: await load(join(SHARED, 'stain/he_source.png')), target: await load(join(SHARED, 'stain/he_target.png')) }),
);

/**
 * Slides sharp cannot decode. Synthetic: a TIFF whose header says JPEG 2000 (Aperio's compression 33005), and a DICOM
 * file known only by its "DICM" magic (no .dcm extension).
 */
export const UNSUPPORTED_SLIDE_VARIANTS: Variant<{ jpeg2000: string; dicom: string }>[] = variants(
  async () => {
    const jpeg2000 = temp('jpeg2000.svs');
    writeFileSync(jpeg2000, describedTiff(Buffer.alloc(16 * 16 * 3, 200), 16, 16, 'Aperio Image Library |MPP = 0.5', 33005));
    const dicom = temp('slide-dicom');
    writeFileSync(dicom, Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), Buffer.alloc(64)]));
    return { jpeg2000, dicom };
  },
  ['slides/tcga-cr-7395-01a-01-ts1.svs', 'slides/small_dicom.dcm'],
  async () => ({ jpeg2000: join(SHARED, 'slides/tcga-cr-7395-01a-01-ts1.svs'), dicom: join(SHARED, 'slides/small_dicom.dcm') }),
);

/** Side (px) of the synthetic EBHI images and masks. */
const SYNTH_EBHI_SIDE = 64;

/**
 * An EBHI-Seg sample folder (images/, masks/, labels.csv). Synthetic: one image per class in each of the groups A, B
 * and C (18, as the real sample), crops of a src/synth slide, each mask an anti-aliased disc of its class on black.
 */
export const EBHI_VARIANTS: Variant<string>[] = variants(
  async () => {
    const root = temp('ebhi');
    for (const d of ['images', 'masks']) mkdirSync(join(root, d), { recursive: true });
    const n = SYNTH_EBHI_SIDE;
    const canvas = 3 * n;
    const slide = renderSynthSlide(7, canvas);
    const rows = ['file,class_index,class_name'];
    let k = 0;
    for (const group of ['A', 'B', 'C']) {
      for (let cls = 1; cls < EBHI_CLASSES.length; cls++, k++) {
        const file = `${group}-synth-${cls}.png`;
        rows.push(`${file},${cls},${EBHI_CLASSES[cls]!.name}`);
        const x0 = (k % 3) * (n / 2), y0 = Math.floor(k / 3) % 4 * (n / 2);
        const rgb = Buffer.alloc(n * n * 3);
        for (let y = 0; y < n; y++) slide.rgb.copy(rgb, y * n * 3, ((y0 + y) * canvas + x0) * 3, ((y0 + y) * canvas + x0 + n) * 3);
        await sharp(rgb, { raw: { width: n, height: n, channels: 3 } }).png().toFile(join(root, 'images', file));
        const mask = Buffer.alloc(n * n * 3);
        const [cx, cy, r] = [n / 2 + (k % 5) - 2, n / 2 - (k % 3), n * (0.36 + 0.01 * (k % 4))];
        for (let y = 0; y < n; y++) {
          for (let x = 0; x < n; x++) {
            const a = Math.min(1, Math.max(0, r - Math.hypot(x + 0.5 - cx, y + 0.5 - cy) + 0.5));
            EBHI_CLASSES[cls]!.rgb.forEach((v, c) => (mask[(y * n + x) * 3 + c] = Math.round(a * v)));
          }
        }
        await sharp(mask, { raw: { width: n, height: n, channels: 3 } }).png().toFile(join(root, 'masks', file));
      }
    }
    writeFileSync(join(root, 'labels.csv'), rows.join('\n') + '\n');
    return root + '/';
  },
  ['ebhi/labels.csv'],
  async () => join(SHARED, 'ebhi') + '/',
);
