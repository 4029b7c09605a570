import { promisify } from 'node:util';
import { crc32, deflate, deflateSync, inflateSync } from 'node:zlib';

const deflateAsync = promisify(deflate);

/**
 * The answer's label mask as an 8-bit greyscale PNG. Written here rather than with sharp or fast-png: every
 * answer carries one, and node's native zlib does it in a third of fast-png's time (its JS deflate allocates
 * hash tables per call, which drives full GCs under load) and a sixth of sharp's per-call setup.
 */
const SIGNATURE = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
const IEND = chunk('IEND', new Uint8Array(0));

function chunk(type: string, data: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(12 + data.length);
  b.writeUInt32BE(data.length, 0);
  b.write(type, 4, 'latin1');
  b.set(data, 8);
  b.writeUInt32BE(crc32(b.subarray(4, 8 + data.length)), 8 + data.length);
  return b;
}

/** Row bytes of the mask being encoded; encodeGreyPng is synchronous, so one grown buffer serves every call. */
let rowScratch = Buffer.alloc(0);
/** IDAT bytes of a PNG split over several chunks (libpng writes 8 KiB ones), for the same reason. */
let idatScratch = Buffer.alloc(0);

/**
 * Level 1: label maps are long runs, which fast matching finds as well as level 6 does (about 0.9 vs 0.5 KiB for a
 * 128x128 mask) in a quarter of the time. A small output chunk: zlib allocates one per call, and masks are small.
 */
const MASK_DEFLATE = { level: 1, chunkSize: 4096 } as const;

function greyIhdr(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // colour type: greyscale; compression, filter and interlace stay 0
  return ihdr;
}

/** Each row starts with its filter byte, 0 (none): label maps are flat, deflate alone compresses them well. */
function filterRows(pixels: Uint8Array, width: number, height: number, rows: Buffer): Buffer {
  const src = Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength);
  for (let y = 0; y < height; y++) {
    rows[y * (width + 1)] = 0;
    src.copy(rows, y * (width + 1) + 1, y * width, (y + 1) * width);
  }
  return rows;
}

export function encodeGreyPng(pixels: Uint8Array, width: number, height: number): Buffer {
  const n = (width + 1) * height;
  if (rowScratch.length < n) rowScratch = Buffer.allocUnsafe(n);
  const rows = filterRows(pixels, width, height, rowScratch.subarray(0, n));
  return Buffer.concat([SIGNATURE, chunk('IHDR', greyIhdr(width, height)), chunk('IDAT', deflateSync(rows, MASK_DEFLATE)), IEND]);
}

/** encodeGreyPng with the deflate in zlib's thread pool: for large masks, which would hold the event loop. */
export async function encodeGreyPngAsync(pixels: Uint8Array, width: number, height: number): Promise<Buffer> {
  const rows = filterRows(pixels, width, height, Buffer.allocUnsafe((width + 1) * height));
  const idat = await deflateAsync(rows, { level: MASK_DEFLATE.level });
  return Buffer.concat([SIGNATURE, chunk('IHDR', greyIhdr(width, height)), chunk('IDAT', idat), IEND]);
}

/**
 * Plain PNG decode (8-bit greyscale, grey+alpha, RGB or RGBA; not interlaced) with node's zlib, for the same
 * reason: tiles arrive at hundreds per second, and a JS inflate's growing buffers drive full GCs. Returns
 * undefined for anything else (palette, 16-bit, interlaced, transparency or colour-profile chunks, damage), which
 * the caller then hands to sharp.
 */
export function decodePlainPng(
  bytes: Uint8Array,
  alloc: (length: number) => Uint8Array = (length) => new Uint8Array(length),
): { data: Uint8Array; width: number; height: number; channels: number } | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 33 || !b.subarray(0, 8).equals(SIGNATURE)) return undefined;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  for (let p = 8; p + 12 <= b.length; ) {
    const len = b.readUInt32BE(p);
    const type = b.toString('latin1', p + 4, p + 8);
    const end = p + 12 + len;
    if (end > b.length) return undefined;
    const data = b.subarray(p + 8, p + 8 + len);
    // Chunk CRCs are checked except on IDAT, whose bytes zlib checks anyway (Adler-32 of the inflated data, and
    // the deflate structure): a CRC pass over every tile's pixels would only repeat that check.
    if (type !== 'IDAT' && crc32(b.subarray(p + 4, p + 8 + len)) !== b.readUInt32BE(p + 8 + len)) return undefined;
    // IHDR first and only once (PNG spec 5.6): the size the caller checked is the size decoded.
    if ((p === 8) !== (type === 'IHDR')) return undefined;
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const [depth, colour, , , interlace] = data.subarray(8, 13);
      channels = ({ 0: 1, 4: 2, 2: 3, 6: 4 } as Record<number, number>)[colour] ?? 0;
      if (depth !== 8 || interlace !== 0 || channels === 0) return undefined;
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      break;
    } else if (type === 'tRNS' || type === 'iCCP' || type === 'eXIf' || type === 'gAMA' || type === 'sBIT') {
      return undefined;
    }
    p = end;
  }
  if (!width || !height || idat.length === 0) return undefined;
  const stride = width * channels;
  const expected = (stride + 1) * height;
  let compressed = idat[0]!;
  if (idat.length > 1) {
    let total = 0;
    for (const d of idat) total += d.length;
    if (idatScratch.length < total) idatScratch = Buffer.allocUnsafe(total);
    let at = 0;
    for (const d of idat) at += d.copy(idatScratch, at);
    compressed = idatScratch.subarray(0, total);
  }
  let raw: Buffer;
  try {
    // One output chunk of the exact size (+1, so zlib sees the stream end without a second chunk), and never more:
    // data past what the header promises is damage, or a decompression bomb.
    raw = inflateSync(compressed, { chunkSize: Math.max(64, expected + 1), maxOutputLength: expected + 1 });
  } catch {
    return undefined;
  }
  if (raw.length !== expected) return undefined;
  const out = alloc(stride * height);
  // One loop per filter type: a branch per byte would cost more than the arithmetic.
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const row = y * stride;
    const prev = row - stride;
    const first = y === 0;
    if (filter === 0 || (filter === 2 && first)) {
      raw.copy(out, row, src, src + stride);
    } else if (filter === 1 || (filter === 4 && first)) {
      // Sub, and Paeth on the first row (its up and up-left are 0, so it picks the left byte).
      for (let x = 0; x < channels; x++) out[row + x] = raw[src + x];
      for (let x = channels; x < stride; x++) out[row + x] = raw[src + x] + out[row + x - channels];
    } else if (filter === 2) {
      for (let x = 0; x < stride; x++) out[row + x] = raw[src + x] + out[prev + x];
    } else if (filter === 3) {
      for (let x = 0; x < stride; x++) {
        const a = x >= channels ? out[row + x - channels] : 0;
        const up = first ? 0 : out[prev + x];
        out[row + x] = raw[src + x] + ((a + up) >> 1);
      }
    } else if (filter === 4) {
      for (let x = 0; x < channels; x++) out[row + x] = raw[src + x] + out[prev + x];
      for (let x = channels; x < stride; x++) {
        const a = out[row + x - channels];
        const up = out[prev + x];
        const c = out[prev + x - channels];
        const pa = Math.abs(up - c);
        const pb = Math.abs(a - c);
        const pc = Math.abs(a + up - 2 * c);
        out[row + x] = raw[src + x] + (pa <= pb && pa <= pc ? a : pb <= pc ? up : c);
      }
    } else {
      return undefined;
    }
  }
  return { data: out, width, height, channels };
}
