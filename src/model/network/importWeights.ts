import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { selectTfBackend } from '../../tf/backend.js';
import { ENCODER_BLOCKS, LAYER } from './architecture.js';
import { MANIFEST_FILE, readManifest, writeManifest } from '../manifest.js';
import { exportOnnx } from './onnxExport.js';
import { modelFilePath } from '../repository.js';
import { loadLayersModel, saveLayersModel } from './tfjsIO.js';

/**
 * Loads PyTorch weights saved as safetensors into the model. Layers carry torchvision's state_dict names, so each
 * key maps to one layer: conv `<name>.weight` OIHW -> kernel HWIO (+ `<name>.bias`), batch norm `<name>.weight`,
 * `.bias`, `.running_mean`, `.running_var` -> gamma, beta, moving_mean, moving_variance.
 */

export interface NamedTensor {
  /** safetensors dtype of the source. */
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Decoded to float32 on first access (F32, F16, BF16, F64); other dtypes throw, naming the key. */
  readonly data: Float32Array;
}

const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

/** IEEE half to float. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const scratch = new DataView(new ArrayBuffer(4));
/** bfloat16 is the top half of a float32. */
function bf16ToFloat(h: number): number {
  scratch.setUint32(0, h << 16);
  return scratch.getFloat32(0);
}

/** safetensors: 8-byte little-endian header length, a JSON header, then little-endian raw data. */
export function parseSafetensors(bytes: Uint8Array): Map<string, NamedTensor> {
  if (bytes.byteLength < 8) throw new Error('safetensors: file shorter than its 8-byte header length');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (8 + headerLen > bytes.byteLength) throw new Error(`safetensors: header length ${headerLen} exceeds the file`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen))) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`safetensors: bad JSON header: ${(err as Error).message}`);
  }
  const base = 8 + headerLen;
  const out = new Map<string, NamedTensor>();
  for (const [key, info] of Object.entries(header)) {
    if (key === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = (info ?? {}) as { dtype: string; shape: number[]; data_offsets: number[] };
    if (typeof dtype !== 'string' || !Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) {
      throw new Error(`safetensors: tensor ${key} lacks dtype, shape or data_offsets`);
    }
    const count = shape.reduce((x, y) => x * y, 1);
    const [begin, end] = offsets;
    if (!(begin >= 0 && begin <= end && base + end <= bytes.byteLength)) {
      throw new Error(`safetensors: tensor ${key} [${shape}] ${dtype} has bad data offsets [${begin}, ${end}]`);
    }
    out.set(key, new LazyTensor(key, dtype, shape, view, base + begin, end - begin, count));
  }
  return out;
}

class LazyTensor implements NamedTensor {
  private decoded: Float32Array | undefined;

  constructor(
    private readonly key: string,
    readonly dtype: string,
    readonly shape: readonly number[],
    private readonly view: DataView,
    private readonly at: number,
    private readonly byteLength: number,
    private readonly count: number,
  ) {}

  get data(): Float32Array {
    this.decoded ??= this.decode();
    return this.decoded;
  }

  private decode(): Float32Array {
    const { key, dtype, view, at, count } = this;
    const width = DTYPE_BYTES[dtype];
    if (width === undefined) {
      throw new Error(`safetensors: tensor ${key} has dtype ${dtype}; supported: ${Object.keys(DTYPE_BYTES).join(', ')}`);
    }
    if (this.byteLength !== count * width) {
      throw new Error(`safetensors: tensor ${key} [${this.shape}] ${dtype} spans ${this.byteLength} bytes, expected ${count * width}`);
    }
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      const o = at + i * width;
      data[i] =
        dtype === 'F32'
          ? view.getFloat32(o, true)
          : dtype === 'F16'
            ? halfToFloat(view.getUint16(o, true))
            : dtype === 'BF16'
              ? bf16ToFloat(view.getUint16(o, true))
              : view.getFloat64(o, true);
    }
    return data;
  }
}

/** Float32 safetensors bytes (tests, and exporting weights back to PyTorch). */
export function encodeSafetensors(
  tensors: Record<string, { shape: readonly number[]; data: Float32Array }>,
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const [key, t] of Object.entries(tensors)) {
    header[key] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.length * 4] };
    offset += t.data.length * 4;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8); // align the data, as the reference writer does
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const t of Object.values(tensors)) {
    for (const v of t.data) {
      view.setFloat32(at, v, true);
      at += 4;
    }
  }
  return out;
}

/** PyTorch conv weight [O,I,kh,kw] -> TF.js kernel [kh,kw,I,O]. */
export function oihwToHwio(data: Float32Array, [o, i, kh, kw]: readonly number[]): Float32Array {
  const out = new Float32Array(data.length);
  for (let a = 0; a < o; a++)
    for (let b = 0; b < i; b++)
      for (let h = 0; h < kh; h++)
        for (let w = 0; w < kw; w++) out[((h * kw + w) * i + b) * o + a] = data[((a * i + b) * kh + h) * kw + w];
  return out;
}

export interface ImportOptions {
  /** Also load decoder.* and classifier.* (the PyTorch reference's names); default: encoder only. */
  readonly heads?: boolean;
}

export interface ImportReport {
  /** Layers whose weights were replaced. */
  readonly layers: string[];
  /** Keys deliberately skipped: fc.*, layer4.*, num_batches_tracked (and heads unless asked for). */
  readonly ignored: string[];
  /** Keys nothing asked for. */
  readonly unused: string[];
}

