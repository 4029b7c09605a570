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

/** The server's answers do not match the tiles sent: fewer, more, or out of order. */
export class AnswerMismatchError extends Error {
  override readonly name = 'AnswerMismatchError';
}

/**
 * One stream per slide: sends the options, then the tiles (respecting write backpressure), and yields the
 * answers in tile order. A stream-level failure is thrown as the gRPC ServiceError.
 *
 * The client checks what it gets against what it sent: every answer must carry the id of the oldest unanswered
 * tile, and a stream that ends OK with tiles unanswered throws AnswerMismatchError. A transport can lose a tile
 * without an error (grpc-js 1.14.7 drops a truncated final message at END_STREAM and ends the call OK; see
 * docs/known-issues.md), and a silently missing tile would be a hole in a slide's mask.
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
  /** Ids of the tiles sent and not yet answered, oldest first. */
  const unanswered: string[] = [];
  let head = 0;
  let sent = 0;
  const writing = (async () => {
    if (options) {
      const o: SegmentTilesOptions = { modelName: '', modelVersion: '', omitMask: false, ...options };
      if (!call.write({ options: o, tile: undefined })) await once(call, 'drain');
    }
    for await (const tile of tiles) {
      unanswered.push(tile.tileId);
      sent++;
      if (!call.write({ options: undefined, tile })) await once(call, 'drain');
    }
    call.end();
  })();
  writing.catch(() => call.cancel());
  try {
    let answered = 0;
    for await (const res of call as AsyncIterable<SegmentTilesResponse>) {
      if (head >= unanswered.length) {
        throw new AnswerMismatchError(`the server sent answer ${answered + 1} (tile ${JSON.stringify(res.tileId)}) when only ${sent} tile(s) had been sent`);
      }
      const expected = unanswered[head]!;
      if (res.tileId !== expected) {
        throw new AnswerMismatchError(`answer ${answered + 1} is for tile ${JSON.stringify(res.tileId)}, expected ${JSON.stringify(expected)} (answers come in tile order)`);
      }
      head++;
      if (head > 1024 && head * 2 > unanswered.length) unanswered.splice(0, head), (head = 0);
      answered++;
      yield res;
    }
    await writing;
    if (answered !== sent) {
      throw new AnswerMismatchError(
        `the stream ended OK after ${answered} answer(s) for ${sent} tile(s) sent; tile ${JSON.stringify(unanswered[head])} and any after it ` +
          `were lost in transport (see docs/known-issues.md)`,
      );
    }
  } finally {
    call.cancel();
  }
}
