// DICOM Part 10 files read without loading their pixel data: the data set up to Pixel Data is parsed by dcmjs from a
// growing prefix of the file, and frames are then read one by one at their byte offsets (from the Extended or Basic
// Offset Table, else from the fragment item headers).
import { open, type FileHandle } from 'node:fs/promises';
import dcmjs, { type NaturalDataset } from 'dcmjs';

/** A prefix read first; grows 4x until the header (with its per-frame groups) fits. */
const FIRST_PREFIX_BYTES = 256 * 1024;
/** Headers larger than this are refused (a slide with ~1M per-frame items is already ~120 MB). */
const MAX_HEADER_BYTES = 512 * 1024 * 1024;

const ITEM = 0xe000fffe; // (FFFE,E000) read as a little-endian uint32 of group, element
const SEQ_DELIM = 0xe0ddfffe;

export class DicomFileError extends Error {
  override name = 'DicomFileError';
}

export interface DicomHeader {
  dataset: NaturalDataset;
  transferSyntax: string;
  /** Byte offset of the Pixel Data value (after its tag, VR and length), or -1 when there is none. */
  pixelDataOffset: number;
  /** Length of the Pixel Data value; -1 when encapsulated (undefined length). */
  pixelDataLength: number;
}

/** True when the file has the DICM preamble magic. */
export async function isDicomFile(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 128);
    return bytesRead === 4 && b.toString('latin1') === 'DICM';
  } finally {
    await fh.close();
  }
}

/** Finds the top-level Pixel Data element in `buf` (explicit or implicit VR little endian): [value offset, length]. */
function findPixelData(buf: Buffer, from: number, implicit: boolean): [number, number] | null {
  let i = buf.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]), from);
  while (i >= 0 && i + 12 <= buf.length) {
    let valueOffset = -1;
    let length = -1;
    if (implicit) {
      valueOffset = i + 8;
      length = buf.readUInt32LE(i + 4);
    } else {
      const vr = buf.toString('latin1', i + 4, i + 6);
      if ((vr === 'OB' || vr === 'OW') && buf.readUInt16LE(i + 6) === 0) {
        valueOffset = i + 12;
        length = buf.readUInt32LE(i + 8);
      }
    }
    if (valueOffset >= 0) {
      if (length === 0xffffffff) {
        // Encapsulated: the first item (the Basic Offset Table) follows at once.
        if (valueOffset + 4 <= buf.length && buf.readUInt32LE(valueOffset) === ITEM) return [valueOffset, -1];
        if (valueOffset + 4 > buf.length) return null;
      } else {
        return [valueOffset, length];
      }
    }
    i = buf.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]), i + 1);
  }
  return null;
}

/** Parses a file's data set (without pixel data); frames are read later with readFrames. */
export async function readDicomHeader(path: string): Promise<DicomHeader> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    let want = Math.min(size, FIRST_PREFIX_BYTES);
    for (;;) {
      const buf = Buffer.alloc(want);
      await fh.read(buf, 0, want, 0);
      if (buf.length < 132 || buf.toString('latin1', 128, 132) !== 'DICM') throw new DicomFileError(`${path}: not a DICOM file (no DICM preamble)`);
      // Meta header length tells where the data set starts; its transfer syntax tells how to look for Pixel Data.
      const metaEnd = 132 + 12 + buf.readUInt32LE(140);
      const tsMatch = /1\.2\.840\.10008\.1\.2[0-9.]*/.exec(buf.toString('latin1', 132, Math.min(metaEnd, buf.length)));
      const implicit = tsMatch?.[0] === '1.2.840.10008.1.2';
      const pd = findPixelData(buf, metaEnd, implicit);
      if (pd || want >= size) {
        const end = pd ? pd[0] - (implicit ? 8 : 12) : want;
        const part = buf.subarray(0, end);
        let dict;
        try {
          dict = dcmjs.data.DicomMessage.readFile(part.buffer.slice(part.byteOffset, part.byteOffset + part.length) as ArrayBuffer, { ignoreErrors: false });
        } catch (err) {
          throw new DicomFileError(`${path}: unreadable DICOM data set: ${(err as Error).message}`);
        }
        const meta = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.meta);
        const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict);
        return { dataset, transferSyntax: String(meta.TransferSyntaxUID ?? ''), pixelDataOffset: pd ? pd[0] : -1, pixelDataLength: pd ? pd[1] : -1 };
      }
      if (want >= MAX_HEADER_BYTES) throw new DicomFileError(`${path}: no Pixel Data within the first ${MAX_HEADER_BYTES} bytes`);
      want = Math.min(size, want * 4, MAX_HEADER_BYTES);
    }
  } finally {
    await fh.close();
  }
}

