import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('..', import.meta.url));

// A supervisor (systemd, a shell's job control, a CI runner) signals the process it started: here, npm. The server
// must get the signal, drain and exit, and leave no orphan behind (npm runs the script through `sh -c`, so the
// script execs node in the shell's place).
test('SIGTERM to `npm start` stops the server with its drain; nothing is left running', { timeout: 120_000 }, async () => {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HISTOSEG_') && !k.startsWith('npm_')));
  const npm = spawn('npm', ['start', '--silent', '--', '--port', '0', '--metrics-port', '0'], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  npm.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const logs: Record<string, unknown>[] = [];
  const lines = createInterface({ input: npm.stdout });
  const serving = new Promise<Record<string, unknown>>((resolve, reject) => {
    lines.on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      logs.push(entry);
      if (entry.msg === 'serving') resolve(entry);
    });
    npm.once('exit', (code) => reject(new Error(`npm start exited (${code}) before serving:\n${stderr}`)));
  });
  const up = await serving;
  const serverPid = up.pid as number;
  assert.equal(typeof serverPid, 'number');
  assert.notEqual(serverPid, npm.pid, 'the server is a child of npm');

  // Every process holding the stdout pipe (npm and the server) must be gone for it to close. npm's 'exit' may come
  // before or after that close, so both are listened for before the signal is sent.
  const closed = once(npm.stdout, 'close');
  const exited = once(npm, 'exit') as Promise<[number | null]>;
  npm.kill('SIGTERM');
  const [, [code]] = await Promise.all([closed, exited]);
  assert.ok(logs.some((l) => l.msg === 'shutting down' && l.pid === serverPid), 'the server itself got the signal');
  assert.ok(logs.some((l) => l.msg === 'stopped' && l.pid === serverPid), 'it drained and stopped');
  assert.throws(() => process.kill(serverPid, 0), { code: 'ESRCH' }, 'no orphaned server');
  assert.equal(code, 0, `npm exits 0 after a clean drain:\n${stderr}`);
});
