import { EventEmitter } from 'node:events';
import { EnginePool } from '../engine/workerPool.js';
import type { Device, EngineKind } from '../engine/engine.js';
import type { Manifest } from '../model/manifest.js';
import { listModels, resolveModel, type ModelEntry } from '../model/repository.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import { Batcher } from './batcher.js';

export interface LoadedModel {
  readonly manifest: Manifest;
  readonly dir: string;
  readonly pool: EnginePool;
  readonly batcher: Batcher;
  readonly isDefault: boolean;
}

export interface RegistryOptions {
  root: string;
  defaultModel?: string;
  engine: EngineKind;
  device: Device;
  threads: number;
  workers: number;
  maxBatch: number;
  maxDelayMs: number;
  queueCapacity: number;
  maxLoadedModels: number;
}

export { InvalidModelRefError, ModelNotFoundError } from '../model/repository.js';
export class TooManyModelsError extends Error {}

const key = (m: Manifest) => `${m.name}@${m.version}`;

/**
 * Models served from the repository. The default model loads (and warms) at start; other versions load on
 * first use, at most maxLoadedModels at once. Names from requests are resolved only among the repository's
 * listed entries, never used as paths.
 *
 * Emits 'engineHealth' ({ model, isDefault, alive }) whenever a model's engine workers die or come back, so the
 * server can say NOT_SERVING while the default model has no live worker.
 */
export class ModelRegistry extends EventEmitter {
  private readonly loaded = new Map<string, Promise<LoadedModel>>();
  private defaultKey = '';

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
    const model = await this.load(entry.dir, entry.manifest, true);
    if (!model.manifest.trained) {
      this.log.warn({ model: this.defaultKey }, 'the default model is UNTRAINED (random weights): its masks and classes mean nothing');
    }
    return model;
  }

  get defaultModelKey(): string {
    return this.defaultKey;
  }

  /** Empty name: the default model. Empty version: the newest version of that name. */
  async get(name: string, version: string): Promise<LoadedModel> {
    if (!name && !version) return this.loaded.get(this.defaultKey)!;
    const exact = name && version ? this.loaded.get(`${name}@${version}`) : undefined;
    if (exact) return exact;
    const entry: ModelEntry = await resolveModel(this.opts.root, name || this.defaultKey.split('@')[0], version || undefined);
    const k = key(entry.manifest);
    const have = this.loaded.get(k);
    if (have) return have;
    if (this.loaded.size >= this.opts.maxLoadedModels) {
      throw new TooManyModelsError(`model ${k} is not loaded and ${this.loaded.size} models are loaded already (limit ${this.opts.maxLoadedModels})`);
    }
    return this.load(entry.dir, entry.manifest, false);
  }

  private load(dir: string, manifest: Manifest, isDefault: boolean): Promise<LoadedModel> {
    const k = key(manifest);
    const p = (async () => {
      const started = performance.now();
      const pool = await EnginePool.create({ kind: this.opts.engine, modelDir: dir, manifest, threads: this.opts.threads, workers: this.opts.workers, device: this.opts.device });
      const size = manifest.inputSize;
      const C = manifest.classes.length;
      const batcher = new Batcher(
        pool,
        { maxBatch: this.opts.maxBatch, maxDelayMs: this.opts.maxDelayMs, queueCapacity: this.opts.queueCapacity, inputLength: 3 * size * size, numClasses: C },
        this.metrics,
      );
      pool.on('error', (err: Error) => this.log.error({ err, model: k }, 'engine worker failed'));
      const health = (alive: number) => this.emit('engineHealth', { model: k, isDefault, alive });
      pool.on('down', health);
      pool.on('up', health);
      // Warm-up: the first run pays for graph optimisation; do it before health says SERVING.
      await pool.run({ data: new Uint8Array(3 * size * size), n: 1 });
      this.metrics.modelInfo.set({ name: manifest.name, version: manifest.version, engine: pool.engineName, trained: String(manifest.trained) }, 1);
      this.log.info({ model: k, engine: pool.engineName, workers: pool.size, threads: this.opts.threads, ms: Math.round(performance.now() - started) }, 'model loaded');
      return { manifest, dir, pool, batcher, isDefault };
    })();
    this.loaded.set(k, p);
    p.catch(() => this.loaded.delete(k));
    return p;
  }

  async list(): Promise<{ manifest: Manifest; loaded?: LoadedModel; isDefault: boolean }[]> {
    const entries = await listModels(this.opts.root);
    const out = [];
    for (const e of entries) {
      const k = key(e.manifest);
      const p = this.loaded.get(k);
      out.push({ manifest: e.manifest, loaded: p ? await p.catch(() => undefined) : undefined, isDefault: k === this.defaultKey });
    }
    return out;
  }

  async loadedModels(): Promise<LoadedModel[]> {
    const all = await Promise.allSettled(this.loaded.values());
    return all.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  }

  /** Stops every engine from starting batches and waits (up to timeoutMs) for the running ones: before a hard exit. */
  async halt(timeoutMs: number): Promise<void> {
    const models = await this.loadedModels();
    await Promise.all(models.map((m) => m.pool.halt(timeoutMs)));
  }

  /** Drains every batcher, then stops the engines. */
  async stop(): Promise<void> {
    const models = await this.loadedModels();
    await Promise.all(models.map((m) => m.batcher.stop()));
    await Promise.all(models.map((m) => m.pool.close()));
  }
}
