import { status, type sendUnaryData, type ServerUnaryCall, type ServerWritableStream } from '@grpc/grpc-js';
import { DatasetError, DatasetNotFoundError } from '../data/examples/exampleStore.js';
import { InvalidModelRefError, ModelNotFoundError, type ModelRegistry } from '../pipeline/modelRegistry.js';
import {
  JobState,
  type CancelTrainingRequest,
  type ListTrainingJobsRequest,
  type ListTrainingJobsResponse,
  type StartTrainingRequest,
  type TrainingJob,
  type TrainingServiceServer,
  type WatchTrainingRequest,
} from '../proto/gen/histoseg/v1/training.js';
import { SETTINGS, type Setting } from '../training/fit/trainingData.js';
import { isTerminal, JobFinishedError, JobNotFoundError, JobQueueFullError, type JobManager, type JobRecord, type JobStateName } from '../training/jobs/jobManager.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { Role } from './auth.js';
import type { AuthGuard } from './authGuard.js';
import type { Config } from './config.js';
import { invalidArgument, notFound, resourceExhausted, StatusError, toStatus, unavailable } from './errors.js';
import { uploadExamplesHandler, type UploadDeps } from './uploadExamplesHandler.js';

const STATE: Record<JobStateName, JobState> = {
  queued: JobState.JOB_STATE_QUEUED,
  running: JobState.JOB_STATE_RUNNING,
  succeeded: JobState.JOB_STATE_SUCCEEDED,
  failed: JobState.JOB_STATE_FAILED,
  cancelled: JobState.JOB_STATE_CANCELLED,
};
const MAX_EPOCHS = 10_000;

export function toTrainingJob(j: JobRecord): TrainingJob {
  return {
    jobId: j.jobId,
    state: STATE[j.state],
    dataset: j.dataset,
    epoch: j.epoch,
    epochs: j.epochs,
    progress: j.progress,
    loss: j.loss,
    validationMetrics: j.validationMetrics,
    baseMetrics: j.baseMetrics,
    modelName: j.modelName,
    modelVersion: j.modelVersion,
    activated: j.activated,
    error: j.error,
    baseModel: j.baseModel,
    datasetHash: j.datasetHash,
    examples: j.examples,
    stage: j.stage,
    imagesPerSecond: j.imagesPerSecond,
    createdAt: j.createdAt,
    updatedAt: j.updatedAt,
    setting: j.setting,
  };
}

export interface TrainingDeps extends UploadDeps {
  config: Config;
  jobs: JobManager;
  registry: ModelRegistry;
}

export function trainingHandlers(deps: TrainingDeps): TrainingServiceServer {
  const { jobs, log, auth } = deps;
  const unary =
    <Req, Res>(what: string, fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>, role: Role = 'train') =>
    (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
      const report = { log, metrics: deps.metrics, method: `TrainingService/${what}` };
      (async () => {
        const denied = await auth?.check(call, role, report.method);
        if (denied) throw denied;
        if (deps.draining()) throw unavailable('server is shutting down');
        return fn(call.request, call);
      })().then(
        (res) => cb(null, res),
        (err) => cb(toStatus(err, report).toServiceError(), null),
      );
    };

  return {
    uploadExamples: uploadExamplesHandler(deps),

    startTraining: unary<StartTrainingRequest, TrainingJob>('StartTraining', async (req, call) => {
      if (req.activate) {
        const denied = await auth?.check(call, 'admin', 'TrainingService/StartTraining');
        if (denied) throw new StatusError(denied.code, `activate: true ${denied.message.replace(/^this call /, '')}`);
      }
      if (!req.dataset) throw invalidArgument('dataset is required');
      const setting = (req.setting || 'S+C*') as Setting;
      if (!SETTINGS.includes(setting)) throw invalidArgument(`setting must be one of ${SETTINGS.join(', ')}, got ${JSON.stringify(req.setting.slice(0, 20))}`);
      if (req.epochs > MAX_EPOCHS) throw invalidArgument(`epochs must be at most ${MAX_EPOCHS}`);
      const [name, version, ...rest] = req.baseModel.split('@');
      if (rest.length > 0) throw invalidArgument('base_model is NAME or NAME@VERSION');
      // Resolves the base now, so the job records exactly which version it starts from.
      const base = name ? await deps.registry.resolve(name, version ?? '') : await deps.registry.resolve('', '');
      const outputName = req.outputName || base.name;
      if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(outputName)) throw invalidArgument(`invalid output_name ${JSON.stringify(outputName.slice(0, 80))}`);
      const job = await jobs.start({
        dataset: req.dataset,
        baseName: base.name,
        baseVersion: base.version,
        outputName,
        setting,
        epochs: req.epochs || deps.config.trainingEpochs,
        seed: req.seed,
        activate: req.activate,
      });
      return toTrainingJob(job);
    }),

    watchTraining: async (call: ServerWritableStream<WatchTrainingRequest, TrainingJob>) => {
      const report = { log, metrics: deps.metrics, method: 'TrainingService/WatchTraining' };
      const denied = await auth?.check(call, 'train', report.method);
      if (denied) return call.destroy(Object.assign(new Error(denied.message), toStatus(denied, report).toServiceError()));
      let stop: (() => void) | undefined;
      try {
        stop = jobs.watch(call.request.jobId, (j) => {
          if (call.cancelled || call.destroyed) return;
          call.write(toTrainingJob(j));
          if (isTerminal(j.state)) {
            stop?.();
            call.end();
          }
        });
        if (isTerminal(jobs.get(call.request.jobId).state)) stop();
      } catch (err) {
        const s = toStatus(err, report);
        call.destroy(Object.assign(new Error(s.message), s.toServiceError()));
        return;
      }
      call.on('cancelled', () => stop?.());
      call.on('close', () => stop?.());
    },

    cancelTraining: unary<CancelTrainingRequest, TrainingJob>('CancelTraining', async (req) => toTrainingJob(await jobs.cancel(req.jobId))),

    listTrainingJobs: unary<ListTrainingJobsRequest, ListTrainingJobsResponse>('ListTrainingJobs', async () => ({ jobs: jobs.list().map(toTrainingJob) })),
  };
}
