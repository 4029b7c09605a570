import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const run = promisify(execFile);
let dir: string;

// A checkout with a dist/ from an earlier build whose CLI only says "STALE".
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'histoseg-bin-'));
  await mkdir(join(dir, 'bin'));
  await copyFile(join(REPO, 'bin', 'histoseg.js'), join(dir, 'bin', 'histoseg.js'));
  await symlink(join(REPO, 'node_modules'), join(dir, 'node_modules'));
  await symlink(join(REPO, 'package.json'), join(dir, 'package.json'));
  await mkdir(join(dir, 'dist', 'src', 'cli'), { recursive: true });
  await writeFile(join(dir, 'dist', 'src', 'cli', 'main.js'), "process.stdout.write('STALE\\n');\n");
});
after(() => rm(dir, { recursive: true, force: true }));

test('bin/histoseg.js runs the source in a checkout, never a leftover dist/', async () => {
  await symlink(join(REPO, 'src'), join(dir, 'src'));
  const { stdout } = await run(process.execPath, [join(dir, 'bin', 'histoseg.js'), '--help'], { cwd: dir });
  assert.doesNotMatch(stdout, /STALE/);
  assert.match(stdout, /serve/);
  await rm(join(dir, 'src'));
});

test('bin/histoseg.js runs dist/ where there is no source (the Docker image)', async () => {
  const { stdout } = await run(process.execPath, [join(dir, 'bin', 'histoseg.js'), '--help'], { cwd: dir });
  assert.match(stdout, /STALE/);
});
