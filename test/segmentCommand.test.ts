import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { status, type ServiceError } from '@grpc/grpc-js';
import sharp from 'sharp';
import { fromFile } from 'geotiff';
import { parseModelRef, readTokenFile, segmentImage, type SegmentSummary } from '../src/cli/segmentCommand.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { decodeMask, SLIDE_VARIANTS, SVS_MPP, tissuePng } from './support/slideTiles.js';

const CLI = fileURLToPath(new URL('../bin/histoseg.js', import.meta.url));

async function tileCounts(metrics: Metrics): Promise<Record<string, number>> {
  const out: Record<string, number> = { segmented: 0, background: 0, invalid: 0 };
  for (const v of (await metrics.tiles.get()).values) out[String(v.labels.status)] = (out[String(v.labels.status)] ?? 0) + v.value;
  return out;
}

/**
 * Class shares of a stitched mask must agree with the summary's (from the answers' class fractions, at the model's
 * scale): exactly when the mask was not rescaled, to within the nearest-neighbour upscaling otherwise.
 */
function assertSharesMatch(summary: SegmentSummary, mask: Buffer, tolerance: number): void {
  const counts = new Array<number>(summary.classes.length).fill(0);
  for (const v of mask) counts[v]++;
  assert.equal(counts.reduce((s, c) => s + c, 0), mask.length, 'every mask pixel is a class index');
  const total = summary.classes.reduce((s, c) => s + c.pixels, 0);
  const area = summary.modelScale.width * summary.modelScale.height;
  assert.ok(Math.abs(total - area) <= summary.classes.length, `summary covers ${total} of ${area} model-scale pixels`);
  summary.classes.forEach((c, k) => assert.ok(Math.abs(c.share - counts[k] / mask.length) <= tolerance, `${c.name}: share ${c.share} vs mask ${counts[k] / mask.length}`));
  assert.ok(Math.abs(summary.classes.reduce((s, c) => s + c.share, 0) - 1) < 1e-9);
}

