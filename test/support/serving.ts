// Helpers for the serving tests: generated tiles (no ../shared needed) and raw streams whose answers and status
// are collected.
import { EventEmitter, once } from 'node:events';
import { credentials, makeClientConstructor, type ClientDuplexStream, type StatusObject } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import sharp from 'sharp';
import type { HistosegClients } from '../../src/client/segmentationClient.js';
import type { SegmentTilesOptions, SegmentTilesRequest, SegmentTilesResponse, Tile } from '../../src/proto/gen/histoseg/v1/segmentation.js';
import { renderSynthSlide } from '../../src/synth/slides.js';
import { rng } from './random.js';

/** Saturated colour noise: all tissue to the App. B.1 mask, so every window of it goes to the engine. */
export async function noiseTile(id: string, side: number, seed = 1): Promise<Tile> {
  const rand = rng(seed);
  const rgb = Buffer.alloc(side * side * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = 40 + Math.floor(rand() * 180);
  const image = await sharp(rgb, { raw: { width: side, height: side, channels: 3 } }).png({ compressionLevel: 1 }).toBuffer();
  return { tileId: id, image, mpp: 0, x: 0, y: 0 };
}

/** A synthetic H&E slide at the model's scale cut into side x side tiles, row by row, in the given format. */
export async function synthSlideTiles(seed: number, slideSide: number, side: number, format: 'png' | 'jpeg' = 'png'): Promise<Tile[]> {
  const slide = renderSynthSlide(seed, slideSide);
  const tiles: Tile[] = [];
  for (let y = 0; y + side <= slide.height; y += side) {
    for (let x = 0; x + side <= slide.width; x += side) {
      const img = sharp(slide.rgb, { raw: { width: slide.width, height: slide.height, channels: 3 } }).extract({ left: x, top: y, width: side, height: side });
      const image = await (format === 'png' ? img.png() : img.jpeg({ quality: 90 })).toBuffer();
      tiles.push({ tileId: `s${seed}-${x}-${y}`, image, mpp: 0, x, y });
    }
  }
  return tiles;
}

/** A raw SegmentTiles call whose answers and final status are collected. */
export function openStream(clients: HistosegClients, options?: Partial<SegmentTilesOptions>) {
  const call: ClientDuplexStream<SegmentTilesRequest, SegmentTilesResponse> = clients.segmentation.segmentTiles(clients.metadata());
  const answers: SegmentTilesResponse[] = [];
  const events = new EventEmitter();
  call.on('data', (r: SegmentTilesResponse) => {
    answers.push(r);
    events.emit('answer', r);
  });
  call.on('error', () => undefined); // the status below carries it
  let status: StatusObject | undefined;
  const done = new Promise<StatusObject>((resolve) => call.on('status', (s: StatusObject) => resolve((status = s))));
  if (options) call.write({ options: options as SegmentTilesOptions, tile: undefined });
  const send = (tiles: Tile[]) => tiles.forEach((tile) => call.write({ tile, options: undefined }));
  /** Resolves when the answer for this tile id arrives (or at once if it has). */
  const answered = async (id: string): Promise<SegmentTilesResponse> => {
    for (;;) {
      const a = answers.find((r) => r.tileId === id);
      if (a) return a;
      await once(events, 'answer');
    }
  };
  /**
   * Keeps sending tiles (cycling through `tiles`, ids made unique) until the call ends, honouring write
   * backpressure. Returns the ids sent, in order.
   */
  const sendUntilEnd = async (tiles: Tile[]): Promise<string[]> => {
    const sent: string[] = [];
    for (let i = 0; status === undefined; i++) {
      const t = tiles[i % tiles.length]!;
      const id = `${t.tileId}#${i}`;
      sent.push(id);
      const more = call.write({ tile: { ...t, tileId: id }, options: undefined });
      if (!more) await Promise.race([once(call, 'drain'), done]);
      else await new Promise((r) => setImmediate(r));
    }
    return sent;
  };
  return { call, answers, events, done, send, answered, sendUntilEnd };
}

/** grpc.health.v1 Watch: every status the server reports for `service`, as it changes. */
export function watchHealth(address: string, service = '') {
  const Health = makeClientConstructor(healthService, 'Health');
  const client = new Health(address, credentials.createInsecure()) as unknown as {
    watch(req: { service: string }): NodeJS.EventEmitter & { cancel(): void };
    close(): void;
  };
  const seen: string[] = [];
  const events = new EventEmitter();
  const call = client.watch({ service });
  call.on('data', (r: { status: string | number }) => {
    const s = typeof r.status === 'number' ? (['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'][r.status] ?? String(r.status)) : r.status;
    seen.push(s);
    events.emit('status', s);
  });
  call.on('error', () => undefined);
  /** Resolves once `status` has been reported (now or before). */
  const reaches = async (status: string, after = 0): Promise<void> => {
    while (!seen.slice(after).includes(status)) await once(events, 'status');
  };
  return { seen, reaches, close: () => (call.cancel(), client.close()) };
}
