import { Rng } from '../../src/util/rng.js';

/** A seeded uniform [0, 1) stream (mulberry32, the synthetic generator's Rng) for reproducible test inputs. */
export function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}
