// JPEG 2000 codestreams (DICOM JPEG 2000 frames, Aperio 33003/33005 SVS tiles) to 8-bit RGB through OpenJPEG built
// for WebAssembly (@cornerstonejs/codec-openjpeg). The package ships three builds: a decoder-only wasm module, a
// full (encode+decode) wasm module and an asm.js one; bench/dicom.ts measures them (bench/results/dicom.md: the two
// wasm builds decode alike, asm.js is several times slower) and the smaller decoder-only wasm build is the default.
import { createRequire } from 'node:module';
import type { RgbImage } from './decode.js';

const require = createRequire(import.meta.url);

export type OpenJpegBuild = 'wasm-decode' | 'wasm' | 'asmjs';
const BUILD_MODULES: Record<OpenJpegBuild, string> = {
  'wasm-decode': '@cornerstonejs/codec-openjpeg/decodewasmjs',
  wasm: '@cornerstonejs/codec-openjpeg/wasmjs',
  asmjs: '@cornerstonejs/codec-openjpeg',
};
export const DEFAULT_OPENJPEG_BUILD: OpenJpegBuild = 'wasm-decode';

interface FrameInfo {
  width: number;
  height: number;
  bitsPerSample: number;
  componentCount: number;
  isSigned: boolean;
}
interface J2KDecoder {
  getEncodedBuffer(length: number): Uint8Array;
  getDecodedBuffer(): Uint8Array;
  decode(): void;
  decodeSubResolution(decompositionLevel: number, layer: number): void;
  readHeader(): void;
  getNumDecompositions(): number;
  getFrameInfo(): FrameInfo;
  delete?(): void;
}
interface OpenJpegModule {
  J2KDecoder: new () => J2KDecoder;
}

const modules = new Map<OpenJpegBuild, Promise<{ decoder: J2KDecoder }>>();

function load(build: OpenJpegBuild): Promise<{ decoder: J2KDecoder }> {
  let m = modules.get(build);
  if (!m) {
    const factory = require(BUILD_MODULES[build]) as (module: object) => Promise<OpenJpegModule>;
    // The decoder logs every header it reads through Emscripten's print: keep it off the terminal.
    const quiet = () => undefined;
    m = factory({ print: quiet, printErr: quiet }).then((mod) => ({ decoder: new mod.J2KDecoder() }));
    modules.set(build, m);
  }
  return m;
}

export class Jpeg2000Error extends Error {
  override name = 'Jpeg2000Error';
}

export interface Jpeg2000Options {
  /** The samples are YCbCr without the codestream's own colour transform (DICOM YBR_FULL*, Aperio 33003). */
  ycbcr?: boolean;
  build?: OpenJpegBuild;
  /**
   * Resolution levels to leave out: the image comes out 2^reduce times smaller (each side rounded up). When the
   * codestream has fewer decomposition levels, it is decoded whole and the caller resizes.
   */
  reduce?: number;
}

/** True when the codestream's COD marker asks for the multiple component transform (the decoder undoes it). */
export function hasComponentTransform(code: Uint8Array): boolean {
  // Skip a JP2 box wrapper to the codestream (SOC FF4F).
  let i = 0;
  while (i + 1 < code.length && !(code[i] === 0xff && code[i + 1] === 0x4f)) i++;
  i += 2;
  while (i + 4 < code.length) {
    if (code[i] !== 0xff) return false;
    const marker = code[i + 1]!;
    const len = (code[i + 2]! << 8) | code[i + 3]!;
    if (marker === 0x52) return code[i + 4 + 4] === 1; // COD: Scod(1) SGcod: progression(1) layers(2) MCT(1)
    if (marker === 0x90 || marker === 0x93) return false; // SOT / SOD before COD: malformed
    i += 2 + len;
  }
  return false;
}

/** ITU-R BT.601 full-range YCbCr to RGB, in place over interleaved samples. */
export function ycbcrToRgbInPlace(px: Uint8Array): void {
  for (let i = 0; i + 2 < px.length; i += 3) {
    const y = px[i]!;
    const cb = px[i + 1]! - 128;
    const cr = px[i + 2]! - 128;
    px[i] = clamp(y + 1.402 * cr);
    px[i + 1] = clamp(y - 0.344136 * cb - 0.714136 * cr);
    px[i + 2] = clamp(y + 1.772 * cb);
  }
}
const clamp = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

/**
 * Decodes one codestream (or JP2 file) to 8-bit RGB. Greyscale is widened to RGB; more than 8 bits per sample is
 * scaled down. Runs synchronously in WebAssembly: one slide tile (up to ~1k x 1k) at a time.
 */
export async function decodeJpeg2000(code: Uint8Array, opts: Jpeg2000Options = {}): Promise<RgbImage> {
  const { decoder } = await load(opts.build ?? DEFAULT_OPENJPEG_BUILD);
  try {
    decoder.getEncodedBuffer(code.length).set(code);
    const reduce = opts.reduce ?? 0;
    if (reduce > 0) {
      decoder.readHeader();
      if (decoder.getNumDecompositions() >= reduce) decoder.decodeSubResolution(reduce, 0);
      else decoder.decode();
    } else decoder.decode();
  } catch (err) {
    throw new Jpeg2000Error(`corrupt JPEG 2000 codestream (${code.length} bytes): ${err instanceof Error ? err.message : String(err)}`);
  }
  const info = decoder.getFrameInfo();
  const { componentCount: nc, bitsPerSample: bits } = info;
  // getFrameInfo gives the full size; a sub-resolution decode is that size over 2^reduce, rounded up.
  const raw = decoder.getDecodedBuffer();
  const bytesPerSample = bits <= 8 ? 1 : 2;
  let { width, height } = info;
  if ((opts.reduce ?? 0) > 0 && raw.length < width * height * nc * bytesPerSample) {
    const f = 2 ** (opts.reduce ?? 0);
    width = Math.ceil(width / f);
    height = Math.ceil(height / f);
  }
  const n = width * height;
  const out = new Uint8Array(n * 3);
  if (bits <= 8) {
    if (nc === 3) out.set(raw.subarray(0, n * 3));
    else if (nc === 1) for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = raw[i]!;
    else if (nc === 4) for (let i = 0; i < n; i++) out.set(raw.subarray(4 * i, 4 * i + 3), 3 * i);
    else throw new Jpeg2000Error(`JPEG 2000 with ${nc} components: expected 1, 3 or 4`);
  } else {
    const words = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength >> 1);
    const shift = bits - 8;
    const take = nc === 1 ? 1 : 3;
    if (nc !== 1 && nc < 3) throw new Jpeg2000Error(`JPEG 2000 with ${nc} components: expected 1, 3 or 4`);
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 3; c++) out[3 * i + c] = words[i * nc + (take === 1 ? 0 : c)]! >> shift;
    }
  }
  if (opts.ycbcr && nc >= 3 && !hasComponentTransform(code)) ycbcrToRgbInPlace(out);
  return { data: out, width, height };
}
