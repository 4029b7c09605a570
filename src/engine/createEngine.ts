import type { Manifest } from '../model/manifest.js';
import { modelFilePath } from '../model/repository.js';
import { enginePlacement } from './engineDevices.js';
import { ENGINE_KINDS, type Device, type Engine, type EngineKind, type MaskOutput } from './engine.js';

export interface CreateEngineOptions {
  /** Cores this engine may use (onnxruntime intra-op threads; TF.js wasm in Node is single-threaded). */
  readonly threads: number;
  /** Default 'mask'; serving asks for 'seg16'. */
  readonly maskOutput?: MaskOutput;
  /** Default cpu; the pair (kind, device) must be a row of engineDevices.ts's table. */
  readonly device?: Device;
  /** webgpu: accept a software adapter (config allowSoftwareGpu). */
  readonly allowSoftwareGpu?: boolean;
}

type Factory = (modelDir: string, manifest: Manifest, opts: CreateEngineOptions) => Promise<Engine>;

// Each engine's runtime is imported only when that engine is asked for.
const FACTORIES: Record<EngineKind, Factory> = {
  onnx: async (dir, m, o) => {
    const { OnnxEngine } = await import('./onnxEngine.js');
    return OnnxEngine.create(modelFilePath(dir, m.files.onnx), m.classes.length, {
      intraOpNumThreads: o.threads,
      maskOutput: o.maskOutput,
      device: o.device,
      allowSoftwareGpu: o.allowSoftwareGpu,
    });
  },
  tfjs: async (dir, m, o) => {
    const { TfjsEngine } = await import('./tfjsEngine.js');
    return TfjsEngine.create(modelFilePath(dir, m.files.tfjs), m.classes.length, o.maskOutput, {
      device: o.device ?? 'cpu',
      allowSoftwareGpu: o.allowSoftwareGpu,
    });
  },
};

/** `modelDir` is a version folder of the model repository (ModelEntry.dir). */
export async function createEngine(
  kind: EngineKind,
  modelDir: string,
  manifest: Manifest,
  opts: CreateEngineOptions,
): Promise<Engine> {
  const factory = Object.hasOwn(FACTORIES, kind) ? FACTORIES[kind] : undefined;
  if (!factory) {
    throw new Error(`unknown engine ${JSON.stringify(kind)}; valid engines: ${ENGINE_KINDS.join(', ')}`);
  }
  if (!Number.isInteger(opts.threads) || opts.threads < 1) {
    throw new Error(`engine threads must be a positive integer, got ${opts.threads}`);
  }
  enginePlacement(kind, opts.device ?? 'cpu'); // throws for a pair the table does not have, listing the valid ones
  return factory(modelDir, manifest, opts);
}
