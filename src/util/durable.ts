import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** fsyncs a file or folder, so what was written to it (or renamed into it) survives a power cut. */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsyncs every file under `dir`, then each folder, deepest first: the tree is on disk before it is renamed in. */
export async function fsyncTree(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) await fsyncTree(path);
    else if (e.isFile()) await fsyncPath(path);
  }
  await fsyncPath(dir);
}

/** Whether a process with this pid is running (EPERM: it is, under another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
