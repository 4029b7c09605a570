// The tile path's per-pixel loops as WebAssembly (source: pixelKernels.as.ts, AssemblyScript). On this machine a
// typed-array loop in V8 costs 3-9 ns a pixel; the same loops compiled ahead of time run several times faster, and
// the server pays them on every tile. Each kernel has a TypeScript twin that tests compare it with, which also
// serves tiles too large for the kernels' memory.
import { PIXEL_KERNELS_WASM } from './pixelKernelsWasm.js';

// Node has WebAssembly; TypeScript declares it only with the DOM library, so the little used here is typed here.
declare const WebAssembly: undefined | {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
};

interface Exports {
  memory: { readonly buffer: ArrayBuffer; grow(pages: number): number };
  saturationMask(rgb: number, n: number, out: number, k: number): number;
  fillHoles(mask: number, w: number, h: number, padded: number, stack: number): number;
  opening(mask: number, w: number, h: number, r: number, a: number, b: number): number;
  stainMap(rgb: number, n: number, lut: number, out: number): void;
  labelOneWindow(logits: number, C: number, m: number, n: number, tissue: number, out: number, counts: number, small: number, best: number): void;
}

/** Largest tile (pixels) the kernels take; bigger ones use the TypeScript path rather than grow memory for good. */
export const KERNEL_MAX_PIXELS = 2048 * 2048;
const PAGE = 65536;
const LUT_BYTES = 9 * 256 * 8;

/** Undefined where Node runs without WebAssembly (--jitless): every kernel then declines and TypeScript runs. */
const exports = ((): Exports | undefined => {
  try {
    return new WebAssembly!.Instance(new WebAssembly!.Module(Buffer.from(PIXEL_KERNELS_WASM, 'base64'))).exports as Exports;
  } catch {
    return undefined;
  }
})();
let bytes = new Uint8Array(exports?.memory.buffer ?? new ArrayBuffer(0));
/** The stain table now in memory (at offset 0), so a slide's tiles copy it once. */
let loadedLut: Float64Array | undefined;

/** Makes memory at least `size` bytes; views are renewed because growing detaches the old buffer. */
function ensure(k: Exports, size: number): void {
  const have = k.memory.buffer.byteLength;
  if (size > have) {
    k.memory.grow(Math.ceil((size - have) / PAGE));
    bytes = new Uint8Array(k.memory.buffer);
  }
}

const align8 = (n: number): number => (n + 7) & ~7;

/**
 * The foreground mask of tissue.ts (saturation rule, hole filling, opening of side 2r + 1) into out; returns the
 * tissue count, or -1 when the tile is over KERNEL_MAX_PIXELS (or there is no WebAssembly).
 */
export function kernelTissueMask(rgb: Uint8Array, w: number, h: number, out: Uint8Array, denominator: number, r: number): number {
  const n = w * h;
  const k = exports;
  if (!k || n > KERNEL_MAX_PIXELS) return -1;
  const wpr = (w + 31) >>> 5;
  const padded = (w + 2) * (h + 2);
  const pRgb = LUT_BYTES;
  const pMask = align8(pRgb + 3 * n);
  const pPad = align8(pMask + n);
  const pStack = align8(pPad + padded);
  const pA = pStack + 4 * padded;
  const pB = pA + 4 * wpr * h;
  ensure(k, pB + 4 * wpr * h);
  bytes.set(rgb.subarray(0, 3 * n), pRgb);
  let count = k.saturationMask(pRgb, n, pMask, denominator);
  // Exact fast exits, as in tissue.ts: uniform masks are unchanged by hole filling and opening.
  if (count !== 0 && count !== n) {
    count = k.fillHoles(pMask, w, h, pPad, pStack);
    if (count !== n) count = k.opening(pMask, w, h, r, pA, pB);
  }
  out.set(bytes.subarray(pMask, pMask + n));
  return count;
}

/** macenko.ts's stain mapping with its 9 x 256 table; false when the tile is over KERNEL_MAX_PIXELS. */
export function kernelStainMap(rgb: Uint8Array, pixels: number, lut: Float64Array, out: Uint8Array): boolean {
  const k = exports;
  if (!k || pixels > KERNEL_MAX_PIXELS) return false;
  const pRgb = LUT_BYTES;
  const pOut = pRgb + 3 * pixels;
  ensure(k, pOut + 3 * pixels);
  if (loadedLut !== lut) {
    new Float64Array(k.memory.buffer, 0, 9 * 256).set(lut);
    loadedLut = lut;
  }
  bytes.set(rgb.subarray(0, 3 * pixels), pRgb);
  k.stainMap(pRgb, pixels, 0, pOut);
  out.set(bytes.subarray(pOut, pOut + 3 * pixels));
  return true;
}

/** tileProcessor.ts's one-window labelling (argmax, upsampling, glass, counts); false when over the limit. */
export function kernelLabelOneWindow(logits: Float32Array, C: number, m: number, n: number, tissue: Uint8Array, out: Uint8Array, counts: Float64Array): boolean {
  const k = exports;
  if (!k || n * n > KERNEL_MAX_PIXELS) return false;
  const plane = m * m;
  const pLogits = LUT_BYTES;
  const pCounts = align8(pLogits + 4 * C * plane);
  const pBest = pCounts + 8 * C;
  const pSmall = pBest + 4 * plane;
  const pTissue = align8(pSmall + plane);
  const pOut = pTissue + n * n;
  ensure(k, pOut + n * n);
  new Float32Array(k.memory.buffer, pLogits, C * plane).set(logits.subarray(0, C * plane));
  const c = new Float64Array(k.memory.buffer, pCounts, C);
  c.set(counts.subarray(0, C));
  bytes.set(tissue.subarray(0, n * n), pTissue);
  k.labelOneWindow(pLogits, C, m, n, pTissue, pOut, pCounts, pSmall, pBest);
  out.set(bytes.subarray(pOut, pOut + n * n));
  counts.set(c);
  return true;
}
