import { EventEmitter } from 'node:events';
import { EnginePool } from '../engine/workerPool.js';
import type { Device, EngineKind } from '../engine/engine.js';
import type { GpuAdapterInfo } from '../util/gpuAdapter.js';
import type { Manifest } from '../model/manifest.js';
import { listModels, readDefaultModel, resolveModel, writeDefaultModel, type ModelEntry } from '../model/repository.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import { Batcher, type BatchRunner } from './batcher.js';

/** What runs a loaded model's batches: the engine worker pool, or an engine in this thread (InProcessRunner). */
export interface ModelRunner extends BatchRunner {
  readonly engineName: string;
  /** GPU engines: the adapter they run on. */
  readonly adapter?: GpuAdapterInfo;
  close(): Promise<void>;
  /** Starts no new batch; resolves when none runs (or after timeoutMs). Runners with no threads of their own omit it. */
  halt?(timeoutMs: number): Promise<void>;
}

export interface LoadedModel {
  readonly manifest: Manifest;
  readonly dir: string;
  readonly pool: ModelRunner;
  readonly batcher: Batcher;
}

export interface RegistryOptions {
  root: string;
  defaultModel?: string;
  engine: EngineKind;
  device: Device;
  threads: number;
  workers: number;
  /** Batches posted to one worker at a time (the engine table's policy); default 1. */
  batchesPerWorker?: number;
  /** webgpu: accept a software adapter. */
  allowSoftwareGpu?: boolean;
  maxBatch: number;
  maxDelayMs: number;
  queueCapacity: number;
  /** Versions kept loaded; idle ones past it are unloaded, least recently used first. Never a reason to refuse one. */
  maxLoadedModels: number;
  /** Re-read the repository's default this often (ms) so a default changed by another server is followed; 0 = never. */
  pollMs?: number;
}

/** A model held by a caller (a stream) until release(); a held version is never unloaded. */
export interface ModelLease {
  readonly model: LoadedModel;
  release(): void;
}

export { InvalidModelRefError, ModelNotFoundError } from '../model/repository.js';

const key = (m: Manifest) => `${m.name}@${m.version}`;

interface Slot {
  readonly key: string;
  readonly promise: Promise<LoadedModel>;
  leases: number;
  lastUsed: number;
  unloading?: Promise<void>;
}

/**
 * Models served from the repository. The default model loads (and warms) at start; other versions load on first
 * use. Past maxLoadedModels, idle versions (no lease, not the default) are unloaded least recently used first,
 * after their batcher drains; a version in use is kept, so a new version is never refused. The default follows
 * `<root>/default.json`: activate() writes it, and a poll picks up a change written by any server sharing the
 * repository, loading the new default before switching to it (a failed load leaves the old one serving). Names
 * from requests are resolved only among the repository's listed entries, never used as paths.
 *
 * Emits 'engineHealth' ({ model, alive }) whenever a loaded version's engine workers die or come back, so the
 * server can say NOT_SERVING while the default model has no live worker.
 */
export class ModelRegistry extends EventEmitter {
  private readonly slots = new Map<string, Slot>();
  private defaultKey = '';
  private poller?: NodeJS.Timeout;
  private polling?: Promise<void>;
  private stopped = false;

  constructor(
    private readonly opts: RegistryOptions,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    super();
  }

  async start(): Promise<LoadedModel> {
    const entry = await resolveModel(this.opts.root, this.opts.defaultModel);
    this.defaultKey = key(entry.manifest);
    const model = await this.slot(entry).promise;
    if (!model.manifest.trained) {
      this.log.warn({ model: this.defaultKey }, 'the default model is UNTRAINED (random weights): its masks and classes mean nothing');
    } else if (model.manifest.demoOnly) {
      this.log.warn(
        { model: this.defaultKey, trainedOn: model.manifest.trainedOn },
        'the default model is for DEMONSTRATION only (trained on synthetic data): its masks say nothing about real tissue',
      );
    }
    if (this.opts.pollMs && !this.opts.defaultModel) {
      this.poller = setInterval(() => void this.poll(), this.opts.pollMs);
      this.poller.unref();
    }
    return model;
  }

