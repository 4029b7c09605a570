import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(path)));
    else if (e.isFile()) out.push(path);
  }
  return out;
}

/** sha256 over every (non-hidden) file of the dataset: its relative path, size and contents, in path order. */
export async function datasetHash(root: string): Promise<string> {
  const files = (await listFiles(resolve(root))).map((f) => relative(resolve(root), f)).sort();
  const h = createHash('sha256');
  for (const rel of files) {
    const path = join(resolve(root), rel);
    h.update(`${rel}\0${(await stat(path)).size}\0`);
    for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  }
  return `sha256:${h.digest('hex')}`;
}
