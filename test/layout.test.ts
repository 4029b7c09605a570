import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../src', import.meta.url));

/**
 * The floors of src/, low to high (docs/architecture.md draws them). A folder imports only folders on lower floors;
 * folders on one floor do not import each other.
 */
const FLOORS: readonly (readonly string[])[] = [
  ['util', 'telemetry', 'proto'],
  ['imaging', 'tf'],
  ['model'],
  ['data', 'engine'],
  ['pipeline', 'synth'],
  ['evaluation'],
  ['training/prepare'],
  ['training/fit'],
  ['training/jobs'],
  ['server', 'client'],
  ['cli'],
];
/** The only folders that know the wire (generated protobuf code). */
const WIRE = new Set(['server', 'client', 'cli', 'proto']);
/** Folders that may write to the terminal: everything below reports through return values, hooks and the logger. */
const TERMINAL = new Set(['cli']);
/** Process entry points below cli/ (a child process or worker), which may say why they refuse to start. */
const ENTRY_POINTS = new Set(['training/jobs/jobChild.ts']);

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return files(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.as.ts') ? [p] : [];
  });
}

function area(file: string): string {
  const parts = relative(SRC, file).split('/');
  if (parts[0] === 'training' && parts.length > 2) return `training/${parts[1]}`;
  return parts.length > 1 ? parts[0]! : '(root)';
}

const floorOf = new Map(FLOORS.flatMap((names, i) => names.map((n) => [n, i] as const)));
const all = files(SRC);
const edges = new Map<string, Set<string>>();
for (const file of all) {
  const from = area(file);
  for (const m of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)) {
    const to = area(resolve(dirname(file), m[1]!));
    if (to === from) continue;
    if (!edges.has(from)) edges.set(from, new Set());
    edges.get(from)!.add(to);
  }
}

test('every folder of src/ has a floor', () => {
  const areas = new Set(all.map(area));
  for (const a of areas) assert.ok(floorOf.has(a), `src/${a} is on no floor of test/layout.test.ts (add it, and to docs/architecture.md)`);
});

test('no folder imports a folder on its own floor or above it', () => {
  const wrong: string[] = [];
  for (const [from, tos] of edges) {
    for (const to of tos) if (floorOf.get(to)! >= floorOf.get(from)!) wrong.push(`${from} -> ${to}`);
  }
  assert.deepEqual(wrong, []);
});

test('only the server, the client and the CLI know the wire types', () => {
  const wrong = [...edges].flatMap(([from, tos]) => (tos.has('proto') && !WIRE.has(from) ? [from] : []));
  assert.deepEqual(wrong, []);
});

test('no folder below the CLI writes to the terminal', () => {
  const wrong = all.filter((f) => !TERMINAL.has(area(f)) && !ENTRY_POINTS.has(relative(SRC, f)) && !f.includes('/proto/gen/') && /\bprocess\.std(out|err)\b|\bconsole\./.test(readFileSync(f, 'utf8')));
  assert.deepEqual(wrong.map((f) => relative(SRC, f)), []);
});

test('the largest folder holds well under a fifth of the code', () => {
  const lines = new Map<string, number>();
  for (const f of all) {
    if (f.includes('/proto/gen/')) continue;
    const top = relative(SRC, f).split('/')[0]!;
    lines.set(top, (lines.get(top) ?? 0) + readFileSync(f, 'utf8').split('\n').length);
  }
  const total = [...lines.values()].reduce((a, b) => a + b, 0);
  for (const [name, n] of lines) assert.ok(n / total < 0.18, `src/${name} holds ${((100 * n) / total).toFixed(1)}% of the code`);
});
