import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { connect, segmentTiles, type HistosegClients } from '../src/client/segmentationClient.js';
import { listModels, startTraining, uploadExamples, watchTraining } from '../src/client/trainingClient.js';
import { TileStatus } from '../src/proto/gen/histoseg/v1/segmentation.js';
import { JobState, type TrainingJob } from '../src/proto/gen/histoseg/v1/training.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { BASE, CLASSES, synthExamples, TOKENS, trainingSandbox } from './support/training.js';

describe('fine-tune over gRPC, end to end', () => {
  let box: ReturnType<typeof trainingSandbox>;
  let server: RunningServer;
  let admin: HistosegClients;

  before(async () => {
    box = trainingSandbox();
    const config = loadConfig(
      { port: 0, metricsPort: 0, threads: 1, logLevel: 'silent', models: box.models, datasets: box.datasets, tokensFile: box.tokensFile, trainingMaxSteps: 1, trainingNice: 5 },
      {},
    );
    server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
    admin = connect(`127.0.0.1:${server.port}`, { token: TOKENS.admin });
  });
  after(async () => {
    admin?.close();
    await server?.shutdown();
    rmSync(box.dir, { recursive: true, force: true });
  });

  it('uploads synthetic tiles with masks and class labels, trains a tiny job, activates it and segments with it', async () => {
    const examples = await synthExamples({ seed: 7, tiles: 6, validation: 2, classExamples: 3 });
    const up = await uploadExamples(admin, 'synth-e2e', CLASSES, examples);
    assert.deepEqual(up.rejected, []);
    assert.equal(up.accepted, examples.length);
    assert.equal(up.datasetExamples, examples.length);

    const job = await startTraining(admin, { dataset: 'synth-e2e', epochs: 1, seed: 1, activate: true });
    assert.equal(job.state, JobState.JOB_STATE_QUEUED);
    assert.equal(job.baseModel, `${BASE.name}@${BASE.version}`);
    assert.equal(job.examples, examples.length);
    assert.match(job.datasetHash, /^[0-9a-f]{64}$/);

    const seen: TrainingJob[] = [];
    for await (const j of watchTraining(admin, job.jobId)) seen.push(j);
    const last = seen[seen.length - 1]!;
    assert.equal(last.state, JobState.JOB_STATE_SUCCEEDED, `job ended ${JobState[last.state]}: ${last.error}`);
    assert.ok(seen.some((j) => j.state === JobState.JOB_STATE_RUNNING), 'the watch saw the job running');
    assert.equal(last.modelName, BASE.name);
    assert.ok(last.modelVersion && last.modelVersion !== BASE.version);
    assert.ok('macro_f1' in last.validationMetrics && 'macro_f1' in last.baseMetrics, JSON.stringify(last));
    // The gate: activated exactly when the new version is at least as good as the base.
    assert.equal(last.activated, last.validationMetrics.macro_f1! >= last.baseMetrics.macro_f1!, last.error);

    const models = await listModels(admin);
    const made = models.find((m) => m.name === last.modelName && m.version === last.modelVersion);
    assert.ok(made, 'the new version is listed');
    assert.equal(made.parent, `${BASE.name}@${BASE.version}`);
    assert.equal(made.isDefault, last.activated);

    const tile = { tileId: 't', image: examples[0]!.image, mpp: 0, x: 0, y: 0 };
    const answers = [];
    for await (const r of segmentTiles(admin, [tile], { modelName: last.modelName, modelVersion: last.modelVersion })) answers.push(r);
    assert.equal(answers.length, 1);
    assert.notEqual(answers[0]!.status, TileStatus.TILE_STATUS_INVALID, answers[0]!.error);
    assert.equal(answers[0]!.modelVersion, last.modelVersion);
  });
});
