import type { sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import type { ModelRegistry } from '../pipeline/modelRegistry.js';
import type { Logger } from '../telemetry/logger.js';
import type { Manifest } from '../model/manifest.js';
import type { ActivateModelRequest, ActivateModelResponse, GetModelRequest, GetModelResponse, ListModelsRequest, ListModelsResponse, ModelInfo, ModelServiceServer } from '../proto/gen/histoseg/v1/model.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { Role } from './auth.js';
import type { AuthGuard } from './authGuard.js';
import { invalidArgument, notFound, toStatus } from './errors.js';

function info(m: Manifest, engine: string, isDefault: boolean, loaded: boolean): ModelInfo {
  return {
    name: m.name,
    version: m.version,
    classes: m.classes.map((c, index) => ({ index, name: c.name, color: c.color })),
    inputSize: m.inputSize,
    mpp: m.mpp,
    engine,
    trained: m.trained,
    createdAt: m.createdAt,
    isDefault,
    parent: m.lineage.parent ?? '',
    metrics: m.metrics,
    loaded,
    trainedOn: m.trainedOn ?? 'unspecified',
    demoOnly: m.demoOnly ?? false,
  };
}

export interface ModelServiceDeps {
  readonly auth?: AuthGuard;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

export function modelServiceHandlers(registry: ModelRegistry, configuredEngine: string, deps: ModelServiceDeps): ModelServiceServer {
  const { auth, log, metrics } = deps;
  const list = async () => (await registry.list()).map((e) => info(e.manifest, e.loaded?.pool.engineName ?? configuredEngine, e.isDefault, !!e.loaded));
  const unary =
    <Req, Res>(method: string, fn: (req: Req) => Promise<Res>, role: Role = 'segment') =>
    (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
      const report = { log, metrics, method: `ModelService/${method}` };
      (async () => {
        const denied = await auth?.check(call, role, report.method);
        if (denied) throw denied;
        return fn(call.request);
      })().then(
        (res) => cb(null, res),
        (err) => cb(toStatus(err, report).toServiceError(), null),
      );
    };
  return {
    listModels: unary<ListModelsRequest, ListModelsResponse>('ListModels', async () => ({ models: await list() })),
    getModel: unary<GetModelRequest, GetModelResponse>('GetModel', async (req) => {
      const all = await list();
      const name = req.name || all.find((m) => m.isDefault)?.name;
      const matches = all.filter((m) => m.name === name && (!req.version || m.version === req.version));
      if (matches.length === 0) {
        throw notFound(`no model ${req.name || '(default)'}${req.version ? '@' + req.version : ''}; available: ${all.map((m) => `${m.name}@${m.version}`).join(', ') || 'none'}`);
      }
      // listModels sorts oldest first: without a version, the default's version for the default name, else the newest.
      const pick = (!req.version && matches.find((m) => m.isDefault)) || matches[matches.length - 1];
      return { model: pick };
    }),
    activateModel: unary<ActivateModelRequest, ActivateModelResponse>('ActivateModel', async (req) => {
      if (!req.name) throw invalidArgument('name is required');
      const { entry, previous } = await registry.activate(req.name, req.version);
      log.info({ model: `${entry.name}@${entry.version}`, previous }, 'model activated');
      const model = (await list()).find((m) => m.name === entry.name && m.version === entry.version)!;
      return { model, previous };
    }, 'admin'),
  };
}
