/**
 * `npm run bench:dicom`: DICOM WSI and JPEG 2000 throughput, written to bench/results/dicom.{json,md}.
 *  - frames/s decoded: JPEG baseline and JPEG 2000 (lossless) DICOM frames, and OpenJPEG's three builds on the same
 *    JPEG 2000 frames (rounds alternate between them, so drift hits all alike);
 *  - tiles/s of `segment` on the DICOM fixture against the same slide as SVS (alternated);
 *  - bytes fetched over DICOMweb (Orthanc) against the series' size, for a slide that is three quarters glass.
 * Needs Debian's orthanc, orthanc-dicomweb, orthanc-wsi (.ci/install-dicom.sh); the slide is ../shared's
 * CMU-1-Small-Region.svs when present, else a synthetic one.
 */
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { segmentImage } from '../src/cli/segmentCommand.js';
import { openDicomWsi } from '../src/dicom/dicomWsi.js';
import { decodeFrame } from '../src/dicom/dicomFrames.js';
import { decodeJpeg2000, type OpenJpegBuild } from '../src/imaging/jpeg2000.js';
import { readDicomHeader } from '../src/dicom/dicomFile.js';
import { loadConfig } from '../src/server/config.js';
import { startServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { dicomize, fixtureSource } from '../test/support/dicomFixtures.js';
import { startOrthanc } from '../test/support/orthanc.js';

// libvips' operation cache can hand a sequential-access TIFF pipeline to a random-access read of the same file.
sharp.cache(false);
const OUT_DIR = fileURLToPath(new URL('results', import.meta.url));
const ROUNDS = 3;
const work = mkdtempSync(join(tmpdir(), 'histoseg-dicom-bench-'));

async function framesOf(dir: string) {
  const wsi = await openDicomWsi(dir);
  const inst = wsi.levels[0]!.instances[0]!;
  const n = Math.min(inst.numberOfFrames, 60);
  const src = (wsi as unknown as { source: { readFrames(i: typeof inst, f: number[]): Promise<Uint8Array[]> } }).source;
  return { inst, frames: await src.readFrames(inst, Array.from({ length: n }, (_, i) => i)) };
}

try {
  const src = await fixtureSource(work);
  const jpegDir = await dicomize(src, join(work, 'jpeg'), 'jpeg');
  const j2kDir = await dicomize(src, join(work, 'j2k'), 'jpeg2000');
  const jpeg = await framesOf(jpegDir);
  const j2k = await framesOf(j2kDir);

  // Frames/s: JPEG through sharp, JPEG 2000 through each OpenJPEG build, alternated.
  const builds: OpenJpegBuild[] = ['wasm-decode', 'wasm', 'asmjs'];
  const time: Record<string, number> = { jpeg: 0, ...Object.fromEntries(builds.map((b) => [b, 0])) };
  const count: Record<string, number> = { jpeg: 0, ...Object.fromEntries(builds.map((b) => [b, 0])) };
  for (const b of builds) await decodeJpeg2000(j2k.frames[0]!, { build: b }); // load each module once
  for (let r = 0; r < ROUNDS; r++) {
    let t = performance.now();
    for (const f of jpeg.frames) await decodeFrame(jpeg.inst, f);
    time.jpeg! += performance.now() - t;
    count.jpeg! += jpeg.frames.length;
    for (const b of r % 2 ? [...builds].reverse() : builds) {
      const frames = b === 'asmjs' ? j2k.frames.slice(0, 10) : j2k.frames;
      t = performance.now();
      for (const f of frames) await decodeJpeg2000(f, { build: b });
      time[b]! += performance.now() - t;
      count[b]! += frames.length;
    }
  }
  const fps = Object.fromEntries(Object.keys(time).map((k) => [k, (1000 * count[k]!) / time[k]!]));

  // segment: the DICOM fixture against the source slide, alternated.
  const config = loadConfig({ port: 0, metricsPort: 0, threads: 2, logLevel: 'silent' }, {});
  const server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
  const address = `127.0.0.1:${server.port}`;
  const seg: Record<string, { seconds: number; tiles: number }> = { dicom: { seconds: 0, tiles: 0 }, source: { seconds: 0, tiles: 0 } };
  for (let r = 0; r < ROUNDS; r++) {
    for (const [what, image] of (r % 2 ? [['source', src.path], ['dicom', jpegDir]] : [['dicom', jpegDir], ['source', src.path]]) as [string, string][]) {
      const t = performance.now();
      const s = await segmentImage({ server: address, image, tile: 128, model: 'histoseg-bach@0.1.0', mpp: src.mpp });
      seg[what]!.seconds += (performance.now() - t) / 1000;
      seg[what]!.tiles += s.tiles.total;
    }
  }

  // DICOMweb: a slide three quarters glass; bytes that travel against the series' size.
  const glass = join(work, 'glass.tif');
  await sharp(src.path, { limitInputPixels: false }).removeAlpha().extend({ right: src.width, bottom: src.height, background: '#ffffff' })
    .tiff({ compression: 'jpeg', quality: 90, tile: true, tileWidth: 256, tileHeight: 256, pyramid: true }).toFile(glass);
  const glassDir = await dicomize({ ...src, path: glass, width: 2 * src.width, height: 2 * src.height, openslide: false }, join(work, 'glass'), 'jpeg');
  const files = readdirSync(glassDir).map((f) => join(glassDir, f));
  const seriesBytes = files.reduce((s, f) => s + statSync(f).size, 0);
  const orthanc = await startOrthanc();
  let web;
  try {
    for (const f of files) await orthanc.upload(f);
    const { dataset } = await readDicomHeader(files[0]!);
    const t = performance.now();
    const s = await segmentImage({ server: address, dicomweb: { url: orthanc.dicomweb, study: String(dataset.StudyInstanceUID), series: String(dataset.SeriesInstanceUID) }, tile: 128, model: 'histoseg-bach@0.1.0' });
    web = { seconds: (performance.now() - t) / 1000, seriesBytes, fetchedBytes: s.fetched!.bytes, frames: s.fetched!.frames, requests: s.fetched!.requests, skippedGlassTiles: s.read.skippedGlassTiles, tiles: s.tiles.total, level: s.read.level };
  } finally {
    await orthanc.stop();
    await server.shutdown();
  }

  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavg: loadavg()[0], shared: true },
    slide: { real: src.real, width: src.width, height: src.height, mpp: src.mpp, frameSide: jpeg.inst.columns },
    framesPerSecond: fps,
    segment: Object.fromEntries(Object.entries(seg).map(([k, v]) => [k, { ...v, tilesPerSecond: v.tiles / v.seconds }])),
    dicomweb: web,
  };
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(join(OUT_DIR, 'dicom.json'), JSON.stringify(result, null, 2) + '\n');
  const f1 = (x: number) => x.toFixed(1);
  const md = [
    '# DICOM benchmark',
    '',
    `${result.date}, ${result.machine.cpus} x ${result.machine.model}, Node ${process.version}; the machine was shared with other work (load ${f1(result.machine.loadavg)}), so read the ratios, measured in one run with alternating rounds, not the absolute numbers. \`npm run bench:dicom\`, ${src.real ? 'CMU-1-Small-Region.svs' : 'a synthetic slide'} (${src.width}x${src.height}, ${src.mpp} um/px) dicomized by OrthancWSIDicomizer, ${result.slide.frameSide} px frames.`,
    '',
    '| decode | frames/s | vs JPEG |',
    '|---|---|---|',
    `| JPEG baseline (sharp/libjpeg) | ${f1(fps.jpeg!)} | 1 |`,
    ...builds.map((b) => `| JPEG 2000 lossless, OpenJPEG ${b}${b === 'wasm-decode' ? ' (default)' : ''} | ${f1(fps[b]!)} | ${(fps[b]! / fps.jpeg!).toFixed(2)} |`),
    '',
    '| segment (tile 128, untrained histoseg-bach@0.1.0, local server) | tiles | s | tiles/s |',
    '|---|---|---|---|',
    ...Object.entries(result.segment).map(([k, v]) => `| ${k === 'dicom' ? 'DICOM (JPEG) series' : 'source slide (' + (src.real ? 'SVS' : 'TIFF') + ')'} | ${v.tiles} | ${f1(v.seconds)} | ${f1(v.tilesPerSecond)} |`),
    '',
    `DICOMweb (Orthanc + orthanc-dicomweb, loopback), the slide on a white canvas twice its size (three quarters glass): fetched ${web.fetchedBytes} bytes (metadata + ${web.frames} frames in ${web.requests} requests) of the series' ${web.seriesBytes} bytes = ${(100 * web.fetchedBytes / web.seriesBytes).toFixed(1)}%; ${web.skippedGlassTiles} of ${web.tiles} model tiles were glass at the coarsest level and not fetched; tiles read from level ${web.level}.`,
    '',
  ].join('\n');
  writeFileSync(join(OUT_DIR, 'dicom.md'), md);
  process.stdout.write(md);
} finally {
  rmSync(work, { recursive: true, force: true });
}
