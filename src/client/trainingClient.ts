import type { ClientWritableStream } from '@grpc/grpc-js';
import type { ActivateModelResponse, ModelInfo } from '../proto/gen/histoseg/v1/model.js';
import type { Example, StartTrainingRequest, TrainingJob, UploadExamplesRequest, UploadExamplesResponse } from '../proto/gen/histoseg/v1/training.js';
import type { HistosegClients } from './segmentationClient.js';

/**
 * Streams examples into a dataset (classes go in the first message) and resolves with the server's answer. Writes
 * respect the stream's backpressure; onSent is called after each example is handed to the stream.
 */
export async function uploadExamples(
  clients: HistosegClients,
  dataset: string,
  classes: readonly string[],
  examples: Iterable<Example> | AsyncIterable<Example>,
  onSent?: (n: number, bytes: number) => void,
): Promise<UploadExamplesResponse> {
  let call!: ClientWritableStream<UploadExamplesRequest>;
  const answer = new Promise<UploadExamplesResponse>((resolve, reject) => {
    call = clients.training.uploadExamples(clients.metadata(), (err, res) => (err ? reject(err) : resolve(res!)));
  });
  const writing = (async () => {
    let first = true;
    let n = 0;
    let bytes = 0;
    const write = (req: UploadExamplesRequest) =>
      new Promise<void>((resolve) => {
        if (call.write(req)) resolve();
        else call.once('drain', () => resolve());
      });
    for await (const example of examples) {
      await write({ dataset: first ? dataset : '', classes: first ? [...classes] : [], example });
      first = false;
      n += 1;
      bytes += example.image.length + (example.mask?.length ?? 0);
      onSent?.(n, bytes);
    }
    if (first) await write({ dataset, classes: [...classes], example: undefined });
    call.end();
  })();
  // A failed upload rejects `answer`; the writer may then be stuck on drain, so do not wait for it.
  const res = await answer;
  await writing;
  return res;
}

const unary = <Req, Res>(fn: (req: Req, md: import('@grpc/grpc-js').Metadata, cb: (err: Error | null, res?: Res) => void) => unknown, clients: HistosegClients, req: Req) =>
  new Promise<Res>((resolve, reject) => fn(req, clients.metadata(), (err, res) => (err ? reject(err) : resolve(res!))));

export function startTraining(clients: HistosegClients, req: Partial<StartTrainingRequest> & { dataset: string }): Promise<TrainingJob> {
  const full: StartTrainingRequest = { baseModel: '', outputName: '', setting: '', epochs: 0, seed: 0, activate: false, ...req };
  return unary(clients.training.startTraining.bind(clients.training), clients, full);
}

export function cancelTraining(clients: HistosegClients, jobId: string): Promise<TrainingJob> {
  return unary(clients.training.cancelTraining.bind(clients.training), clients, { jobId });
}

export async function listTrainingJobs(clients: HistosegClients): Promise<TrainingJob[]> {
  return (await unary<object, { jobs: TrainingJob[] }>(clients.training.listTrainingJobs.bind(clients.training), clients, {})).jobs;
}

/** The job now, then every change until it ends. */
export async function* watchTraining(clients: HistosegClients, jobId: string, signal?: AbortSignal): AsyncGenerator<TrainingJob> {
  const call = clients.training.watchTraining({ jobId }, clients.metadata());
  signal?.addEventListener('abort', () => call.cancel(), { once: true });
  for await (const job of call as AsyncIterable<TrainingJob>) yield job;
}

export function activateModel(clients: HistosegClients, name: string, version: string): Promise<ActivateModelResponse> {
  return unary(clients.models.activateModel.bind(clients.models), clients, { name, version });
}

export async function listModels(clients: HistosegClients): Promise<ModelInfo[]> {
  return (await unary<object, { models: ModelInfo[] }>(clients.models.listModels.bind(clients.models), clients, {})).models;
}
