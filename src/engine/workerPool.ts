import { EventEmitter, once } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { Manifest } from '../model/manifest.js';
import type { Device, EngineKind, EngineOutput } from './engine.js';
import type { WorkerInit, WorkerReply } from './workerProtocol.js';
import type { GpuAdapterInfo } from '../util/gpuAdapter.js';

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
  /** Batches posted and not yet answered, by id; at most the pool's batchesPerWorker. */
  pending: Map<number, Pending>;
}

/**
 * Compiled JS runs the worker file directly. From TypeScript source (tsx), the worker first registers tsx's
 * loader itself: Node 20 does not hand the parent's module hooks to worker threads.
 */
function startWorker(workerData: WorkerInit): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./engineWorker.js', import.meta.url), { workerData });
  const api = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./engineWorker.ts', import.meta.url).href;
  const boot = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true, workerData });
}

/**
 * Engines in worker threads, batchesPerWorker batches per worker at a time (they run one after another inside it).
 * The batcher asks for a free place before it closes a batch, so batches form while the engine is busy.
 */
export class EnginePool extends EventEmitter {
  readonly engineName: string;
  /** GPU engines: the adapter the first worker's engine runs on. */
  readonly adapter?: GpuAdapterInfo;
  private readonly slots: Slot[];
  private readonly perWorker: number;
  private nextId = 1;
  private closed = false;

  private constructor(slots: Slot[], engineName: string, perWorker: number, adapter?: GpuAdapterInfo) {
    super();
    this.slots = slots;
    this.engineName = engineName;
    this.perWorker = perWorker;
    this.adapter = adapter;
  }

  static async create(opts: PoolOptions): Promise<EnginePool> {
    const perWorker = Math.max(1, Math.floor(opts.threads / opts.workers));
    const batches = opts.batchesPerWorker ?? 1;
    if (!Number.isInteger(batches) || batches < 1) throw new Error(`batchesPerWorker must be a positive integer, got ${batches}`);
    const slots: Slot[] = [];
    const names: string[] = [];
    let adapter: GpuAdapterInfo | undefined;
    try {
      for (let i = 0; i < opts.workers; i++) {
        const init: WorkerInit = {
          kind: opts.kind,
          modelDir: opts.modelDir,
          manifest: opts.manifest,
          threads: perWorker,
          device: opts.device ?? 'cpu',
          allowSoftwareGpu: opts.allowSoftwareGpu ?? false,
        };
        const worker = startWorker(init);
        slots.push({ worker, pending: new Map() });
        const [msg] = (await Promise.race([once(worker, 'message'), once(worker, 'error').then(([e]) => [{ type: 'failed', message: (e as Error).message }])])) as [WorkerReply];
        if (msg.type !== 'ready') throw new Error(`engine ${opts.kind} failed to start: ${msg.type === 'failed' ? msg.message : msg.type}`);
        names.push(msg.engine);
        adapter ??= msg.adapter;
      }
    } catch (err) {
      await Promise.all(slots.map((s) => s.worker.terminate()));
      throw err;
    }
    const pool = new EnginePool(slots, names[0], batches, adapter);
    for (const slot of slots) pool.attach(slot);
    return pool;
  }

  private attach(slot: Slot): void {
    slot.worker.on('message', (msg: WorkerReply) => {
      if (msg.type !== 'result' && msg.type !== 'error') return;
      const p = slot.pending.get(msg.id);
      if (!p) return;
      slot.pending.delete(msg.id);
      if (msg.type === 'result') p.resolve({ mask: msg.mask, cls: msg.cls, maskSize: msg.maskSize, seconds: msg.seconds, input: msg.rgb });
      else p.reject(new Error(`engine error: ${msg.message}`));
      this.emit('idle');
    });
    const fail = (err: Error) => {
      for (const p of slot.pending.values()) p.reject(new Error(`engine worker died: ${err.message}`));
      slot.pending.clear();
      if (!this.closed) this.emit('error', err);
    };
    slot.worker.on('error', fail);
    slot.worker.on('exit', (code) => {
      if (!this.closed) fail(new Error(`exit code ${code}`));
    });
  }

  get size(): number {
    return this.slots.length;
  }

  idleCount(): number {
    let n = 0;
    for (const s of this.slots) n += this.perWorker - s.pending.size;
    return n;
  }

  /** Runs a batch of RGB windows on the least loaded worker; the buffer is transferred (unusable afterwards). */
  run(input: RgbBatch): Promise<PoolResult> {
    let slot: Slot | undefined;
    for (const s of this.slots) if (s.pending.size < this.perWorker && (!slot || s.pending.size < slot.pending.size)) slot = s;
    if (!slot) return Promise.reject(new Error('no idle engine worker'));
    if (this.closed) return Promise.reject(new Error('engine pool closed'));
    const id = this.nextId++;
    const target = slot;
    return new Promise<PoolResult>((resolve, reject) => {
      target.pending.set(id, { resolve, reject });
      target.worker.postMessage({ type: 'run', id, rgb: input.data, n: input.n }, [input.data.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
