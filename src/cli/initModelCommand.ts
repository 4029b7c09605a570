import type { Command } from 'commander';
import { BACH_CLASSES, INPUT_SIZE, MODEL_MPP } from '../util/constants.js';
import type { Manifest, StainReference } from '../model/manifest.js';
import type { ModelEntry } from '../model/repository.js';

/** The stain reference most Macenko implementations ship (H and E optical-density rows, 99th-percentile maxima). */
export const MACENKO_DEFAULT_REFERENCE: StainReference = {
  stainMatrix: [
    [0.5626, 0.7201, 0.4062],
    [0.2159, 0.8012, 0.5581],
  ],
  maxConcentrations: [1.9705, 1.0308],
  source: 'macenko-2009-default',
};

export interface InitModelOptions {
  readonly name: string;
  readonly version: string;
  readonly seed: number;
  readonly models: string;
  readonly overwrite?: boolean;
  /** Also point `<models>/default.json` at this model. */
  readonly setDefault?: boolean;
}

/** An untrained BACH model with seeded initialisers: the service runs end to end before any training. */
export async function initModel(opts: InitModelOptions): Promise<ModelEntry> {
  // TF.js loads only when this command runs, not whenever the CLI starts.
  const [{ selectTfBackend }, { buildSegClsModel }, { saveModelVersion, writeDefaultModel }] = await Promise.all([
    import('../tf/backend.js'),
    import('../model/network/architecture.js'),
    import('../model/repository.js'),
  ]);
  await selectTfBackend();
  const model = buildSegClsModel({ numClasses: BACH_CLASSES.length, seed: opts.seed });
  const manifest: Manifest = {
    schema: 1,
    name: opts.name,
    version: opts.version,
    architecture: 'resnet18-layer3-segcls',
    classes: BACH_CLASSES.map((c) => ({ ...c })),
    inputSize: INPUT_SIZE,
    mpp: MODEL_MPP,
    trained: false,
    trainedOn: 'nothing: seeded random weights',
    demoOnly: true,
    stainReference: MACENKO_DEFAULT_REFERENCE,
    createdAt: new Date().toISOString(),
    lineage: { parent: null, datasetHash: null, settings: { init: 'random', seed: opts.seed } },
    metrics: {},
    files: { tfjs: 'tfjs/model.json', onnx: 'model.onnx' },
  };
  try {
    const entry = await saveModelVersion(opts.models, manifest, model, { overwrite: opts.overwrite });
    if (opts.setDefault ?? true) await writeDefaultModel(opts.models, opts.name);
    return entry;
  } finally {
    model.dispose();
  }
}

export function registerInitModel(program: Command): void {
  program
    .command('init-model')
    .description('write an untrained (seeded random) BACH model version into the model repository')
    .option('--name <name>', 'model name', 'histoseg-bach')
    .option('--version <version>', 'model version', '0.1.0')
    .option('--seed <n>', 'initialiser seed', '1')
    .option('--models <dir>', 'model repository folder', 'models')
    .option('--force', 'replace the version if it exists', false)
    .option('--no-set-default', 'leave <models>/default.json as it is')
    .action(async (flags: { name: string; version: string; seed: string; models: string; force: boolean; setDefault: boolean }) => {
      const seed = Number(flags.seed);
      if (!Number.isInteger(seed)) throw new Error(`--seed must be an integer, got ${flags.seed}`);
      const entry = await initModel({ ...flags, seed, overwrite: flags.force });
      process.stdout.write(`wrote ${entry.dir}\n`);
    });
}