/** Byte ranges of each frame's fragments in the file. */
export interface FrameTable {
  /** Per frame: the fragments' [offset, length] pairs. */
  fragments: number[][];
}

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  const { bytesRead } = await fh.read(b, 0, length, offset);
  if (bytesRead !== length) throw new DicomFileError(`truncated file: wanted ${length} bytes at ${offset}, got ${bytesRead}`);
  return b;
}

/**
 * The frame table of an encapsulated Pixel Data: one fragment per frame is the usual case; with more fragments
 * than frames, the Basic Offset Table says where each frame starts.
 */
export async function readFrameTable(fh: FileHandle, header: DicomHeader, numberOfFrames: number, where: string): Promise<FrameTable> {
  const start = header.pixelDataOffset;
  const botHead = await readAt(fh, start, 8);
  if (botHead.readUInt32LE(0) !== ITEM) throw new DicomFileError(`${where}: encapsulated Pixel Data does not start with an item`);
  const botLength = botHead.readUInt32LE(4);
  const bot = botLength > 0 ? await readAt(fh, start + 8, botLength) : null;
  const firstFragment = start + 8 + botLength;
  const all: [number, number][] = [];
  let pos = firstFragment;
  const fileSize = (await fh.stat()).size;
  for (;;) {
    if (pos + 8 > fileSize) break; // no sequence delimiter: tolerate a file that ends after the last fragment
    const h = await readAt(fh, pos, 8);
    const tag = h.readUInt32LE(0);
    if (tag === SEQ_DELIM) break;
    if (tag !== ITEM) throw new DicomFileError(`${where}: bad fragment item at byte ${pos}`);
    const len = h.readUInt32LE(4);
    all.push([pos + 8, len]);
    pos += 8 + len;
  }
  if (all.length === numberOfFrames) return { fragments: all.map((f) => [f[0], f[1]]) };
  if (!bot || bot.length < 4 * numberOfFrames) {
    throw new DicomFileError(`${where}: ${all.length} fragments for ${numberOfFrames} frames and no offset table to group them`);
  }
  const starts = Array.from({ length: numberOfFrames }, (_, i) => firstFragment + bot.readUInt32LE(4 * i));
  const fragments: number[][] = starts.map(() => []);
  let f = 0;
  for (const [off, len] of all) {
    while (f + 1 < numberOfFrames && off - 8 >= starts[f + 1]!) f++;
    fragments[f]!.push(off, len);
  }
  return { fragments };
}

/** Reads frame `index` (0-based) of an encapsulated Pixel Data. */
export async function readEncapsulatedFrame(fh: FileHandle, table: FrameTable, index: number): Promise<Uint8Array> {
  const f = table.fragments[index];
  if (!f) throw new RangeError(`frame ${index + 1} is out of range`);
  if (f.length === 2) return readAt(fh, f[0]!, f[1]!);
  const parts: Buffer[] = [];
  for (let i = 0; i < f.length; i += 2) parts.push(await readAt(fh, f[i]!, f[i + 1]!));
  return Buffer.concat(parts);
}

/** Reads frame `index` of native (uncompressed) Pixel Data. */
export async function readNativeFrame(fh: FileHandle, header: DicomHeader, frameBytes: number, index: number): Promise<Uint8Array> {
  return readAt(fh, header.pixelDataOffset + index * frameBytes, frameBytes);
}
