// Worker-thread side of the engine pool: owns one Engine, so a blocking run() never stalls the event loop.
import { parentPort, workerData } from 'node:worker_threads';
import { createEngine } from './createEngine.js';
import type { Engine } from './engine.js';
import { writeModelInput } from '../imaging/modelInput.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './workerProtocol.js';

const port = parentPort;
if (!port) throw new Error('engineWorker must run in a worker thread');

const init = workerData as WorkerInit;
let engine: Engine;
try {
  engine = await createEngine(init.kind, init.modelDir, init.manifest, {
    threads: init.threads,
    maskOutput: 'seg16',
    device: init.device,
    allowSoftwareGpu: init.allowSoftwareGpu,
  });
  port.postMessage({ type: 'ready', engine: engine.name, adapter: engine.adapter } satisfies WorkerReply);
} catch (err) {
  port.postMessage({ type: 'failed', message: (err as Error).message } satisfies WorkerReply);
  process.exit(1);
}

const size = init.manifest.inputSize;
const windowBytes = 3 * size * size;
// One float buffer, grown to the largest batch seen: the main thread ships bytes, 4x less than floats.
let input = new Float32Array(0);
// Batches run one after another: the pool may post the next while one runs (a GPU's batchesPerWorker), and the
// input buffer above is shared.
let chain: Promise<void> = Promise.resolve();

port.on('message', (msg: WorkerRequest) => {
  chain = chain.then(() => handle(msg));
});

async function handle(msg: WorkerRequest): Promise<void> {
  if (msg.type === 'crash') process.exit(70);
  if (msg.type === 'dispose') {
    await engine.dispose();
    port!.close();
    return;
  }
  const t0 = performance.now();
  try {
    const need = msg.n * windowBytes;
    if (msg.rgb.length !== need) throw new Error(`batch of ${msg.n} windows needs ${need} bytes, got ${msg.rgb.length}`);
    if (input.length < need) input = new Float32Array(need);
    for (let i = 0; i < msg.n; i++) writeModelInput(msg.rgb.subarray(i * windowBytes, (i + 1) * windowBytes), size, input, i * windowBytes);
    const out = await engine.run({ data: input.subarray(0, need), n: msg.n });
    const reply: WorkerReply = { type: 'result', id: msg.id, mask: out.mask, cls: out.cls, maskSize: out.maskSize, seconds: (performance.now() - t0) / 1000, rgb: msg.rgb };
    // Hand the outputs, and the input for reuse, back without copying.
    const transfer = [out.mask.buffer, out.cls.buffer, msg.rgb.buffer].filter((b, i, a) => a.indexOf(b) === i) as ArrayBuffer[];
    port!.postMessage(reply, transfer);
  } catch (err) {
    port!.postMessage({ type: 'error', id: msg.id, message: (err as Error).message } satisfies WorkerReply);
  }
}
