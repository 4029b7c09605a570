import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import * as tf from '@tensorflow/tfjs';

/**
 * Native TF.js bindings first (optional dependencies; they do not install everywhere), then wasm. Never the stock
 * 'cpu' backend: it is slow and computes wrong gradients (engine-notes.md).
 */
const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

let selected: Promise<string> | undefined;

/** Selects and initialises the backend once per thread; later calls return the same name. */
export function selectTfBackend(): Promise<string> {
  selected ??= select().catch((err: unknown) => {
    selected = undefined;
    throw err;
  });
  return selected;
}

async function select(): Promise<string> {
  for (const pkg of NATIVE_PACKAGES) {
    try {
      // A variable specifier: these packages are optional and usually absent, so they have no types here.
      const specifier: string = pkg;
      await import(specifier); // registers the 'tensorflow' backend on import
    } catch {
      continue; // not installed, or its native library failed to load
    }
    if (await tf.setBackend('tensorflow')) {
      await tf.ready();
      return tf.getBackend();
    }
  }
  return initWasmBackend();
}

/** The wasm backend alone, skipping the native bindings (benchmarks compare engines in one process each). */
export async function initWasmBackend(): Promise<string> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // Point at the package's own .wasm files by file path, so a bundled or relocated entry still finds them.
  const wasmDir = dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm'));
  wasm.setWasmPaths(`${wasmDir}/`);
  if (!(await tf.setBackend('wasm'))) {
    throw new Error(`TF.js wasm backend failed to initialise (wasm files in ${wasmDir})`);
  }
  await tf.ready();
  return tf.getBackend();
}
