import { INPUT_SIZE } from '../util/constants.js';
import type { EngineInput } from './engine.js';

/** Elements of one NCHW RGB tile. */
export const TILE_ELEMENTS = 3 * INPUT_SIZE * INPUT_SIZE;

/** Throws where the batch does not hold exactly n NCHW tiles of INPUT_SIZE. */
export function assertEngineInput(input: EngineInput): void {
  if (!Number.isInteger(input.n) || input.n < 1) {
    throw new Error(`engine input: batch size must be a positive integer, got ${input.n}`);
  }
  if (input.data.length !== input.n * TILE_ELEMENTS) {
    throw new Error(
      `engine input: ${input.n} tiles of 3x${INPUT_SIZE}x${INPUT_SIZE} need ${input.n * TILE_ELEMENTS} floats, got ${input.data.length}`,
    );
  }
}

/** The array itself where it alone spans its buffer, else a copy: callers transfer output buffers between threads. */
export function ownedArray(a: Float32Array): Float32Array {
  return a.byteOffset === 0 && a.buffer.byteLength === a.byteLength ? a : a.slice();
}
