import type { Command } from 'commander';
import { startServer } from '../server/grpcServer.js';
import { loadConfig } from '../server/config.js';
import { createLogger } from '../telemetry/logger.js';

/**
 * Node flags the server should start with (npm start, the Docker CMD, the benchmark). With V8's default the old
 * generation's first limits sit just above the live heap, and at 300 tiles/s the server ran a full mark-compact
 * about 5 times a second; starting it at 128 MB cut them about threefold and the GC threads' CPU per tile by half.
 * V8 reads this only at start (not from NODE_OPTIONS), so it is a command-line flag.
 */
export const SERVE_NODE_FLAGS = ['--initial-old-space-size=128'] as const;

/** Longest wait, on a second signal, for running engine batches (each a fraction of a second) before exiting. */
const HALT_TIMEOUT_MS = 3_000;

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve the model repository over gRPC (flags override HISTOSEG_* environment variables)')
    .option('--host <host>', 'listen address (HISTOSEG_HOST, default 127.0.0.1)')
    .option('--port <port>', 'gRPC port, 0 = any free (HISTOSEG_PORT, default 50051)')
    .option('--metrics-port <port>', 'HTTP port for /metrics, /healthz, /readyz (HISTOSEG_METRICS_PORT, default 9464)')
    .option('--models <dir>', 'model repository folder (HISTOSEG_MODELS, default models)')
    .option('--default-model <name>', 'model served when a stream names none (HISTOSEG_DEFAULT_MODEL)')
    .option('--engine <kind>', 'onnx or tfjs (HISTOSEG_ENGINE, default onnx)')
    .option('--device <device>', 'engine device: cpu, cuda or webgpu; valid pairs: onnx/cpu, onnx/cuda, onnx/webgpu, tfjs/cpu, tfjs/cuda (HISTOSEG_DEVICE, default cpu)')
    .option('--allow-software-gpu <bool>', 'webgpu: accept a software adapter such as lavapipe (HISTOSEG_ALLOW_SOFTWARE_GPU, default false)')
    .option('--threads <n>', 'engine threads in all (HISTOSEG_THREADS, default: CPU cores)')
    .option('--workers <n>', 'engine worker threads (HISTOSEG_WORKERS, default: one per thread on cpu, 1 on a GPU)')
    .option('--max-batch <n>', 'largest batch (HISTOSEG_MAX_BATCH, default 16 on cpu, 64 on a GPU)')
    .option('--max-delay-ms <ms>', 'longest wait for a batch to fill while other tiles are being decoded (HISTOSEG_MAX_DELAY_MS, default 4)')
    .option('--queue-capacity <n>', 'windows queued over all streams before reads pause (HISTOSEG_QUEUE_CAPACITY, default 256)')
    .option('--stream-window <n>', 'tiles in flight per stream (HISTOSEG_STREAM_WINDOW, default 32)')
    .option('--max-message-bytes <n>', 'largest gRPC message (HISTOSEG_MAX_MESSAGE_BYTES, default 16 MiB)')
    .option('--max-tile-pixels <n>', 'largest tile, width x height (HISTOSEG_MAX_TILE_PIXELS, default 4096x4096)')
    .option('--min-tissue-fraction <f>', 'tiles with less tissue are BACKGROUND (HISTOSEG_MIN_TISSUE_FRACTION, default 0.05)')
    .option('--stain-normalization <bool>', 'Macenko normalisation (HISTOSEG_STAIN_NORMALIZATION, default true)')
    .option('--tls-cert <file>', 'PEM certificate chain (HISTOSEG_TLS_CERT)')
    .option('--tls-key <file>', 'PEM private key (HISTOSEG_TLS_KEY)')
    .option('--tls-client-ca <file>', 'require client certificates signed by this CA (HISTOSEG_TLS_CLIENT_CA)')
    .option('--tokens-file <file>', 'lines of "<role> <token>", role segment, train or admin (HISTOSEG_TOKENS_FILE)')
    .option('--training <bool>', 'serve the TrainingService and run jobs here (HISTOSEG_TRAINING, default true)')
    .option('--datasets <dir>', 'example store for uploaded training examples and job records (HISTOSEG_DATASETS, default datasets)')
    .option('--max-example-pixels <n>', 'largest uploaded example image, width x height (HISTOSEG_MAX_EXAMPLE_PIXELS, default 4096x4096)')
    .option('--max-dataset-examples <n>', 'examples per dataset (HISTOSEG_MAX_DATASET_EXAMPLES, default 100000)')
    .option('--max-dataset-bytes <n>', 'bytes per dataset (HISTOSEG_MAX_DATASET_BYTES, default 4 GiB)')
    .option('--max-store-bytes <n>', 'bytes of the whole example store (HISTOSEG_MAX_STORE_BYTES, default 32 GiB)')
    .option('--training-concurrency <n>', 'training jobs at once, each a child process (HISTOSEG_TRAINING_CONCURRENCY, default 1)')
    .option('--max-queued-jobs <n>', 'jobs waiting to run (HISTOSEG_MAX_QUEUED_JOBS, default 16)')
    .option('--training-epochs <n>', 'epochs of a job that asks for 0 (HISTOSEG_TRAINING_EPOCHS, default 10)')
    .option('--training-max-steps <n>', 'cap on training steps per epoch (HISTOSEG_TRAINING_MAX_STEPS)')
    .option('--training-nice <n>', 'niceness of the training process, 0-19 (HISTOSEG_TRAINING_NICE, default 10)')
    .option('--model-poll-ms <ms>', 'how often the model repository is re-read for a changed default (HISTOSEG_MODEL_POLL_MS, default 2000)')
    .option('--max-loaded-models <n>', 'versions kept loaded; idle ones past it are unloaded (HISTOSEG_MAX_LOADED_MODELS, default 4)')
    .option('--auth-free-failures <n>', 'failed token checks per peer address before its checks are slowed (HISTOSEG_AUTH_FREE_FAILURES, default 5)')
    .option('--auth-max-delay-ms <ms>', 'longest delay of a slowed-down peer\'s check (HISTOSEG_AUTH_MAX_DELAY_MS, default 5000)')
    .option('--drain-timeout-s <s>', 'grace time for in-flight tiles on SIGTERM (HISTOSEG_DRAIN_TIMEOUT_S, default 25)')
    .option('--log-level <level>', 'pino level (HISTOSEG_LOG_LEVEL, default info)')
    .action(async (flags: Record<string, unknown>) => {
      const config = loadConfig(flags);
      const log = createLogger(config.logLevel);
      const missing = SERVE_NODE_FLAGS.filter((f) => !process.execArgv.includes(f));
      if (missing.length > 0) log.info({ flags: missing }, 'node started without the server flags: throughput is a few percent lower (more GC)');
      const server = await startServer(config, log);
      let signals = 0;
      const stop = (sig: string) => {
        if (++signals > 2) process.exit(1);
        if (signals === 2) {
          // Exit now, without the drain; but not while an engine worker is inside a native run: terminating it
          // there throws Napi::Error past the addon and the process dies of SIGABRT, which reads as a crash.
          log.warn({ signal: sig }, 'second signal: exiting now');
          void server.halt(HALT_TIMEOUT_MS).finally(() => process.exit(1));
          return;
        }
        log.info({ signal: sig }, 'shutting down');
        server.shutdown().then(
          () => process.exit(0),
          (err: Error) => {
            log.error({ err }, 'shutdown failed');
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
}
