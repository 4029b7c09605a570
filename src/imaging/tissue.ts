// The foreground rule of App. B.1, written over typed arrays rather than with sharp's erode/dilate: it runs for
// every served tile (background tiles must answer in well under a millisecond), sharp has no hole filling, and one
// sharp call costs more than the whole mask here. Connected components for patch preparation are in
// src/training/components.ts for the same lack of a fitting library. The served path runs the same algorithm as a
// WebAssembly kernel (pixelKernels.as.ts); the TypeScript here is its tested reference.
import { kernelTissueMask } from './kernels/pixelKernels.js';

/** HSV saturation below this fraction of the maximum possible saturation is background (App. B.1). */
export const SATURATION_THRESHOLD = 0.1;
/**
 * Side of the square structuring element of the morphological opening. The paper (App. B.1) applies an opening
 * "to remove salt and pepper noise" but gives no size: 5 px removes specks up to 4 px wide, i.e. under 37 um at
 * the model's 7.5 um/px, while keeping any tissue strip 5 px or wider.
 */
export const OPENING_SIZE = 5; // odd, at most 63 (the bit-packed filter shifts by up to 31)
/** Patches with less foreground than this are discarded (App. B.1). */
export const MIN_FOREGROUND_FRACTION = 0.75;

/** SATURATION_THRESHOLD as the integer ratio 1/10, so the rule needs no division (see threshold). */
const SATURATION_DENOMINATOR = Math.round(1 / SATURATION_THRESHOLD);

// Scratch buffers reused across calls: the functions are synchronous, so no two calls share them at once.
let stack = new Int32Array(0);
let paddedScratch = new Uint8Array(0);
let bitsA = new Int32Array(0);
let bitsB = new Int32Array(0);
let fractionMask = new Uint8Array(0);

function ensureScratch(n: number, w: number, h: number): void {
  if (stack.length < n) stack = new Int32Array(n);
  if (paddedScratch.length < (w + 2) * (h + 2)) paddedScratch = new Uint8Array((w + 2) * (h + 2));
  const words = ((w + 31) >>> 5) * h;
  if (bitsA.length < words) {
    bitsA = new Int32Array(words);
    bitsB = new Int32Array(words);
  }
}

/**
 * Saturation threshold into out (1 = tissue); returns the tissue count. HSV saturation is (max - min) / max, so
 * S >= 1/10 is 10 (max - min) >= max with max > 0 (black has no hue: background), exact in integers. Written
 * without branches: tissue colours vary enough that a branchy min/max mispredicts often (83 vs 53 us a tile).
 */
function threshold(rgb: Uint8Array, n: number, out: Uint8Array): number {
  const k = SATURATION_DENOMINATOR;
  let count = 0;
  for (let i = 0, j = 0; i < n; i++, j += 3) {
    const r = rgb[j]!;
    const g = rgb[j + 1]!;
    const b = rgb[j + 2]!;
    // m is all ones where d < 0, so d & m picks the smaller side.
    let d = r - g;
    let m = d >> 31;
    let max = r - (d & m);
    let min = g + (d & m);
    d = max - b;
    m = d >> 31;
    max -= d & m;
    d = min - b;
    m = d >> 31;
    min = b + (d & m);
    // Sign bits of (max - k (max - min) - 1) and -max: k (max - min) >= max, and max > 0.
    const t = ((max - k * (max - min) - 1) >>> 31) & (-max >>> 31);
    out[i] = t;
    count += t;
  }
  return count;
}

/**
 * Background pixels not 4-connected to the border become tissue. The flood runs in a copy padded by a one-pixel
 * ring marked as reached, so neighbours need no bounds checks. In steps (pad rows, seed, flood, unpad rows) so
 * the chunked mask can pause between them.
 */
interface HoleFill {
  readonly w: number;
  readonly h: number;
  readonly pw: number;
  readonly padded: Uint8Array;
  readonly stack: Int32Array;
  top: number;
}
const REACHED = 2;

function holeFill(w: number, h: number, padded: Uint8Array, stack: Int32Array): HoleFill {
  const pw = w + 2;
  padded.fill(REACHED, 0, pw);
  padded.fill(REACHED, (h + 1) * pw, (h + 2) * pw);
  return { w, h, pw, padded, stack, top: 0 };
}

function padRows(f: HoleFill, mask: Uint8Array, y0: number, y1: number): void {
  const { w, pw, padded } = f;
  for (let y = y0; y < y1; y++) {
    const o = (y + 1) * pw;
    padded[o] = REACHED;
    padded.set(mask.subarray(y * w, y * w + w), o + 1);
    padded[o + w + 1] = REACHED;
  }
}

function seedBorder(f: HoleFill): void {
  const { w, h, pw, padded, stack } = f;
  const seedRow = (o: number, len: number, step: number): void => {
    for (let k = 0, i = o; k < len; k++, i += step) {
      if (padded[i] === 0) {
        padded[i] = REACHED;
        stack[f.top++] = i;
      }
    }
  };
  seedRow(pw + 1, w, 1);
  seedRow(h * pw + 1, w, 1);
  seedRow(pw + 1, h, pw);
  seedRow(pw + w, h, pw);
}