  get defaultModelKey(): string {
    return this.defaultKey;
  }

  /** The repository entry a reference names (empty name: the default; empty version: the newest), without loading it. */
  async resolve(name: string, version: string): Promise<ModelEntry> {
    if (!name) {
      const [n, v] = this.defaultKey.split('@') as [string, string];
      return resolveModel(this.opts.root, n, v);
    }
    return resolveModel(this.opts.root, name, version || undefined);
  }

  /** Empty name: the default model. Empty version: the newest version of that name. */
  async get(name: string, version: string): Promise<LoadedModel> {
    const lease = await this.acquire(name, version);
    lease.release();
    return lease.model;
  }

  /** Like get, but the version stays loaded until release() (a stream holds one for its whole life). */
  async acquire(name: string, version: string): Promise<ModelLease> {
    let slot: Slot | undefined;
    if (!name && !version) slot = this.slots.get(this.defaultKey);
    else if (name && version) slot = this.slots.get(`${name}@${version}`);
    if (!slot || slot.unloading) {
      const entry: ModelEntry = await resolveModel(this.opts.root, name || this.defaultKey.split('@')[0], version || (name ? undefined : this.defaultKey.split('@')[1]));
      slot = this.slot(entry);
    }
    slot.leases += 1;
    slot.lastUsed = performance.now();
    let model: LoadedModel;
    try {
      model = await slot.promise;
    } catch (err) {
      slot.leases -= 1;
      throw err;
    }
    let released = false;
    const s = slot;
    return {
      model,
      release: () => {
        if (released) return;
        released = true;
        s.leases -= 1;
        s.lastUsed = performance.now();
        this.evict();
      },
    };
  }

  /**
   * Makes NAME@VERSION (empty version: the newest) the default: loads it first, then writes default.json durably
   * and switches. Returns the new and the previous default keys.
   */
  async activate(name: string, version: string): Promise<{ entry: ModelEntry; previous: string }> {
    const entry = await resolveModel(this.opts.root, name, version || undefined);
    await this.slot(entry).promise;
    const previous = this.defaultKey;
    await writeDefaultModel(this.opts.root, entry.name, entry.version);
    this.switchDefault(key(entry.manifest));
    return { entry, previous };
  }

  private switchDefault(k: string): void {
    if (k === this.defaultKey) return;
    const previous = this.defaultKey;
    this.defaultKey = k;
    this.log.info({ model: k, previous }, 'default model changed');
    this.evict();
  }

