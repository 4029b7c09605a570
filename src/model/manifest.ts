import { readFile, writeFile } from 'node:fs/promises';
import { z } from 'zod';

const hexColor = z.string().regex(/^#[0-9a-fA-F]{6}$/, 'colour must be #rrggbb');

/** Stain reference for Macenko normalisation: H and E optical-density vectors and the 99th-percentile concentrations. */
export const StainReferenceSchema = z.object({
  stainMatrix: z.array(z.array(z.number()).length(3)).length(2),
  maxConcentrations: z.array(z.number()).length(2),
  source: z.string().optional(),
});

export const ManifestSchema = z.object({
  schema: z.literal(1),
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/),
  version: z.string().regex(/^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$/),
  architecture: z.literal('resnet18-layer3-segcls'),
  classes: z
    .array(z.object({ name: z.string().min(1), color: hexColor }))
    .min(2)
    .max(255),
  inputSize: z.number().int().positive(),
  mpp: z.number().positive(),
  /** Absent: the model was not trained and its outputs mean nothing. */
  trained: z.boolean(),
  /** Absent: unspecified. What the model was trained on, in words a client can show ("synthetic slides ...", "BACH 2018 training set"). */
  trainedOn: z.string().max(500).optional(),
  /**
   * For demonstration only: trained on synthetic data or not at all, so its masks say nothing about real tissue.
   * The server warns when it serves such a model as its default, and ModelInfo carries the flag to clients.
   */
  demoOnly: z.boolean().optional(),
  stainReference: StainReferenceSchema.nullable(),
  createdAt: z.string(),
  lineage: z.object({
    parent: z.string().nullable(),
    datasetHash: z.string().nullable(),
    settings: z.record(z.string(), z.unknown()).default({}),
  }),
  metrics: z.record(z.string(), z.number()).default({}),
  files: z.object({
    tfjs: z.string().default('tfjs/model.json'),
    onnx: z.string().default('model.onnx'),
  }),
});

export type Manifest = z.infer<typeof ManifestSchema>;
export type StainReference = z.infer<typeof StainReferenceSchema>;

export const MANIFEST_FILE = 'manifest.json';

export async function readManifest(path: string): Promise<Manifest> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read manifest ${path}: ${(err as Error).message}`);
  }
  const parsed = ManifestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(`invalid manifest ${path}: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}

export async function writeManifest(path: string, manifest: Manifest): Promise<void> {
  await writeFile(path, JSON.stringify(ManifestSchema.parse(manifest), null, 2) + '\n');
}
