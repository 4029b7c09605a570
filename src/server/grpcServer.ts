import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { enginePlacement } from '../engine/engineDevices.js';
import { ModelRegistry } from '../pipeline/modelRegistry.js';
import { TilePipeline } from '../pipeline/segmentTile.js';
import { ModelServiceService } from '../proto/gen/histoseg/v1/model.js';
import { SegmentationServiceService } from '../proto/gen/histoseg/v1/segmentation.js';
import { TrainingServiceService } from '../proto/gen/histoseg/v1/training.js';
import { ExampleStore } from '../data/examples/exampleStore.js';
import { JobManager } from '../training/jobs/jobManager.js';
import { trainingHandlers, WatchRegistry } from './trainingHandlers.js';
import { startTelemetryServer } from './httpServer.js';
import type { Logger } from '../telemetry/logger.js';
import { Metrics } from '../telemetry/metrics.js';
import { TokenAuth } from './auth.js';
import { AUTH_GUARD_DEFAULTS, AuthGuard } from './authGuard.js';
import type { Config } from './config.js';
import { modelServiceHandlers } from './modelServiceHandlers.js';
import { segmentTilesHandler } from './segmentTilesHandler.js';

const BASE_SERVICES = ['', 'histoseg.v1.SegmentationService', 'histoseg.v1.ModelService'];
/** Job records, frozen examples and work folders, inside the example store (not a valid dataset name). */
export const JOBS_DIR = '.jobs';

export interface RunningServer {
  readonly port: number;
  readonly metricsPort: number;
  readonly metrics: Metrics;
  readonly registry: ModelRegistry;
  readonly jobs?: JobManager;
  /** Health NOT_SERVING, refuse new streams, drain in-flight tiles (up to the grace time), then close. */
  shutdown(): Promise<void>;
  /** For an exit without drain: no new engine batch starts; resolves when none runs (or after timeoutMs). */
  halt(timeoutMs: number): Promise<void>;
}

function credentials(config: Config): ServerCredentials {
  if (!config.tlsCert || !config.tlsKey) return ServerCredentials.createInsecure();
  const ca = config.tlsClientCa ? readFileSync(config.tlsClientCa) : null;
  return ServerCredentials.createSsl(ca, [{ cert_chain: readFileSync(config.tlsCert), private_key: readFileSync(config.tlsKey) }], !!ca);
}

function protoRoot(): string {
  // Source layout: src/server -> ../../proto; compiled layout: dist/src/server -> ../../../proto.
  const here = fileURLToPath(import.meta.url);
  const up = here.includes('/dist/') ? '../../../proto' : '../../proto';
  return fileURLToPath(new URL(up, import.meta.url));
}

