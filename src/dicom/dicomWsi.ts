// DICOM whole-slide images (VL Whole Slide Microscopy): a series of tiled instances, one or more per pyramid level,
// from files or a folder on disk, or from a DICOMweb server (dicomweb.ts supplies the frames). A region read decodes
// only the frames it overlaps, through a small cache of decoded frames (a model tile usually spans frame borders).
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { RgbImage } from '../imaging/decode.js';
import { decodeFrame, DicomSlideError, imageFlavor, TS, wsiInstanceFromDataset, type WsiInstance } from './dicomFrames.js';
import { isDicomFile, readDicomHeader, readEncapsulatedFrame, readFrameTable, readNativeFrame, type DicomHeader, type FrameTable } from './dicomFile.js';

/** Decoded frames kept for neighbouring region reads (~ 64 x 256 x 256 x 3 = 12 MB at the usual frame size). */
const FRAME_CACHE_SIZE = 64;
/** Largest frame shrink on decode (libjpeg's DCT scaling goes to 1/8). */
const MAX_SHRINK = 8;

export interface Region {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** Where encoded frames come from. Frame indices are 0-based within the instance. */
export interface FrameSource {
  readFrames(inst: WsiInstance, indices: readonly number[]): Promise<Uint8Array[]>;
  close(): Promise<void>;
}

export interface WsiLevel {
  width: number;
  height: number;
  /** [row, column] spacing in mm (null when the series does not say). */
  pixelSpacing: [number, number] | null;
  /** Level-0 width / this level's width. */
  downsample: number;
  tileWidth: number;
  tileHeight: number;
  instances: WsiInstance[];
}

interface Placed {
  inst: WsiInstance;
  frame: number;
  x: number;
  y: number;
}

interface LevelIndex {
  /** Frames on the tile grid, by tileRow * tilesAcross + tileCol. */
  grid: Map<number, Placed>;
  /** Frames off the grid (TILED_SPARSE with arbitrary positions). */
  loose: Placed[];
  across: number;
}

export class DicomWsi {
  readonly levels: WsiLevel[];
  private readonly index: LevelIndex[];
  private readonly cache = new Map<string, Promise<RgbImage>>();
  /** Frames decoded since opening (a test and the bench read it). */
  framesDecoded = 0;

  constructor(
    readonly where: string,
    instances: WsiInstance[],
    private readonly source: FrameSource,
  ) {
    const volume = instances.filter((i) => imageFlavor(i) === 'VOLUME' || imageFlavor(i) === 'NONE');
    if (volume.length === 0) throw new DicomSlideError(`${where}: no VOLUME instances (only ${[...new Set(instances.map(imageFlavor))].join(', ') || 'none'})`);
    const series = new Set(volume.map((i) => i.seriesInstanceUid));
    if (series.size > 1) throw new DicomSlideError(`${where}: instances of ${series.size} series (${[...series].join(', ')}); give one series`);
    const byLevel = new Map<string, WsiInstance[]>();
    for (const inst of volume) {
      const key = `${inst.totalColumns}x${inst.totalRows}`;
      byLevel.set(key, [...(byLevel.get(key) ?? []), inst]);
    }
    const levels = [...byLevel.values()].sort((a, b) => b[0]!.totalColumns - a[0]!.totalColumns);
    const w0 = levels[0]![0]!.totalColumns;
    this.levels = levels.map((insts) => {
      const i0 = insts[0]!;
      return {
        width: i0.totalColumns,
        height: i0.totalRows,
        pixelSpacing: i0.pixelSpacing,
        downsample: w0 / i0.totalColumns,
        tileWidth: i0.columns,
        tileHeight: i0.rows,
        instances: insts.sort((a, b) => a.concatenationFrameOffset - b.concatenationFrameOffset),
      };
    });
    this.index = this.levels.map((l) => indexLevel(l));
  }

  /** Level-0 microns per pixel (column spacing), or null when the series states no spacing. */
  get mpp(): number | null {
    const s = this.levels[0]!.pixelSpacing;
    return s ? s[1] * 1000 : null;
  }

  get width(): number {
    return this.levels[0]!.width;
  }
  get height(): number {
    return this.levels[0]!.height;
  }

