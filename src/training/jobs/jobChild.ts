// Entry of a training job's child process (forked by JobManager): reads its spec, runs the fine-tune, and reports
// over IPC. SIGTERM (cancel, or the server shutting down) stops it between steps; the parent going away (even by
// kill -9) ends it too, so a restarted server never finds an orphan still writing into the job's folder.
import { readFile } from 'node:fs/promises';
import type { FineTuneEvent, FineTuneResult, FineTuneSpec } from './fineTune.js';

export type ChildMessage =
  | { type: 'event'; event: FineTuneEvent }
  | { type: 'done'; result: FineTuneResult }
  | { type: 'failed'; error: string; aborted: boolean };

const send = (m: ChildMessage) => new Promise<void>((resolve) => (process.send ? process.send(m, () => resolve()) : resolve()));

async function main(): Promise<void> {
  const specPath = process.argv[2];
  if (!specPath || !process.send) {
    process.stderr.write('jobChild: run by the server only (needs an IPC channel and a spec file)\n');
    process.exit(2);
  }
  const abort = new AbortController();
  process.on('SIGTERM', () => abort.abort(new Error('cancelled')));
  process.on('disconnect', () => process.exit(3));
  const spec = JSON.parse(await readFile(specPath, 'utf8')) as FineTuneSpec;
  const { runFineTune } = await import('./fineTune.js');
  try {
    const result = await runFineTune(spec, { signal: abort.signal, onEvent: (event) => void send({ type: 'event', event }) });
    await send({ type: 'done', result });
    process.exit(0);
  } catch (err) {
    await send({ type: 'failed', error: (err as Error).message ?? String(err), aborted: abort.signal.aborted });
    process.exit(1);
  }
}

void main();
