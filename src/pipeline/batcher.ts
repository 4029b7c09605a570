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
  /** No worker is alive and none could be started: queued windows fail rather than wait (EnginePool). */
  on(event: 'unavailable', listener: (err: Error) => void): unknown;
  /** A worker came back. */
  on(event: 'up', listener: () => void): unknown;
}

export interface BatcherOptions {
  maxBatch: number;
  maxDelayMs: number;
  /** Windows queued or reserved, over all streams: a bound that reserve() holds. */
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
  lane: Lane;
  enqueuedAt: number;
  signal?: AbortSignal;
  onAbort?: () => void;
  resolve(r: WindowResult): void;
  reject(e: Error): void;
}

/** One stream's queued windows. */
interface Lane {
  readonly key: object;
  readonly jobs: Job[];
}

interface Waiter {
  n: number;
  resolve(): void;
  reject(e: Error): void;
}

export interface EnqueueOptions {
  /** Windows of one lane (a stream, a slide) are served in order; lanes take turns (round robin). */
  lane?: object;
  /** The window was counted by reserve(): enqueueing it turns the reservation into a queued window. */
  reserved?: boolean;
}

export class BatcherStoppedError extends Error {}

const DEFAULT_LANE = {};

/**
 * Dynamic batching across all streams (Triton's scheduler: Enqueue, InflightInferenceCount, Stop).
 * A batch closes, once an engine worker is idle, when it is full, when its oldest window has waited maxDelayMs, or
 * when no tile is being prepared (decoded, normalised) that could still join it: then waiting only adds latency.
 *
 * Fairness: each lane (stream) has its own queue and a batch takes one window from each lane in turn, so a small
 * tile on one stream waits for about one batch however many windows another stream has queued. The queue bound
 * is in windows: reserve(n) waits, first come first served, until n more fit under queueCapacity, so a tile of
 * thousands of windows queues them in slices and other streams' slices get their turn between.
 */
