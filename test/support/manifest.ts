import type { Manifest } from '../../src/model/manifest.js';

/** A valid untrained-model manifest for tests; `fields` override the defaults. */
export function testManifest(fields: Partial<Manifest> = {}): Manifest {
  return {
    schema: 1,
    name: 'test-model',
    version: '1.0.0',
    architecture: 'resnet18-layer3-segcls',
    classes: [
      { name: 'a', color: '#000000' },
      { name: 'b', color: '#ffffff' },
    ],
    inputSize: 128,
    mpp: 7.5,
    trained: false,
    stainReference: null,
    createdAt: '2026-01-01T00:00:00Z',
    lineage: { parent: null, datasetHash: null, settings: {} },
    metrics: {},
    files: { tfjs: 'tfjs/model.json', onnx: 'model.onnx' },
    ...fields,
  };
}
