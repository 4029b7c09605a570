import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import * as tf from '@tensorflow/tfjs';

/** Plain @tensorflow/tfjs has no file:// handler in Node: these read and write model.json + weights.bin. */

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

/** `path` is a folder or a model.json file. */
function modelJsonPath(path: string): string {
  return path.endsWith('.json') ? path : join(path, MODEL_JSON);
}

export function fileIOHandler(path: string): tf.io.IOHandler {
  const jsonPath = modelJsonPath(path);
  const dir = dirname(jsonPath);
  return {
    async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
      if (artifacts.modelTopology instanceof ArrayBuffer) {
        throw new Error('binary model topologies are not supported');
      }
      const weights = new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData ?? new ArrayBuffer(0)));
      const modelJson: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology ?? {},
        weightsManifest: [{ paths: [WEIGHTS_BIN], weights: artifacts.weightSpecs ?? [] }],
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig } : {}),
        ...(artifacts.userDefinedMetadata ? { userDefinedMetadata: artifacts.userDefinedMetadata } : {}),
      };
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, WEIGHTS_BIN), weights);
      await writeFile(jsonPath, JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },

    async load(): Promise<tf.io.ModelArtifacts> {
      let modelJson: tf.io.ModelJSON;
      try {
        modelJson = JSON.parse(await readFile(jsonPath, 'utf8')) as tf.io.ModelJSON;
      } catch (err) {
        throw new Error(`cannot read TF.js model ${jsonPath}: ${(err as Error).message}`);
      }
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const specs: tf.io.WeightsManifestEntry[] = [];
        const buffers: ArrayBuffer[] = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const p of group.paths) {
            // Weight files live beside model.json; a manifest must not point elsewhere.
            const file = resolve(dir, p);
            if (!file.startsWith(resolve(dir) + sep) || basename(file) !== basename(p)) {
              throw new Error(`weights path ${p} in ${jsonPath} leaves the model folder`);
            }
            const bytes = await readFile(file);
            buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
          }
        }
        return [specs, tf.io.CompositeArrayBuffer.join(buffers)];
      });
    },
  };
}

/** Writes model.json + weights.bin into `dir` (created if needed). */
export async function saveLayersModel(model: tf.LayersModel, dir: string): Promise<void> {
  await model.save(fileIOHandler(dir));
}

/** Loads from a folder holding model.json, or from a model.json path. Select a backend first. */
export async function loadLayersModel(path: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(fileIOHandler(path));
}
