import { createHash } from 'node:crypto';
import { copyFile, link, mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { decodeImage, InvalidImageError } from '../../imaging/decode.js';
import { fsyncDir, isTempName, writeFileDurable, writeJsonDurable } from '../../util/durableFile.js';
import { readLabelMap } from '../labels/labelMap.js';

/**
 * The example store: labelled examples uploaded over the Train RPC, one folder per dataset under a root folder
 * (HISTOSEG_DATASETS). Layout:
 *
 *   <root>/<dataset>/dataset.json            classes in index order
 *   <root>/<dataset>/examples/<sha256(id)>.ex one file per example: header JSON, image bytes, mask bytes
 *
 * Dataset names follow the model-name rules and are checked before they touch a path; example ids never become
 * paths (their SHA-256 names the file). Every write is durable before it is acknowledged (temp file, fsync,
 * rename, fsync folder), so a crash keeps each example whole or absent, and the same id again replaces the old
 * file in one rename.
 */

export const DATASET_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const MAX_EXAMPLE_ID_LENGTH = 256;
export const MAX_CLASS_NAME_LENGTH = 64;
const DATASET_FILE = 'dataset.json';
const EXAMPLES_DIR = 'examples';
const EXAMPLE_EXT = '.ex';
const MAGIC = Buffer.from('HSEX1\n');
/** Temp files older than this are left by a crash and swept at open; younger ones may be another server's write. */
const STALE_TEMP_MS = 60 * 60 * 1000;

export type ExampleSplitName = 'train' | 'validation';

export const ExampleHeaderSchema = z.object({
  exampleId: z.string(),
  split: z.enum(['train', 'validation']),
  mpp: z.number().nonnegative(),
  /** 'mask': segmentation example (mask bytes follow the image); 'class': one class for the whole image. */
  kind: z.enum(['mask', 'class']),
  classIndex: z.number().int().nonnegative().nullable(),
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  imageBytes: z.number().int().nonnegative(),
  maskBytes: z.number().int().nonnegative(),
  /** SHA-256 of image bytes then mask bytes. */
  contentSha256: z.string(),
});
export type ExampleHeader = z.infer<typeof ExampleHeaderSchema>;

const DatasetFileSchema = z.object({ schema: z.literal(1), name: z.string(), classes: z.array(z.string()).min(2).max(255), createdAt: z.string() });

export interface StoreLimits {
  maxExamplePixels: number;
  maxDatasetExamples: number;
  maxDatasetBytes: number;
  maxStoreBytes: number;
}

/** A dataset-level problem (bad name, classes that disagree with the dataset's): the upload cannot go on. */
export class DatasetError extends Error {
  override readonly name = 'DatasetError';
}
/** The dataset does not exist. */
export class DatasetNotFoundError extends Error {
  override readonly name = 'DatasetNotFoundError';
}
/** A configured limit would be passed: nothing more is written. */
export class StoreLimitError extends Error {
  override readonly name = 'StoreLimitError';
}
/** One example is bad; the upload goes on without it. */
export class ExampleRejectedError extends Error {
  override readonly name = 'ExampleRejectedError';
}

export interface NewExample {
  exampleId: string;
  image: Uint8Array;
  mpp: number;
  mask?: Uint8Array;
  classIndex?: number;
  split: ExampleSplitName;
}

interface IndexEntry {
  bytes: number;
}

interface DatasetState {
  classes: string[];
  entries: Map<string, IndexEntry>;
  bytes: number;
  /** Writes to one dataset are serialised so counts and limits stay exact. */
  lock: Promise<unknown>;
}

/** The examples a job trains on, frozen at its start. */
export interface FrozenDataset {
  dataset: string;
  classes: string[];
  /** SHA-256 over the sorted example files' content hashes, ids and labels. */
  hash: string;
  examples: { file: string; exampleId: string; split: ExampleSplitName; kind: 'mask' | 'class' }[];
}

export function checkDatasetName(name: string): void {
  if (!DATASET_NAME.test(name)) {
    throw new DatasetError(`invalid dataset name ${JSON.stringify(name.slice(0, 80))}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit`);
  }
}

const fileOf = (exampleId: string) => createHash('sha256').update(exampleId).digest('hex') + EXAMPLE_EXT;

function encodeExample(header: ExampleHeader, image: Uint8Array, mask: Uint8Array | undefined): Uint8Array[] {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(h.length);
  return mask ? [MAGIC, len, h, image, mask] : [MAGIC, len, h, image];
}

function parseHeader(buf: Buffer, path: string): { header: ExampleHeader; offset: number } {
  if (buf.length < MAGIC.length + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error(`${path} is not an example file`);
  const n = buf.readUInt32BE(MAGIC.length);
  const start = MAGIC.length + 4;
  const header = ExampleHeaderSchema.parse(JSON.parse(buf.subarray(start, start + n).toString('utf8')));
  return { header, offset: start + n };
}

/** Reads one example file: its header, image bytes and (segmentation examples) mask bytes. */
export async function readExampleFile(path: string): Promise<{ header: ExampleHeader; image: Buffer; mask?: Buffer }> {
  const buf = await readFile(path);
  const { header, offset } = parseHeader(buf, path);
  const image = buf.subarray(offset, offset + header.imageBytes);
  const mask = header.maskBytes > 0 ? buf.subarray(offset + header.imageBytes, offset + header.imageBytes + header.maskBytes) : undefined;
  if (offset + header.imageBytes + header.maskBytes !== buf.length) throw new Error(`${path}: ${buf.length} bytes, its header says ${offset + header.imageBytes + header.maskBytes}`);
  return { header, image, mask };
}

async function readHeaderOnly(path: string): Promise<ExampleHeader> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(MAGIC.length + 4);
    await fh.read(head, 0, head.length, 0);
    if (!head.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error(`${path} is not an example file`);
    const n = head.readUInt32BE(MAGIC.length);
    const body = Buffer.alloc(n);
    await fh.read(body, 0, n, head.length);
    return ExampleHeaderSchema.parse(JSON.parse(body.toString('utf8')));
  } finally {
    await fh.close();
  }
}

export class ExampleStore {
  private readonly datasets = new Map<string, DatasetState>();
  private totalBytes = 0;

  private constructor(
    readonly root: string,
    readonly limits: StoreLimits,
  ) {}

  /**
   * Opens the store and indexes what is on disk; temp files left by a crash are swept. The folder is created with
   * the first dataset, so a server that never trains leaves no trace.
   */
  static async open(root: string, limits: StoreLimits): Promise<ExampleStore> {
    const store = new ExampleStore(resolve(root), limits);
    let names: import('node:fs').Dirent[];
    try {
      names = await readdir(store.root, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return store;
      throw new Error(`cannot read the example store ${store.root}: ${(err as Error).message}`);
    }
    for (const e of names) {
      if (!e.isDirectory() || !DATASET_NAME.test(e.name)) continue;
      const state = await store.scan(e.name);
      if (state) {
        store.datasets.set(e.name, state);
        store.totalBytes += state.bytes;
      }
    }
    return store;
  }

  private async scan(name: string): Promise<DatasetState | undefined> {
    const dir = join(this.root, name);
    let meta: z.infer<typeof DatasetFileSchema>;
    try {
      meta = DatasetFileSchema.parse(JSON.parse(await readFile(join(dir, DATASET_FILE), 'utf8')));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`dataset ${name}: unreadable ${DATASET_FILE}: ${(err as Error).message}`);
    }
    const entries = new Map<string, IndexEntry>();
    let bytes = 0;
    const exdir = join(dir, EXAMPLES_DIR);
    await mkdir(exdir, { recursive: true });
    for (const f of await readdir(exdir)) {
      const p = join(exdir, f);
      if (isTempName(f)) {
        const st = await stat(p).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > STALE_TEMP_MS) await rm(p, { force: true });
        continue;
      }
      if (!f.endsWith(EXAMPLE_EXT)) continue;
      const size = (await stat(p)).size;
      entries.set(f, { bytes: size });
      bytes += size;
    }
    return { classes: meta.classes, entries, bytes, lock: Promise.resolve() };
  }

  get bytes(): number {
    return this.totalBytes;
  }

  /** Class names and example count, or undefined for a dataset that does not exist. */
  describe(name: string): { classes: string[]; examples: number; bytes: number } | undefined {
    const d = this.datasets.get(name);
    return d && { classes: [...d.classes], examples: d.entries.size, bytes: d.bytes };
  }

  /**
   * Opens a dataset for an upload. A new dataset needs its classes (index 0 = background/normal) and is created
   * durably; an existing one must be given the same classes or none.
   */
  async openDataset(name: string, classes: readonly string[]): Promise<{ classes: string[]; created: boolean }> {
    checkDatasetName(name);
    const have = this.datasets.get(name);
    if (have) {
      if (classes.length > 0 && (classes.length !== have.classes.length || classes.some((c, i) => c !== have.classes[i]))) {
        throw new DatasetError(`dataset ${name} has classes [${have.classes.join(', ')}]; this upload says [${classes.join(', ')}]`);
      }
      return { classes: [...have.classes], created: false };
    }
    if (classes.length === 0) throw new DatasetError(`dataset ${name} does not exist; the first message of a new dataset must list its classes`);
    if (classes.length < 2 || classes.length > 255) throw new DatasetError(`a dataset needs 2 to 255 classes, got ${classes.length}`);
    const seen = new Set<string>();
    for (const c of classes) {
      if (!c || c.length > MAX_CLASS_NAME_LENGTH || /[\u0000-\u001f]/.test(c)) throw new DatasetError(`invalid class name ${JSON.stringify(c.slice(0, 80))}: 1-${MAX_CLASS_NAME_LENGTH} printable characters`);
      if (seen.has(c)) throw new DatasetError(`class ${JSON.stringify(c)} is listed twice`);
      seen.add(c);
    }
    const dir = join(this.root, name);
    await mkdir(join(dir, EXAMPLES_DIR), { recursive: true });
    await fsyncDir(dir);
    await fsyncDir(this.root);
    await fsyncDir(join(this.root, '..')).catch(() => undefined);
    await writeJsonDurable(join(dir, DATASET_FILE), { schema: 1, name, classes, createdAt: new Date().toISOString() });
    const state: DatasetState = { classes: [...classes], entries: new Map(), bytes: 0, lock: Promise.resolve() };
    this.datasets.set(name, state);
    return { classes: [...classes], created: true };
  }

  /**
   * Checks one example against the dataset and writes it durably. Resolves once it is on disk. Throws
   * ExampleRejectedError for a bad example (the caller goes on) and StoreLimitError when a limit would be passed.
   */
  async put(name: string, ex: NewExample): Promise<{ replaced: boolean; examples: number }> {
    const d = this.datasets.get(name);
    if (!d) throw new DatasetNotFoundError(`dataset ${name} does not exist`);
    const header = await this.validate(d, ex);
    const parts = encodeExample(header, ex.image, ex.mask);
    const size = parts.reduce((n, p) => n + p.length, 0);
    const file = fileOf(ex.exampleId);
    const run = d.lock.then(async () => {
      const old = d.entries.get(file);
      const delta = size - (old?.bytes ?? 0);
      if (!old && d.entries.size + 1 > this.limits.maxDatasetExamples) {
        throw new StoreLimitError(`dataset ${name} holds ${d.entries.size} examples, the limit (max-dataset-examples)`);
      }
      if (d.bytes + delta > this.limits.maxDatasetBytes) {
        throw new StoreLimitError(`dataset ${name} would hold ${d.bytes + delta} bytes, over the limit of ${this.limits.maxDatasetBytes} (max-dataset-bytes)`);
      }
      if (this.totalBytes + delta > this.limits.maxStoreBytes) {
        throw new StoreLimitError(`the example store would hold ${this.totalBytes + delta} bytes, over the limit of ${this.limits.maxStoreBytes} (max-store-bytes)`);
      }
      await writeFileDurable(join(this.root, name, EXAMPLES_DIR, file), ...parts);
      d.entries.set(file, { bytes: size });
      d.bytes += delta;
      this.totalBytes += delta;
      return { replaced: !!old, examples: d.entries.size };
    });
    d.lock = run.catch(() => undefined);
    return run;
  }

  private async validate(d: DatasetState, ex: NewExample): Promise<ExampleHeader> {
    const reject = (msg: string) => new ExampleRejectedError(msg);
    if (!ex.exampleId) throw reject('example_id is empty');
    if (ex.exampleId.length > MAX_EXAMPLE_ID_LENGTH) throw reject(`example_id is longer than ${MAX_EXAMPLE_ID_LENGTH} characters`);
    if (!Number.isFinite(ex.mpp) || ex.mpp < 0) throw reject(`mpp must be a finite number >= 0, got ${ex.mpp}`);
    if ((ex.mask === undefined) === (ex.classIndex === undefined)) throw reject('an example needs exactly one label: mask or class_index');
    if (ex.image.length === 0) throw reject('image is empty');
    let width: number;
    let height: number;
    try {
      ({ width, height } = await decodeImage(ex.image, { maxPixels: this.limits.maxExamplePixels }));
    } catch (err) {
      if (err instanceof InvalidImageError) throw reject(`image: ${err.message}`);
      throw err;
    }
    const C = d.classes.length;
    if (ex.classIndex !== undefined) {
      if (!Number.isInteger(ex.classIndex) || ex.classIndex >= C) throw reject(`class_index ${ex.classIndex} is out of range: the dataset has ${C} classes (0-${C - 1})`);
    } else {
      let map;
      try {
        map = await readLabelMap(ex.mask!, { maxPixels: this.limits.maxExamplePixels });
      } catch (err) {
        throw reject(`mask: ${(err as Error).message.replace(/label map mask /, '')}`);
      }
      if (map.width !== width || map.height !== height) throw reject(`mask is ${map.width}x${map.height}, the image ${width}x${height}`);
      let max = 0;
      for (let i = 0; i < map.labels.length; i++) if (map.labels[i]! > max) max = map.labels[i]!;
      if (max >= C) throw reject(`mask has value ${max}, but the dataset has ${C} classes (values 0-${C - 1})`);
    }
    const sha = createHash('sha256').update(ex.image);
    if (ex.mask) sha.update(ex.mask);
    return {
      exampleId: ex.exampleId,
      split: ex.split,
      mpp: ex.mpp,
      kind: ex.mask ? 'mask' : 'class',
      classIndex: ex.classIndex ?? null,
      width,
      height,
      imageBytes: ex.image.length,
      maskBytes: ex.mask?.length ?? 0,
      contentSha256: sha.digest('hex'),
    };
  }

  /**
   * Freezes a dataset into `dest` for a job: each example file is hard-linked (copied across file systems), so a
   * later upload replacing an id changes the store but not the job's copy. Reads the disk, not the in-memory index,
   * so examples written by another server sharing the store count too.
   */
  async freeze(name: string, dest: string): Promise<FrozenDataset> {
    checkDatasetName(name);
    const dir = join(this.root, name);
    let meta: z.infer<typeof DatasetFileSchema>;
    try {
      meta = DatasetFileSchema.parse(JSON.parse(await readFile(join(dir, DATASET_FILE), 'utf8')));
    } catch {
      throw new DatasetNotFoundError(`dataset ${name} does not exist`);
    }
    await mkdir(dest, { recursive: true });
    const files = (await readdir(join(dir, EXAMPLES_DIR))).filter((f) => f.endsWith(EXAMPLE_EXT) && !isTempName(f)).sort();
    const examples: FrozenDataset['examples'] = [];
    const hash = createHash('sha256').update(JSON.stringify(meta.classes));
    for (const f of files) {
      const src = join(dir, EXAMPLES_DIR, f);
      const to = join(dest, f);
      try {
        await link(src, to);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') continue; // replaced or removed meanwhile: the rename left a new inode, take the next look
        if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EEXIST') throw err;
        if (code !== 'EEXIST') await copyFile(src, to);
      }
      const h = await readHeaderOnly(to);
      examples.push({ file: f, exampleId: h.exampleId, split: h.split, kind: h.kind });
      hash.update(`${f} ${h.contentSha256} ${h.split} ${h.kind} ${h.classIndex ?? ''} ${h.mpp}\n`);
    }
    await fsyncDir(dest);
    return { dataset: name, classes: meta.classes, hash: hash.digest('hex'), examples };
  }
}
