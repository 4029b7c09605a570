import { EventEmitter, once } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { Manifest } from '../model/manifest.js';
import type { Device, EngineKind, EngineOutput } from './engine.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './workerProtocol.js';
import type { GpuAdapterInfo } from '../util/gpuAdapter.js';
import { startModuleWorker } from '../util/moduleWorker.js';

export interface PoolOptions {
  kind: EngineKind;
  modelDir: string;
  manifest: Manifest;
  /** Total engine threads, split over the workers. */
  threads: number;
  workers: number;
  device?: Device;
  /** Batches posted to one worker at a time (the engine table's batchesPerWorker); default 1. */
  batchesPerWorker?: number;
  /** webgpu: accept a software adapter. */
  allowSoftwareGpu?: boolean;
}

/** n model windows as RGB bytes, size x size x 3 each (HWC). */
export interface RgbBatch {
  readonly data: Uint8Array;
  readonly n: number;
}

export interface PoolResult extends EngineOutput {
  /** Engine time of this batch inside the worker. */
  seconds: number;
  /** The input buffer, back from the worker for reuse (absent where a runner keeps it). */
  input?: Uint8Array;
}

interface Pending {
  resolve: (r: PoolResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  /** False from the moment its worker dies until a replacement has said ready. */
  alive: boolean;
  /** Batches posted and not yet answered, by id: at most the pool's batchesPerWorker. They run one after another. */
  pending: Map<number, Pending>;
}

/**
 * An engine worker died (crashed, was killed, ran out of memory): the batch it was running is lost. The caller may
 * retry elsewhere; the pool starts a replacement.
 */
export class EngineUnavailableError extends Error {
  override readonly name = 'EngineUnavailableError';
}

/** Waits before starting a replacement after a failed one: 1 s, doubling to 30 s (a model that no longer loads). */
const RESPAWN_BACKOFF_MS = [1_000, 30_000] as const;

function startWorker(workerData: WorkerInit): Worker {
  return startModuleWorker(import.meta.url, 'engineWorker', workerData);
}

/**
 * Engines in worker threads, batchesPerWorker batches per worker at a time (1 on cpu; on a GPU the next batch waits
 * inside the worker, so the device never idles for a round trip). The batcher asks for a free place before it
 * closes a batch, so batches form while the engine is busy.
 *
 * A worker that dies (idle or busy) is noticed from its 'exit' event: its batch is rejected with
 * EngineUnavailableError at once, and a replacement starts. Events: 'idle' (a worker can take a batch), 'down'
 * (a worker died; aliveCount() says how many are left), 'up' (a replacement is ready), 'unavailable' (no worker is
 * alive and a replacement failed to start: queued work should fail rather than wait), 'error' (what went wrong).
 */
export class EnginePool extends EventEmitter {
  readonly engineName: string;
  /** GPU engines: the adapter the engine runs on (as its first worker reported it). */
  readonly adapter?: GpuAdapterInfo;
  private readonly slots: Slot[];
  private readonly init: WorkerInit;
  private readonly perWorker: number;
  private nextId = 1;
  private closed = false;
  /** halt() was called: no new batch starts. */
  private halted = false;
  private respawnFailures = 0;

  private constructor(slots: Slot[], engineName: string, init: WorkerInit, perWorker: number, adapter?: GpuAdapterInfo) {
    super();
    this.slots = slots;
    this.engineName = engineName;
    this.init = init;
    this.perWorker = perWorker;
    this.adapter = adapter;
  }

  static async create(opts: PoolOptions): Promise<EnginePool> {
    const perWorker = Math.max(1, Math.floor(opts.threads / opts.workers));
    const batches = opts.batchesPerWorker ?? 1;
    if (!Number.isInteger(batches) || batches < 1) throw new Error(`batchesPerWorker must be a positive integer, got ${batches}`);
    const init: WorkerInit = {
      kind: opts.kind,
      modelDir: opts.modelDir,
      manifest: opts.manifest,
      threads: perWorker,
      device: opts.device ?? 'cpu',
      allowSoftwareGpu: opts.allowSoftwareGpu ?? false,
    };
    const slots: Slot[] = [];
    const names: string[] = [];
    let adapter: GpuAdapterInfo | undefined;
    try {
      for (let i = 0; i < opts.workers; i++) {
        const ready = await EnginePool.spawn(init, (w) => slots.push({ worker: w, alive: true, pending: new Map() }));
        names.push(ready.engine);
        adapter ??= ready.adapter;
      }
    } catch (err) {
      await Promise.all(slots.map((s) => s.worker.terminate()));
      throw err;
    }
    const pool = new EnginePool(slots, names[0], init, batches, adapter);
    for (const slot of slots) pool.attach(slot);
    return pool;
  }

  /** Starts one worker and waits for its engine to load; `started` sees the worker before it is ready. */
  private static async spawn(
    init: WorkerInit,
    started: (w: Worker) => void = () => undefined,
  ): Promise<{ worker: Worker; engine: string; adapter?: GpuAdapterInfo }> {
    const worker = startWorker(init);
    started(worker);
    const [msg] = (await Promise.race([
      once(worker, 'message'),
      once(worker, 'error').then(([e]) => [{ type: 'failed', message: (e as Error).message }]),
      once(worker, 'exit').then(([code]) => [{ type: 'failed', message: `worker exited with code ${code} while starting` }]),
    ])) as [WorkerReply];
    if (msg.type !== 'ready') {
      void worker.terminate();
      throw new Error(`engine ${init.kind} failed to start: ${msg.type === 'failed' ? msg.message : msg.type}`);
    }
    return { worker, engine: msg.engine, adapter: msg.adapter };
  }