export async function startServer(config: Config, log: Logger, metrics = new Metrics()): Promise<RunningServer> {
  const auth = config.tokensFile ? TokenAuth.fromFile(config.tokensFile) : undefined;
  const creds = credentials(config);
  if (!auth) log.warn('no tokens file: RPCs are not authenticated (set HISTOSEG_TOKENS_FILE)');
  const guard = auth
    ? new AuthGuard(auth, log, metrics, { ...AUTH_GUARD_DEFAULTS, freeFailures: config.authFreeFailures, maxDelayMs: config.authMaxDelayMs })
    : undefined;
  if (!config.tlsCert) log.warn('TLS is off: tiles travel in clear text (set HISTOSEG_TLS_CERT and HISTOSEG_TLS_KEY)');

  const SERVICES = config.training ? [...BASE_SERVICES, 'histoseg.v1.TrainingService'] : BASE_SERVICES;
  const health = new HealthImplementation(Object.fromEntries(SERVICES.map((s) => [s, 'NOT_SERVING' as const])));
  let ready = false;
  let draining = false;
  const drain = new AbortController();
  const drainStats = { streams: 0, tilesRead: 0, tilesAnswered: 0 };
  /** Whether the default model has a live engine worker (see EnginePool's 'down' and 'up'). */
  let engineAlive = true;
  const telemetry = await startTelemetryServer(config.host, config.metricsPort, metrics.registry, { ready: () => ready && !draining && engineAlive });

  const placement = enginePlacement(config.engine, config.device);
  const registry = new ModelRegistry(
    {
      root: config.models,
      defaultModel: config.defaultModel,
      engine: config.engine,
      device: config.device,
      threads: config.threads,
      workers: config.workers ?? placement.workers(config.threads),
      batchesPerWorker: placement.batchesPerWorker,
      allowSoftwareGpu: config.allowSoftwareGpu,
      maxBatch: config.maxBatch ?? placement.maxBatch,
      maxDelayMs: config.maxDelayMs,
      queueCapacity: config.queueCapacity,
      maxLoadedModels: config.maxLoadedModels,
      pollMs: config.modelPollMs,
    },
    log,
    metrics,
  );
  registry.on('engineHealth', (e: { model: string; alive: number }) => {
    if (e.model !== registry.defaultModelKey) return;
    engineAlive = e.alive > 0;
    if (engineAlive) log.info({ model: e.model, alive: e.alive }, 'engine worker back');
    else log.error({ model: e.model }, 'no engine worker alive: NOT_SERVING until one is back');
    if (ready && !draining) for (const s of SERVICES) health.setStatus(s, engineAlive ? 'SERVING' : 'NOT_SERVING');
  });
  const streams = new Set<Promise<void>>();
  const server = new Server({
    'grpc.max_receive_message_length': config.maxMessageBytes,
    'grpc.max_send_message_length': config.maxMessageBytes,
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
  });
  server.addService(
    SegmentationServiceService,
    { segmentTiles: segmentTilesHandler({ config, registry, pipeline: new TilePipeline({ maxPixels: config.maxTilePixels }), log, metrics, auth: guard, draining: () => draining, drainSignal: drain.signal, drained: drainStats, track: (p) => (streams.add(p), void p.finally(() => streams.delete(p))) }) },
  );
  server.addService(ModelServiceService, modelServiceHandlers(registry, config.engine, { auth: guard, log, metrics }));
  let jobs: JobManager | undefined;
  const watches = new WatchRegistry();
  if (config.training) {
    const store = await ExampleStore.open(config.datasets, {
      maxExamplePixels: config.maxExamplePixels,
      maxDatasetExamples: config.maxDatasetExamples,
      maxDatasetBytes: config.maxDatasetBytes,
      maxStoreBytes: config.maxStoreBytes,
    });
    jobs = await JobManager.open({
      dir: join(config.datasets, JOBS_DIR),
      models: config.models,
      store,
      concurrency: config.trainingConcurrency,
      maxQueued: config.maxQueuedJobs,
      nice: config.trainingNice,
      maxStepsPerEpoch: config.trainingMaxSteps,
      activate: async (name, version) => {
        await registry.activate(name, version);
      },
      onTransition: (job, from) =>
        log.info(
          { job: job.jobId, from, to: job.state, dataset: job.dataset, base: job.baseModel, ...(job.modelVersion ? { model: `${job.modelName}@${job.modelVersion}`, activated: job.activated } : {}), ...(job.error ? { reason: job.error } : {}) },
          'training job ' + job.state,
        ),
      onEpoch: (job, seconds) => {
        metrics.trainingEpochSeconds.observe(seconds);
        metrics.trainingImagesPerSecond.set(job.imagesPerSecond);
        metrics.trainingLoss.set(job.loss);
        log.info({ job: job.jobId, epoch: job.epoch, epochs: job.epochs, loss: job.loss, imagesPerSecond: job.imagesPerSecond, seconds }, 'training epoch done');
      },
    });
    jobs.on('gauges', (counts: Record<string, number>) => {
      for (const [state, n] of Object.entries(counts)) metrics.trainingJobs.set({ state }, n);
    });
    jobs.on('error', (err: Error) => log.error({ err }, 'training job manager failed'));
    const counts: Record<string, number> = {};
    for (const j of jobs.list()) counts[j.state] = (counts[j.state] ?? 0) + 1;
    for (const state of ['queued', 'running', 'succeeded', 'failed', 'cancelled']) metrics.trainingJobs.set({ state }, counts[state] ?? 0);
    server.addService(TrainingServiceService, trainingHandlers({ config, jobs, registry, store, log, metrics, auth: guard, draining: () => draining }, watches));
  }
  health.addToServer(server);
  // Health is described too, so `grpcurl ... grpc.health.v1.Health/Check` works from reflection alone.
  const packageDefinition = loadSync(['histoseg/v1/segmentation.proto', 'histoseg/v1/model.proto', 'histoseg/v1/training.proto', 'health.proto'], {
    includeDirs: [protoRoot(), dirname(healthProtoPath)],
  });
  new ReflectionService(packageDefinition).addToServer(server);

  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${config.host.includes(':') ? `[${config.host}]` : config.host}:${config.port}`, creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
  } catch (err) {
    telemetry.server.close();
    throw new Error(`cannot listen on ${config.host}:${config.port}: ${(err as Error).message}`);
  }
  try {
    await registry.start();
  } catch (err) {
    server.forceShutdown();
    telemetry.server.close();
    throw err;
  }
  ready = true;
  for (const s of SERVICES) health.setStatus(s, 'SERVING');
  log.info({ host: config.host, port, metricsPort: telemetry.port, engine: config.engine, device: config.device, tls: !!config.tlsCert, auth: !!auth }, 'serving');

  let shuttingDown: Promise<void> | undefined;
  const shutdown = () =>
    (shuttingDown ??= (async () => {
      draining = true;
      drain.abort();
      for (const s of SERVICES) health.setStatus(s, 'NOT_SERVING');
      log.info({ streams: streams.size }, 'draining');
      const grace = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), config.drainTimeoutS * 1000).unref());
      const drained = (async () => {
        // Running jobs stop (they stay RUNNING on disk and resume at the next start).
        await jobs?.close();
        watches.endAll();
        await Promise.allSettled([...streams]);
        await registry.stop();
      })();
      if ((await Promise.race([drained, grace])) === 'timeout') {
        // Past the grace time, open calls are cancelled rather than waited for.
        log.warn({ streams: streams.size }, 'drain timed out; cancelling open streams');
        server.forceShutdown();
      } else {
        await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      }
      await registry.stop().catch(() => undefined);
      await new Promise<void>((resolve) => telemetry.server.close(() => resolve()));
      log.info({ drainedStreams: drainStats.streams, tilesRead: drainStats.tilesRead, tilesAnswered: drainStats.tilesAnswered }, 'stopped');
    })());

  return { port, metricsPort: telemetry.port, metrics, registry, jobs, shutdown, halt: (ms) => registry.halt(ms) };
}
