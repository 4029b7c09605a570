import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status, type ServiceError } from '@grpc/grpc-js';
import sharp from 'sharp';
import { connect, segmentTiles, type HistosegClients } from '../src/client/segmentationClient.js';
import { activateModel, cancelTraining, listModels, listTrainingJobs, startTraining, uploadExamples, watchTraining, watchUntil } from '../src/client/trainingClient.js';
import { encodeLabelMap } from '../src/data/labels/labelMap.js';
import { ExampleSplit, JobState, type Example, type TrainingJob } from '../src/proto/gen/histoseg/v1/training.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { activationGate } from '../src/training/jobs/jobManager.js';
import { BASE, BUNDLED_MODELS, CLASSES, synthExamples, TOKENS, trainingSandbox } from './support/training.js';
import { cpSync } from 'node:fs';

const code = (c: status) => (err: ServiceError) => {
  assert.equal(err.code, c, `expected ${status[c]}, got ${status[err.code]}: ${err.details}`);
  return true;
};

async function start(box: ReturnType<typeof trainingSandbox>, extra: Record<string, unknown> = {}): Promise<RunningServer> {
  const config = loadConfig(
    { port: 0, metricsPort: 0, threads: 1, logLevel: 'silent', models: box.models, datasets: box.datasets, tokensFile: box.tokensFile, trainingMaxSteps: 1, modelPollMs: 100, ...extra },
    {},
  );
  return startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
}

async function png(width: number, height: number, grey = false): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: { r: 200, g: 120, b: 160 } } })
    .toColourspace(grey ? 'b-w' : 'srgb')
    .png()
    .toBuffer();
}

const ex = (fields: Partial<Example> & { exampleId: string; image: Uint8Array }): Example => ({ mpp: 0, mask: undefined, classIndex: undefined, split: ExampleSplit.EXAMPLE_SPLIT_TRAIN, ...fields });

