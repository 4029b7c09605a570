import { crc32, deflateSync, inflateSync } from 'node:zlib';

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

export function encodeGreyPng(pixels: Uint8Array, width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // colour type: greyscale; compression, filter and interlace stay 0
  // Each row starts with its filter byte, 0 (none): label maps are flat, deflate alone compresses them well.
  const rows = Buffer.allocUnsafe((width + 1) * height);
  for (let y = 0; y < height; y++) {
    rows[y * (width + 1)] = 0;
    rows.set(pixels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  }
  return Buffer.concat([SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rows)), IEND]);
}

/**
 * Plain PNG decode (8-bit greyscale, grey+alpha, RGB or RGBA; not interlaced) with node's zlib, for the same
 * reason: tiles arrive at hundreds per second, and a JS inflate's growing buffers drive full GCs. Returns
 * undefined for anything else (palette, 16-bit, interlaced, transparency or colour-profile chunks, damage), which
 * the caller then hands to sharp.
 */
export function decodePlainPng(bytes: Uint8Array): { data: Uint8Array; width: number; height: number; channels: number } | undefined {
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
    if (crc32(b.subarray(p + 4, p + 8 + len)) !== b.readUInt32BE(p + 8 + len)) return undefined;
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
  let raw: Buffer;
  try {
    raw = inflateSync(idat.length === 1 ? idat[0] : Buffer.concat(idat));
  } catch {
    return undefined;
  }
  if (raw.length !== (stride + 1) * height) return undefined;
  const out = new Uint8Array(stride * height);
  // One loop per filter type: a branch per byte would cost more than the arithmetic.
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const row = y * stride;
    const prev = row - stride;
    const first = y === 0;
    if (filter === 0 || (filter === 2 && first)) {
      out.set(raw.subarray(src, src + stride), row);
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