  /** The frames (instance, 0-based frame) a region of a level overlaps. */
  framesFor(level: number, r: Region): Placed[] {
    const L = this.levels[level];
    const idx = this.index[level];
    if (!L || !idx) throw new RangeError(`level ${level} of ${this.levels.length}`);
    const out: Placed[] = [];
    const c0 = Math.floor(r.left / L.tileWidth);
    const c1 = Math.floor((r.left + r.width - 1) / L.tileWidth);
    const r0 = Math.floor(r.top / L.tileHeight);
    const r1 = Math.floor((r.top + r.height - 1) / L.tileHeight);
    for (let tr = r0; tr <= r1; tr++) {
      for (let tc = c0; tc <= c1; tc++) {
        const p = idx.grid.get(tr * idx.across + tc);
        if (p) out.push(p);
      }
    }
    for (const p of idx.loose) {
      if (p.x < r.left + r.width && p.x + L.tileWidth > r.left && p.y < r.top + r.height && p.y + L.tileHeight > r.top) out.push(p);
    }
    return out;
  }

  /** The largest power of two up to `max` that divides the level's frame size: frames can be decoded that much smaller. */
  shrinkFor(level: number, max: number): number {
    const L = this.levels[level]!;
    let s = 1;
    while (s * 2 <= max && s * 2 <= MAX_SHRINK && L.tileWidth % (s * 2) === 0 && L.tileHeight % (s * 2) === 0) s *= 2;
    return s;
  }

  /**
   * RGB of a region of a level; where no frame covers it (TILED_SPARSE gaps, past the matrix) it is white glass.
   * With `shrink` (a power of two dividing the frame size), the region is in the level's pixels divided by it and
   * frames are decoded that much smaller: JPEG scales in the DCT (libjpeg), JPEG 2000 decodes fewer resolution levels.
   */
  async readRegion(level: number, r: Region, shrink = 1): Promise<RgbImage> {
    const L = this.levels[level];
    if (!L) throw new RangeError(`level ${level} of ${this.levels.length}`);
    if (r.width < 1 || r.height < 1) throw new RangeError(`empty region ${r.width}x${r.height}`);
    if (L.tileWidth % shrink !== 0 || L.tileHeight % shrink !== 0) throw new RangeError(`shrink ${shrink} does not divide the ${L.tileWidth}x${L.tileHeight} frames`);
    const out = new Uint8Array(r.width * r.height * 3).fill(255);
    const placed = this.framesFor(level, { left: r.left * shrink, top: r.top * shrink, width: r.width * shrink, height: r.height * shrink });
    const frames = await this.decoded(placed, shrink);
    const lw = Math.ceil(L.width / shrink);
    const lh = Math.ceil(L.height / shrink);
    placed.forEach((p, k) => {
      const f = frames[k]!;
      const px = Math.floor(p.x / shrink);
      const py = Math.floor(p.y / shrink);
      const x0 = Math.max(r.left, px);
      const y0 = Math.max(r.top, py);
      const x1 = Math.min(r.left + r.width, px + f.width, lw);
      const y1 = Math.min(r.top + r.height, py + f.height, lh);
      for (let y = y0; y < y1; y++) {
        const src = ((y - py) * f.width + (x0 - px)) * 3;
        out.set(f.data.subarray(src, src + (x1 - x0) * 3), ((y - r.top) * r.width + (x0 - r.left)) * 3);
      }
    });
    return { data: out, width: r.width, height: r.height };
  }

  private async decoded(placed: Placed[], shrink: number): Promise<RgbImage[]> {
    const key = (p: Placed) => `${p.inst.sopInstanceUid}:${p.frame}:${shrink}`;
    const missing = placed.filter((p) => !this.cache.has(key(p)));
    // One read per instance for the frames not yet cached (one WADO-RS request over DICOMweb).
    const byInst = new Map<WsiInstance, Placed[]>();
    for (const p of missing) byInst.set(p.inst, [...(byInst.get(p.inst) ?? []), p]);
    for (const [inst, ps] of byInst) {
      const bytes = this.source.readFrames(inst, ps.map((p) => p.frame));
      ps.forEach((p, k) => {
        const img = bytes.then((b) => {
          this.framesDecoded++;
          return decodeFrame(inst, b[k]!, shrink);
        });
        img.catch(() => this.cache.delete(key(p)));
        this.cache.set(key(p), img);
      });
    }
    const out = await Promise.all(placed.map((p) => this.cache.get(key(p))!));
    for (const p of placed) {
      // Least recently used goes first: re-insert what was used.
      const v = this.cache.get(key(p));
      if (v) {
        this.cache.delete(key(p));
        this.cache.set(key(p), v);
      }
    }
    while (this.cache.size > FRAME_CACHE_SIZE) this.cache.delete(this.cache.keys().next().value!);
    return out;
  }