describe('TrainingService', () => {
  let box: ReturnType<typeof trainingSandbox>;
  let server: RunningServer;
  let admin: HistosegClients;
  let train: HistosegClients;
  let seg: HistosegClients;

  before(async () => {
    box = trainingSandbox();
    server = await start(box, { maxDatasetExamples: 12, maxQueuedJobs: 1 });
    const addr = `127.0.0.1:${server.port}`;
    admin = connect(addr, { token: TOKENS.admin });
    train = connect(addr, { token: TOKENS.train });
    seg = connect(addr, { token: TOKENS.segment });
  });
  after(async () => {
    for (const c of [admin, train, seg]) c?.close();
    await server?.shutdown();
    rmSync(box.dir, { recursive: true, force: true });
  });

  it('checks every example on arrival: bad ones are rejected with their id and reason while the stream goes on', async () => {
    const image = await png(64, 48);
    const mask = (w: number, h: number, v: number) => encodeLabelMap({ labels: new Uint8Array(w * h).fill(v), width: w, height: h });
    const res = await uploadExamples(train, 'checks', CLASSES, [
      ex({ exampleId: 'good-mask', image, mask: await mask(64, 48, 2) }),
      ex({ exampleId: 'good-class', image, classIndex: 3 }),
      ex({ exampleId: 'not-an-image', image: Buffer.from('hello, not a picture'), classIndex: 1 }),
      ex({ exampleId: 'wrong-size', image, mask: await mask(32, 48, 1) }),
      ex({ exampleId: 'value-too-big', image, mask: await mask(64, 48, 4) }),
      ex({ exampleId: 'class-out-of-range', image, classIndex: 4 }),
      ex({ exampleId: 'no-label', image }),
      ex({ exampleId: 'bad-mpp', image, classIndex: 1, mpp: -1 }),
      ex({ exampleId: '', image, classIndex: 1 }),
      ex({ exampleId: 'colour-mask', image, mask: await png(64, 48) }),
    ]);
    assert.equal(res.accepted, 2);
    assert.equal(res.datasetExamples, 2);
    const why = Object.fromEntries(res.rejected.map((r) => [r.exampleId, r.error]));
    assert.match(why['not-an-image']!, /image: not an image/);
    assert.match(why['wrong-size']!, /mask is 32x48, the image 64x48/);
    assert.match(why['value-too-big']!, /mask has value 4, but the dataset has 4 classes/);
    assert.match(why['class-out-of-range']!, /class_index 4 is out of range/);
    assert.match(why['no-label']!, /exactly one label/);
    assert.match(why['bad-mpp']!, /mpp must be/);
    assert.match(why['']!, /example_id is empty/);
    assert.match(why['colour-mask']!, /colour image|not grey/);
    assert.equal(res.rejected.length, 8);

    // The same id again replaces the example: the count stays.
    const again = await uploadExamples(train, 'checks', [], [ex({ exampleId: 'good-class', image, classIndex: 1 })]);
    assert.equal(again.accepted, 1);
    assert.equal(again.datasetExamples, 2);
  });

  it('refuses classes that disagree with the dataset, a new dataset without classes, and names that are not names', async () => {
    const image = await png(16, 16);
    await assert.rejects(uploadExamples(train, 'checks', ['a', 'b'], [ex({ exampleId: 'x', image, classIndex: 0 })]), code(status.INVALID_ARGUMENT));
    await assert.rejects(uploadExamples(train, 'brand-new', [], [ex({ exampleId: 'x', image, classIndex: 0 })]), code(status.INVALID_ARGUMENT));
    for (const name of ['../escape', 'UPPER', '.jobs', 'a/b', '']) {
      await assert.rejects(uploadExamples(train, name, CLASSES, [ex({ exampleId: 'x', image, classIndex: 0 })]), code(status.INVALID_ARGUMENT), name);
    }
    assert.ok(!existsSync(join(box.dir, 'escape')), 'no folder outside the store');
    assert.deepEqual(readdirSync(box.datasets).filter((n) => !n.startsWith('.')).sort(), ['checks']);
  });

  it('answers RESOURCE_EXHAUSTED at the dataset limit and keeps what was accepted', async () => {
    const image = await png(16, 16);
    const many = Array.from({ length: 15 }, (_, i) => ex({ exampleId: `n${i}`, image, classIndex: i % 4 }));
    await assert.rejects(uploadExamples(train, 'limited', CLASSES, many), (err: ServiceError) => {
      assert.equal(err.code, status.RESOURCE_EXHAUSTED, err.details);
      assert.match(err.details, /max-dataset-examples/);
      return true;
    });
    const after = await uploadExamples(train, 'limited', [], []);
    assert.equal(after.datasetExamples, 12);
  });

  it('roles: segment may not upload or train, train may not activate, admin may', async () => {
    const image = await png(16, 16);
    await assert.rejects(uploadExamples(seg, 'roles', CLASSES, [ex({ exampleId: 'x', image, classIndex: 0 })]), code(status.PERMISSION_DENIED));
    await assert.rejects(startTraining(seg, { dataset: 'checks' }), code(status.PERMISSION_DENIED));
    await assert.rejects(listTrainingJobs(seg), code(status.PERMISSION_DENIED));
    await assert.rejects(cancelTraining(seg, 'j-0000000000-00000000'), code(status.PERMISSION_DENIED));
    await assert.rejects((async () => {
      for await (const _ of watchTraining(seg, 'j-0000000000-00000000')) void _;
    })(), code(status.PERMISSION_DENIED));
    await assert.rejects((async () => {
      for await (const _ of watchTraining(train, 'j-0000000000-00000000')) void _;
    })(), code(status.NOT_FOUND));
    await assert.rejects(startTraining(train, { dataset: 'checks', activate: true }), code(status.PERMISSION_DENIED));
    await assert.rejects(activateModel(train, BASE.name, BASE.version), code(status.PERMISSION_DENIED));
    const ok = await activateModel(admin, BASE.name, BASE.version);
    assert.equal(ok.model?.version, BASE.version);
    assert.equal(ok.model?.isDefault, true);
    const noAuth = connect(`127.0.0.1:${server.port}`);
    await assert.rejects(listTrainingJobs(noAuth), code(status.UNAUTHENTICATED));
    noAuth.close();
  });

  it('queues jobs up to the limit, cancels a queued one at once and a running one within seconds, leaving no version', async () => {
    const examples = await synthExamples({ seed: 3, tiles: 4 });
    await uploadExamples(train, 'queue', CLASSES, examples);
    const before = (await listModels(train)).map((m) => `${m.name}@${m.version}`);
    await assert.rejects(startTraining(train, { dataset: 'no-such-dataset' }), code(status.NOT_FOUND));
    const running = await startTraining(train, { dataset: 'queue', epochs: 10_000, outputName: 'never' });
    const queued = await startTraining(train, { dataset: 'queue', epochs: 1, outputName: 'never' });
    await assert.rejects(startTraining(train, { dataset: 'queue', epochs: 1 }), code(status.RESOURCE_EXHAUSTED));
    await assert.rejects(startTraining(train, { dataset: 'queue', setting: 'X' }), code(status.INVALID_ARGUMENT));
    await assert.rejects(cancelTraining(train, 'j-nonsense'), code(status.NOT_FOUND));

    const c1 = await cancelTraining(train, queued.jobId);
    assert.equal(c1.state, JobState.JOB_STATE_CANCELLED);
    const seen = await watchUntil(train, running.jobId, (j) => j.stage === 'training' && j.epoch >= 1);
    assert.equal(seen.state, JobState.JOB_STATE_RUNNING);
    const c2 = await cancelTraining(train, running.jobId);
    assert.equal(c2.state, JobState.JOB_STATE_CANCELLED);
    await assert.rejects(cancelTraining(train, running.jobId), code(status.FAILED_PRECONDITION));
    const afterList = (await listModels(train)).map((m) => `${m.name}@${m.version}`);
    assert.deepEqual(afterList, before, 'a cancelled job leaves no version');
    assert.ok(!existsSync(join(box.models, 'never')) || readdirSync(join(box.models, 'never')).length === 0);
    const jobs = await listTrainingJobs(train);
    assert.deepEqual(
      jobs.filter((j) => j.dataset === 'queue').map((j) => j.state),
      [JobState.JOB_STATE_CANCELLED, JobState.JOB_STATE_CANCELLED],
    );
  });

  it('a job over a dataset with other classes fine-tunes from the base body and is not activated without a comparable base', async () => {
    const examples = (await synthExamples({ seed: 5, tiles: 4, validation: 1 })).map((e) => ({ ...e, mask: e.mask && e.mask }));
    // Two classes: tissue lesion vs normal, from the four-class masks.
    const two = await Promise.all(
      examples.map(async (e) => {
        const { data, info } = await sharp(e.mask!).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
        const labels = new Uint8Array(data.length);
        for (let i = 0; i < data.length; i++) labels[i] = data[i]! > 0 ? 1 : 0;
        return { ...e, mask: await encodeLabelMap({ labels, width: info.width, height: info.height }) };
      }),
    );
    await uploadExamples(train, 'two-classes', ['normal', 'lesion'], two);
    const job = await startTraining(admin, { dataset: 'two-classes', epochs: 1, outputName: 'two-class', activate: true });
    const last = await watchUntil(admin, job.jobId, () => false);
    assert.equal(last.state, JobState.JOB_STATE_SUCCEEDED, last.error);
    assert.equal(last.activated, false);
    assert.match(last.error, /other classes/);
    const m = (await listModels(admin)).find((x) => x.name === 'two-class')!;
    assert.deepEqual(m.classes.map((c) => c.name), ['normal', 'lesion']);
    assert.equal(m.parent, `${BASE.name}@${BASE.version}`);
  });
});

