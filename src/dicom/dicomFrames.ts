// DICOM WSI instances: the attributes a tiled reader needs (from a file's data set or DICOMweb metadata, both
// naturalized by dcmjs), frame positions in the total pixel matrix, and decoding one frame to RGB.
import sharp from 'sharp';
import type { NaturalDataset } from 'dcmjs';
import type { RgbImage } from '../imaging/decode.js';
import { decodeJpeg2000, ycbcrToRgbInPlace } from '../imaging/jpeg2000.js';

export const VL_WHOLE_SLIDE_MICROSCOPY = '1.2.840.10008.5.1.4.1.1.77.1.6';
export const SEGMENTATION_STORAGE = '1.2.840.10008.5.1.4.1.1.66.4';

export const TS = {
  implicitLittle: '1.2.840.10008.1.2',
  explicitLittle: '1.2.840.10008.1.2.1',
  jpegBaseline: '1.2.840.10008.1.2.4.50',
  jpegExtended: '1.2.840.10008.1.2.4.51',
  jpeg2000Lossless: '1.2.840.10008.1.2.4.90',
  jpeg2000: '1.2.840.10008.1.2.4.91',
  htj2kLossless: '1.2.840.10008.1.2.4.201',
  htj2kLosslessRpcl: '1.2.840.10008.1.2.4.202',
  htj2k: '1.2.840.10008.1.2.4.203',
} as const;
const JPEG_TS = new Set<string>([TS.jpegBaseline, TS.jpegExtended]);
const J2K_TS = new Set<string>([TS.jpeg2000Lossless, TS.jpeg2000, TS.htj2kLossless, TS.htj2kLosslessRpcl, TS.htj2k]);
const NATIVE_TS = new Set<string>([TS.implicitLittle, TS.explicitLittle]);
export const SUPPORTED_TRANSFER_SYNTAXES: readonly string[] = [...JPEG_TS, ...J2K_TS, ...NATIVE_TS];

export class DicomSlideError extends Error {
  override name = 'DicomSlideError';
}

/** A sequence as dcmjs naturalizes it: an array of items (a single item may come as the object itself). */
export function items(v: unknown): NaturalDataset[] {
  if (v === undefined || v === null) return [];
  return (Array.isArray(v) ? v : [v]) as NaturalDataset[];
}
const first = (v: unknown): NaturalDataset | undefined => items(v)[0];
const num = (v: unknown): number | undefined => {
  const x = Array.isArray(v) ? v[0] : v;
  const n = typeof x === 'string' ? Number(x) : (x as number | undefined);
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
};
const str = (v: unknown): string | undefined => {
  const x = Array.isArray(v) ? v[0] : v;
  return x === undefined || x === null ? undefined : String(x);
};

/** One instance (one pyramid level, or one part of a concatenated level) of a VL Whole Slide Microscopy series. */
export interface WsiInstance {
  sopInstanceUid: string;
  seriesInstanceUid: string;
  studyInstanceUid: string;
  transferSyntax: string;
  /** Frame (tile) size. */
  rows: number;
  columns: number;
  samplesPerPixel: number;
  photometric: string;
  planarConfiguration: number;
  bitsAllocated: number;
  numberOfFrames: number;
  totalColumns: number;
  totalRows: number;
  /** [row spacing, column spacing] in mm, or null when the instance does not say. */
  pixelSpacing: [number, number] | null;
  imageType: string[];
  /** TILED_FULL, TILED_SPARSE, or '' (positions come per frame). */
  dimensionOrganization: string;
  /** Frames before this instance's first in its concatenation (0 when not concatenated). */
  concatenationFrameOffset: number;
  /** Per frame, 0-based top-left [column, row] in the total pixel matrix: null for TILED_FULL. */
  framePositions: Int32Array | null;
  /** The naturalized data set without pixel data, for the SEG's copied identity. */
  dataset: NaturalDataset;
}

