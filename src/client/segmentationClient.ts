import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { credentials, Metadata, type ChannelCredentials, type ClientDuplexStream } from '@grpc/grpc-js';
import { ModelServiceClient } from '../proto/gen/histoseg/v1/model.js';
import {
  SegmentationServiceClient,
  type SegmentTilesOptions,
  type SegmentTilesRequest,
  type SegmentTilesResponse,
  type Tile,
} from '../proto/gen/histoseg/v1/segmentation.js';
import { TrainingServiceClient } from '../proto/gen/histoseg/v1/training.js';

export interface ClientOptions {
  /** PEM CA file for a TLS server; omitted means plaintext. */
  caFile?: string;
  /** Bearer token sent with every call. */
  token?: string;
  maxMessageBytes?: number;
}

export interface HistosegClients {
  segmentation: SegmentationServiceClient;
  models: ModelServiceClient;
  training: TrainingServiceClient;
  metadata(): Metadata;
  close(): void;
}

export function connect(address: string, opts: ClientOptions = {}): HistosegClients {
  const creds: ChannelCredentials = opts.caFile ? credentials.createSsl(readFileSync(opts.caFile)) : credentials.createInsecure();
  const channelOptions = {
    'grpc.max_receive_message_length': opts.maxMessageBytes ?? 64 * 1024 * 1024,
    'grpc.max_send_message_length': opts.maxMessageBytes ?? 64 * 1024 * 1024,
  };
  const segmentation = new SegmentationServiceClient(address, creds, channelOptions);
  const models = new ModelServiceClient(address, creds, channelOptions);
  const training = new TrainingServiceClient(address, creds, channelOptions);
  return {
    segmentation,
    models,
    training,
    metadata: () => {
      const md = new Metadata();
      if (opts.token) md.set('authorization', `Bearer ${opts.token}`);
      return md;
    },
    close: () => {
      segmentation.close();
      models.close();
      training.close();
    },
  };
}

/**
 * One stream per slide: sends the options, then the tiles (respecting write backpressure), and yields the
 * answers in tile order. A stream-level failure is thrown as the gRPC ServiceError.
 */
export async function* segmentTiles(
  clients: HistosegClients,
  tiles: Iterable<Tile> | AsyncIterable<Tile>,
  options?: Partial<SegmentTilesOptions>,
  callOptions: { deadline?: Date; signal?: AbortSignal } = {},
): AsyncGenerator<SegmentTilesResponse> {
  const call: ClientDuplexStream<SegmentTilesRequest, SegmentTilesResponse> = clients.segmentation.segmentTiles(clients.metadata(), {
    deadline: callOptions.deadline,
  });
  callOptions.signal?.addEventListener('abort', () => call.cancel(), { once: true });
  const writing = (async () => {
    if (options) {
      const o: SegmentTilesOptions = { modelName: '', modelVersion: '', omitMask: false, ...options };
      if (!call.write({ options: o, tile: undefined })) await once(call, 'drain');
    }
    for await (const tile of tiles) {
      if (!call.write({ options: undefined, tile })) await once(call, 'drain');
    }
    call.end();
  })();
  writing.catch(() => call.cancel());
  try {
    for await (const res of call as AsyncIterable<SegmentTilesResponse>) yield res;
    await writing;
  } finally {
    call.cancel();
  }
}