describe('activation gate', () => {
  it('promotes only when the new macro F1 is at least the base one, on validation examples', () => {
    assert.equal(activationGate({ macro_f1: 0.5 }, { macro_f1: 0.5 }, 3), null);
    assert.equal(activationGate({ macro_f1: 0.6 }, { macro_f1: 0.5 }, 3), null);
    assert.match(activationGate({ macro_f1: 0.4 }, { macro_f1: 0.5 }, 3)!, /0\.4000 is below the base's 0\.5000/);
    assert.match(activationGate({ macro_f1: 0.9 }, { macro_f1: 0.5 }, 0)!, /no validation examples/);
    assert.match(activationGate({ macro_f1: 0.9 }, {}, 2)!, /other classes/);
  });
});

describe('hot reload: a second server on the same model repository', () => {
  let box: ReturnType<typeof trainingSandbox>;
  let a: RunningServer;
  let b: RunningServer;
  let ca: HistosegClients;
  let cb: HistosegClients;

  before(async () => {
    box = trainingSandbox('histoseg-hot-reload-');
    cpSync(join(BUNDLED_MODELS, BASE.name, '0.1.0'), join(box.models, BASE.name, '0.1.0'), { recursive: true });
    a = await start(box);
    b = await start(box, { training: false });
    ca = connect(`127.0.0.1:${a.port}`, { token: TOKENS.admin });
    cb = connect(`127.0.0.1:${b.port}`, { token: TOKENS.segment });
  });
  after(async () => {
    ca?.close();
    cb?.close();
    await a?.shutdown();
    await b?.shutdown();
    rmSync(box.dir, { recursive: true, force: true });
  });

  it('follows a default activated on the other server; a stream that started on the old version finishes on it', async () => {
    const examples = await synthExamples({ seed: 11, tiles: 1 });
    const tile = (id: string) => ({ tileId: id, image: examples[0]!.image, mpp: 0, x: 0, y: 0 });
    // A stream on B that holds the current default while the default changes under it.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* tiles() {
      yield tile('before');
      await gate;
      yield tile('after');
    }
    const answers: { tileId: string; modelVersion: string }[] = [];
    const stream = (async () => {
      for await (const r of segmentTiles(cb, tiles())) answers.push(r);
    })();

    const res = await activateModel(ca, BASE.name, '0.1.0');
    assert.equal(res.previous, `${BASE.name}@${BASE.version}`);
    // B polls the repository: wait until its default is the new one.
    while (b.registry.defaultModelKey !== `${BASE.name}@0.1.0`) await new Promise((r) => setTimeout(r, 50));
    const listed = await listModels(cb);
    assert.equal(listed.find((m) => m.isDefault)?.version, '0.1.0');
    release();
    await stream;
    assert.deepEqual(answers.map((x) => [x.tileId, x.modelVersion]), [['before', BASE.version], ['after', BASE.version]]);
    const fresh = [];
    for await (const r of segmentTiles(cb, [tile('new-stream')])) fresh.push(r);
    assert.equal(fresh[0]!.modelVersion, '0.1.0');
    // Rollback: activating the previous version.
    await activateModel(ca, BASE.name, BASE.version);
    while (b.registry.defaultModelKey !== `${BASE.name}@${BASE.version}`) await new Promise((r) => setTimeout(r, 50));
  });

  it('the second server does not serve the TrainingService (training: false)', async () => {
    const c = connect(`127.0.0.1:${b.port}`, { token: TOKENS.admin });
    await assert.rejects(listTrainingJobs(c), code(status.UNIMPLEMENTED));
    c.close();
  });
});

