// Training jobs: a bounded queue, N at a time, each run in a child process at lower CPU priority, with records
// persisted durably on every transition. After a restart a job that was running resumes from its last checkpoint
// (its frozen examples and work folder are on disk) or ends FAILED with the reason; none is silently forgotten.
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { setPriority } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import type { ExampleStore, FrozenDataset } from '../../data/examples/exampleStore.js';
import { fsyncDir, writeJsonDurable } from '../../util/durableFile.js';
import { SETTINGS, type Setting } from '../fit/trainingData.js';
import type { ChildMessage } from './jobChild.js';
import type { FineTuneResult, FineTuneSpec } from './fineTune.js';

export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobStateName = (typeof JOB_STATES)[number];
const TERMINAL: readonly JobStateName[] = ['succeeded', 'failed', 'cancelled'];
export const isTerminal = (s: JobStateName) => TERMINAL.includes(s);
export const JOB_ID = /^j-[0-9a-z]{8,12}-[0-9a-f]{8}$/;
/** Times a job is resumed after restarts before it is failed (a job that kills its server must not loop). */
const MAX_ATTEMPTS = 3;
/** After SIGTERM, a child that has not stopped is killed. */
const KILL_GRACE_MS = 5000;

export const JobRecordSchema = z.object({
  format: z.literal(1),
  jobId: z.string(),
  state: z.enum(JOB_STATES),
  stage: z.string(),
  dataset: z.string(),
  datasetHash: z.string(),
  examples: z.number().int(),
  baseModel: z.string(),
  outputName: z.string(),
  setting: z.enum(SETTINGS),
  epochs: z.number().int(),
  seed: z.number().int(),
  activate: z.boolean(),
  epoch: z.number().int(),
  progress: z.number(),
  loss: z.number(),
  imagesPerSecond: z.number(),
  validationMetrics: z.record(z.string(), z.number()),
  baseMetrics: z.record(z.string(), z.number()),
  modelName: z.string(),
  modelVersion: z.string(),
  activated: z.boolean(),
  error: z.string(),
  attempts: z.number().int(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type JobRecord = z.infer<typeof JobRecordSchema>;

export interface StartJobRequest {
  dataset: string;
  baseName: string;
  baseVersion: string;
  outputName: string;
  setting: Setting;
  epochs: number;
  seed: number;
  activate: boolean;
}

export interface JobManagerOptions {
  /** Folder of job records, frozen examples and work folders. */
  dir: string;
  models: string;
  store: ExampleStore;
  concurrency: number;
  maxQueued: number;
  nice: number;
  maxStepsPerEpoch?: number;
  /** Makes a finished version the default (the model registry's activate). */
  activate(name: string, version: string): Promise<void>;
  /** Notes for the log: one per transition. */
  onTransition?(job: JobRecord, from: JobStateName | null): void;
  onEpoch?(job: JobRecord, seconds: number): void;
}

export class JobQueueFullError extends Error {
  override readonly name = 'JobQueueFullError';
}
export class JobNotFoundError extends Error {
  override readonly name = 'JobNotFoundError';
}
export class JobFinishedError extends Error {
  override readonly name = 'JobFinishedError';
}

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
  cancel: boolean;
}

/**
 * The activation gate: the new version is promoted only when its validation macro F1 is at least the base's on the
 * same examples. Returns null when it passes, else the reason.
 */
export function activationGate(newMetrics: Record<string, number>, baseMetrics: Record<string, number>, validationExamples: number): string | null {
  if (validationExamples === 0) return 'not activated: the dataset has no validation examples with masks to compare the new version and the base on';
  const n = newMetrics.macro_f1;
  const b = baseMetrics.macro_f1;
  if (b === undefined) return 'not activated: the base has other classes, so its macro F1 on these examples is not comparable; activate the version with ActivateModel after checking it';
  if (n === undefined) return 'not activated: the new version has no validation macro F1';
  if (n < b) return `not activated: validation macro F1 ${n.toFixed(4)} is below the base's ${b.toFixed(4)}`;
  return null;
}

function childEntry(): { file: string; execArgv: string[] } {
  const ts = import.meta.url.endsWith('.ts');
  const file = new URL(ts ? './jobChild.ts' : './jobChild.js', import.meta.url).pathname;
  return { file, execArgv: ts ? ['--import', import.meta.resolve('tsx')] : [] };
}

export class JobManager extends EventEmitter {
  private readonly jobs = new Map<string, JobRecord>();
  private readonly queue: string[] = [];
  private readonly running = new Map<string, Running>();
  private closing = false;

  private constructor(private readonly o: JobManagerOptions) {
    super();
    this.setMaxListeners(0);
  }

  /** Reads the job records; a job that was running is queued again to resume from its checkpoint. */
  static async open(o: JobManagerOptions): Promise<JobManager> {
    const m = new JobManager({ ...o, dir: resolve(o.dir) });
    const resumed: JobRecord[] = [];
    const ids = await readdir(m.o.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[]; // created with the first job
      throw err;
    });
    for (const id of ids.filter((n) => JOB_ID.test(n)).sort()) {
      let job: JobRecord;
      try {
        job = JobRecordSchema.parse(JSON.parse(await readFile(join(m.o.dir, id, 'job.json'), 'utf8')));
      } catch {
        continue; // a job whose record was never written whole was never acknowledged
      }
      m.jobs.set(id, job);
      if (job.state === 'queued') m.queue.push(id);
      if (job.state === 'running') resumed.push(job);
    }
    for (const job of resumed) {
      if (job.attempts >= MAX_ATTEMPTS) {
        await m.update(job.jobId, { state: 'failed', stage: 'failed', error: `the server stopped while this job ran, ${job.attempts} times; not resumed again` });
        continue;
      }
      await m.update(job.jobId, { state: 'queued', stage: 'resuming' });
      m.queue.unshift(job.jobId);
    }
    m.publishGauges();
    m.pump();
    return m;
  }

  list(): JobRecord[] {
    return [...this.jobs.values()].sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
  }

  get(jobId: string): JobRecord {
    const job = JOB_ID.test(jobId) ? this.jobs.get(jobId) : undefined;
    if (!job) throw new JobNotFoundError(`no training job ${JSON.stringify(jobId.slice(0, 80))}`);
    return job;
  }

  /** Freezes the dataset, writes the record durably and queues the job. */
  async start(req: StartJobRequest): Promise<JobRecord> {
    const queued = this.queue.length;
    if (queued >= this.o.maxQueued) throw new JobQueueFullError(`${queued} jobs are queued, the limit (max-queued-jobs); try again when one has started`);
    const now = Date.now();
    const jobId = `j-${now.toString(36)}-${randomBytes(4).toString('hex')}`;
    const dir = join(this.o.dir, jobId);
    await mkdir(this.o.dir, { recursive: true });
    let frozen: FrozenDataset;
    try {
      frozen = await this.o.store.freeze(req.dataset, join(dir, 'frozen'));
      const train = frozen.examples.filter((e) => e.split === 'train').length;
      if (train === 0) throw new Error(`dataset ${req.dataset} has no training examples`);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    await writeJsonDurable(join(dir, 'frozen.json'), frozen);
    const job: JobRecord = {
      format: 1,
      jobId,
      state: 'queued',
      stage: 'queued',
      dataset: req.dataset,
      datasetHash: frozen.hash,
      examples: frozen.examples.length,
      baseModel: `${req.baseName}@${req.baseVersion}`,
      outputName: req.outputName,
      setting: req.setting,
      epochs: req.epochs,
      seed: req.seed,
      activate: req.activate,
      epoch: 0,
      progress: 0,
      loss: 0,
      imagesPerSecond: 0,
      validationMetrics: {},
      baseMetrics: {},
      modelName: '',
      modelVersion: '',
      activated: false,
      error: '',
      attempts: 0,
      createdAt: new Date(now).toISOString(),
      updatedAt: new Date(now).toISOString(),
    };
    await writeJsonDurable(join(dir, 'job.json'), job);
    await fsyncDir(this.o.dir);
    this.jobs.set(jobId, job);
    this.queue.push(jobId);
    this.o.onTransition?.(job, null);
    this.publishGauges();
    this.emit('change', job);
    this.pump();
    return job;
  }

  /** Cancels a queued job at once; a running one is stopped (SIGTERM, then SIGKILL) and this resolves when it has. */
  async cancel(jobId: string): Promise<JobRecord> {
    const job = this.get(jobId);
    if (isTerminal(job.state)) throw new JobFinishedError(`job ${jobId} has already ended (${job.state})`);
    const i = this.queue.indexOf(jobId);
    if (i >= 0) {
      this.queue.splice(i, 1);
      return this.update(jobId, { state: 'cancelled', stage: 'cancelled', error: 'cancelled before it started' });
    }
    const r = this.running.get(jobId);
    if (r) {
      r.cancel = true;
      await this.update(jobId, { stage: 'cancelling' });
      await this.stopChild(r);
    }
    return this.get(jobId);
  }

  /** The job now, then every change until it ends; returns the unsubscribe function. */
  watch(jobId: string, listener: (job: JobRecord) => void): () => void {
    const job = this.get(jobId);
    const on = (j: JobRecord) => {
      if (j.jobId === jobId) listener(j);
    };
    this.on('change', on);
    listener(job);
    return () => this.off('change', on);
  }

  /** Stops running children (their jobs stay RUNNING on disk and resume at the next start). */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.running.values()].map((r) => this.stopChild(r)));
  }

  private async stopChild(r: Running): Promise<void> {
    if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGTERM');
    const timer = setTimeout(() => r.child.kill('SIGKILL'), KILL_GRACE_MS);
    await r.exited;
    clearTimeout(timer);
  }

  private async update(jobId: string, patch: Partial<JobRecord>, persist = true): Promise<JobRecord> {
    const prev = this.jobs.get(jobId)!;
    const job: JobRecord = { ...prev, ...patch, updatedAt: new Date().toISOString() };
    this.jobs.set(jobId, job);
    if (persist) await writeJsonDurable(join(this.o.dir, jobId, 'job.json'), job);
    if (job.state !== prev.state) {
      this.o.onTransition?.(job, prev.state);
      this.publishGauges();
    }
    this.emit('change', job);
    return job;
  }

  private publishGauges(): void {
    const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobStateName, number>;
    for (const j of this.jobs.values()) counts[j.state] += 1;
    this.emit('gauges', counts);
  }

  private pump(): void {
    while (!this.closing && this.running.size < this.o.concurrency && this.queue.length > 0) {
      const id = this.queue.shift()!;
      void this.run(id).catch((err) => this.emit('error', err));
    }
  }

  private async run(jobId: string): Promise<void> {
    const job = this.jobs.get(jobId)!;
    const dir = join(this.o.dir, jobId);
    const resume = job.attempts > 0;
    let frozen: FrozenDataset;
    try {
      frozen = JSON.parse(await readFile(join(dir, 'frozen.json'), 'utf8')) as FrozenDataset;
    } catch (err) {
      await this.update(jobId, { state: 'failed', stage: 'failed', error: `cannot read the job's frozen dataset: ${(err as Error).message}` });
      return;
    }
    const [baseName, baseVersion] = job.baseModel.split('@') as [string, string];
    const spec: FineTuneSpec = {
      jobId,
      models: resolve(this.o.models),
      baseName,
      baseVersion,
      outputName: job.outputName,
      setting: job.setting,
      epochs: job.epochs,
      seed: job.seed,
      maxStepsPerEpoch: this.o.maxStepsPerEpoch,
      frozenDir: join(dir, 'frozen'),
      frozen,
      workDir: join(dir, 'work'),
      resume,
    };
    await writeJsonDurable(join(dir, 'spec.json'), spec);
    await this.update(jobId, { state: 'running', stage: resume ? 'resuming' : 'starting', attempts: job.attempts + 1, error: '' });

    const { file, execArgv } = childEntry();
    const child = fork(file, [join(dir, 'spec.json')], { execArgv, stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'json' });
    const r: Running = { child, exited: once(child, 'exit').then(() => undefined), cancel: false };
    this.running.set(jobId, r);
    try {
      if (child.pid !== undefined) setPriority(child.pid, this.o.nice);
    } catch {
      // lowering our own child's priority is always allowed; a sandbox without setpriority keeps it as it is
    }
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
    let outcome: ChildMessage | undefined;
    let lastPersist = 0;
    child.on('message', (msg: ChildMessage) => {
      if (msg.type !== 'event') {
        outcome = msg;
        return;
      }
      const e = msg.event;
      if (e.kind === 'stage') {
        void this.update(jobId, { stage: e.stage });
        return;
      }
      const f = e.event;
      if (f.kind === 'start') {
        void this.update(jobId, { epoch: f.epochsDone, progress: f.epochsDone / f.epochs });
      } else if (f.kind === 'step') {
        const progress = (f.epoch - 1 + f.step / f.stepsPerEpoch) / f.epochs;
        const now = Date.now();
        // Progress is shown live; it is written to disk at most once a second (the epoch record always is).
        void this.update(jobId, { epoch: f.epoch, progress, loss: f.loss }, now - lastPersist > 1000 && ((lastPersist = now), true));
      } else if (f.kind === 'epoch') {
        const patch = { epoch: f.record.epoch, progress: f.record.epoch / f.epochs, loss: f.record.lossTotal, imagesPerSecond: f.imagesPerSecond };
        void this.update(jobId, patch).then((j) => this.o.onEpoch?.(j, f.record.seconds));
      }
    });
    await r.exited;
    this.running.delete(jobId);
    try {
      await this.finish(jobId, r, outcome, child, stderr);
    } finally {
      this.pump();
    }
  }

  private async finish(jobId: string, r: Running, outcome: ChildMessage | undefined, child: ChildProcess, stderr: string): Promise<void> {
    if (outcome?.type === 'done') {
      await this.succeeded(jobId, outcome.result);
      return;
    }
    if (r.cancel) {
      await this.update(jobId, { state: 'cancelled', stage: 'cancelled', error: 'cancelled' });
      return;
    }
    if (this.closing) return; // stays RUNNING on disk: the next start resumes it
    const why =
      outcome?.type === 'failed'
        ? outcome.error
        : `the training process ended (${child.signalCode ?? `exit code ${child.exitCode}`})${stderr ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`;
    await this.update(jobId, { state: 'failed', stage: 'failed', error: why });
  }

  private async succeeded(jobId: string, res: FineTuneResult): Promise<void> {
    const job = this.jobs.get(jobId)!;
    let activated = false;
    let error = '';
    if (job.activate) {
      const refused = activationGate(res.validationMetrics, res.baseMetrics, res.validationExamples);
      if (refused) error = refused;
      else {
        try {
          await this.o.activate(res.modelName, res.modelVersion);
          activated = true;
        } catch (err) {
          error = `not activated: ${(err as Error).message}`;
        }
      }
    }
    await this.update(jobId, {
      state: 'succeeded',
      stage: 'done',
      progress: 1,
      epoch: job.epochs,
      modelName: res.modelName,
      modelVersion: res.modelVersion,
      validationMetrics: res.validationMetrics,
      baseMetrics: res.baseMetrics,
      imagesPerSecond: res.imagesPerSecond ?? job.imagesPerSecond,
      activated,
      error,
    });
  }
}
