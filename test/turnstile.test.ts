import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { test } from 'node:test';
import { Turnstile } from '../src/pipeline/turnstile.js';

test('turns are granted first come, first served, one per turn of the event loop', async () => {
  const t = new Turnstile();
  const order: number[] = [];
  const all = [1, 2, 3, 4].map((k) => t.turn().then(() => order.push(k)));
  assert.equal(t.queued, 4);
  await new Promise((r) => setImmediate(r));
  assert.ok(t.granted <= 1, `granted ${t.granted} in one turn`);
  await Promise.all(all);
  assert.deepEqual(order, [1, 2, 3, 4]);
  assert.equal(t.queued, 0);
});

test('I/O is served between two turns, however many steps wait', async () => {
  // A connection arrives while 200 steps are queued; each step is busy work. The connection must be accepted before
  // the last step runs: the loop polls I/O between turns.
  const t = new Turnstile();
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  let stepsWhenAccepted = -1;
  let steps = 0;
  server.on('connection', (s) => {
    stepsWhenAccepted = steps;
    s.destroy();
  });
  const work = Array.from({ length: 200 }, () =>
    t.turn().then(() => {
      const until = performance.now() + 1;
      while (performance.now() < until);
      steps++;
    }),
  );
  const { port } = server.address() as { port: number };
  const { connect } = await import('node:net');
  const c = connect(port, '127.0.0.1');
  c.on('error', () => undefined);
  await Promise.all(work);
  await new Promise((r) => setImmediate(r));
  if (stepsWhenAccepted < 0) await once(server, 'connection');
  server.close();
  c.destroy();
  assert.ok(stepsWhenAccepted >= 0 && stepsWhenAccepted < 200, `accepted after ${stepsWhenAccepted} of 200 steps`);
});