const CONV_PARAMS: Record<string, string> = { kernel: 'weight', bias: 'bias' };
const BN_PARAMS: Record<string, string> = {
  gamma: 'weight',
  beta: 'bias',
  moving_mean: 'running_mean',
  moving_variance: 'running_var',
};

function encoderLayers(): { convs: string[]; bns: string[] } {
  const convs: string[] = [LAYER.conv1];
  const bns: string[] = [LAYER.bn1];
  for (const b of ENCODER_BLOCKS) {
    convs.push(`${b.name}.conv1`, `${b.name}.conv2`);
    bns.push(`${b.name}.bn1`, `${b.name}.bn2`);
    if (b.downsample) {
      convs.push(`${b.name}.downsample.0`);
      bns.push(`${b.name}.downsample.1`);
    }
  }
  return { convs, bns };
}

const HEAD_CONVS = [LAYER.decoderConv, LAYER.seg16, LAYER.classifierConv1, LAYER.classifierConv2];
const HEAD_BNS = [LAYER.decoderBn, LAYER.classifierBn];

function isIgnored(key: string, heads: boolean): boolean {
  return (
    key.startsWith('fc.') ||
    key.startsWith('layer4.') ||
    key.endsWith('.num_batches_tracked') ||
    (!heads && (key.startsWith('decoder.') || key.startsWith('classifier.')))
  );
}

/**
 * Replaces the weights of the encoder (and optionally the heads) with `tensors`. Checks every key and shape before
 * changing anything; a missing or mis-shaped tensor is an error naming its key.
 */
export function importTorchWeights(
  model: tf.LayersModel,
  tensors: ReadonlyMap<string, NamedTensor>,
  opts: ImportOptions = {},
): ImportReport {
  const { convs, bns } = encoderLayers();
  if (opts.heads) {
    convs.push(...HEAD_CONVS);
    bns.push(...HEAD_BNS);
  }
  const used = new Set<string>();
  const errors: string[] = [];
  const updates: { layer: tf.layers.Layer; values: tf.Tensor[] }[] = [];

  const plan = (name: string, params: Record<string, string>, isConv: boolean) => {
    const layer = model.getLayer(name);
    const values: tf.Tensor[] = [];
    for (const v of layer.weights) {
      const short = v.originalName.split('/').pop() ?? v.originalName;
      const key = `${name}.${params[short]}`;
      const t = tensors.get(key);
      // TF.js holds HWIO kernels; PyTorch saves OIHW.
      const want = isConv && short === 'kernel' ? [v.shape[3], v.shape[2], v.shape[0], v.shape[1]] : v.shape;
      if (params[short] === undefined) {
        errors.push(`layer ${name} has an unexpected weight ${short}`);
      } else if (!t) {
        errors.push(`missing tensor ${key} [${want}]`);
      } else if (t.shape.length !== want.length || t.shape.some((d, k) => d !== want[k])) {
        errors.push(`tensor ${key} has shape [${t.shape}], expected [${want}]`);
      } else {
        try {
          const data = isConv && short === 'kernel' ? oihwToHwio(t.data, t.shape) : t.data;
          values.push(tf.tensor(data, v.shape as number[]));
          used.add(key);
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    }
    updates.push({ layer, values });
  };
  for (const name of convs) plan(name, CONV_PARAMS, true);
  for (const name of bns) plan(name, BN_PARAMS, false);

  if (errors.length > 0) {
    updates.forEach((u) => tf.dispose(u.values));
    const shown = errors.slice(0, 10).join('; ');
    throw new Error(`cannot import weights: ${shown}${errors.length > 10 ? `; and ${errors.length - 10} more` : ''}`);
  }
  for (const u of updates) {
    u.layer.setWeights(u.values);
    tf.dispose(u.values);
  }
  const rest = [...tensors.keys()].filter((k) => !used.has(k));
  return {
    layers: updates.map((u) => u.layer.name),
    ignored: rest.filter((k) => isIgnored(k, opts.heads ?? false)),
    unused: rest.filter((k) => !isIgnored(k, opts.heads ?? false)),
  };
}

export async function readSafetensorsFile(path: string): Promise<Map<string, NamedTensor>> {
  try {
    return parseSafetensors(await readFile(path));
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
}

/** Loads safetensors weights into the model version in `modelDir` and rewrites its TF.js and ONNX files. */
export async function importWeightsIntoVersion(
  modelDir: string,
  weightsPath: string,
  opts: { heads?: boolean } = {},
): Promise<ImportReport> {
  const manifestPath = join(modelDir, MANIFEST_FILE);
  const manifest = await readManifest(manifestPath);
  await selectTfBackend();
  const tfjsPath = modelFilePath(modelDir, manifest.files.tfjs);
  const model = await loadLayersModel(tfjsPath);
  try {
    const bytes = await readFile(weightsPath);
    let tensors;
    try {
      tensors = parseSafetensors(bytes);
    } catch (err) {
      throw new Error(`${weightsPath}: ${(err as Error).message}`);
    }
    const report = importTorchWeights(model, tensors, opts);
    await saveLayersModel(model, tfjsPath);
    await writeFile(modelFilePath(modelDir, manifest.files.onnx), exportOnnx(model, manifest.classes.length));
    manifest.lineage.settings = {
      ...manifest.lineage.settings,
      importedWeights: {
        file: basename(weightsPath),
        sha256: createHash('sha256').update(bytes).digest('hex'),
        heads: opts.heads ?? false,
      },
    };
    await writeManifest(manifestPath, manifest);
    return report;
  } finally {
    model.dispose();
  }
}