  /** One look at default.json; a change loads the new default, then switches. */
  poll(): Promise<void> {
    this.polling ??= (async () => {
      try {
        const def = await readDefaultModel(this.opts.root);
        if (!def || this.stopped) return;
        const entry = await resolveModel(this.opts.root, def.name, def.version);
        const k = key(entry.manifest);
        if (k === this.defaultKey) return;
        await this.slot(entry).promise;
        if (!this.stopped) this.switchDefault(k);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'model repository poll failed; the current default keeps serving');
      } finally {
        this.polling = undefined;
      }
    })();
    return this.polling;
  }

  private slot(entry: ModelEntry): Slot {
    const k = key(entry.manifest);
    const have = this.slots.get(k);
    if (have && !have.unloading) return have;
    const promise = (async () => {
      await have?.unloading;
      return this.load(entry.dir, entry.manifest);
    })();
    const slot: Slot = { key: k, promise, leases: 0, lastUsed: performance.now() };
    this.slots.set(k, slot);
    promise.then(
      () => this.evict(),
      () => {
        if (this.slots.get(k) === slot) this.slots.delete(k);
      },
    );
    return slot;
  }

  private async load(dir: string, manifest: Manifest): Promise<LoadedModel> {
    const k = key(manifest);
    const started = performance.now();
    const pool = await EnginePool.create({
      kind: this.opts.engine,
      modelDir: dir,
      manifest,
      threads: this.opts.threads,
      workers: this.opts.workers,
      device: this.opts.device,
      batchesPerWorker: this.opts.batchesPerWorker,
      allowSoftwareGpu: this.opts.allowSoftwareGpu,
    });
    const size = manifest.inputSize;
    const C = manifest.classes.length;
    const batcher = new Batcher(
      pool,
      { maxBatch: this.opts.maxBatch, maxDelayMs: this.opts.maxDelayMs, queueCapacity: this.opts.queueCapacity, inputLength: 3 * size * size, numClasses: C },
      this.metrics,
    );
    pool.on('error', (err: Error) => this.log.error({ err, model: k }, 'engine worker failed'));
    const health = (alive: number) => this.emit('engineHealth', { model: k, alive });
    pool.on('down', health);
    pool.on('up', health);
    try {
      // Warm-up: the first run pays for graph optimisation; do it before anyone is answered.
      await pool.run({ data: new Uint8Array(3 * size * size), n: 1 });
    } catch (err) {
      await pool.close().catch(() => undefined);
      throw err;
    }
    this.metrics.modelInfo.set({ name: manifest.name, version: manifest.version, engine: pool.engineName, trained: String(manifest.trained) }, 1);
    if (pool.adapter) {
      const { vendor, architecture, device, description, software } = pool.adapter;
      this.log.info({ model: k, engine: pool.engineName, gpu: { vendor, architecture, device, description, software } }, 'GPU adapter');
    }
    this.log.info({ model: k, engine: pool.engineName, workers: pool.size, threads: this.opts.threads, ms: Math.round(performance.now() - started) }, 'model loaded');
    return { manifest, dir, pool, batcher };
  }

  /** Unloads idle, non-default versions, least recently used first, while more than maxLoadedModels are loaded. */
  private evict(): void {
    const live = [...this.slots.values()].filter((s) => !s.unloading);
    let excess = live.length - this.opts.maxLoadedModels;
    if (excess <= 0) return;
    const idle = live.filter((s) => s.leases === 0 && s.key !== this.defaultKey).sort((a, b) => a.lastUsed - b.lastUsed);
    for (const s of idle) {
      if (excess-- <= 0) break;
      this.unload(s);
    }
  }

  private unload(s: Slot): void {
    s.unloading = (async () => {
      let model: LoadedModel;
      try {
        model = await s.promise;
      } catch {
        return;
      }
      // In-flight batches of this version finish first.
      await model.batcher.stop();
      await model.pool.close();
      this.metrics.modelInfo.remove({ name: model.manifest.name, version: model.manifest.version, engine: model.pool.engineName, trained: String(model.manifest.trained) });
      this.log.info({ model: s.key }, 'model unloaded (idle)');
    })().finally(() => {
      if (this.slots.get(s.key) === s) this.slots.delete(s.key);
    });
  }

  async list(): Promise<{ manifest: Manifest; loaded?: LoadedModel; isDefault: boolean }[]> {
    const entries = await listModels(this.opts.root);
    const out = [];
    for (const e of entries) {
      const k = key(e.manifest);
      const s = this.slots.get(k);
      out.push({ manifest: e.manifest, loaded: s && !s.unloading ? await s.promise.catch(() => undefined) : undefined, isDefault: k === this.defaultKey });
    }
    return out;
  }

  async loadedModels(): Promise<LoadedModel[]> {
    const all = await Promise.allSettled([...this.slots.values()].filter((s) => !s.unloading).map((s) => s.promise));
    return all.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  }

  /** Stops every engine from starting batches and waits (up to timeoutMs) for the running ones: before a hard exit. */
  async halt(timeoutMs: number): Promise<void> {
    const models = await this.loadedModels();
    await Promise.all(models.map((m) => m.pool.halt?.(timeoutMs)));
  }

  /** Drains every batcher, then stops the engines. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.poller);
    await this.polling;
    await Promise.allSettled([...this.slots.values()].map((s) => s.unloading));
    const models = await this.loadedModels();
    await Promise.all(models.map((m) => m.batcher.stop()));
    await Promise.all(models.map((m) => m.pool.close()));
  }
}
