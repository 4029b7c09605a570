// A JPEG 2000 tiled TIFF the way Aperio writes one (compression 33005, RGB, MPP in the description), made from RGB
// with OpenJPEG's WebAssembly encoder, so JPEG 2000 SVS reading is tested without ../shared's TCGA slide.
import { createRequire } from 'node:module';
import type { RgbImage } from '../../src/imaging/decode.js';

const require = createRequire(import.meta.url);

interface Encoder {
  getDecodedBuffer(info: { width: number; height: number; bitsPerSample: number; componentCount: number; isSigned: boolean; isUsingColorTransform: boolean }): Uint8Array;
  getEncodedBuffer(): Uint8Array;
  encode(): void;
}

async function encoder(): Promise<Encoder> {
  const quiet = () => undefined;
  const m = (await (require('@cornerstonejs/codec-openjpeg/wasmjs') as (o: object) => Promise<{ J2KEncoder: new () => Encoder }>)({ print: quiet, printErr: quiet }));
  return new m.J2KEncoder();
}

/** Lossless JPEG 2000 codestream of one tile (edge tiles padded white to the full tile, as Aperio does). */
async function encodeTile(enc: Encoder, img: RgbImage, x0: number, y0: number, tile: number): Promise<Uint8Array> {
  const raw = enc.getDecodedBuffer({ width: tile, height: tile, bitsPerSample: 8, componentCount: 3, isSigned: false, isUsingColorTransform: true });
  raw.fill(255);
  for (let y = 0; y < tile && y0 + y < img.height; y++) {
    const w = Math.min(tile, img.width - x0);
    raw.set(img.data.subarray(((y0 + y) * img.width + x0) * 3, ((y0 + y) * img.width + x0 + w) * 3), y * tile * 3);
  }
  enc.encode();
  return enc.getEncodedBuffer().slice();
}

/** Little-endian classic TIFF, one IFD per level, tiles of `tile` px in compression 33005. */
export async function jpeg2000Tiff(levels: RgbImage[], mpp: number, tile = 128): Promise<Buffer> {
  const enc = await encoder();
  const chunks: Buffer[] = [Buffer.alloc(8)];
  let offset = 8;
  const put = (b: Buffer) => {
    const at = offset;
    chunks.push(b);
    offset += b.length;
    if (offset % 2) {
      chunks.push(Buffer.alloc(1));
      offset++;
    }
    return at;
  };
  const ifdOffsets: number[] = [];
  const ifds: { at: number; build: (next: number) => Buffer }[] = [];
  for (const [i, img] of levels.entries()) {
    const offsets: number[] = [];
    const counts: number[] = [];
    for (let y = 0; y < img.height; y += tile) {
      for (let x = 0; x < img.width; x += tile) {
        const code = Buffer.from(await encodeTile(enc, img, x, y, tile));
        offsets.push(put(code));
        counts.push(code.length);
      }
    }
    const desc = Buffer.from(`Aperio Image Library (histoseg test)\r\n${levels[0]!.width}x${levels[0]!.height} (${tile}x${tile}) J2K/KDU Q=100|AppMag = 20|MPP = ${mpp}\0`);
    const descAt = put(desc);
    const bpsAt = put(Buffer.from([8, 0, 8, 0, 8, 0]));
    const offAt = put(Buffer.from(new Uint32Array(offsets).buffer));
    const cntAt = put(Buffer.from(new Uint32Array(counts).buffer));
    const entries: [number, number, number, number][] = [
      [256, 4, 1, img.width],
      [257, 4, 1, img.height],
      [258, 3, 3, bpsAt],
      [259, 3, 1, 33005],
      [262, 3, 1, 2],
      [270, 2, desc.length, descAt],
      [277, 3, 1, 3],
      [284, 3, 1, 1],
      [322, 3, 1, tile],
      [323, 3, 1, tile],
      [324, 4, offsets.length, offsets.length === 1 ? offsets[0]! : offAt],
      [325, 4, counts.length, counts.length === 1 ? counts[0]! : cntAt],
    ];
    const build = (next: number) => {
      const b = Buffer.alloc(2 + entries.length * 12 + 4);
      b.writeUInt16LE(entries.length, 0);
      entries.forEach(([tag, type, count, value], k) => {
        const o = 2 + k * 12;
        b.writeUInt16LE(tag, o);
        b.writeUInt16LE(type, o + 2);
        b.writeUInt32LE(count, o + 4);
        if (type === 3 && count === 1) b.writeUInt16LE(value, o + 8);
        else b.writeUInt32LE(value, o + 8);
      });
      b.writeUInt32LE(next, 2 + entries.length * 12);
      return b;
    };
    const at = put(Buffer.alloc(2 + entries.length * 12 + 4)); // placeholder, filled below
    ifdOffsets.push(at);
    ifds.push({ at, build });
    void i;
  }
  const out = Buffer.concat(chunks);
  out.write('II', 0, 'latin1');
  out.writeUInt16LE(42, 2);
  out.writeUInt32LE(ifdOffsets[0]!, 4);
  ifds.forEach((d, k) => d.build(ifdOffsets[k + 1] ?? 0).copy(out, d.at));
  return out;
}
