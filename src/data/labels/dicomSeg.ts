// DICOM Segmentation (SEG) for slides, written and read. Written as highdicom writes slide segmentations: the
// source's Patient, Study, Frame of Reference, Container and Specimen identity; a new series; TILED_FULL frames over
// a total pixel matrix with the source's origin and orientation and the segmentation's own pixel spacing; one
// segment per non-background class with SNOMED CT coded category and type, a display colour and the algorithm.
//
// Encoding: BINARY (1 bit per pixel, one frame per segment per tile). The LABELMAP segmentation type (Sup 243, 2024)
// would be ~8x larger per pixel uncompressed and is unknown to the Debian bookworm validator (dciodvfy 2022) and to
// most viewers (Slim and QuPath read BINARY); FRACTIONAL adds nothing for hard class labels.
import { readFile, writeFile } from 'node:fs/promises';
import dcmjs, { type NaturalDataset } from 'dcmjs';
import { normaliseClassName } from './annotations.js';

export const SEGMENTATION_SOP_CLASS = '1.2.840.10008.5.1.4.1.1.66.4';
const WSI_SOP_CLASS = '1.2.840.10008.5.1.4.1.1.77.1.6';
const EXPLICIT_LITTLE = '1.2.840.10008.1.2.1';
/** Frame side of the SEG's tiles: a multiple of 8 keeps each 1-bit frame byte-aligned. */
export const SEG_TILE = 256;
/** Root of histoseg's UIDs: the UUID-derived 2.25 arc (PS3.5 B.2), so no registered root is needed. */
const HISTOSEG_IMPLEMENTATION_UID = '2.25.271928371654986419846538218512398411';

export interface Code {
  value: string;
  scheme: string;
  meaning: string;
}
const sct = (value: string, meaning: string): Code => ({ value, scheme: 'SCT', meaning });

/** SNOMED CT morphology for the BACH classes (class names compared as by normaliseClassName). */
const CLASS_CODES: Record<string, { category: Code; type: Code }> = {
  benign: { category: sct('49755003', 'Morphologically abnormal structure'), type: sct('3898006', 'Neoplasm, benign') },
  insitu: { category: sct('49755003', 'Morphologically abnormal structure'), type: sct('127569003', 'In situ neoplasm') },
  // BACH's invasive class is mostly invasive ductal carcinoma.
  invasive: { category: sct('49755003', 'Morphologically abnormal structure'), type: sct('82711006', 'Infiltrating duct carcinoma') },
  normal: { category: sct('85756007', 'Tissue'), type: sct('85756007', 'Tissue') },
};

/** The category and type code of a class: SNOMED CT where one fits, else a histoseg-local code named by the class. */
export function classCodes(name: string): { category: Code; type: Code } {
  return (
    CLASS_CODES[normaliseClassName(name)] ?? {
      category: sct('49755003', 'Morphologically abnormal structure'),
      type: { value: normaliseClassName(name).slice(0, 16) || 'unnamed', scheme: '99HISTOSEG', meaning: name.slice(0, 64) },
    }
  );
}

export interface SegClass {
  name: string;
  /** "#rrggbb" */
  color: string;
}

export interface WriteSegOptions {
  /** Class index per pixel, width x height, at `pixelSpacing`. Class 0 is background and gets no segment. */
  labels: Uint8Array;
  width: number;
  height: number;
  classes: readonly SegClass[];
  /** [row, column] spacing of the label map in mm. */
  pixelSpacing: [number, number];
  /** The source image's data set (naturalized): identity is copied from it. */
  source: NaturalDataset;
  /** Source instances the segmentation was derived from (default: the source's own SOP instance). */
  sourceInstances?: { sopClassUid: string; sopInstanceUid: string }[];
  algorithm: { name: string; version: string };
  seriesDescription?: string;
  /**
   * TILED_FULL (default; every tile of every segment, positions implied by the order) or TILED_SPARSE (only the
   * non-empty frames, each with its segment and position; what the Debian bookworm dciodvfy validates cleanly).
   */
  organization?: 'TILED_FULL' | 'TILED_SPARSE';
  /** Fixed UIDs (tests); default: fresh 2.25 UIDs. */
  uids?: { series?: string; instance?: string };
}