/** Reads the tiling attributes of a WSI instance's data set; throws DicomSlideError naming what is missing. */
export function wsiInstanceFromDataset(ds: NaturalDataset, transferSyntax: string, where: string): WsiInstance {
  const sop = str(ds.SOPClassUID);
  if (sop !== VL_WHOLE_SLIDE_MICROSCOPY) {
    throw new DicomSlideError(`${where}: SOP class ${sop ?? '(none)'} is not VL Whole Slide Microscopy Image Storage (${VL_WHOLE_SLIDE_MICROSCOPY})`);
  }
  const need = (name: string): number => {
    const v = num(ds[name]);
    if (v === undefined) throw new DicomSlideError(`${where}: no ${name}`);
    return v;
  };
  const rows = need('Rows');
  const columns = need('Columns');
  const numberOfFrames = num(ds.NumberOfFrames) ?? 1;
  const totalColumns = num(ds.TotalPixelMatrixColumns) ?? columns;
  const totalRows = num(ds.TotalPixelMatrixRows) ?? rows;
  const shared = first(ds.SharedFunctionalGroupsSequence);
  const spacingRaw = first(shared?.PixelMeasuresSequence)?.PixelSpacing ?? ds.PixelSpacing;
  const sp = Array.isArray(spacingRaw) ? spacingRaw.map(Number) : [];
  const pixelSpacing: [number, number] | null = sp.length === 2 && sp.every((s) => s > 0 && Number.isFinite(s)) ? [sp[0]!, sp[1]!] : null;
  const dimensionOrganization = str(ds.DimensionOrganizationType) ?? '';
  let framePositions: Int32Array | null = null;
  if (dimensionOrganization !== 'TILED_FULL') {
    const perFrame = items(ds.PerFrameFunctionalGroupsSequence);
    if (perFrame.length >= numberOfFrames && numberOfFrames > 0) {
      framePositions = new Int32Array(2 * numberOfFrames);
      for (let i = 0; i < numberOfFrames; i++) {
        const pos = first(perFrame[i]!.PlanePositionSlideSequence);
        const c = num(pos?.ColumnPositionInTotalImagePixelMatrix);
        const r = num(pos?.RowPositionInTotalImagePixelMatrix);
        if (c === undefined || r === undefined) throw new DicomSlideError(`${where}: frame ${i + 1} has no position in the total pixel matrix`);
        framePositions[2 * i] = c - 1;
        framePositions[2 * i + 1] = r - 1;
      }
    } else if (dimensionOrganization === 'TILED_SPARSE') {
      throw new DicomSlideError(`${where}: TILED_SPARSE without per-frame positions`);
    }
    // No per-frame positions and no organisation type: the frames tile the matrix row by row (as TILED_FULL).
  }
  const inst: WsiInstance = {
    sopInstanceUid: str(ds.SOPInstanceUID) ?? '',
    seriesInstanceUid: str(ds.SeriesInstanceUID) ?? '',
    studyInstanceUid: str(ds.StudyInstanceUID) ?? '',
    transferSyntax,
    rows,
    columns,
    samplesPerPixel: num(ds.SamplesPerPixel) ?? 1,
    photometric: str(ds.PhotometricInterpretation) ?? 'MONOCHROME2',
    planarConfiguration: num(ds.PlanarConfiguration) ?? 0,
    bitsAllocated: num(ds.BitsAllocated) ?? 8,
    numberOfFrames,
    totalColumns,
    totalRows,
    pixelSpacing,
    imageType: (Array.isArray(ds.ImageType) ? ds.ImageType : [ds.ImageType]).filter((x: unknown) => x !== undefined).map(String),
    dimensionOrganization,
    concatenationFrameOffset: num(ds.ConcatenationFrameOffsetNumber) ?? 0,
    framePositions,
    dataset: ds,
  };
  // '' = not known yet (DICOMweb metadata may not say; the first frame answer does).
  if (transferSyntax !== '' && !SUPPORTED_TRANSFER_SYNTAXES.includes(transferSyntax)) {
    throw new DicomSlideError(`${where}: transfer syntax ${transferSyntax} is not supported (JPEG baseline, JPEG 2000, HTJ2K or uncompressed little endian)`);
  }
  if (inst.bitsAllocated !== 8) throw new DicomSlideError(`${where}: ${inst.bitsAllocated} bits allocated; only 8-bit slides are read`);
  return inst;
}

/** The image flavour (VOLUME, LABEL, OVERVIEW, THUMBNAIL) from ImageType's third value. */
export function imageFlavor(inst: WsiInstance): string {
  return inst.imageType[2] ?? 'VOLUME';
}

/**
 * Decodes one encoded frame of `inst` to rows x columns RGB, or `shrink` (a power of two dividing the frame size)
 * times smaller: JPEG through libjpeg's DCT scaling, JPEG 2000 by decoding fewer resolution levels.
 */
export async function decodeFrame(inst: WsiInstance, bytes: Uint8Array, shrink = 1): Promise<RgbImage> {
  const rows = inst.rows / shrink;
  const columns = inst.columns / shrink;
  let img: RgbImage;
  if (JPEG_TS.has(inst.transferSyntax)) {
    // libjpeg converts JFIF YCbCr to RGB itself; Adobe-marked RGB JPEGs stay RGB. A resize by a power of two is
    // done on load (libvips' JPEG shrink-on-load).
    let pipeline = sharp(bytes, { failOn: 'error' });
    if (shrink > 1) pipeline = pipeline.resize(columns, rows, { fit: 'fill' });
    const { data, info } = await pipeline.toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new DicomSlideError(`frame decoded to ${info.channels} channels`);
    img = { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } else if (J2K_TS.has(inst.transferSyntax)) {
    // PS3.5 8.2.4: JPEG 2000 samples are RGB (or YBR_ICT/RCT, undone by the decoder's MCT) or YBR_FULL. YBR_FULL_422
    // is not a JPEG 2000 interpretation; Orthanc's dicomizer writes it over RGB samples, which are read as RGB.
    img = await decodeJpeg2000(bytes, { ycbcr: inst.photometric === 'YBR_FULL', reduce: Math.log2(shrink) });
  } else {
    img = nativeFrame(inst, bytes);
  }
  if (shrink > 1 && (img.width !== columns || img.height !== rows)) img = await shrinkRgb(img, columns, rows);
  if (img.width !== columns || img.height !== rows) {
    throw new DicomSlideError(`frame decoded to ${img.width}x${img.height}, the instance says ${inst.columns}x${inst.rows}${shrink > 1 ? ` / ${shrink}` : ''}`);
  }
  return img;
}

async function shrinkRgb(img: RgbImage, width: number, height: number): Promise<RgbImage> {
  const { data } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).resize(width, height, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width, height };
}

function nativeFrame(inst: WsiInstance, bytes: Uint8Array): RgbImage {
  const n = inst.rows * inst.columns;
  const spp = inst.samplesPerPixel;
  if (bytes.length < n * spp) throw new DicomSlideError(`uncompressed frame has ${bytes.length} bytes, expected ${n * spp}`);
  const out = new Uint8Array(n * 3);
  if (spp === 1) {
    const invert = inst.photometric === 'MONOCHROME1';
    for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = invert ? 255 - bytes[i]! : bytes[i]!;
  } else if (inst.planarConfiguration === 1) {
    for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) out[3 * i + c] = bytes[c * n + i]!;
  } else {
    out.set(bytes.subarray(0, n * 3));
  }
  if (spp === 3 && inst.photometric === 'YBR_FULL') ycbcrToRgbInPlace(out);
  return { data: out, width: inst.columns, height: inst.rows };
}
