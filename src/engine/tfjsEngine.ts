import * as tf from '@tensorflow/tfjs';
import { modelNumClasses } from '../model/architecture.js';
import { INPUT_SIZE } from '../model/constants.js';
import { loadLayersModel } from '../model/tfjsIO.js';
import type { Engine, EngineInput, EngineOutput } from './engine.js';
import { assertEngineInput, ownedArray } from './engineInput.js';
import { selectTfBackend } from './tfjsBackend.js';

/** TF.js engine with the same NCHW interface as OnnxEngine: the model is NHWC, so it transposes in and out. */
export class TfjsEngine implements Engine {
  readonly name: string;

  private constructor(
    private readonly model: tf.LayersModel,
    readonly numClasses: number,
    backend: string,
  ) {
    this.name = `tfjs/${backend}`;
  }

  /** `modelPath` is the folder holding model.json, or model.json itself. */
  static async create(modelPath: string, numClasses: number): Promise<TfjsEngine> {
    const backend = await selectTfBackend();
    return TfjsEngine.fromModel(await loadLayersModel(modelPath), numClasses, backend);
  }

  /** Wraps a model already in memory; the engine owns it from now on. */
  static fromModel(model: tf.LayersModel, numClasses: number, backend = tf.getBackend()): TfjsEngine {
    const c = modelNumClasses(model);
    if (c !== numClasses) {
      model.dispose();
      throw new Error(`TF.js model has ${c} classes, the manifest says ${numClasses}`);
    }
    return new TfjsEngine(model, numClasses, backend);
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
      return { mask: ownedArray(mask), cls: ownedArray(cls) };
    } finally {
      maskT.dispose();
      clsT.dispose();
    }
  }

  async dispose(): Promise<void> {
    this.model.dispose();
  }
}