const code = (c: Code) => ({ CodeValue: c.value, CodingSchemeDesignator: c.scheme, CodeMeaning: c.meaning });

/** sRGB "#rrggbb" to DICOM's scaled CIELab (PS3.3 C.10.7.1.1): L* 0..100 and a*, b* -128..127 onto 0..65535. */
export function srgbToDicomLab(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  const [r, g, b] = m ? [m[1], m[2], m[3]].map((h) => parseInt(h!, 16) / 255) : [0.5, 0.5, 0.5];
  const lin = (c: number) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  const [R, G, B] = [lin(r!), lin(g!), lin(b!)];
  // D65 white, as sRGB.
  const X = (0.4124 * R + 0.3576 * G + 0.1805 * B) / 0.95047;
  const Y = 0.2126 * R + 0.7152 * G + 0.0722 * B;
  const Z = (0.0193 * R + 0.1192 * G + 0.9505 * B) / 1.08883;
  const f = (t: number) => (t > 216 / 24389 ? Math.cbrt(t) : (24389 / 27 * t + 16) / 116);
  const L = 116 * f(Y) - 16;
  const a = 500 * (f(X) - f(Y));
  const bb = 200 * (f(Y) - f(Z));
  const s = (v: number, lo: number, hi: number) => Math.max(0, Math.min(65535, Math.round(((v - lo) / (hi - lo)) * 65535)));
  return [s(L, 0, 100), s(a, -128, 127), s(bb, -128, 127)];
}

/** A fresh UID under 2.25 (a UUID as a decimal integer). */
export function newUid(): string {
  const hex = crypto.randomUUID().replace(/-/g, '');
  return `2.25.${BigInt('0x' + hex).toString()}`;
}

/** A decimal string fits 16 characters (DS): 10 significant digits do. */
const ds16 = (v: number) => Number(v.toPrecision(10));
const dicomDate = (d: Date) => d.toISOString().slice(0, 10).replace(/-/g, '');
const dicomTime = (d: Date) => d.toISOString().slice(11, 19).replace(/:/g, '');
const first = (v: unknown): NaturalDataset | undefined => (Array.isArray(v) ? v[0] : (v as NaturalDataset | undefined));

interface SegFrame {
  /** 1-based segment number. */
  segment: number;
  tileRow: number;
  tileCol: number;
  bits: Uint8Array;
}

/**
 * The binary frames of all segments in TILED_FULL order (segment-major, then tile rows, then columns); with
 * `sparse`, empty frames are left out (at least one frame is kept: a SEG needs one).
 */
function packFrames(labels: Uint8Array, width: number, height: number, segmentClasses: number[], sparse: boolean): SegFrame[] {
  const across = Math.ceil(width / SEG_TILE);
  const down = Math.ceil(height / SEG_TILE);
  const frameBytes = (SEG_TILE * SEG_TILE) / 8;
  const out: SegFrame[] = [];
  segmentClasses.forEach((k, s) => {
    for (let tr = 0; tr < down; tr++) {
      for (let tc = 0; tc < across; tc++) {
        const bits = new Uint8Array(frameBytes);
        let any = false;
        const y1 = Math.min(SEG_TILE, height - tr * SEG_TILE);
        const x1 = Math.min(SEG_TILE, width - tc * SEG_TILE);
        for (let y = 0; y < y1; y++) {
          const row = (tr * SEG_TILE + y) * width + tc * SEG_TILE;
          for (let x = 0; x < x1; x++) {
            if (labels[row + x] === k) {
              const bit = y * SEG_TILE + x;
              bits[bit >> 3]! |= 1 << (bit & 7);
              any = true;
            }
          }
        }
        if (!sparse || any) out.push({ segment: s + 1, tileRow: tr, tileCol: tc, bits });
      }
    }
  });
  if (out.length === 0) out.push({ segment: 1, tileRow: 0, tileCol: 0, bits: new Uint8Array(frameBytes) });
  return out;
}

