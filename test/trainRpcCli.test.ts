// The CLI over a running server: upload a synthetic dataset folder, start a job and watch it, list jobs and models,
// activate a version; output without a terminal is one summary line per command.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { writeSynthDataset } from '../src/synth/dataset.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { BASE, TOKENS, trainingSandbox } from './support/training.js';

const BIN = fileURLToPath(new URL('../bin/histoseg.js', import.meta.url));
const run = promisify(execFile);

describe('histoseg upload, jobs and models commands', () => {
  let box: ReturnType<typeof trainingSandbox>;
  let server: RunningServer;
  let common: string[];
  let data: string;

  before(async () => {
    box = trainingSandbox('histoseg-cli-');
    server = await startServer(
      loadConfig({ port: 0, metricsPort: 0, threads: 1, logLevel: 'silent', models: box.models, datasets: box.datasets, tokensFile: box.tokensFile, trainingMaxSteps: 1 }, {}),
      createLogger('silent'),
      new Metrics(undefined, { processMetrics: false }),
    );
    const tokenFile = join(box.dir, 'admin.token');
    writeFileSync(tokenFile, TOKENS.admin + '\n');
    common = ['--server', `127.0.0.1:${server.port}`, '--token-file', tokenFile];
    data = join(box.dir, 'synth');
    await writeSynthDataset({ seed: 4, out: data, slides: 3, size: 384, patchesPerClass: 1 });
  });
  after(async () => {
    await server?.shutdown();
    rmSync(box.dir, { recursive: true, force: true });
  });

  const cli = async (...args: string[]) => (await run(process.execPath, [BIN, ...args], { encoding: 'utf8' })).stdout;

  it('uploads a dataset folder, trains on it, lists and activates', async () => {
    const up = await cli('upload', ...common, '--dataset', 'cli-synth', '--data', data);
    assert.match(up, /-> cli-synth: \d+ accepted, 0 rejected, \d+ examples in the dataset/);
    const accepted = Number(/(\d+) accepted/.exec(up)![1]);
    assert.ok(accepted >= 3, up);

    const started = await cli('jobs', 'start', ...common, '--dataset', 'cli-synth', '--epochs', '1', '--watch');
    const [jobId, ...rest] = started.trim().split('\n');
    assert.match(jobId!, /^j-/);
    assert.match(rest.join('\n'), new RegExp(`${jobId} SUCCEEDED .* -> ${BASE.name}@`));
    const version = new RegExp(`-> ${BASE.name}@([^ ,]+)`).exec(rest.join('\n'))![1]!;

    assert.match(await cli('jobs', 'list', ...common), new RegExp(`${jobId} SUCCEEDED`));
    const listed = await cli('models', 'list', ...common);
    assert.match(listed, new RegExp(`${BASE.name}@${version} .*from ${BASE.name}@${BASE.version}`));
    assert.match(await cli('models', 'activate', ...common, `${BASE.name}@${version}`), new RegExp(`${BASE.name}@${version} is the default \\(was ${BASE.name}@${BASE.version}\\)`));
    assert.match(await cli('models', 'list', ...common), new RegExp(`${BASE.name}@${version} \\(default`));
  });
});
