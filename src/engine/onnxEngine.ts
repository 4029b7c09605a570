import * as ort from 'onnxruntime-node';
import { INPUT_SIZE } from '../util/constants.js';
import { ONNX_INPUT, ONNX_OUTPUTS, ONNX_SEG16 } from '../model/network/onnxInterface.js';
import { SEG16_SIZE } from '../util/constants.js';
import type { Device, Engine, EngineInput, EngineOutput, MaskOutput } from './engine.js';
import { assertEngineInput, ownedArray } from '../engine/engineInput.js';
import { describeAdapter, requireGpuAdapter, type GpuAdapterInfo } from '../util/gpuAdapter.js';

export interface OnnxEngineOptions {
  /** Threads inside one operator; match the cores this engine really has (engine-notes.md). */
  readonly intraOpNumThreads: number;
  readonly interOpNumThreads?: number;
  /** 'seg16' fetches the decoder's 16x16 output (when the graph has it), so the upsampling never runs. */
  readonly maskOutput?: MaskOutput;
  /** Default cpu. cuda and webgpu fail loudly where their provider or GPU is missing, never falling back. */
  readonly device?: Device;
  /** webgpu: accept a software adapter (Mesa's lavapipe), as tests and CI do. */
  readonly allowSoftwareGpu?: boolean;
}

/** One provider each, never a list: onnxruntime would quietly place what the first cannot run on the next. */
const PROVIDERS: Record<Device, string[]> = { cpu: ['cpu'], cuda: ['cuda'], webgpu: ['webgpu'] };

/** onnxruntime-node engine (CPU, CUDA or WebGPU provider). run() blocks its thread for the whole batch: use it inside a worker thread. */
export class OnnxEngine implements Engine {
  readonly name: string;

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly numClasses: number,
    private readonly maskName: string,
    private readonly maskSize: number,
    device: Device,
    readonly adapter?: GpuAdapterInfo,
  ) {
    this.name = device === 'cpu' ? 'onnx' : `onnx/${device}`;
  }

  /** `model` is a path to model.onnx or its bytes. */
  static async create(model: string | Uint8Array, numClasses: number, opts: OnnxEngineOptions): Promise<OnnxEngine> {
    const device = opts.device ?? 'cpu';
    // The adapter is checked (and named in the log) before onnxruntime's own Dawn picks the same one.
    const adapter = device === 'webgpu' ? await requireGpuAdapter(opts.allowSoftwareGpu ?? false) : undefined;
    const options: ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: opts.intraOpNumThreads,
      interOpNumThreads: opts.interOpNumThreads ?? 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      executionProviders: PROVIDERS[device],
      // Idle pool threads must not spin: on a small machine they would take the cores that decode the next tiles.
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    };
    let session: ort.InferenceSession;
    try {
      session = typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
    } catch (err) {
      if (device === 'cpu') throw err;
      const on = adapter ? ` on ${describeAdapter(adapter)}` : '';
      throw new Error(`onnxruntime's ${device} execution provider failed to start${on}: ${(err as Error).message}`);
    }
    const missing = [
      ...[ONNX_INPUT].filter((n) => !session.inputNames.includes(n)),
      ...[ONNX_OUTPUTS.mask, ONNX_OUTPUTS.cls].filter((n) => !session.outputNames.includes(n)),
    ];
    if (missing.length > 0) {
      await session.release();
      throw new Error(`ONNX model lacks ${missing.join(', ')} (has inputs ${session.inputNames}, outputs ${session.outputNames})`);
    }
    const seg16 = opts.maskOutput === 'seg16' && session.outputNames.includes(ONNX_SEG16);
    return new OnnxEngine(session, numClasses, seg16 ? ONNX_SEG16 : ONNX_OUTPUTS.mask, seg16 ? SEG16_SIZE : INPUT_SIZE, device, adapter);
  }

  async run(input: EngineInput): Promise<EngineOutput> {
    assertEngineInput(input);
    const x = new ort.Tensor('float32', input.data, [input.n, 3, INPUT_SIZE, INPUT_SIZE]);
    const out = await this.session.run({ [ONNX_INPUT]: x }, [this.maskName, ONNX_OUTPUTS.cls]);
    const mask = out[this.maskName];
    const cls = out[ONNX_OUTPUTS.cls];
    try {
      const c = this.numClasses;
      if (mask.data.length !== input.n * c * this.maskSize * this.maskSize || cls.data.length !== input.n * c) {
        throw new Error(`ONNX outputs have shapes mask ${mask.dims} cls ${cls.dims}, expected ${c} classes`);
      }
      return { mask: ownedArray(mask.data as Float32Array), cls: ownedArray(cls.data as Float32Array), maskSize: this.maskSize };
    } finally {
      x.dispose();
    }
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