describe('histoseg segment', () => {
  let server: RunningServer;
  let dir: string;
  let address: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'histoseg-segment-'));
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 2, logLevel: 'silent' }, {});
    server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
    address = `127.0.0.1:${server.port}`;
  });

  after(async () => {
    await server?.shutdown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('parses --model and token files', () => {
    assert.deepEqual(parseModelRef(undefined), { name: '', version: '' });
    assert.deepEqual(parseModelRef('histoseg-bach'), { name: 'histoseg-bach', version: '' });
    assert.deepEqual(parseModelRef('histoseg-bach@0.1.0'), { name: 'histoseg-bach', version: '0.1.0' });
    assert.throws(() => parseModelRef('histoseg-bach@'), /NAME@VERSION/);
    assert.throws(() => parseModelRef('@0.1.0'), /NAME@VERSION/);
    const token = join(dir, 'token');
    writeFileSync(token, '# mine\n  abcdefghijklmnopqrstuvwxyz  \n');
    assert.equal(readTokenFile(token), 'abcdefghijklmnopqrstuvwxyz');
    writeFileSync(token, 'segment abcdefghijklmnopqrstuvwxyz\n');
    assert.equal(readTokenFile(token), 'abcdefghijklmnopqrstuvwxyz');
    writeFileSync(token, 'a b c\n');
    assert.throws(() => readTokenFile(token), /expected one line/);
  });

  for (const variant of SLIDE_VARIANTS) {
    it(`segments the ${variant.kind} slide at level 0 and writes a full-size mask and overlay whose counts match the summary`, async () => {
      const slide = await variant.load();
      const before = await tileCounts(server.metrics);
      const out = join(dir, `mask-${slide.kind}.png`);
      const overlay = join(dir, `overlay-${slide.kind}.png`);
      const progress: number[] = [];
      const summary = await segmentImage({ server: address, image: slide.path, tile: 128, out, overlay, model: 'histoseg-bach@0.1.0', onProgress: (d) => progress.push(d) });

      assert.deepEqual([summary.image.width, summary.image.height], [slide.width, slide.height]);
      assert.equal(summary.image.mpp, slide.mpp, 'the mpp comes from the slide\'s ImageDescription');
      // Tiled at the model's 7.5 um/px.
      const mw = Math.round((slide.width * slide.mpp) / 7.5);
      const mh = Math.round((slide.height * slide.mpp) / 7.5);
      assert.deepEqual(summary.modelScale, { width: mw, height: mh, mpp: 7.5 });
      if (slide.kind === 'real') {
        assert.deepEqual([slide.width, slide.height, summary.image.mpp], [2220, 2967, SVS_MPP]);
        assert.deepEqual([mw, mh], [148, 197], '2220 x 0.499 / 7.5 = 148 wide');
      }
      assert.deepEqual(summary.model, { name: 'histoseg-bach', version: '0.1.0', trained: false });
      const total = Math.ceil(mw / 128) * Math.ceil(mh / 128);
      assert.equal(summary.tiles.total, total);
      assert.equal(summary.tiles.segmented + summary.tiles.background + summary.tiles.invalid, total);
      assert.equal(summary.tiles.invalid, 0, JSON.stringify(summary.invalid));
      assert.ok(summary.tiles.segmented >= 2, 'the tissue tiles were segmented');
      assert.deepEqual(progress, Array.from({ length: total + 1 }, (_, i) => i));

      // The server counted the same tiles.
      const after = await tileCounts(server.metrics);
      for (const k of ['segmented', 'background', 'invalid'] as const) assert.equal(after[k] - before[k], summary.tiles[k], k);

      const mask = await decodeMask(readFileSync(out));
      assert.deepEqual([mask.width, mask.height, mask.channels], [slide.width, slide.height, 1], 'mask has the input size, one channel');
      assertSharesMatch(summary, mask.data, 0.01);
      const ov = await sharp(overlay).metadata();
      assert.deepEqual([ov.width, ov.height], [slide.width, slide.height]);
    });
  }

  it('runs from the CLI on a PNG with --json, and the JSON agrees with the mask', async () => {
    const png = await tissuePng();
    const out = join(dir, 'png-mask.png');
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HISTOSEG_')));
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'segment', '--server', address, '--image', png, '--mpp', '0', '--tile', '200', '--out', out, '--json'], { env });
    const summary = JSON.parse(stdout) as SegmentSummary;
    assert.equal(summary.tiles.total, 9, '512x512 in 200px tiles');
    assert.equal(summary.tiles.segmented + summary.tiles.background, 9);
    assert.equal(summary.image.mpp, 0);
    assert.deepEqual(summary.modelScale, { width: 512, height: 512, mpp: 0 });
    assert.equal(summary.mask, out);
    const mask = await decodeMask(readFileSync(out));
    assert.deepEqual([mask.width, mask.height, mask.channels], [512, 512, 1]);
    assertSharesMatch(summary, mask.data, 1e-4);
  });

  it('--out FILE.tif writes the same label map as a tiled TIFF with the slide\'s resolution', async () => {
    const png = await tissuePng();
    const outPng = join(dir, 'same.png');
    const outTif = join(dir, 'same.tif');
    await segmentImage({ server: address, image: png, mpp: 0, tile: 256, out: outPng });
    const summary = await segmentImage({ server: address, image: png, mpp: 0, tile: 256, out: outTif });
    assert.equal(summary.mask, outTif);
    const meta = await sharp(outTif).metadata();
    assert.equal(meta.format, 'tiff');
    const image = await (await fromFile(outTif)).getImage();
    assert.ok(image.isTiled, 'tiled');
    const [num, den] = Array.from((image.getFileDirectory() as unknown as { getValue(n: string): ArrayLike<number> }).getValue('XResolution'));
    assert.ok(Math.abs(num! / den! - 10_000 / 7.5) < 1, `${num! / den!} px/cm at the model's 7.5 um/px`);
    const a = await decodeMask(readFileSync(outPng));
    const { data } = await sharp(outTif).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
    assert.ok(Buffer.compare(a.data, data) === 0, 'the TIFF holds the PNG\'s labels');
  });

  it('fails clearly: no mpp in a PNG, a bad tile size, an unknown model version', async () => {
    const png = await tissuePng();
    await assert.rejects(segmentImage({ server: address, image: png }), /--mpp/);
    await assert.rejects(segmentImage({ server: address, image: png, mpp: 0, tile: 64 }), /--tile/);
    await assert.rejects(segmentImage({ server: address, image: png, mpp: 0, model: 'histoseg-bach@9.9.9' }), (err: ServiceError) => {
      assert.equal(err.code, status.NOT_FOUND);
      assert.match(err.details, /9\.9\.9/);
      return true;
    });
  });
});