  private attach(slot: Slot): void {
    const worker = slot.worker;
    worker.on('message', (msg: WorkerReply) => {
      if (slot.worker !== worker || (msg.type !== 'result' && msg.type !== 'error')) return;
      const p = slot.pending.get(msg.id);
      if (!p) return;
      slot.pending.delete(msg.id);
      if (msg.type === 'result') p.resolve({ mask: msg.mask, cls: msg.cls, maskSize: msg.maskSize, seconds: msg.seconds, input: msg.rgb });
      else p.reject(new Error(`engine error: ${msg.message}`));
      this.emit('idle');
    });
    let reported: Error | undefined;
    worker.on('error', (err: Error) => (reported = err));
    worker.on('exit', (code) => {
      if (this.closed || slot.worker !== worker) return;
      this.died(slot, reported ? `${reported.message} (exit code ${code})` : `exit code ${code}`);
    });
  }

  private died(slot: Slot, why: string): void {
    slot.alive = false; // nothing may be posted to it until the replacement is ready
    const lost = [...slot.pending.values()];
    slot.pending.clear();
    const err = new EngineUnavailableError(`engine worker died (${why})${lost.length > 0 ? `; ${lost.length === 1 ? 'its batch is' : 'its batches are'} lost` : ''}`);
    for (const p of lost) p.reject(err);
    this.report(err);
    this.emit('down', this.aliveCount());
    void this.respawn(slot);
  }

  private async respawn(slot: Slot): Promise<void> {
    while (!this.closed) {
      try {
        const { worker } = await EnginePool.spawn(this.init);
        if (this.closed) {
          await worker.terminate();
          return;
        }
        slot.worker = worker;
        slot.alive = true;
        this.respawnFailures = 0;
        this.attach(slot);
        this.emit('up', this.aliveCount());
        this.emit('idle');
        return;
      } catch (err) {
        this.report(err as Error);
        if (this.aliveCount() === 0) this.emit('unavailable', new EngineUnavailableError(`no engine worker is alive: ${(err as Error).message}`));
        const ms = Math.min(RESPAWN_BACKOFF_MS[1], RESPAWN_BACKOFF_MS[0] * 2 ** this.respawnFailures++);
        await new Promise((r) => setTimeout(r, ms).unref());
      }
    }
  }

  /** 'error' for whoever listens (the registry logs it); an EventEmitter throws an unheard 'error'. */
  private report(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  get size(): number {
    return this.slots.length;
  }

  /** Workers with a live engine (busy or idle). */
  aliveCount(): number {
    let n = 0;
    for (const s of this.slots) if (s.alive) n++;
    return n;
  }

  idleCount(): number {
    let n = 0;
    for (const s of this.slots) if (s.alive) n += this.perWorker - s.pending.size;
    return n;
  }

  /**
   * Makes worker i exit the way a crash would (no notice to the pool), for tests and failure drills: the pool finds
   * out from its exit, as for any other death. The worker exits when it reads this message, so a batch posted to it
   * afterwards is lost with it. (Not Worker.terminate(): terminating a worker inside onnxruntime's native run
   * aborts the whole process.)
   */
  killWorker(i: number): void {
    this.slots[i]!.worker.postMessage({ type: 'crash' } satisfies WorkerRequest);
  }

  /** Index of a worker running a batch now, or -1. */
  busyWorker(): number {
    return this.slots.findIndex((s) => s.alive && s.pending.size > 0);
  }

  /**
   * Starts no new batch and resolves once no batch is running (or after timeoutMs): the process can then exit
   * without terminating a worker inside a native engine call, which aborts the whole process (Napi::Error).
   */
  async halt(timeoutMs: number): Promise<void> {
    this.halted = true;
    const idle = () => this.slots.every((s) => s.pending.size === 0);
    const running = idle() ? Promise.resolve() : new Promise<void>((r) => this.on('idle', () => idle() && r()));
    const timer = new Promise<void>((r) => setTimeout(r, timeoutMs).unref());
    await Promise.race([running, timer]);
  }

  /** Runs a batch of RGB windows on the least loaded live worker; the buffer is transferred (unusable afterwards). */
  run(input: RgbBatch): Promise<PoolResult> {
    if (this.closed || this.halted) return Promise.reject(new EngineUnavailableError('engine pool closed'));
    let slot: Slot | undefined;
    for (const s of this.slots) if (s.alive && s.pending.size < this.perWorker && (!slot || s.pending.size < slot.pending.size)) slot = s;
    if (!slot) return Promise.reject(new Error('no idle engine worker'));
    const target = slot;
    const id = this.nextId++;
    return new Promise<PoolResult>((resolve, reject) => {
      target.pending.set(id, { resolve, reject });
      const slot = target;
      slot.worker.postMessage({ type: 'run', id, rgb: input.data, n: input.n }, [input.data.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.slots) for (const p of s.pending.values()) p.reject(new EngineUnavailableError('engine pool closed'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
