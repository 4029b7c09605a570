import type { sendUnaryData, ServerReadableStream } from '@grpc/grpc-js';
import {
  DatasetError,
  DatasetNotFoundError,
  ExampleRejectedError,
  StoreLimitError,
  type ExampleStore,
  type NewExample,
} from '../data/examples/exampleStore.js';
import { ExampleSplit, type Example, type ExampleError, type UploadExamplesRequest, type UploadExamplesResponse } from '../proto/gen/histoseg/v1/training.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { AuthGuard } from './authGuard.js';
import { invalidArgument, notFound, resourceExhausted, StatusError, toStatus, unavailable } from './errors.js';

/** Examples validated and written at once per stream (decoding overlaps the previous example's fsync). */
const UPLOAD_WINDOW = 4;
/** Rejections listed one by one in the answer; the rest are counted in one last entry. */
const MAX_LISTED_REJECTIONS = 1000;

export interface UploadDeps {
  store: ExampleStore;
  log: Logger;
  metrics: Metrics;
  auth?: AuthGuard;
  draining(): boolean;
}

function toNewExample(e: Example): NewExample | string {
  const split = e.split === ExampleSplit.EXAMPLE_SPLIT_VALIDATION ? 'validation' : e.split === ExampleSplit.EXAMPLE_SPLIT_TRAIN || e.split === ExampleSplit.EXAMPLE_SPLIT_UNSPECIFIED ? 'train' : undefined;
  if (!split) return `unknown split ${e.split}`;
  return { exampleId: e.exampleId, image: e.image, mpp: e.mpp, mask: e.mask, classIndex: e.classIndex, split };
}

/** UploadExamples: a client stream of examples into one dataset; each is acknowledged only once it is durable. */
export function uploadExamplesHandler(deps: UploadDeps) {
  return (call: ServerReadableStream<UploadExamplesRequest, UploadExamplesResponse>, cb: sendUnaryData<UploadExamplesResponse>) => {
    let accepted = 0;
    const rejected: ExampleError[] = [];
    let moreRejected = 0;
    let dataset = '';
    const reject = (exampleId: string, error: string) => {
      deps.metrics.examplesRejected.inc({ reason: 'invalid' });
      if (rejected.length < MAX_LISTED_REJECTIONS) rejected.push({ exampleId, error });
      else moreRejected += 1;
    };
    const run = async (): Promise<UploadExamplesResponse> => {
      if (deps.draining()) throw unavailable('server is shutting down');
      const denied = await deps.auth?.check(call, 'train', 'TrainingService/UploadExamples');
      if (denied) throw denied;
      let classes: string[] | undefined;
      const inflight = new Set<Promise<void>>();
      let failure: unknown;
      for await (const req of call as AsyncIterable<UploadExamplesRequest>) {
        if (failure) break;
        if (!classes) {
          if (!req.dataset) throw invalidArgument('the first message must name the dataset');
          dataset = req.dataset;
          ({ classes } = await deps.store.openDataset(req.dataset, req.classes));
        } else {
          if (req.dataset && req.dataset !== dataset) throw invalidArgument(`one upload stream goes to one dataset: ${dataset}, not ${req.dataset.slice(0, 80)}`);
          if (req.classes.length > 0 && (req.classes.length !== classes.length || req.classes.some((c, i) => c !== classes![i]))) {
            throw invalidArgument('classes may only be given in the first message (or repeated unchanged)');
          }
        }
        if (!req.example) continue;
        const ex = toNewExample(req.example);
        if (typeof ex === 'string') {
          reject(req.example.exampleId, ex);
          continue;
        }
        const p = deps.store.put(dataset, ex).then(
          () => {
            accepted += 1;
            deps.metrics.examplesAccepted.inc();
          },
          (err) => {
            if (err instanceof ExampleRejectedError) reject(ex.exampleId, err.message);
            else failure ??= err;
          },
        );
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
        if (inflight.size >= UPLOAD_WINDOW) await Promise.race(inflight);
      }
      await Promise.all(inflight);
      if (failure) throw failure;
      if (!classes) throw invalidArgument('empty upload: the first message must name the dataset');
      if (moreRejected > 0) rejected.push({ exampleId: '', error: `${moreRejected} more examples rejected` });
      return { dataset, accepted, rejected, datasetExamples: deps.store.describe(dataset)?.examples ?? 0 };
    };
    run().then(
      (res) => {
        deps.log.info({ dataset, accepted, rejected: rejected.length + moreRejected, examples: res.datasetExamples }, 'examples uploaded');
        cb(null, res);
      },
      (err) => {
        if (err instanceof StoreLimitError) {
          deps.metrics.examplesRejected.inc({ reason: 'limit' });
          err = resourceExhausted(`${err.message}; ${accepted} example(s) of this upload were accepted and are stored`);
        }
        const s = toStatus(err, { log: deps.log, metrics: deps.metrics, method: 'TrainingService/UploadExamples' });
        deps.log.warn({ dataset, accepted, code: s.code, reason: s.message }, 'upload ended with an error');
        cb(s.toServiceError(), null);
      },
    );
  };
}