/** Floods from the stack for at most `budget` pixels; true when the flood is complete. */
function flood(f: HoleFill, budget: number): boolean {
  const { pw, padded, stack } = f;
  let top = f.top;
  while (top > 0 && budget-- > 0) {
    const i = stack[--top]!;
    if (padded[i - 1] === 0) {
      padded[i - 1] = REACHED;
      stack[top++] = i - 1;
    }
    if (padded[i + 1] === 0) {
      padded[i + 1] = REACHED;
      stack[top++] = i + 1;
    }
    if (padded[i - pw] === 0) {
      padded[i - pw] = REACHED;
      stack[top++] = i - pw;
    }
    if (padded[i + pw] === 0) {
      padded[i + pw] = REACHED;
      stack[top++] = i + pw;
    }
  }
  f.top = top;
  return top === 0;
}

/** Writes rows back to mask (reached = background); returns their tissue count. */
function unpadRows(f: HoleFill, mask: Uint8Array, y0: number, y1: number): number {
  const { w, pw, padded } = f;
  let count = 0;
  for (let y = y0; y < y1; y++) {
    const o = (y + 1) * pw + 1;
    const d = y * w;
    for (let x = 0; x < w; x++) {
      const t = padded[o + x] === REACHED ? 0 : 1;
      mask[d + x] = t;
      count += t;
    }
  }
  return count;
}

function fillHoles(mask: Uint8Array, w: number, h: number): number {
  const f = holeFill(w, h, paddedScratch, stack);
  padRows(f, mask, 0, h);
  seedBorder(f);
  flood(f, Infinity);
  return unpadRows(f, mask, 0, h);
}

/*
 * The opening runs on bit-packed rows (32 pixels per word): a square min/max filter is then a few shifts and
 * ANDs/ORs per word. Windows are clipped to the tile (outside pixels are 1 for erosion, 0 for dilation, i.e.
 * ignored), so the tile edge neither erodes tissue nor grows it and the result does not depend on where a tile is cut.
 */
function pack(mask: Uint8Array, w: number, h: number, wpr: number, bits: Int32Array, y0 = 0, y1 = h): void {
  for (let y = y0; y < y1; y++) {
    const o = y * w;
    for (let k = 0; k < wpr; k++) {
      const x0 = k << 5;
      const x1 = Math.min(w, x0 + 32);
      let word = 0;
      for (let x = x0; x < x1; x++) word |= mask[o + x]! << (x - x0);
      bits[y * wpr + k] = word;
    }
  }
}

function rowPass(src: Int32Array, dst: Int32Array, w: number, h: number, wpr: number, r: number, erode: boolean, y0 = 0, y1 = h): void {
  const fill = erode ? -1 : 0;
  const tail = w & 31;
  const valid = tail === 0 ? -1 : (1 << tail) - 1;
  for (let y = y0; y < y1; y++) {
    const o = y * wpr;
    const last = o + wpr - 1;
    src[last] = erode ? src[last]! | ~valid : src[last]! & valid;
    for (let k = 0; k < wpr; k++) {
      const cur = src[o + k]!;
      const next = k + 1 < wpr ? src[o + k + 1]! : fill;
      const prev = k > 0 ? src[o + k - 1]! : fill;
      let acc = cur;
      for (let d = 1; d <= r; d++) {
        const right = (cur >>> d) | (next << (32 - d));
        const left = (cur << d) | (prev >>> (32 - d));
        acc = erode ? acc & right & left : acc | right | left;
      }
      dst[o + k] = acc;
    }
  }
}

function colPass(src: Int32Array, dst: Int32Array, h: number, wpr: number, r: number, erode: boolean, y0 = 0, y1 = h): void {
  for (let y = y0; y < y1; y++) {
    const lo = Math.max(0, y - r);
    const hi = Math.min(h - 1, y + r);
    for (let k = 0; k < wpr; k++) {
      let acc = src[lo * wpr + k]!;
      for (let yy = lo + 1; yy <= hi; yy++) acc = erode ? acc & src[yy * wpr + k]! : acc | src[yy * wpr + k]!;
      dst[y * wpr + k] = acc;
    }
  }
}

/** Unpacks bits into mask (0/1 bytes); returns the count of ones. */
function unpack(bits: Int32Array, w: number, h: number, wpr: number, mask: Uint8Array, y0 = 0, y1 = h): number {
  let count = 0;
  for (let y = y0; y < y1; y++) {
    const o = y * w;
    for (let x = 0; x < w; x++) {
      const v = (bits[y * wpr + (x >>> 5)]! >>> (x & 31)) & 1;
      mask[o + x] = v;
      count += v;
    }
  }
  return count;
}

function computeMask(rgb: Uint8Array, w: number, h: number, out: Uint8Array): number {
  checkTile(rgb, w, h);
  const count = kernelTissueMask(rgb, w, h, out, SATURATION_DENOMINATOR, OPENING_SIZE >> 1);
  return count >= 0 ? count : computeMaskTs(rgb, w, h, out);
}