describe('graceful shutdown with a job running', () => {
  let box: ReturnType<typeof trainingSandbox>;
  after(() => rmSync(box.dir, { recursive: true, force: true }));

  it('ends open watches with UNAVAILABLE, stops the job, and the next start resumes it', async () => {
    box = trainingSandbox('histoseg-shutdown-');
    let server = await start(box);
    let c = connect(`127.0.0.1:${server.port}`, { token: TOKENS.train });
    await uploadExamples(c, 'stop', CLASSES, await synthExamples({ seed: 9, tiles: 3 }));
    const job = await startTraining(c, { dataset: 'stop', epochs: 10_000, outputName: 'stopped' });
    const ctrl = new AbortController();
    const seen: TrainingJob[] = [];
    const watching = (async () => {
      for await (const j of watchTraining(c, job.jobId, ctrl.signal)) seen.push(j);
    })();
    // Epoch 2 under way: epoch 1 is checkpointed.
    while (!seen.some((j) => j.stage === 'training' && j.epoch >= 2)) await new Promise((r) => setTimeout(r, 50));
    const ended = assert.rejects(watching, code(status.UNAVAILABLE));
    await server.shutdown();
    await ended;
    c.close();

    server = await start(box);
    c = connect(`127.0.0.1:${server.port}`, { token: TOKENS.train });
    try {
      const again = await watchUntil(c, job.jobId, (j) => j.state === JobState.JOB_STATE_RUNNING && j.stage === 'training');
      assert.equal(again.state, JobState.JOB_STATE_RUNNING);
      const listed = (await listTrainingJobs(c)).find((j) => j.jobId === job.jobId)!;
      assert.ok(listed.epoch >= 1, 'resumed past its checkpointed epoch');
      const cancelled = await cancelTraining(c, job.jobId);
      assert.equal(cancelled.state, JobState.JOB_STATE_CANCELLED);
    } finally {
      c.close();
      await server.shutdown();
    }
  });
});