/** Builds the SEG as a DICOM Part 10 file. */
export function buildDicomSeg(opts: WriteSegOptions): Uint8Array {
  const { labels, width, height, classes, source } = opts;
  if (labels.length !== width * height) throw new RangeError(`label map has ${labels.length} pixels, expected ${width}x${height}`);
  const segmentClasses = classes.map((_, k) => k).filter((k) => k > 0);
  if (segmentClasses.length === 0) throw new Error('a segmentation needs at least one non-background class');
  const now = new Date();
  const seriesUid = opts.uids?.series ?? newUid();
  const instanceUid = opts.uids?.instance ?? newUid();
  const sparse = opts.organization === 'TILED_SPARSE';
  const frameList = packFrames(labels, width, height, segmentClasses, sparse);
  const frames = frameList.length;
  const srcOrigin = first(source.TotalPixelMatrixOriginSequence);
  const sources = opts.sourceInstances ?? [{ sopClassUid: String(source.SOPClassUID ?? WSI_SOP_CLASS), sopInstanceUid: String(source.SOPInstanceUID) }];
  const dimensionOrganizationUid = newUid();
  const algorithmName = opts.algorithm.name;
  const pixels = new Uint8Array(frames * ((SEG_TILE * SEG_TILE) / 8));
  frameList.forEach((f, i) => pixels.set(f.bits, i * f.bits.length));
  const orientation: number[] = (source.ImageOrientationSlide ?? [0, -1, 0, -1, 0, 0]).map(Number);
  const ox = Number(srcOrigin?.XOffsetInSlideCoordinateSystem ?? 0);
  const oy = Number(srcOrigin?.YOffsetInSlideCoordinateSystem ?? 0);
  /** Slide coordinates (mm) of a pixel's top-left corner: origin + col * column spacing * row direction + ... */
  const slidePos = (col: number, row: number) => [
    ox + col * opts.pixelSpacing[1] * orientation[0]! + row * opts.pixelSpacing[0] * orientation[3]!,
    oy + col * opts.pixelSpacing[1] * orientation[1]! + row * opts.pixelSpacing[0] * orientation[4]!,
  ];
  const perFrame = sparse
    ? frameList.map((f) => {
        const [x, y] = slidePos(f.tileCol * SEG_TILE, f.tileRow * SEG_TILE);
        return {
          FrameContentSequence: [{ DimensionIndexValues: [f.segment, f.tileCol * SEG_TILE + 1, f.tileRow * SEG_TILE + 1] }],
          PlanePositionSlideSequence: [
            {
              XOffsetInSlideCoordinateSystem: Number(x!.toFixed(6)),
              YOffsetInSlideCoordinateSystem: Number(y!.toFixed(6)),
              ZOffsetInSlideCoordinateSystem: 0,
              ColumnPositionInTotalImagePixelMatrix: f.tileCol * SEG_TILE + 1,
              RowPositionInTotalImagePixelMatrix: f.tileRow * SEG_TILE + 1,
            },
          ],
          SegmentIdentificationSequence: [{ ReferencedSegmentNumber: f.segment }],
        };
      })
    : undefined;
  const specimens = (Array.isArray(source.SpecimenDescriptionSequence) ? source.SpecimenDescriptionSequence : []) as NaturalDataset[];

  const ds: NaturalDataset = {
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: SEGMENTATION_SOP_CLASS,
    SOPInstanceUID: instanceUid,
    ImageType: ['DERIVED', 'PRIMARY'],
    // Patient and Study: the source's.
    PatientName: source.PatientName ?? '',
    PatientID: source.PatientID ?? '',
    PatientBirthDate: source.PatientBirthDate ?? '',
    PatientSex: source.PatientSex ?? '',
    StudyInstanceUID: source.StudyInstanceUID,
    StudyDate: source.StudyDate ?? '',
    StudyTime: source.StudyTime ?? '',
    ReferringPhysicianName: source.ReferringPhysicianName ?? '',
    StudyID: source.StudyID ?? '',
    AccessionNumber: source.AccessionNumber ?? '',
    // Series and equipment: ours.
    Modality: 'SEG',
    SeriesInstanceUID: seriesUid,
    SeriesNumber: 100,
    SeriesDescription: opts.seriesDescription ?? `histoseg ${algorithmName} ${opts.algorithm.version}`.slice(0, 64),
    SeriesDate: dicomDate(now),
    SeriesTime: dicomTime(now),
    FrameOfReferenceUID: source.FrameOfReferenceUID ?? newUid(),
    PositionReferenceIndicator: source.PositionReferenceIndicator ?? 'SLIDE_CORNER',
    Manufacturer: 'histoseg',
    ManufacturerModelName: 'histoseg',
    DeviceSerialNumber: '1',
    SoftwareVersions: `${algorithmName}@${opts.algorithm.version}`.slice(0, 64),
    InstanceNumber: 1,
    PatientOrientation: '',
    ContentLabel: 'HISTOSEG',
    ContentDescription: `${algorithmName} ${opts.algorithm.version}`.slice(0, 64),
    ContentCreatorName: '',
    ContentDate: dicomDate(now),
    ContentTime: dicomTime(now),
    // Specimen: the source's container and specimens.
    ContainerIdentifier: source.ContainerIdentifier ?? 'UNKNOWN',
    IssuerOfTheContainerIdentifierSequence: source.IssuerOfTheContainerIdentifierSequence ?? [],
    ContainerTypeCodeSequence: source.ContainerTypeCodeSequence ?? [],
    SpecimenDescriptionSequence: specimens.length > 0 ? specimens : [{ SpecimenIdentifier: 'UNKNOWN', SpecimenUID: newUid(), IssuerOfTheSpecimenIdentifierSequence: [], SpecimenPreparationSequence: [] }],
    // Image pixel: 1-bit binary frames.
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    Rows: SEG_TILE,
    Columns: SEG_TILE,
    BitsAllocated: 1,
    BitsStored: 1,
    HighBit: 0,
    PixelRepresentation: 0,
    LossyImageCompression: '00',
    SegmentationType: 'BINARY',
    NumberOfFrames: frames,
    // Whole slide geometry: the segmentation's own matrix, the source's origin and orientation.
    TotalPixelMatrixColumns: width,
    TotalPixelMatrixRows: height,
    TotalPixelMatrixFocalPlanes: 1,
    TotalPixelMatrixOriginSequence: [
      {
        XOffsetInSlideCoordinateSystem: srcOrigin?.XOffsetInSlideCoordinateSystem ?? 0,
        YOffsetInSlideCoordinateSystem: srcOrigin?.YOffsetInSlideCoordinateSystem ?? 0,
      },
    ],
    ImageOrientationSlide: orientation,
    DimensionOrganizationType: sparse ? 'TILED_SPARSE' : 'TILED_FULL',
    ...(perFrame ? { PerFrameFunctionalGroupsSequence: perFrame } : {}),
    DimensionOrganizationSequence: [{ DimensionOrganizationUID: dimensionOrganizationUid }],
    DimensionIndexSequence: [
      { DimensionOrganizationUID: dimensionOrganizationUid, DimensionIndexPointer: '0062000B', FunctionalGroupPointer: '0062000A', DimensionDescriptionLabel: 'Segment Number' },
      { DimensionOrganizationUID: dimensionOrganizationUid, DimensionIndexPointer: '0048021E', FunctionalGroupPointer: '0048021A', DimensionDescriptionLabel: 'Column Position' },
      { DimensionOrganizationUID: dimensionOrganizationUid, DimensionIndexPointer: '0048021F', FunctionalGroupPointer: '0048021A', DimensionDescriptionLabel: 'Row Position' },
    ],
    SharedFunctionalGroupsSequence: [
      {
        PixelMeasuresSequence: [{ PixelSpacing: opts.pixelSpacing.map(ds16), SliceThickness: first(first(source.SharedFunctionalGroupsSequence)?.PixelMeasuresSequence)?.SliceThickness ?? 0.001 }],
        // No PlaneOrientationSequence: the slide orientation is ImageOrientationSlide at the top level, as in the WSI
        // IOD; bookworm's dciodvfy requires ImageOrientationPatient in any PlaneOrientationSequence.
        DerivationImageSequence: [
          {
            SourceImageSequence: sources.map((s) => ({
              ReferencedSOPClassUID: s.sopClassUid,
              ReferencedSOPInstanceUID: s.sopInstanceUid,
              PurposeOfReferenceCodeSequence: [code({ value: '121322', scheme: 'DCM', meaning: 'Source image for image processing operation' })],
            })),
            DerivationCodeSequence: [code({ value: '113076', scheme: 'DCM', meaning: 'Segmentation' })],
          },
        ],
      },
    ],
    ReferencedSeriesSequence: [
      {
        SeriesInstanceUID: source.SeriesInstanceUID,
        ReferencedInstanceSequence: sources.map((s) => ({ ReferencedSOPClassUID: s.sopClassUid, ReferencedSOPInstanceUID: s.sopInstanceUid })),
      },
    ],
    SegmentSequence: segmentClasses.map((k, i) => {
      const c = classes[k]!;
      const codes = classCodes(c.name);
      return {
        SegmentNumber: i + 1,
        SegmentLabel: c.name.slice(0, 64),
        SegmentedPropertyCategoryCodeSequence: [code(codes.category)],
        SegmentedPropertyTypeCodeSequence: [code(codes.type)],
        SegmentAlgorithmType: 'AUTOMATIC',
        SegmentAlgorithmName: algorithmName.slice(0, 64),
        SegmentationAlgorithmIdentificationSequence: [
          {
            AlgorithmFamilyCodeSequence: [code({ value: '123109', scheme: 'DCM', meaning: 'Artificial Intelligence' })],
            AlgorithmName: algorithmName.slice(0, 64),
            AlgorithmVersion: opts.algorithm.version.slice(0, 64),
          },
        ],
        RecommendedDisplayCIELabValue: srgbToDicomLab(c.color),
      };
    }),
    PixelData: [pixels.buffer.slice(pixels.byteOffset, pixels.byteOffset + pixels.byteLength)],
    _vrMap: { PixelData: 'OB' },
  };
  const meta = dcmjs.data.DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: SEGMENTATION_SOP_CLASS,
    MediaStorageSOPInstanceUID: instanceUid,
    TransferSyntaxUID: EXPLICIT_LITTLE,
    ImplementationClassUID: HISTOSEG_IMPLEMENTATION_UID,
    ImplementationVersionName: 'histoseg',
    _vrMap: { FileMetaInformationVersion: 'OB' },
  });
  const dict = new dcmjs.data.DicomDict(meta);
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(ds);
  return new Uint8Array(dict.write());
}

