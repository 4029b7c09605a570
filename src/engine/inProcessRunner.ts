// Runs batches of RGB windows on an engine in this thread, one batch at a time: for a model already in memory (the
// trainer's validation) and for tests. Serving runs engines in worker threads instead (workerPool.ts).
import { EventEmitter } from 'node:events';
import { writeModelInput } from '../imaging/modelInput.js';
import type { Engine } from './engine.js';
import type { PoolResult, RgbBatch } from './workerPool.js';

export class InProcessRunner extends EventEmitter {
  readonly size = 1;
  readonly engineName: string;
  private busy = false;
  private input = new Float32Array(0);

  constructor(
    private readonly engine: Engine,
    private readonly inputSize: number,
  ) {
    super();
    this.engineName = engine.name;
  }

  idleCount(): number {
    return this.busy ? 0 : 1;
  }

  async run(batch: RgbBatch): Promise<PoolResult> {
    if (this.busy) throw new Error('the in-process engine is busy');
    this.busy = true;
    const t0 = performance.now();
    try {
      const windowBytes = 3 * this.inputSize * this.inputSize;
      const need = batch.n * windowBytes;
      if (batch.data.length < need) throw new Error(`batch of ${batch.n} windows needs ${need} bytes, got ${batch.data.length}`);
      if (this.input.length < need) this.input = new Float32Array(need);
      for (let i = 0; i < batch.n; i++) writeModelInput(batch.data.subarray(i * windowBytes, (i + 1) * windowBytes), this.inputSize, this.input, i * windowBytes);
      const out = await this.engine.run({ data: this.input.subarray(0, need), n: batch.n });
      return { ...out, seconds: (performance.now() - t0) / 1000 };
    } finally {
      this.busy = false;
      queueMicrotask(() => this.emit('idle'));
    }
  }

  async close(): Promise<void> {}
}
