import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { DEVICES, ENGINE_KINDS } from '../engine/engine.js';
import { enginePlacement } from '../engine/engineDevices.js';

/**
 * Server configuration, parsed once at start from flags and HISTOSEG_* variables into a frozen object.
 * Nothing reads process.env after this.
 */
const bool = z.union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no'])], { error: 'expected true, false, 1, 0, yes or no' }).transform((v) =>
  typeof v === 'boolean' ? v : ['true', '1', 'yes'].includes(v),
);
const port = z.coerce.number().int().min(0).max(65535);

export const ConfigSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: port.default(50051),
    metricsPort: port.default(9464),
    models: z.string().min(1).default('models'),
    defaultModel: z.string().optional(),
    engine: z.enum(ENGINE_KINDS).default('onnx'),
    /**
     * Where the engine runs; engine/engineDevices.ts lists the valid (engine, device) pairs. onnx/cuda needs
     * onnxruntime-node's CUDA provider (the CUDA image installs it); onnx/webgpu runs on Vulkan (docs/gpu.md).
     */
    device: z.enum(DEVICES).default('cpu'),
    /** webgpu: accept a software adapter (Mesa's lavapipe); off, such an adapter is refused at start. */
    allowSoftwareGpu: bool.default(false),
    /** Engine threads; the cores this process really has, so engines don't fight over them. */
    threads: z.coerce.number().int().min(1).max(256).default(availableParallelism()),
    /**
     * Engine worker threads, the threads above split between them. Unset: the engine table's policy: one
     * single-threaded engine per thread on cpu (no intra-op barriers to stall when the cores are shared with
     * decoding: measured 285 vs 262 tiles/s end to end on 2 cores), one engine on a GPU.
     */
    workers: z.coerce.number().int().min(1).max(64).optional(),
    /** Largest batch. Unset: the engine table's (16 on cpu, 64 on a GPU). */
    maxBatch: z.coerce.number().int().min(1).max(256).optional(),
    maxDelayMs: z.coerce.number().min(0).max(10_000).default(4),
    /** Windows waiting for the engine, over all streams; a stream's reads pause while it is full. */
    queueCapacity: z.coerce.number().int().min(1).max(1_000_000).default(256),
    /** Tiles a single stream may have in flight (decoded or queued, not yet answered). */
    streamWindow: z.coerce.number().int().min(1).max(10_000).default(32),
    maxMessageBytes: z.coerce.number().int().min(1024).max(1 << 30).default(16 * 1024 * 1024),
    maxTilePixels: z.coerce.number().int().min(1).max(1 << 30).default(4096 * 4096),
    minTissueFraction: z.coerce.number().min(0).max(1).default(0.05),
    stainNormalization: bool.default(true),
    tlsCert: z.string().optional(),
    tlsKey: z.string().optional(),
    tlsClientCa: z.string().optional(),
    tokensFile: z.string().optional(),
    /** Failed token checks a peer address may make before its checks are slowed down (AuthGuard). */
    authFreeFailures: z.coerce.number().int().min(0).max(1_000_000).default(5),
    /** The most a slowed-down peer's check waits; the delay doubles per failure from 100 ms up to this. */
    authMaxDelayMs: z.coerce.number().int().min(0).max(600_000).default(5000),
    drainTimeoutS: z.coerce.number().min(0).max(3600).default(25),
    /**
     * Serve the TrainingService and run jobs here. Serving replicas that share the model repository with a training
     * server set it to false (only one server may run the jobs of one example store).
     */
    training: bool.default(true),
    /** Example store for uploaded training examples (a volume in Kubernetes); job records live in its .jobs/ folder. */
    datasets: z.string().min(1).default('datasets'),
    /** Pixels of one uploaded example image (a bigger one is rejected with its id). */
    maxExamplePixels: z.coerce.number().int().min(1).max(1 << 30).default(4096 * 4096),
    /** Examples in one dataset; an upload past it ends RESOURCE_EXHAUSTED. */
    maxDatasetExamples: z.coerce.number().int().min(1).max(10_000_000).default(100_000),
    /** Bytes of one dataset on disk. */
    maxDatasetBytes: z.coerce.number().int().min(1).default(4 * 1024 ** 3),
    /** Bytes of the whole example store. */
    maxStoreBytes: z.coerce.number().int().min(1).default(32 * 1024 ** 3),
    /** Training jobs running at once, each in its own child process. */
    trainingConcurrency: z.coerce.number().int().min(1).max(16).default(1),
    /** Jobs waiting to run; StartTraining past it is RESOURCE_EXHAUSTED. */
    maxQueuedJobs: z.coerce.number().int().min(0).max(10_000).default(16),
    /** Epochs of a job that asks for 0. */
    trainingEpochs: z.coerce.number().int().min(1).max(10_000).default(10),
    /** Cap on training steps per epoch (smoke runs and tests); unset = every selected patch once per epoch. */
    trainingMaxSteps: z.coerce.number().int().min(1).optional(),
    /** Niceness of the training child process (0-19): serving keeps the CPU it needs. */
    trainingNice: z.coerce.number().int().min(0).max(19).default(10),
    /** How often the model repository is re-read for new versions and a changed default. */
    modelPollMs: z.coerce.number().int().min(50).max(600_000).default(2000),
    /** Model versions kept loaded; idle ones past it are unloaded, least recently used first. */
    maxLoadedModels: z.coerce.number().int().min(1).max(64).default(4),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict()
  // Issues carry the missing key's path, so loadConfig names its flag and variable.
  .superRefine((c, ctx) => {
    if (c.tlsCert && !c.tlsKey) ctx.addIssue({ code: 'custom', path: ['tlsKey'], message: 'required when --tls-cert is set (TLS needs the certificate and its key)' });
    if (c.tlsKey && !c.tlsCert) ctx.addIssue({ code: 'custom', path: ['tlsCert'], message: 'required when --tls-key is set (TLS needs the certificate and its key)' });
    try {
      enginePlacement(c.engine, c.device);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['device'], message: (err as Error).message });
    }
    if (c.tlsClientCa && !c.tlsCert) ctx.addIssue({ code: 'custom', path: ['tlsClientCa'], message: 'needs --tls-cert and --tls-key: client certificates are checked only over TLS' });
  });

export type Config = Readonly<z.infer<typeof ConfigSchema>>;

/** camelCase key -> HISTOSEG_SNAKE_CASE. */
export function envName(key: string): string {
  return 'HISTOSEG_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();
}

export const CONFIG_KEYS = Object.keys(ConfigSchema.shape) as (keyof z.infer<typeof ConfigSchema>)[];

/**
 * Flags win over environment variables, which win over defaults. Unknown HISTOSEG_* variables are an error,
 * because a typo would otherwise be silently ignored.
 */
export function loadConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): Config {
  const merged: Record<string, unknown> = {};
  const known = new Set(CONFIG_KEYS.map(envName));
  for (const name of Object.keys(env)) {
    if (name.startsWith('HISTOSEG_') && !known.has(name)) {
      throw new Error(`unknown environment variable ${name}; known: ${[...known].join(', ')}`);
    }
  }
  for (const key of CONFIG_KEYS) {
    const v = env[envName(key)];
    if (v !== undefined && v !== '') merged[key] = v;
  }
  for (const [key, v] of Object.entries(flags)) {
    if (v !== undefined) merged[key] = v;
  }
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? '');
      return key ? `${key} (--${key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} / ${envName(key)}): ${i.message}` : i.message;
    });
    throw new Error(`invalid configuration:\n  ${issues.join('\n  ')}`);
  }
  return Object.freeze(parsed.data);
}