export class Batcher extends EventEmitter {
  private readonly opts: BatcherOptions;
  private readonly runner: BatchRunner;
  private readonly metrics?: Metrics;
  /** Lanes with queued windows, in turn order; `turn` is the next to serve. */
  private lanes: Lane[] = [];
  private readonly laneOf = new Map<object, Lane>();
  private turn = 0;
  private queued = 0;
  /** Windows promised room by reserve() and not yet enqueued. */
  private reservedCount = 0;
  private readonly waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = 0;
  private stopped = false;
  /** Set while no engine worker is alive and none could be started. */
  private unavailable: Error | undefined;
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
    runner.on('up', () => (this.unavailable = undefined));
    runner.on('unavailable', (err) => {
      this.unavailable = err;
      this.failQueued(err);
    });
  }

  /** Windows queued, over all lanes. */
  get depth(): number {
    return this.queued;
  }

  /** Windows reserved and not yet queued. */
  get reserved(): number {
    return this.reservedCount;
  }

  /** Batches executing now. */
  get inflight(): number {
    return this.running;
  }

  /** Most windows that reserve() lets be queued or reserved at once. */
  get capacity(): number {
    return this.opts.queueCapacity;
  }

  hasCapacity(): boolean {
    return this.queued + this.reservedCount < this.opts.queueCapacity;
  }

  /**
   * Resolves once the queue has room for one more window (backpressure for stream readers); rejects if the signal
   * aborts. It waits its turn among reserve()'s waiters, so a reader is not passed over by a large tile's slices.
   */
  async waitForCapacity(signal?: AbortSignal): Promise<void> {
    if (this.stopped) throw new BatcherStoppedError('server is shutting down');
    this.unreserve(await this.reserve(1, signal));
  }

  /**
   * Waits until n more windows fit under queueCapacity (n is capped at it), then counts them as reserved: each
   * is then enqueued with { reserved: true }, or handed back with unreserve(). Waiters are served in order.
   */
  reserve(n: number, signal?: AbortSignal): Promise<number> {
    const want = Math.max(0, Math.min(Math.floor(n), this.opts.queueCapacity));
    if (this.stopped) return Promise.reject(new BatcherStoppedError('server is shutting down'));
    if (this.unavailable) return Promise.reject(this.unavailable);
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (this.waiters.length === 0 && this.queued + this.reservedCount + want <= this.opts.queueCapacity) {
      this.reservedCount += want;
      return Promise.resolve(want);
    }
    return new Promise<number>((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal!.reason as Error);
        this.grant();
      };
      const w: Waiter = {
        n: want,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(want);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  /** Hands back reserved room that will not be used. */
  unreserve(n: number): void {
    this.reservedCount = Math.max(0, this.reservedCount - n);
    this.freed();
  }

  /** Room was freed: grant waiting reservations in order, and wake readers waiting for capacity. */
  private freed(): void {
    this.grant();
    this.emit('capacity');
  }

  private grant(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters[0]!;
      if (this.queued + this.reservedCount + w.n > this.opts.queueCapacity) return;
      this.waiters.shift();
      this.reservedCount += w.n;
      w.resolve();
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
  enqueue(data: Uint8Array, signal?: AbortSignal, opts: EnqueueOptions = {}): Promise<WindowResult> {
    if (opts.reserved) this.reservedCount = Math.max(0, this.reservedCount - 1);
    if (this.stopped) return this.refuse(opts, new BatcherStoppedError('server is shutting down'));
    if (this.unavailable) return this.refuse(opts, this.unavailable);
    if (data.length !== this.opts.inputLength) {
      return this.refuse(opts, new Error(`window has ${data.length} bytes, expected ${this.opts.inputLength}`));
    }
    if (signal?.aborted) return this.refuse(opts, signal.reason as Error);
    const key = opts.lane ?? signal ?? DEFAULT_LANE;
    let lane = this.laneOf.get(key);
    if (!lane) {
      lane = { key, jobs: [] };
      this.laneOf.set(key, lane);
      // A new lane takes its turn after every lane already waiting.
      this.lanes.splice(this.turn, 0, lane);
      this.turn = (this.turn + 1) % this.lanes.length;
    }
    const l = lane;
    return new Promise<WindowResult>((resolve, reject) => {
      const job: Job = { data, lane: l, enqueuedAt: performance.now(), signal, resolve, reject };
      if (signal) {
        // A cancelled stream frees its queued windows at once.
        job.onAbort = () => this.remove(job, signal.reason as Error);
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      l.jobs.push(job);
      this.queued++;
      this.metrics?.queueDepth.set(this.queued);
      this.pump();
    });
  }

  private refuse(opts: EnqueueOptions, err: Error): Promise<never> {
    if (opts.reserved) this.freed();
    return Promise.reject(err);
  }

  private dropLane(lane: Lane): void {
    const i = this.lanes.indexOf(lane);
    if (i < 0) return;
    this.lanes.splice(i, 1);
    this.laneOf.delete(lane.key);
    if (i < this.turn) this.turn--;
    if (this.turn >= this.lanes.length) this.turn = 0;
  }

  private remove(job: Job, reason: Error): void {
    const jobs = job.lane.jobs;
    const i = jobs.indexOf(job);
    if (i < 0) return;
    jobs.splice(i, 1);
    if (jobs.length === 0) this.dropLane(job.lane);
    this.queued--;
    this.metrics?.queueDepth.set(this.queued);
    job.reject(reason);
    this.freed();
  }

  private failQueued(err: Error): void {
    const all = this.lanes.flatMap((l) => l.jobs);
    this.lanes = [];
    this.laneOf.clear();
    this.turn = 0;
    this.queued = 0;
    this.metrics?.queueDepth.set(0);
    for (const job of all) {
      if (job.onAbort) job.signal?.removeEventListener('abort', job.onAbort);
      job.reject(err);
    }
    for (const w of this.waiters.splice(0)) w.reject(err);
    this.freed();
    this.emit('settled');
  }

  /** When the oldest queued window was queued (each lane's first is its oldest). */
  private oldest(): number {
    let t = Infinity;
    for (const l of this.lanes) if (l.jobs[0]!.enqueuedAt < t) t = l.jobs[0]!.enqueuedAt;
    return t;
  }

  /** Up to n windows, one from each lane in turn. */
  private take(n: number): Job[] {
    const out: Job[] = [];
    while (out.length < n && this.lanes.length > 0) {
      if (this.turn >= this.lanes.length) this.turn = 0;
      const lane = this.lanes[this.turn]!;
      out.push(lane.jobs.shift()!);
      if (lane.jobs.length === 0) this.dropLane(lane);
      else this.turn = (this.turn + 1) % this.lanes.length;
    }
    this.queued -= out.length;
    return out;
  }

  private pump(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.queued > 0 && this.runner.idleCount() > 0) {
      const waited = performance.now() - this.oldest();
      const more = this.preparing > 0 && !this.stopped;
      if (this.queued < this.opts.maxBatch && waited < this.opts.maxDelayMs && more) {
        this.arm(this.opts.maxDelayMs - waited);
        return;
      }
      this.dispatch(this.take(this.opts.maxBatch));
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
    this.metrics?.queueDepth.set(this.queued);
    this.metrics?.batchSize.observe(n);
    this.freed();
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
    for (const w of this.waiters.splice(0)) w.reject(new BatcherStoppedError('server is shutting down'));
    this.emit('capacity');
    this.pump();
    while (this.queued > 0 || this.running > 0) {
      await once(this, 'settled');
      this.pump();
    }
  }
}
