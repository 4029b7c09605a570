import { Worker } from 'node:worker_threads';

/**
 * A worker thread running the module `name` (without extension) beside `base` (the caller's import.meta.url).
 * Compiled JS runs the worker file directly. From TypeScript source (tsx), the worker first registers tsx's
 * loader itself: Node 20 does not hand the parent's module hooks to worker threads.
 */
export function startModuleWorker(base: string, name: string, workerData: unknown): Worker {
  if (!base.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, base), { workerData });
  const api = import.meta.resolve('tsx/esm/api');
  const entry = new URL(`./${name}.ts`, base).href;
  const boot = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true, workerData });
}
