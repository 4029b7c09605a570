// kill -9 of the server process during an upload and during a job: acknowledged examples all survive, no example
// file is half-written, the running job resumes after restart and ends SUCCEEDED, and no half-written version is listed.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connect, type HistosegClients } from '../src/client/segmentationClient.js';
import { listModels, startTraining, uploadExamples, watchTraining } from '../src/client/trainingClient.js';
import { readExampleFile } from '../src/data/examples/exampleStore.js';
import { resolveModel } from '../src/model/repository.js';
import { JobState, type Example, type TrainingJob } from '../src/proto/gen/histoseg/v1/training.js';
import { CLASSES, synthExamples, TOKENS, trainingSandbox } from './support/training.js';

const BIN = fileURLToPath(new URL('../bin/histoseg.js', import.meta.url));

/** Starts `histoseg serve` as a child process and resolves with its port once it logs 'serving'. */
async function spawnServer(box: ReturnType<typeof trainingSandbox>): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(
    process.execPath,
    [BIN, 'serve', '--port', '0', '--metrics-port', '0', '--threads', '1', '--models', box.models, '--datasets', box.datasets, '--tokens-file', box.tokensFile, '--training-max-steps', '1'],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, HISTOSEG_LOG_LEVEL: 'info' } },
  );
  const lines = createInterface({ input: proc.stdout! });
  for await (const line of lines) {
    let rec: { msg?: string; port?: number };
    try {
      rec = JSON.parse(line);
    } catch {
      continue;
    }
    if (rec.msg === 'serving' && rec.port) {
      lines.on('line', () => undefined); // keep draining
      return { proc, port: rec.port };
    }
  }
  throw new Error(`server exited before serving (code ${proc.exitCode})`);
}

async function kill9(proc: ChildProcess): Promise<void> {
  const exited = once(proc, 'exit');
  proc.kill('SIGKILL');
  await exited;
}

describe('kill -9 of the server', () => {
  const box = trainingSandbox('histoseg-kill-');
  const procs: ChildProcess[] = [];
  after(() => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    rmSync(box.dir, { recursive: true, force: true });
  });

  it('loses no acknowledged example and exposes no half-written one', async () => {
    const examples = await synthExamples({ seed: 21, tiles: 10 });
    const s1 = await spawnServer(box);
    procs.push(s1.proc);
    let c: HistosegClients = connect(`127.0.0.1:${s1.port}`, { token: TOKENS.train });
    // Acknowledged: two whole uploads.
    const first = await uploadExamples(c, 'durable', CLASSES, examples.slice(0, 4));
    const second = await uploadExamples(c, 'durable', [], examples.slice(4, 8));
    assert.equal(first.accepted + second.accepted, 8);
    // A third upload is in flight when the server dies: its stream never ends, so nothing of it is acknowledged.
    let sent = 0;
    let killed!: Promise<void>;
    async function* slow(): AsyncGenerator<Example> {
      for (const e of examples.slice(8)) {
        yield { ...e, exampleId: `inflight-${sent}` };
        sent += 1;
      }
      killed = kill9(s1.proc);
      await killed;
    }
    await assert.rejects(uploadExamples(c, 'durable', [], slow()));
    await killed;
    c.close();

    const s2 = await spawnServer(box);
    procs.push(s2.proc);
    c = connect(`127.0.0.1:${s2.port}`, { token: TOKENS.train });
    const now = await uploadExamples(c, 'durable', [], []);
    assert.ok(now.datasetExamples >= 8 && now.datasetExamples <= 8 + sent, `${now.datasetExamples} examples after restart`);
    const dir = join(box.datasets, 'durable', 'examples');
    const files = readdirSync(dir).filter((f) => f.endsWith('.ex'));
    const ids = new Set<string>();
    for (const f of files) ids.add((await readExampleFile(join(dir, f))).header.exampleId);
    for (const e of examples.slice(0, 8)) assert.ok(ids.has(e.exampleId), `acknowledged ${e.exampleId} survived`);
    c.close();
    await kill9(s2.proc);
  });

  it('a job running when the server is killed resumes after restart from its checkpoint and succeeds; no half-written version is listed', async () => {
    const s1 = await spawnServer(box);
    procs.push(s1.proc);
    let c = connect(`127.0.0.1:${s1.port}`, { token: TOKENS.train });
    const job = await startTraining(c, { dataset: 'durable', epochs: 3, outputName: 'resumed' });
    // Wait until one epoch is checkpointed, then kill -9 mid-job.
    const ctrl = new AbortController();
    try {
      for await (const j of watchTraining(c, job.jobId, ctrl.signal)) {
        assert.ok(j.state === JobState.JOB_STATE_QUEUED || j.state === JobState.JOB_STATE_RUNNING, j.error);
        if (j.stage === 'training' && j.progress > 1 / 3) break;
      }
    } finally {
      ctrl.abort();
    }
    await kill9(s1.proc);
    c.close();

    const s2 = await spawnServer(box);
    procs.push(s2.proc);
    c = connect(`127.0.0.1:${s2.port}`, { token: TOKENS.train });
    const seen: TrainingJob[] = [];
    for await (const j of watchTraining(c, job.jobId)) seen.push(j);
    const last = seen[seen.length - 1]!;
    assert.equal(last.state, JobState.JOB_STATE_SUCCEEDED, last.error);
    // It resumed rather than starting over: no report after the restart goes back to epoch 0.
    assert.ok(seen.every((j) => j.epoch >= 1), `epochs seen after restart: ${seen.map((j) => j.epoch).join(' ')}`);
    assert.ok(seen.some((j) => j.stage === 'resuming'), 'the job was resumed');
    const models = await listModels(c);
    assert.deepEqual(models.filter((m) => m.name === 'resumed').map((m) => m.version), [last.modelVersion]);
    for (const m of models) await resolveModel(box.models, m.name, m.version);
    c.close();
    await kill9(s2.proc);
  });
});
