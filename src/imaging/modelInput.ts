import { IMAGENET_MEAN, IMAGENET_STD } from '../util/constants.js';

/** The model's input normalisation, (v / 255 - mean) / std per channel, as a 256-entry table each: the one table serving and training share. */
const NORM_LUT = [0, 1, 2].map((c) => {
  const t = new Float32Array(256);
  for (let v = 0; v < 256; v++) t[v] = (v / 255 - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]!;
  return t;
}) as [Float32Array, Float32Array, Float32Array];

/** Writes one RGB window as three ImageNet-normalised NCHW planes (R, G, B) at `offset` of a batch buffer. */
export function writeModelInput(rgbWindow: Uint8Array, size: number, out: Float32Array, offset: number): void {
  const n = size * size;
  if (rgbWindow.length !== n * 3) throw new RangeError(`window has ${rgbWindow.length} bytes, expected ${size}x${size}x3`);
  if (offset < 0 || offset + 3 * n > out.length) {
    throw new RangeError(`batch buffer of ${out.length} floats cannot hold a window at offset ${offset}`);
  }
  const [lr, lg, lb] = NORM_LUT;
  const g0 = offset + n;
  const b0 = offset + 2 * n;
  for (let i = 0, j = 0; i < n; i++, j += 3) {
    out[offset + i] = lr[rgbWindow[j]!]!;
    out[g0 + i] = lg[rgbWindow[j + 1]!]!;
    out[b0 + i] = lb[rgbWindow[j + 2]!]!;
  }
}


/** Writes RGB bytes as ImageNet-normalised NHWC floats at `offset` (the TF.js trainer's layout). */
export function writeNhwcInput(rgb: Uint8Array, out: Float32Array, offset: number): void {
  if (offset < 0 || offset + rgb.length > out.length) {
    throw new RangeError(`batch buffer of ${out.length} floats cannot hold ${rgb.length} values at offset ${offset}`);
  }
  const [r, g, b] = NORM_LUT;
  for (let j = 0; j < rgb.length; j += 3) {
    out[offset + j] = r[rgb[j]!]!;
    out[offset + j + 1] = g[rgb[j + 1]!]!;
    out[offset + j + 2] = b[rgb[j + 2]!]!;
  }
}
