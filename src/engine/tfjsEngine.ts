import * as tf from '@tensorflow/tfjs';
import { LAYER, modelNumClasses } from '../model/network/architecture.js';
import { INPUT_SIZE, SEG16_SIZE } from '../util/constants.js';
import { loadLayersModel } from '../model/network/tfjsIO.js';
import type { Engine, EngineInput, EngineOutput, MaskOutput } from './engine.js';
import { assertEngineInput, ownedArray } from '../engine/engineInput.js';
import { selectTfBackend, type TfBackendOptions } from '../tf/backend.js';

/** TF.js engine with the same NCHW interface as OnnxEngine: the model is NHWC, so it transposes in and out. */
export class TfjsEngine implements Engine {
  readonly name: string;

  private constructor(
    private readonly model: tf.LayersModel,
    readonly numClasses: number,
    backend: string,
    private readonly maskSize: number,
    private readonly owns: boolean,
  ) {
    this.name = `tfjs/${backend}`;
  }

  /** `modelPath` is the folder holding model.json, or model.json itself. */
  static async create(modelPath: string, numClasses: number, maskOutput: MaskOutput = 'mask', backendOpts: TfBackendOptions = {}): Promise<TfjsEngine> {
    const backend = await selectTfBackend(backendOpts);
    return TfjsEngine.fromModel(await loadLayersModel(modelPath), numClasses, backend, maskOutput);
  }

  /**
   * Wraps a model already in memory. The engine owns it (disposes it) unless `owns` is false, as for the trainer's
   * model during validation.
   */
  static fromModel(model: tf.LayersModel, numClasses: number, backend = tf.getBackend(), maskOutput: MaskOutput = 'mask', owns = true): TfjsEngine {
    const c = modelNumClasses(model);
    if (c !== numClasses) {
      if (owns) model.dispose();
      throw new Error(`TF.js model has ${c} classes, the manifest says ${numClasses}`);
    }
    if (maskOutput === 'seg16') {
      // Same weights, outputs taken before the nearest upsampling.
      const sub = tf.model({ inputs: model.inputs, outputs: [model.getLayer(LAYER.seg16).output as tf.SymbolicTensor, model.outputs[1]] });
      return new TfjsEngine(sub, numClasses, backend, SEG16_SIZE, owns);
    }
    return new TfjsEngine(model, numClasses, backend, INPUT_SIZE, owns);
  }

  async run(input: EngineInput): Promise<EngineOutput> {
    assertEngineInput(input);
    const [maskT, clsT] = tf.tidy(() => {
      const x = tf.transpose(tf.tensor4d(input.data, [input.n, 3, INPUT_SIZE, INPUT_SIZE]), [0, 2, 3, 1]);
      const [mask, cls] = this.model.predict(x, { batchSize: input.n }) as tf.Tensor[];
      return [tf.transpose(mask, [0, 3, 1, 2]), cls];
    });
    try {
      const [mask, cls] = await Promise.all([maskT.data<'float32'>(), clsT.data<'float32'>()]);
      return { mask: ownedArray(mask), cls: ownedArray(cls), maskSize: this.maskSize };
    } finally {
      maskT.dispose();
      clsT.dispose();
    }
  }

  async dispose(): Promise<void> {
    if (this.owns) this.model.dispose();
  }
}
