// Worker-thread side of the engine pool: owns one Engine, so a blocking run() never stalls the event loop.
import { parentPort, workerData } from 'node:worker_threads';
import { createEngine } from './createEngine.js';
import type { Engine } from './engine.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './workerProtocol.js';

const port = parentPort;
if (!port) throw new Error('engineWorker must run in a worker thread');

const init = workerData as WorkerInit;
let engine: Engine;
try {
  engine = await createEngine(init.kind, init.modelDir, init.manifest, { threads: init.threads, maskOutput: 'seg16', device: init.device });
  port.postMessage({ type: 'ready', engine: engine.name } satisfies WorkerReply);
} catch (err) {
  port.postMessage({ type: 'failed', message: (err as Error).message } satisfies WorkerReply);
  process.exit(1);
}

port.on('message', async (msg: WorkerRequest) => {
  if (msg.type === 'dispose') {
    await engine.dispose();
    port.close();
    return;
  }
  const t0 = performance.now();
  try {
    const out = await engine.run({ data: msg.data, n: msg.n });
    const reply: WorkerReply = { type: 'result', id: msg.id, mask: out.mask, cls: out.cls, maskSize: out.maskSize, seconds: (performance.now() - t0) / 1000 };
    // Hand the buffers back without copying; they came over the same way.
    const transfer = [out.mask.buffer, out.cls.buffer, msg.data.buffer].filter((b, i, a) => a.indexOf(b) === i) as ArrayBuffer[];
    port.postMessage(reply, transfer);
  } catch (err) {
    port.postMessage({ type: 'error', id: msg.id, message: (err as Error).message } satisfies WorkerReply);
  }
});