/** Writes the SEG file (temp file, rename: a reader never sees half a file). */
export async function writeDicomSeg(path: string, opts: WriteSegOptions): Promise<void> {
  const bytes = buildDicomSeg(opts);
  const { rename } = await import('node:fs/promises');
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, bytes);
  await rename(tmp, path);
}

// ---------------------------------------------------------------------------------------------------------------
// Reading

export interface SegLabelMap {
  labels: Uint8Array;
  width: number;
  height: number;
  /** [row, column] spacing in mm, or null. */
  pixelSpacing: [number, number] | null;
  /** Per segment number (1-based): its label and the class index it was mapped to. */
  segments: { number: number; label: string; classIndex: number }[];
  dataset: NaturalDataset;
}

/**
 * Reads a binary or fractional DICOM SEG of a slide (TILED_FULL, or frames placed by their per-frame positions)
 * into a label map: each segment's pixels take the class index of the class named like the segment (or coded like
 * it). `classes` default: segment n is class n. Overlaps go to the later segment.
 */
export async function readDicomSeg(source: string | Uint8Array, classes?: readonly string[]): Promise<SegLabelMap> {
  const where = typeof source === 'string' ? source : 'DICOM SEG';
  const buf = typeof source === 'string' ? await readFile(source) : Buffer.from(source);
  let dict;
  try {
    dict = dcmjs.data.DicomMessage.readFile(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length) as ArrayBuffer);
  } catch (err) {
    throw new Error(`${where}: not a readable DICOM file: ${(err as Error).message}`);
  }
  const meta = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.meta);
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict);
  if (ds.SOPClassUID !== SEGMENTATION_SOP_CLASS) throw new Error(`${where}: SOP class ${ds.SOPClassUID} is not Segmentation Storage`);
  const ts = String(meta.TransferSyntaxUID);
  if (ts !== EXPLICIT_LITTLE && ts !== '1.2.840.10008.1.2') throw new Error(`${where}: compressed SEG (transfer syntax ${ts}) is not supported`);
  const type = String(ds.SegmentationType ?? '');
  if (type !== 'BINARY' && type !== 'FRACTIONAL') throw new Error(`${where}: segmentation type ${type} is not supported (BINARY or FRACTIONAL)`);
  const rows = Number(ds.Rows);
  const cols = Number(ds.Columns);
  const width = Number(ds.TotalPixelMatrixColumns ?? cols);
  const height = Number(ds.TotalPixelMatrixRows ?? rows);
  const nFrames = Number(ds.NumberOfFrames ?? 1);
  const segs = (Array.isArray(ds.SegmentSequence) ? ds.SegmentSequence : [ds.SegmentSequence]) as NaturalDataset[];
  const segments = segs.map((s) => {
    const label = String(s.SegmentLabel ?? '');
    const number = Number(s.SegmentNumber);
    let classIndex = number;
    if (classes) {
      const byName = classes.findIndex((c) => normaliseClassName(c) === normaliseClassName(label));
      const typeCode = first(s.SegmentedPropertyTypeCodeSequence)?.CodeValue;
      const byCode = classes.findIndex((c) => classCodes(c).type.value === typeCode && classCodes(c).type.scheme !== '99HISTOSEG');
      classIndex = byName >= 0 ? byName : byCode;
      if (classIndex < 0) throw new Error(`${where}: segment ${number} "${label}" matches no class (${classes.join(', ')})`);
    }
    return { number, label, classIndex };
  });
  const classOf = new Map(segments.map((s) => [s.number, s.classIndex]));
  const pd = ds.PixelData;
  const pixelBytes = new Uint8Array(Array.isArray(pd) ? (pd[0] as ArrayBuffer) : (pd as ArrayBuffer));
  const bits = Number(ds.BitsAllocated);
  const labels = new Uint8Array(width * height);
  const perFrame = (Array.isArray(ds.PerFrameFunctionalGroupsSequence) ? ds.PerFrameFunctionalGroupsSequence : []) as NaturalDataset[];
  const across = Math.ceil(width / cols);
  const down = Math.ceil(height / rows);
  const tiledFull = ds.DimensionOrganizationType === 'TILED_FULL' || perFrame.length === 0;
  const frameBits = rows * cols * bits;
  for (let f = 0; f < nFrames; f++) {
    let seg: number;
    let x0: number;
    let y0: number;
    if (tiledFull) {
      seg = segments[Math.floor(f / (across * down))]?.number ?? -1;
      const t = f % (across * down);
      x0 = (t % across) * cols;
      y0 = Math.floor(t / across) * rows;
    } else {
      const item = perFrame[f]!;
      seg = Number(first(item.SegmentIdentificationSequence)?.ReferencedSegmentNumber ?? first(first(ds.SharedFunctionalGroupsSequence)?.SegmentIdentificationSequence)?.ReferencedSegmentNumber);
      const pos = first(item.PlanePositionSlideSequence);
      x0 = Number(pos?.ColumnPositionInTotalImagePixelMatrix) - 1;
      y0 = Number(pos?.RowPositionInTotalImagePixelMatrix) - 1;
      if (!Number.isFinite(x0) || !Number.isFinite(y0)) throw new Error(`${where}: frame ${f + 1} has no position in the total pixel matrix`);
    }
    const k = classOf.get(seg);
    if (k === undefined) throw new Error(`${where}: frame ${f + 1} belongs to segment ${seg}, which the SegmentSequence does not list`);
    const base = f * frameBits;
    for (let y = 0; y < rows && y0 + y < height; y++) {
      for (let x = 0; x < cols && x0 + x < width; x++) {
        const i = y * cols + x;
        const on = bits === 1 ? (pixelBytes[(base + i) >> 3]! >> ((base + i) & 7)) & 1 : pixelBytes[base / 8 + i]! >= 128 ? 1 : 0;
        if (on) labels[(y0 + y) * width + x0 + x] = k;
      }
    }
  }
  const sp = first(first(ds.SharedFunctionalGroupsSequence)?.PixelMeasuresSequence)?.PixelSpacing;
  const pixelSpacing: [number, number] | null = Array.isArray(sp) && sp.length === 2 ? [Number(sp[0]), Number(sp[1])] : null;
  return { labels, width, height, pixelSpacing, segments, dataset: ds };
}
