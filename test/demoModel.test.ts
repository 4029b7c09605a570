// A model trained on synthetic slides says so: in its manifest, in ModelInfo, and in a warning when it is the default.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { connect, type HistosegClients } from '../src/client/segmentationClient.js';
import { readManifest } from '../src/model/manifest.js';
import type { ModelInfo } from '../src/proto/gen/histoseg/v1/model.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';

describe('a demonstration model', () => {
  let server: RunningServer;
  let clients: HistosegClients;
  const lines: string[] = [];

  before(async () => {
    const log = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 1, workers: 1, logLevel: 'info' }, {});
    server = await startServer(config, log, new Metrics(undefined, { processMetrics: false }));
    clients = connect(`127.0.0.1:${server.port}`);
  });

  after(async () => {
    clients?.close();
    await server?.shutdown();
  });

  for (const version of ['1.0.0', '1.1.0']) {
    it(`the shipped histoseg-bach ${version} manifest says it was trained on synthetic slides and is for demonstration only`, async () => {
      const m = await readManifest(new URL(`../models/histoseg-bach/${version}/manifest.json`, import.meta.url).pathname);
      assert.equal(m.demoOnly, true);
      assert.match(m.trainedOn ?? '', /synthetic/);
    });
  }

  it('ModelInfo carries trained_on and demo_only', async () => {
    const model = await new Promise<ModelInfo | undefined>((resolve, reject) =>
      clients.models.getModel({ name: '', version: '' }, clients.metadata(), (e, r) => (e ? reject(e) : resolve(r.model))),
    );
    assert.equal(model?.name, 'histoseg-bach');
    assert.equal(model?.demoOnly, true);
    assert.match(model?.trainedOn ?? '', /synthetic slides/);
  });

  it('the server warns when it serves a demo model as the default', () => {
    const warn = lines.find((l) => l.includes('DEMONSTRATION only'));
    assert.ok(warn, 'a warning was logged');
    assert.match(warn!, /"level":40/);
    assert.match(warn!, /"model":"histoseg-bach@1\.1\.0"/); // the newest version is the default
  });
});
