#!/usr/bin/env node
// Runs the TypeScript source through tsx where it is present (a clone), else the compiled CLI (the Docker image, which
// ships dist/ without src/). A clone never runs a dist/ left over from an earlier `npm run build`, which could be stale.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const compiled = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source);
} else if (existsSync(compiled)) {
  await import(compiled);
} else {
  process.stderr.write(`histoseg: neither ${source} nor ${compiled} exists (run \`npm run build\` for the compiled CLI)\n`);
  process.exit(1);
}
