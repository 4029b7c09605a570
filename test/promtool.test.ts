// /metrics of a real server after some traffic passes `promtool check metrics` (Debian's prometheus package).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { connect, segmentTiles } from '../src/client/segmentationClient.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';

const havePromtool = spawnSync('promtool', ['--version']).status === 0;
const CI = process.env.CI === 'true';

describe('/metrics exposition', () => {
  let server: RunningServer;
  let body: string;

  before(async () => {
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 1, workers: 1, logLevel: 'silent' }, {});
    server = await startServer(config, createLogger('silent'), new Metrics());
    const c = connect(`127.0.0.1:${server.port}`);
    try {
      const image = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#f4f4f4' } }).png().toBuffer();
      for await (const _ of segmentTiles(c, [{ tileId: 't', image, mpp: 0, x: 0, y: 0 }, { tileId: 'bad', image: Buffer.from('x'), mpp: 0, x: 0, y: 0 }]));
      // A failed RPC, so the error counter has a sample.
      await assert.rejects(async () => {
        for await (const _ of segmentTiles(c, [{ tileId: 't', image, mpp: 0, x: 0, y: 0 }], { modelName: 'no-such-model' }));
      });
    } finally {
      c.close();
    }
    body = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
  });

  after(async () => {
    await server?.shutdown();
  });

  it('has no gauge or other non-counter named *_total', () => {
    const types = [...body.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => ({ name: m[1]!, type: m[2]! }));
    assert.ok(types.length > 20, 'process metrics are exposed');
    assert.deepEqual(types.filter((t) => t.name.endsWith('_total') && t.type !== 'counter'), []);
    assert.match(body, /histoseg_rpc_errors_total\{code="5",method="SegmentationService\/SegmentTiles"\} 1/);
  });

  it('passes promtool check metrics', { skip: havePromtool || CI ? false : 'promtool missing (apt-get install prometheus; .ci/install-prometheus.sh)' }, () => {
    const r = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' });
    assert.equal(r.error, undefined, 'promtool runs');
    assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
  });
});
