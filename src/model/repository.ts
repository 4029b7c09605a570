import { cp, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { fsyncDir, fsyncTree, processAlive, TEMP_PREFIX, writeJsonDurable } from '../util/durableFile.js';
import { MANIFEST_FILE, ManifestSchema, readManifest, writeManifest, type Manifest } from './manifest.js';

/**
 * A model repository: `<root>/<name>/<version>/` holds manifest.json, tfjs/model.json + weights.bin and model.onnx;
 * `<root>/default.json` names the default model. Names from requests are never used as paths: they are validated
 * and then looked up among the entries found on disk.
 */

export const DEFAULT_FILE = 'default.json';

export interface ModelEntry {
  readonly name: string;
  readonly version: string;
  /** Absolute folder of this version. */
  readonly dir: string;
  readonly manifest: Manifest;
}

/** The requested model or version does not exist (gRPC NOT_FOUND). */
export class ModelNotFoundError extends Error {
  override readonly name = 'ModelNotFoundError';
}

/** The requested name or version is not a valid identifier (gRPC INVALID_ARGUMENT). */
export class InvalidModelRefError extends Error {
  override readonly name = 'InvalidModelRefError';
}

const nameSchema = ManifestSchema.shape.name;
const versionSchema = ManifestSchema.shape.version;
const DefaultSchema = z.object({ name: nameSchema, version: versionSchema.optional() });

/**
 * Natural order of versions, semver-ish: digit runs compare as numbers ("0.10.0" > "0.9.1"), and a pre-release
 * ("1.0.0-rc.1") sorts before its release.
 */
export function compareVersions(a: string, b: string): number {
  const [coreA, preA] = splitPre(a);
  const [coreB, preB] = splitPre(b);
  const core = compareNatural(coreA, coreB);
  if (core !== 0) return core;
  if (preA === undefined || preB === undefined) return preA === preB ? 0 : preA === undefined ? 1 : -1;
  return compareNatural(preA, preB);
}

function splitPre(v: string): [string, string | undefined] {
  const i = v.indexOf('-');
  return i < 0 ? [v, undefined] : [v.slice(0, i), v.slice(i + 1)];
}

function compareNatural(a: string, b: string): number {
  const pa = a.split(/(\d+)/);
  const pb = b.split(/(\d+)/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    if (x === y) continue;
    // Odd indices are the digit runs captured by split.
    if (i % 2 === 1 && x !== '' && y !== '') {
      const d = Number(BigInt(x) - BigInt(y));
      if (d !== 0) return d < 0 ? -1 : 1;
      continue;
    }
    return x < y ? -1 : 1;
  }
  return 0;
}

async function subdirs(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries.filter((e) => e.isDirectory()).map((e) => e.name);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** All versions with a manifest, sorted by name then version (oldest first). A malformed manifest is an error. */
export async function listModels(root: string): Promise<ModelEntry[]> {
  const rootDir = resolve(root);
  let names: string[];
  try {
    names = await subdirs(rootDir);
  } catch (err) {
    throw new Error(`cannot read model repository ${rootDir}: ${(err as Error).message}`);
  }
  const out: ModelEntry[] = [];
  for (const name of names.filter((n) => nameSchema.safeParse(n).success)) {
    for (const version of (await subdirs(join(rootDir, name))).filter((v) => versionSchema.safeParse(v).success)) {
      const dir = join(rootDir, name, version);
      if (!(await exists(join(dir, MANIFEST_FILE)))) continue;
      const manifest = await readManifest(join(dir, MANIFEST_FILE));
      if (manifest.name !== name || manifest.version !== version) {
        throw new Error(`manifest in ${dir} says ${manifest.name}/${manifest.version}, its folder says ${name}/${version}`);
      }
      out.push({ name, version, dir, manifest });
    }
  }
  return out.sort((a, b) => (a.name === b.name ? compareVersions(a.version, b.version) : a.name < b.name ? -1 : 1));
}

function checkRef(kind: 'name' | 'version', value: string): void {
  const schema = kind === 'name' ? nameSchema : versionSchema;
  if (!schema.safeParse(value).success) {
    throw new InvalidModelRefError(`invalid model ${kind} ${JSON.stringify(value.slice(0, 80))}`);
  }
}

async function readDefault(rootDir: string): Promise<{ name: string; version?: string } | undefined> {
  const path = join(rootDir, DEFAULT_FILE);
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    throw new Error(`invalid ${path}: ${(err as Error).message}`);
  }
  const parsed = DefaultSchema.safeParse(json);
  if (!parsed.success) throw new Error(`invalid ${path}: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/**
 * The version to serve. Empty strings count as absent (proto3 defaults). No name: the model in default.json, else
 * the first listed. No version: the newest (compareVersions), or default.json's version for the default model.
 */
export async function resolveModel(root: string, name?: string, version?: string): Promise<ModelEntry> {
  if (name) checkRef('name', name);
  if (version) checkRef('version', version);
  const entries = await listModels(root);
  if (entries.length === 0) throw new ModelNotFoundError(`no models in ${resolve(root)}`);

  let wantName = name || undefined;
  let wantVersion = version || undefined;
  if (!wantName) {
    const def = await readDefault(resolve(root));
    wantName = def?.name ?? entries[0].name;
    wantVersion ??= def?.version;
  }
  const versions = entries.filter((e) => e.name === wantName);
  if (versions.length === 0) {
    const names = [...new Set(entries.map((e) => e.name))];
    throw new ModelNotFoundError(`model ${wantName} not found; available: ${names.join(', ')}`);
  }
  if (!wantVersion) return versions[versions.length - 1];
  const hit = versions.find((e) => e.version === wantVersion);
  if (!hit) {
    throw new ModelNotFoundError(
      `model ${wantName} has no version ${wantVersion}; available: ${versions.map((e) => e.version).join(', ')}`,
    );
  }
  return hit;
}

/** A file named in a manifest (`files.onnx`, `files.tfjs`), resolved inside the version folder and nowhere else. */
export function modelFilePath(dir: string, file: string): string {
  const path = resolve(dir, file);
  const rel = relative(resolve(dir), path);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
    throw new Error(`model file ${JSON.stringify(file)} is outside its folder ${dir}`);
  }
  return path;
}

/**
 * Writes manifest.json, the TF.js model and its ONNX export as `<root>/<name>/<version>/`. The files are written
 * into a hidden temporary folder first and renamed into place, so a reader never sees half a version.
 */
export async function saveModelVersion(
  root: string,
  manifest: Manifest,
  model: tf.LayersModel,
  opts: { overwrite?: boolean } = {},
): Promise<ModelEntry> {
  const parsed = ManifestSchema.safeParse(manifest);
  if (!parsed.success) throw new Error(`invalid manifest: ${z.prettifyError(parsed.error)}`);
  const m = parsed.data;
  // Loaded here only: the serving path lists and resolves models without pulling in TF.js.
  const [{ modelNumClasses }, { exportOnnx }, { saveLayersModel }] = await Promise.all([
    import('./network/architecture.js'),
    import('./network/onnxExport.js'),
    import('./network/tfjsIO.js'),
  ]);
  const numClasses = modelNumClasses(model);
  if (numClasses !== m.classes.length) {
    throw new Error(`manifest lists ${m.classes.length} classes, the model has ${numClasses}`);
  }
  const parent = join(resolve(root), m.name);
  const dir = join(parent, m.version);
  await removeStaleTemporaries(root);
  if (!opts.overwrite && (await exists(dir))) throw new Error(`${dir} already exists`);
  const tmp = stagingDir(parent, m.version);
  activeTemporaries.add(tmp);
  try {
    const tfjsPath = modelFilePath(tmp, m.files.tfjs);
    const onnxPath = modelFilePath(tmp, m.files.onnx);
    await mkdir(dirname(tfjsPath), { recursive: true });
    await mkdir(dirname(onnxPath), { recursive: true });
    await saveLayersModel(model, tfjsPath);
    await writeFile(onnxPath, exportOnnx(model, numClasses));
    await writeManifest(join(tmp, MANIFEST_FILE), m);
    await fsyncTree(tmp);
    if (opts.overwrite) await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    await fsyncDir(parent);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    activeTemporaries.delete(tmp);
  }
  return { name: m.name, version: m.version, dir, manifest: m };
}

/** A hidden staging folder beside the version folder; listModels never reads it (its name is not a version). */
function stagingDir(parent: string, version: string): string {
  return join(parent, `${TEMP_PREFIX}${version}-${process.pid}-${Date.now()}`);
}

/**
 * Copies a finished version folder (manifest.json and its files, e.g. written by saveModelVersion into a job's own
 * repository) into `root` as `<name>/<version>/`: copied into a staging folder, fsynced, renamed into place, so no
 * server ever lists a half-written version. Refuses to replace an existing version.
 */
export async function publishModelVersion(root: string, srcDir: string): Promise<ModelEntry> {
  const manifest = await readManifest(join(srcDir, MANIFEST_FILE));
  const parent = join(resolve(root), manifest.name);
  const dir = join(parent, manifest.version);
  if (await exists(dir)) throw new Error(`model ${manifest.name}@${manifest.version} already exists in ${resolve(root)}`);
  await removeStaleTemporaries(root);
  await mkdir(parent, { recursive: true });
  const tmp = stagingDir(parent, manifest.version);
  activeTemporaries.add(tmp);
  try {
    await cp(srcDir, tmp, { recursive: true });
    await fsyncTree(tmp);
    await rename(tmp, dir);
    await fsyncDir(parent);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    activeTemporaries.delete(tmp);
  }
  return { name: manifest.name, version: manifest.version, dir, manifest };
}

/** The next free version for `name`: one more than the newest purely numeric-dotted version's last number, else "1". */
export async function nextVersion(root: string, name: string): Promise<string> {
  checkRef('name', name);
  const versions = (await listModels(root).catch(() => [] as ModelEntry[])).filter((e) => e.name === name).map((e) => e.version);
  let names: string[] = [];
  try {
    names = await subdirs(join(resolve(root), name));
  } catch {
    // no folder yet
  }
  const taken = new Set([...versions, ...names]);
  const newest = versions[versions.length - 1];
  const m = newest ? /^(.*?)(\d+)$/.exec(newest.split('-')[0]!) : null;
  let candidate = m ? `${m[1]}${BigInt(m[2]!) + 1n}` : '1';
  while (taken.has(candidate)) {
    const k = /^(.*?)(\d+)$/.exec(candidate)!;
    candidate = `${k[1]}${BigInt(k[2]!) + 1n}`;
  }
  return candidate;
}

/** default.json as written, or undefined when there is none. */
export async function readDefaultModel(root: string): Promise<{ name: string; version?: string } | undefined> {
  return readDefault(resolve(root));
}

/** A version being staged: `.tmp-<version>-<pid>-<ms>` beside the versions (stagingDir). */
const TEMPORARY = /^\.tmp-(.+)-(\d+)-(\d+)$/;

/**
 * Removes version folders a crashed writer left half-written (`<root>/<name>/.tmp-<version>-<pid>-<ms>/`) whose
 * writer is no longer running. Every command that writes to the repository calls it first. Returns what it removed.
 */
export async function removeStaleTemporaries(root: string): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await subdirs(resolve(root));
  } catch {
    return removed;
  }
  for (const name of names) {
    for (const entry of await subdirs(join(resolve(root), name))) {
      const m = TEMPORARY.exec(entry);
      if (!m) continue;
      const pid = Number(m[2]);
      if (pid !== process.pid && processAlive(pid)) continue;
      if (pid === process.pid && activeTemporaries.has(join(resolve(root), name, entry))) continue;
      await rm(join(resolve(root), name, entry), { recursive: true, force: true });
      removed.push(join(resolve(root), name, entry));
    }
  }
  return removed;
}

/** Temporary folders this process is writing now. */
const activeTemporaries = new Set<string>();

/** Writes `<root>/default.json`; the model need not have a version yet. */
export async function writeDefaultModel(root: string, name: string, version?: string): Promise<void> {
  checkRef('name', name);
  if (version) checkRef('version', version);
  await mkdir(resolve(root), { recursive: true });
  await writeJsonDurable(join(resolve(root), DEFAULT_FILE), version ? { name, version } : { name });
}
