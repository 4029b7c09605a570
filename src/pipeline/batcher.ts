import { EventEmitter, once } from 'node:events';
import type { PoolResult, RgbBatch } from '../engine/workerPool.js';
import type { Metrics } from '../telemetry/metrics.js';
import { BytePool } from './bufferPool.js';

/** What the batcher needs of an engine pool (an interface, so tests can drive it with a fake). */
export interface BatchRunner {
  readonly size: number;
  idleCount(): number;
  run(input: RgbBatch): Promise<PoolResult>;
  on(event: 'idle', listener: () => void): unknown;
}

export interface BatcherOptions {
  maxBatch: number;
  maxDelayMs: number;
  /** Windows waiting, over all streams. */
  queueCapacity: number;
  /** Bytes per window: size * size RGB. */
  inputLength: number;
  numClasses: number;
}

export interface WindowResult {
  /** Views into the batch's output; valid as long as the caller holds them. mask is C x maskSize x maskSize. */
  mask: Float32Array;
  maskSize: number;
  cls: Float32Array;
  queueSeconds: number;
  computeSeconds: number;
}

interface Job {
  data: Uint8Array;
  enqueuedAt: number;
  signal?: AbortSignal;
  onAbort?: () => void;
  resolve(r: WindowResult): void;
  reject(e: Error): void;
}

export class BatcherStoppedError extends Error {}

/**
 * Dynamic batching across all streams (Triton's scheduler: Enqueue, InflightInferenceCount, Stop).
 * A batch closes, once an engine worker is idle, when it is full, when its oldest window has waited maxDelayMs, or
 * when no tile is being prepared (decoded, normalised) that could still join it: then waiting only adds latency.
 */
export class Batcher extends EventEmitter {
  private readonly opts: BatcherOptions;
  private readonly runner: BatchRunner;
  private readonly metrics?: Metrics;
  private queue: Job[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = 0;
  private stopped = false;
  /** Tiles between being read and having their windows queued (see prepare). */
  private preparing = 0;
  /** Batch buffers of maxBatch windows, back from the workers: a batch is 0.8 MB, too big to allocate per run. */
  private readonly batchBuffers = new BytePool(8, 1);

  constructor(runner: BatchRunner, opts: BatcherOptions, metrics?: Metrics) {
    super();
    this.setMaxListeners(0);
    this.runner = runner;
    this.opts = opts;
    this.metrics = metrics;
    runner.on('idle', () => this.pump());
  }

  get depth(): number {
    return this.queue.length;
  }

  /** Batches executing now. */
  get inflight(): number {
    return this.running;
  }

  hasCapacity(): boolean {
    return this.queue.length < this.opts.queueCapacity;
  }

  /** Resolves once the queue has room (backpressure for stream readers); rejects if the signal aborts. */
  async waitForCapacity(signal?: AbortSignal): Promise<void> {
    while (!this.hasCapacity()) {
      if (this.stopped) throw new BatcherStoppedError('server is shutting down');
      await once(this, 'capacity', { signal });
    }
  }

  /**
   * Announces a tile whose windows will be queued soon; call the returned function once they are (or the tile
   * needs none). While no tile is announced, a partial batch goes to an idle worker at once instead of waiting
   * maxDelayMs for windows that are not coming. Calling it twice is harmless.
   */
  prepare(): () => void {
    this.preparing++;
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      this.preparing--;
      if (this.preparing === 0) this.pump();
    };
  }

  /** Tiles announced and not yet queued. */
  get preparingTiles(): number {
    return this.preparing;
  }

  /** Queues one window: size x size RGB bytes (the engine worker normalises them). */
  enqueue(data: Uint8Array, signal?: AbortSignal): Promise<WindowResult> {
    if (this.stopped) return Promise.reject(new BatcherStoppedError('server is shutting down'));
    if (data.length !== this.opts.inputLength) {
      return Promise.reject(new Error(`window has ${data.length} bytes, expected ${this.opts.inputLength}`));
    }
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<WindowResult>((resolve, reject) => {
      const job: Job = { data, enqueuedAt: performance.now(), signal, resolve, reject };
      if (signal) {
        // A cancelled stream frees its queued windows at once.
        job.onAbort = () => this.remove(job, signal.reason as Error);
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.queue.push(job);
      this.metrics?.queueDepth.set(this.queue.length);
      this.pump();
    });
  }

  private remove(job: Job, reason: Error): void {
    const i = this.queue.indexOf(job);
    if (i < 0) return;
    this.queue.splice(i, 1);
    this.metrics?.queueDepth.set(this.queue.length);
    job.reject(reason);
    this.emit('capacity');
  }

  private pump(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.queue.length > 0 && this.runner.idleCount() > 0) {
      const waited = performance.now() - this.queue[0].enqueuedAt;
      const more = this.preparing > 0 && !this.stopped;
      if (this.queue.length < this.opts.maxBatch && waited < this.opts.maxDelayMs && more) {
        this.arm(this.opts.maxDelayMs - waited);
        return;
      }
      this.dispatch(this.queue.splice(0, this.opts.maxBatch));
    }
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump();
    }, Math.max(0, Math.ceil(ms)));
  }

  private dispatch(jobs: Job[]): void {
    const n = jobs.length;
    const { inputLength, numClasses } = this.opts;
    const batch = this.batchBuffers.acquire(this.opts.maxBatch * inputLength).subarray(0, n * inputLength);
    const now = performance.now();
    for (let i = 0; i < n; i++) {
      const job = jobs[i];
      if (job.onAbort) job.signal?.removeEventListener('abort', job.onAbort);
      batch.set(job.data, i * inputLength);
      this.metrics?.queueSeconds.observe((now - job.enqueuedAt) / 1000);
    }
    this.metrics?.queueDepth.set(this.queue.length);
    this.metrics?.batchSize.observe(n);
    this.emit('capacity');
    this.running++;
    this.runner.run({ data: batch, n }).then(
      (out) => {
        this.running--;
        if (out.input) this.batchBuffers.release(new Uint8Array(out.input.buffer));
        this.metrics?.computeSeconds.observe(out.seconds);
        this.metrics?.executions.inc();
        this.metrics?.inferences.inc(n);
        const maskLength = out.mask.length / n;
        for (let i = 0; i < n; i++) {
          jobs[i].resolve({
            mask: out.mask.subarray(i * maskLength, (i + 1) * maskLength),
            cls: out.cls.subarray(i * numClasses, (i + 1) * numClasses),
            maskSize: out.maskSize,
            queueSeconds: (now - jobs[i].enqueuedAt) / 1000,
            computeSeconds: out.seconds,
          });
        }
        this.emit('settled');
      },
      (err: Error) => {
        this.running--;
        for (const job of jobs) job.reject(err);
        this.emit('settled');
      },
    );
  }

  /** Stops taking work, runs what is queued, and resolves when the last batch is done. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.emit('capacity');
    this.pump();
    while (this.queue.length > 0 || this.running > 0) {
      await once(this, 'settled');
      this.pump();
    }
  }
}
