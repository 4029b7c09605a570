import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Default process metrics that break the exposition format's naming rules (gauges named *_total). */
export const DROPPED_DEFAULT_METRICS = ['histoseg_nodejs_active_handles_total', 'histoseg_nodejs_active_requests_total', 'histoseg_nodejs_active_resources_total'];

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** All metrics of one server, in an injected registry. Queue time and compute time are separate (Triton's split). */
export class Metrics {
  readonly registry: Registry;
  readonly tiles: Counter<'status' | 'model'>;
  readonly tileSeconds: Histogram<'status'>;
  readonly queueSeconds: Histogram;
  readonly computeSeconds: Histogram;
  readonly batchSize: Histogram;
  readonly queueDepth: Gauge;
  readonly inflightTiles: Gauge;
  readonly streams: Gauge;
  readonly executions: Counter;
  readonly inferences: Counter;
  readonly requestErrors: Counter<'code' | 'method'>;
  readonly authFailures: Counter<'method' | 'reason'>;
  readonly modelInfo: Gauge<'name' | 'version' | 'engine' | 'trained'>;
  readonly examplesAccepted: Counter;
  readonly examplesRejected: Counter<'reason'>;
  readonly trainingJobs: Gauge<'state'>;
  readonly trainingEpochSeconds: Histogram;
  readonly trainingImagesPerSecond: Gauge;
  readonly trainingLoss: Gauge;

  constructor(registry = new Registry(), opts: { processMetrics?: boolean } = {}) {
    this.registry = registry;
    const r = [registry];
    if (opts.processMetrics ?? true) {
      collectDefaultMetrics({ register: registry, prefix: 'histoseg_' });
      // prom-client's totals of these are gauges with a counter's suffix, which promtool (and Prometheus' naming
      // rules) refuse; the per-type gauges without the suffix stay, and sum() over them gives the totals.
      for (const name of DROPPED_DEFAULT_METRICS) registry.removeSingleMetric(name);
    }
    this.tiles = new Counter({ name: 'histoseg_tiles_total', help: 'Tiles answered, by status', labelNames: ['status', 'model'], registers: r });
    this.tileSeconds = new Histogram({
      name: 'histoseg_tile_latency_seconds',
      help: 'Time from a tile being read off the stream to its answer being ready',
      labelNames: ['status'],
      buckets: LATENCY_BUCKETS,
      registers: r,
    });
    this.queueSeconds = new Histogram({ name: 'histoseg_queue_seconds', help: 'Time a model window waited in the batch queue', buckets: LATENCY_BUCKETS, registers: r });
    this.computeSeconds = new Histogram({ name: 'histoseg_compute_seconds', help: 'Engine time per batch execution', buckets: LATENCY_BUCKETS, registers: r });
    this.batchSize = new Histogram({ name: 'histoseg_batch_size', help: 'Windows per engine execution', buckets: [1, 2, 4, 8, 12, 16, 24, 32, 64, 128], registers: r });
    this.queueDepth = new Gauge({ name: 'histoseg_queue_depth', help: 'Windows waiting for the engine', registers: r });
    this.inflightTiles = new Gauge({ name: 'histoseg_inflight_tiles', help: 'Tiles read but not yet answered', registers: r });
    this.streams = new Gauge({ name: 'histoseg_streams', help: 'Open SegmentTiles streams', registers: r });
    this.executions = new Counter({ name: 'histoseg_engine_executions_total', help: 'Engine batch executions', registers: r });
    this.inferences = new Counter({ name: 'histoseg_engine_inferences_total', help: 'Windows run through the engine', registers: r });
    this.requestErrors = new Counter({
      name: 'histoseg_rpc_errors_total',
      help: 'RPCs ended with a non-OK status, by numeric gRPC code and method (Service/Method)',
      labelNames: ['code', 'method'],
      registers: r,
    });
    this.authFailures = new Counter({
      name: 'histoseg_auth_failures_total',
      help: 'Failed token checks, by method and reason (missing, unknown-token, permission)',
      labelNames: ['method', 'reason'],
      registers: r,
    });
    this.examplesAccepted = new Counter({ name: 'histoseg_examples_accepted_total', help: 'Uploaded training examples written durably', registers: r });
    this.examplesRejected = new Counter({
      name: 'histoseg_examples_rejected_total',
      help: 'Uploaded training examples refused: invalid (bad image, mask or label) or limit (a store limit)',
      labelNames: ['reason'],
      registers: r,
    });
    this.trainingJobs = new Gauge({ name: 'histoseg_training_jobs', help: 'Training jobs by state', labelNames: ['state'], registers: r });
    this.trainingEpochSeconds = new Histogram({
      name: 'histoseg_training_epoch_seconds',
      help: 'Wall time of one training epoch',
      buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
      registers: r,
    });
    this.trainingImagesPerSecond = new Gauge({ name: 'histoseg_training_images_per_second', help: 'Training images per second of the running job', registers: r });
    this.trainingLoss = new Gauge({ name: 'histoseg_training_loss', help: 'Training loss of the running job (last epoch mean, or last step)', registers: r });
    this.modelInfo = new Gauge({ name: 'histoseg_model_info', help: 'Loaded models (value 1)', labelNames: ['name', 'version', 'engine', 'trained'], registers: r });
  }
}