  close(): Promise<void> {
    this.cache.clear();
    return this.source.close();
  }
}

function indexLevel(L: WsiLevel): LevelIndex {
  const across = Math.ceil(L.width / L.tileWidth);
  const down = Math.ceil(L.height / L.tileHeight);
  const grid = new Map<number, Placed>();
  const loose: Placed[] = [];
  for (const inst of L.instances) {
    if (inst.framePositions) {
      for (let f = 0; f < inst.numberOfFrames; f++) {
        const x = inst.framePositions[2 * f]!;
        const y = inst.framePositions[2 * f + 1]!;
        const p = { inst, frame: f, x, y };
        if (x % L.tileWidth === 0 && y % L.tileHeight === 0) {
          const key = (y / L.tileHeight) * across + x / L.tileWidth;
          // Several focal planes or optical paths: the first frame at a place is kept.
          if (!grid.has(key)) grid.set(key, p);
        } else loose.push(p);
      }
    } else {
      // TILED_FULL: row-major over the matrix, first focal plane and optical path first.
      for (let f = 0; f < inst.numberOfFrames; f++) {
        const g = inst.concatenationFrameOffset + f;
        if (g >= across * down) break;
        grid.set(g, { inst, frame: f, x: (g % across) * L.tileWidth, y: Math.floor(g / across) * L.tileHeight });
      }
    }
  }
  return { grid, loose, across };
}

// ---------------------------------------------------------------------------------------------------------------
// Files

interface SlideFile {
  path: string;
  header: DicomHeader;
  table: FrameTable | null;
}

/** Opens the file for each batch of frames, so a slide holds no descriptor between reads and needs no closing. */
class FileFrameSource implements FrameSource {
  constructor(private readonly files: Map<string, SlideFile>) {}
  async readFrames(inst: WsiInstance, indices: readonly number[]): Promise<Uint8Array[]> {
    const f = this.files.get(inst.sopInstanceUid);
    if (!f) throw new Error(`no file for instance ${inst.sopInstanceUid}`);
    const frameBytes = inst.rows * inst.columns * inst.samplesPerPixel;
    const fh = await open(f.path, 'r');
    try {
      return await Promise.all(indices.map((i) => (f.table ? readEncapsulatedFrame(fh, f.table, i) : readNativeFrame(fh, f.header, frameBytes, i))));
    } finally {
      await fh.close();
    }
  }
  async close(): Promise<void> {}
}

/** The DICOM files of a slide: the file itself, or every DICOM file (by its preamble) directly in a folder. */
async function slideFiles(path: string): Promise<string[]> {
  if (!(await stat(path)).isDirectory()) return [path];
  const names = (await readdir(path)).sort();
  const out: string[] = [];
  for (const n of names) {
    const p = join(path, n);
    if ((await stat(p)).isFile() && (await isDicomFile(p))) out.push(p);
  }
  if (out.length === 0) throw new DicomSlideError(`${path}: no DICOM files in the folder`);
  return out;
}

/**
 * Opens a DICOM WSI from one file (one level) or a folder with the series' files (all levels; label, overview and
 * thumbnail images are left out). Files of other SOP classes in the folder are skipped; two series fail.
 */
export async function openDicomWsi(path: string): Promise<DicomWsi> {
  const paths = await slideFiles(path);
  const files = new Map<string, SlideFile>();
  const instances: WsiInstance[] = [];
  for (const p of paths) {
      const header = await readDicomHeader(p);
      let inst: WsiInstance;
      try {
        inst = wsiInstanceFromDataset(header.dataset, header.transferSyntax, p);
      } catch (err) {
        if (paths.length > 1 && err instanceof DicomSlideError && /SOP class/.test(err.message)) continue;
        throw err;
      }
      if (header.pixelDataOffset < 0) throw new DicomSlideError(`${p}: no Pixel Data`);
      const native = inst.transferSyntax === TS.explicitLittle || inst.transferSyntax === TS.implicitLittle;
      let table: FrameTable | null = null;
      if (!native) {
        const fh = await open(p, 'r');
        try {
          table = await readFrameTable(fh, header, inst.numberOfFrames, p);
        } finally {
          await fh.close();
        }
      }
      files.set(inst.sopInstanceUid, { path: p, header, table });
      instances.push(inst);
  }
  return new DicomWsi(path, instances, new FileFrameSource(files));
}
