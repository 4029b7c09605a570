// One toStatus for every domain error: each maps to its code, every failure is logged and counted, and a bug is
// INTERNAL to the client and logged with its stack (ModelService included).
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { Metadata, status } from '@grpc/grpc-js';
import { InvalidModelRefError, ModelNotFoundError } from '../src/model/repository.js';
import { BatcherStoppedError } from '../src/pipeline/batcher.js';
import type { ModelRegistry } from '../src/pipeline/modelRegistry.js';
import { DatasetError, DatasetNotFoundError, StoreLimitError } from '../src/data/examples/exampleStore.js';
import { JobFinishedError, JobNotFoundError, JobQueueFullError } from '../src/training/jobs/jobManager.js';
import { toStatus, unauthenticated } from '../src/server/errors.js';
import { modelServiceHandlers } from '../src/server/modelServiceHandlers.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';

function sink() {
  const lines: string[] = [];
  const log = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
  return { lines, log };
}

describe('toStatus', () => {
  it('maps every domain error to its code, logs and counts each', async () => {
    const { lines, log } = sink();
    const metrics = new Metrics(undefined, { processMetrics: false });
    const report = { log, metrics, method: 'Test/Method' };
    const cases: [unknown, status][] = [
      [new ModelNotFoundError('no model x'), status.NOT_FOUND],
      [new InvalidModelRefError('invalid model name'), status.INVALID_ARGUMENT],
      [new JobQueueFullError('the job queue is full'), status.RESOURCE_EXHAUSTED],
      [new StoreLimitError('the example store is full'), status.RESOURCE_EXHAUSTED],
      [new DatasetNotFoundError('no dataset d'), status.NOT_FOUND],
      [new JobNotFoundError('no job j'), status.NOT_FOUND],
      [new DatasetError('classes differ'), status.INVALID_ARGUMENT],
      [new JobFinishedError('the job has ended'), status.FAILED_PRECONDITION],
      [new BatcherStoppedError('server is shutting down'), status.UNAVAILABLE],
      [unauthenticated('unknown token'), status.UNAUTHENTICATED],
    ];
    for (const [err, code] of cases) {
      const s = toStatus(err, report);
      assert.equal(s.code, code, String(err));
      assert.equal(s.message, (err as Error).message, 'the reason goes to the client');
    }
    assert.equal(lines.length, cases.length, 'one log line per failure');
    const text = await metrics.registry.metrics();
    for (const [, code] of cases) {
      const n = cases.filter(([, c]) => c === code).length;
      assert.match(text, new RegExp(`histoseg_rpc_errors_total\\{code="${code}",method="Test/Method"\\} ${n}\n`));
    }
  });

  it('answers a bug INTERNAL without internals, and logs it with its stack', () => {
    const { lines, log } = sink();
    const s = toStatus(new TypeError('cannot read properties of undefined (secret internals)'), { log, method: 'Test/Method' });
    assert.equal(s.code, status.INTERNAL);
    assert.equal(s.message, 'internal error');
    assert.equal(lines.length, 1);
    const entry = JSON.parse(lines[0]!) as { level: number; err: { stack: string }; method: string };
    assert.equal(entry.level, 50, 'error level');
    assert.equal(entry.method, 'Test/Method');
    assert.match(entry.err.stack, /TypeError: cannot read properties[\s\S]*statusMapping\.test\.ts/);
  });
});

describe('ModelService', () => {
  it('logs a failure it answers as internal error, with the stack', async () => {
    const { lines, log } = sink();
    const metrics = new Metrics(undefined, { processMetrics: false });
    const registry = { list: async () => Promise.reject(new RangeError('repository exploded')) } as unknown as ModelRegistry;
    const handlers = modelServiceHandlers(registry, 'onnx', { log, metrics });
    const call = { request: {}, metadata: new Metadata(), getPeer: () => '127.0.0.1:1' };
    const err = await new Promise<{ code: number; details: string }>((resolve) =>
      (handlers.listModels as unknown as (c: unknown, cb: (e: unknown) => void) => void)(call, (e) => resolve(e as { code: number; details: string })),
    );
    assert.equal(err.code, status.INTERNAL);
    assert.equal(err.details, 'internal error');
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /ModelService\/ListModels failed: internal error/);
    assert.match(lines[0]!, /RangeError: repository exploded/);
    assert.match(await metrics.registry.metrics(), /histoseg_rpc_errors_total\{code="13",method="ModelService\/ListModels"\} 1/);
  });
});
