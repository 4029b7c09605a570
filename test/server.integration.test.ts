import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { makeClientConstructor, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { listModels } from '../src/model/repository.js';
import { connect, segmentTiles, type HistosegClients } from '../src/client/segmentationClient.js';
import { TileStatus, type SegmentTilesResponse, type Tile } from '../src/proto/gen/histoseg/v1/segmentation.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { decodeMask, tissueTiles, whiteTile } from './support/slideTiles.js';

const MAX_PIXELS = 1500 * 1500;

async function collect(clients: HistosegClients, tiles: Tile[], options?: Parameters<typeof segmentTiles>[2]): Promise<SegmentTilesResponse[]> {
  const out: SegmentTilesResponse[] = [];
  for await (const r of segmentTiles(clients, tiles, options)) out.push(r);
  return out;
}

async function expectStatus(p: Promise<unknown>, code: status, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: ServiceError) => {
    assert.equal(err.code, code, `expected status ${status[code]}, got ${status[err.code]}: ${err.details}`);
    assert.match(err.details, pattern);
    return true;
  });
}

describe('server, end to end over gRPC', () => {
  let server: RunningServer;
  let clients: HistosegClients;
  let address: string;

  before(async () => {
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 2, maxTilePixels: MAX_PIXELS, maxMessageBytes: 2 * 1024 * 1024, logLevel: 'silent' }, {});
    server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: true }));
    address = `127.0.0.1:${server.port}`;
    clients = connect(address);
  });

  after(async () => {
    clients?.close();
    await server?.shutdown();
  });

  it('segments tissue tiles, answers white tiles as background, and a corrupt tile as INVALID without ending the stream', async () => {
    const tissue = await tissueTiles([
      { left: 1024, top: 1024, width: 512, height: 512, mpp: 2.0 },
      { left: 1024, top: 1536, width: 512, height: 512, mpp: 2.0, format: 'jpeg' },
      { left: 1024, top: 2048, width: 512, height: 512, mpp: 2.0, format: 'webp' },
      { left: 1024, top: 2300, width: 512, height: 512, mpp: 2.0, format: 'tiff' },
      // native 0.5 um/px: resampled to the model's 7.5 um/px, then padded
      { left: 800, top: 1500, width: 1200, height: 900, mpp: 0.499, format: 'jpeg' },
    ]);
    // A larger tile at the model's own scale runs as overlapping, blended windows.
    const big = (await tissueTiles([{ left: 600, top: 1000, width: 1200, height: 800, mpp: 2.0 }]))[0];
    big.mpp = 0;
    big.tileId = 'big';
    const corrupt: Tile = { tileId: 'corrupt', image: tissue[0].image.subarray(0, 300), mpp: 0, x: 1, y: 2 };
    const gif: Tile = { tileId: 'gif', image: await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ff0000' } }).gif().toBuffer(), mpp: 0, x: 0, y: 0 };
    const tiles = [tissue[0], await whiteTile('white-1'), corrupt, tissue[1], gif, big, tissue[2], await whiteTile('white-2', 200, 90), tissue[3], tissue[4]];

    const answers = await collect(clients, tiles);
    assert.deepEqual(answers.map((a) => a.tileId), tiles.map((t) => t.tileId), 'answers come back in tile order');
    const byId = new Map(answers.map((a) => [a.tileId, a]));
    const info = (await new Promise((resolve, reject) => clients.models.getModel({ name: '', version: '' }, clients.metadata(), (e, r) => (e ? reject(e) : resolve(r))))) as unknown as { model: { classes: unknown[]; version: string } };
    const C = info.model.classes.length;

    for (const t of tiles) {
      const a = byId.get(t.tileId)!;
      assert.equal(a.x, t.x);
      assert.equal(a.y, t.y);
      if (t === corrupt || t === gif) continue;
      const src = await sharp(t.image).metadata();
      const mask = await decodeMask(a.mask);
      assert.equal(mask.channels, 1, 'mask is single-channel');
      assert.deepEqual([mask.width, mask.height], [src.width, src.height], `mask of ${t.tileId} has the tile's size`);
      assert.deepEqual([a.width, a.height], [src.width, src.height]);
      assert.ok(mask.data.every((v) => v < C), 'mask pixels are class indices');
      assert.equal(a.classProbabilities.length, C);
      assert.ok(Math.abs(a.classProbabilities.reduce((s, p) => s + p, 0) - 1) < 1e-5, 'probabilities sum to 1');
      assert.ok(Math.abs(a.classFractions.reduce((s, p) => s + p, 0) - 1) < 1e-5, 'class fractions sum to 1');
      assert.equal(a.modelVersion, info.model.version);
      // Class fractions agree with the mask that was sent.
      const counts = new Array<number>(C).fill(0);
      for (const v of mask.data) counts[v]++;
      counts.forEach((c, k) => assert.ok(Math.abs(c / mask.data.length - a.classFractions[k]) < 1e-6));
    }
    for (const t of [...tissue, big]) {
      const a = byId.get(t.tileId)!;
      assert.equal(a.status, TileStatus.TILE_STATUS_SEGMENTED, `${t.tileId}: ${a.error}`);
      assert.ok(a.tissueFraction > 0.3, `${t.tileId} tissue fraction ${a.tissueFraction}`);
    }
    for (const id of ['white-1', 'white-2']) {
      const a = byId.get(id)!;
      assert.equal(a.status, TileStatus.TILE_STATUS_BACKGROUND);
      assert.ok(a.tissueFraction < 0.01);
      assert.ok((await decodeMask(a.mask)).data.every((v) => v === 0), 'background mask is all zero');
    }
    assert.equal(byId.get('corrupt')!.status, TileStatus.TILE_STATUS_INVALID);
    assert.match(byId.get('corrupt')!.error, /corrupt|truncated/i);
    assert.equal(byId.get('gif')!.status, TileStatus.TILE_STATUS_INVALID);
    assert.match(byId.get('gif')!.error, /gif/);
  });

  it('reports SERVING on grpc.health.v1 and exposes parseable Prometheus metrics', async () => {
    const Health = makeClientConstructor(healthService, 'Health');
    const health = new Health(address, credentials.createInsecure()) as unknown as {
      check(req: { service: string }, cb: (e: Error | null, r: { status: string | number }) => void): void;
      close(): void;
    };
    for (const svc of ['', 'histoseg.v1.SegmentationService']) {
      const res = await new Promise<{ status: string | number }>((resolve, reject) => health.check({ service: svc }, (e, r) => (e ? reject(e) : resolve(r))));
      assert.ok(res.status === 'SERVING' || res.status === 1, `health of "${svc}" is ${res.status}`);
    }
    health.close();

    const res = await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    const samples = new Map<string, number>();
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(line);
      assert.ok(m, `unparseable metrics line: ${line}`);
      samples.set(m[1], Number(m[2]));
    }
    assert.ok((samples.get('histoseg_tiles_total{status="segmented",model="histoseg-bach"}') ?? 0) >= 6);
    assert.equal(samples.get('histoseg_tiles_total{status="invalid",model="histoseg-bach"}'), 2);
    assert.ok((samples.get('histoseg_compute_seconds_count') ?? 0) >= 1);
    assert.ok((samples.get('histoseg_queue_seconds_count') ?? 0) >= 1);
    assert.ok(samples.has('histoseg_process_resident_memory_bytes'));
    assert.equal((await fetch(`http://127.0.0.1:${server.metricsPort}/readyz`)).status, 200);
  });

  it('answers a tile over the pixel limit INVALID with the reason, and the stream goes on', async () => {
    const ok = await whiteTile('before');
    const huge = await whiteTile('huge', 1600, 1600);
    const after = await whiteTile('after');
    const seen = await collect(clients, [ok, huge, after]);
    assert.deepEqual(seen.map((r) => r.tileId), ['before', 'huge', 'after']);
    assert.equal(seen[1]!.status, TileStatus.TILE_STATUS_INVALID);
    assert.match(seen[1]!.error, /1600x1600 = 2\.6e6 pixels, over the limit of 2250000/);
    assert.equal(seen[2]!.status, TileStatus.TILE_STATUS_BACKGROUND);
  });

  it('refuses an oversize message with RESOURCE_EXHAUSTED', async () => {
    const tile: Tile = { tileId: 'big', image: Buffer.alloc(3 * 1024 * 1024, 7), mpp: 0, x: 0, y: 0 };
    await expectStatus(collect(clients, [tile]), status.RESOURCE_EXHAUSTED, /message|length|larger/i);
  });

  it('refuses bad options and unknown models with clear statuses', async () => {
    const t = await whiteTile('w');
    await expectStatus(collect(clients, [t], { minTissueFraction: 2 }), status.INVALID_ARGUMENT, /min_tissue_fraction/);
    await expectStatus(collect(clients, [t], { modelVersion: '9.9.9' }), status.NOT_FOUND, /9\.9\.9/);
    await expectStatus(collect(clients, [t], { modelName: '../../etc' }), status.INVALID_ARGUMENT, /invalid model name/);
    const call = clients.segmentation.segmentTiles(clients.metadata());
    call.write({ tile: t, options: undefined });
    call.write({ tile: undefined, options: { modelName: "", modelVersion: "", omitMask: false } });
    call.end();
    await expectStatus(
      (async () => {
        for await (const _ of call) void _;
      })(),
      status.INVALID_ARGUMENT,
      /first message/,
    );
  });

  it('omits masks when asked and honours a per-stream tissue threshold', async () => {
    const [cut] = await tissueTiles([{ left: 1024, top: 1024, width: 512, height: 512, mpp: 2.0 }]);
    // A strip of glass beside the tissue, so that the tile is not all tissue whichever slide it was cut from.
    const tissue = { ...cut, image: await sharp(cut.image).extend({ right: 32, background: '#f5f5f5' }).png().toBuffer() };
    const [a] = await collect(clients, [tissue], { omitMask: true });
    assert.equal(a.status, TileStatus.TILE_STATUS_SEGMENTED);
    assert.equal(a.mask.length, 0);
    const [b] = await collect(clients, [tissue], { minTissueFraction: 1 });
    assert.equal(b.status, TileStatus.TILE_STATUS_BACKGROUND, 'a threshold of 1 makes any tile with glass background');
  });

  it('GetModel answers a named version, and NOT_FOUND for one that does not exist', async () => {
    const get = (name: string, version: string) =>
      new Promise<{ model?: { name: string; version: string; trained: boolean } }>((resolve, reject) =>
        clients.models.getModel({ name, version }, clients.metadata(), (e, r) => (e ? reject(e) : resolve(r as never))),
      );
    const old = await get('histoseg-bach', '0.1.0');
    assert.equal(old.model?.version, '0.1.0');
    assert.equal(old.model?.trained, false);
    await expectStatus(get('histoseg-bach', '7.7.7'), status.NOT_FOUND, /7\.7\.7/);
    await expectStatus(get('no-such-model', ''), status.NOT_FOUND, /no-such-model/);
  });

  it('lists the bundled models, the default loaded, each marked trained or not as its manifest says', async () => {
    const res = await new Promise<{ models: { name: string; version: string; trained: boolean; isDefault: boolean; classes: { name: string; color: string }[]; inputSize: number; engine: string; loaded: boolean }[] }>((resolve, reject) =>
      clients.models.listModels({}, clients.metadata(), (e, r) => (e ? reject(e) : resolve(r))),
    );
    const repo = await listModels(fileURLToPath(new URL('../models', import.meta.url)));
    assert.deepEqual(res.models.map((x) => `${x.name}@${x.version}`).sort(), repo.map((e) => `${e.name}@${e.version}`).sort());
    for (const m of res.models) {
      const onDisk = repo.find((e) => e.name === m.name && e.version === m.version)!;
      assert.equal(m.trained, onDisk.manifest.trained, `${m.name}@${m.version} trained flag`);
      assert.equal(m.inputSize, 128);
    }
    const m = res.models.find((x) => x.isDefault);
    assert.ok(m, 'one model is the default');
    assert.equal(res.models.filter((x) => x.isDefault).length, 1);
    assert.deepEqual(m.classes.map((c) => c.name), ['normal', 'benign', 'in situ', 'invasive']);
    assert.equal(m.engine, 'onnx');
    assert.equal(m.loaded, true);
  });
});
