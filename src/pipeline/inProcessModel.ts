// A LoadedModel whose engine runs in this thread: the trainer's validation segments through the same pipeline as
// serving (segmentTile, batcher, blending) with the model it holds in memory.
import type { Engine } from '../engine/engine.js';
import { InProcessRunner } from '../engine/inProcessRunner.js';
import type { Manifest } from '../model/manifest.js';
import { Batcher } from './batcher.js';
import type { LoadedModel } from './modelRegistry.js';

/** Windows per engine run. */
const IN_PROCESS_BATCH = 16;

export function inProcessModel(manifest: Manifest, engine: Engine, opts: { maxBatch?: number } = {}): LoadedModel {
  const runner = new InProcessRunner(engine, manifest.inputSize);
  const size = manifest.inputSize;
  const batcher = new Batcher(runner, {
    maxBatch: opts.maxBatch ?? IN_PROCESS_BATCH,
    maxDelayMs: 1,
    queueCapacity: Number.MAX_SAFE_INTEGER,
    inputLength: 3 * size * size,
    numClasses: manifest.classes.length,
  });
  return { manifest, dir: '', pool: runner, batcher };
}
