import { randomBytes } from 'node:crypto';
import { open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Durable writes: what these functions return from is on disk. A file is written to a temporary name beside its
 * target, fsynced, renamed over the target and the folder fsynced, so a crash (kill -9, power loss) leaves either
 * the old file or the new one, never half of one.
 */

/** Temporary names start with this; readers of a folder skip them, and a sweep may delete stale ones. */
export const TEMP_PREFIX = '.tmp-';

export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX);
}

/** fsync of a folder (or a file), so a rename or a new entry in it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes `parts` one after another into `path`, atomically and durably. */
export async function writeFileDurable(path: string, ...parts: Uint8Array[]): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `${TEMP_PREFIX}${basename(path)}-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fh = await open(tmp, 'w');
  try {
    for (const p of parts) await fh.write(p);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

/** JSON, durably (see writeFileDurable). */
export async function writeJsonDurable(path: string, value: unknown): Promise<void> {
  await writeFileDurable(path, Buffer.from(JSON.stringify(value, null, 1) + '\n'));
}

/** fsyncs every file under `dir` and the folders themselves (after writing a tree that will be renamed into place). */
export async function fsyncTree(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await fsyncTree(p);
    else if (e.isFile()) {
      const fh = await open(p, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  }
  await fsyncDir(dir);
}

/** fsyncs a file or folder, so what was written to it (or renamed into it) survives a power cut. */
export const fsyncPath = fsyncDir;

/** Whether a process with this pid is running (EPERM: it is, under another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