function checkTile(rgb: Uint8Array, w: number, h: number): void {
  if (!Number.isInteger(w) || !Number.isInteger(h) || w < 1 || h < 1) {
    throw new RangeError(`tile size must be positive integers, got ${w}x${h}`);
  }
  if (rgb.length < w * h * 3) throw new RangeError(`RGB buffer has ${rgb.length} bytes, expected ${w}x${h}x3`);
}

/** The TypeScript foreground mask: the kernel's reference, and the path for tiles over KERNEL_MAX_PIXELS. */
function computeMaskTs(rgb: Uint8Array, w: number, h: number, out: Uint8Array): number {
  const n = w * h;
  // Fast exits are exact: an all-background or all-tissue mask is unchanged by hole filling and opening.
  let count = threshold(rgb, n, out);
  if (count === 0 || count === n) return count;
  ensureScratch(n, w, h);
  count = fillHoles(out, w, h);
  if (count === n) return count;
  const r = OPENING_SIZE >> 1;
  const wpr = (w + 31) >>> 5;
  pack(out, w, h, wpr, bitsA);
  rowPass(bitsA, bitsB, w, h, wpr, r, true);
  colPass(bitsB, bitsA, h, wpr, r, true);
  rowPass(bitsA, bitsB, w, h, wpr, r, false);
  colPass(bitsB, bitsA, h, wpr, r, false);
  return unpack(bitsA, w, h, wpr, out);
}

/**
 * The paper's foreground mask (App. B.1): HSV saturation >= 10% of its maximum is tissue, holes (background not
 * 4-connected to the tile border) are filled, then a square opening removes salt-and-pepper specks.
 * Returns 1 = tissue, 0 = background, one byte per pixel.
 */
export function tissueMask(rgb: Uint8Array, width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height);
  tissueMaskInto(rgb, width, height, out);
  return out;
}

/** tissueMask into `out`, returning the tissue pixel count (the mask's sum, which the mask's last pass counts). */
export function tissueMaskInto(rgb: Uint8Array, width: number, height: number, out: Uint8Array): number {
  if (out.length < width * height) throw new RangeError(`mask buffer has ${out.length} bytes, expected ${width}x${height}`);
  return computeMask(rgb, width, height, out);
}

/**
 * tissueMaskInto in steps of about `chunkPixels` pixels of work, awaiting `pause()` between them, so a large tile's
 * mask never holds the event loop for long. Same mask as tissueMaskInto (the TypeScript algorithm, with buffers of
 * its own, since other tiles' masks run in its pauses).
 */
export async function tissueMaskChunked(
  rgb: Uint8Array,
  w: number,
  h: number,
  out: Uint8Array,
  pause: () => Promise<void>,
  chunkPixels = 1 << 17,
): Promise<number> {
  checkTile(rgb, w, h);
  if (out.length < w * h) throw new RangeError(`mask buffer has ${out.length} bytes, expected ${w}x${h}`);
  const n = w * h;
  const rows = Math.max(1, Math.floor(chunkPixels / w));
  const bands = async (fn: (y0: number, y1: number) => void): Promise<void> => {
    for (let y = 0; y < h; y += rows) {
      fn(y, Math.min(h, y + rows));
      await pause();
    }
  };
  let count = 0;
  await bands((y0, y1) => (count += threshold(rgb.subarray(y0 * w * 3), (y1 - y0) * w, out.subarray(y0 * w))));
  if (count === 0 || count === n) return count;
  const f = holeFill(w, h, new Uint8Array((w + 2) * (h + 2)), new Int32Array(n));
  await bands((y0, y1) => padRows(f, out, y0, y1));
  seedBorder(f);
  while (!flood(f, chunkPixels)) await pause();
  count = 0;
  await bands((y0, y1) => (count += unpadRows(f, out, y0, y1)));
  if (count === n) return count;
  const r = OPENING_SIZE >> 1;
  const wpr = (w + 31) >>> 5;
  const a = new Int32Array(wpr * h);
  const b = new Int32Array(wpr * h);
  await bands((y0, y1) => pack(out, w, h, wpr, a, y0, y1));
  await bands((y0, y1) => rowPass(a, b, w, h, wpr, r, true, y0, y1));
  await bands((y0, y1) => colPass(b, a, h, wpr, r, true, y0, y1));
  await bands((y0, y1) => rowPass(a, b, w, h, wpr, r, false, y0, y1));
  await bands((y0, y1) => colPass(b, a, h, wpr, r, false, y0, y1));
  count = 0;
  await bands((y0, y1) => (count += unpack(a, w, h, wpr, out, y0, y1)));
  return count;
}

/** tissueMask by the TypeScript implementation alone (tests compare the WebAssembly kernel with it). */
export function tissueMaskTs(rgb: Uint8Array, width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height);
  checkTile(rgb, width, height);
  computeMaskTs(rgb, width, height, out);
  return out;
}

/** Fraction of the tile that tissueMask calls tissue, without allocating per call. */
export function tissueFraction(rgb: Uint8Array, width: number, height: number): number {
  const n = width * height;
  if (fractionMask.length < n) fractionMask = new Uint8Array(n);
  return computeMask(rgb, width, height, fractionMask) / n;
}
