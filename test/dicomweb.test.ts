import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { segmentImage } from '../src/cli/segmentCommand.js';
import { readDicomHeader } from '../src/dicom/dicomFile.js';
import { parseMultipart } from '../src/dicom/dicomweb.js';
import { readDicomSeg } from '../src/data/labels/dicomSeg.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { dciodvfy, DICOMIZER, dicomize, fixtureSource, haveTool, needTools } from './support/dicomFixtures.js';
import { bearerGate, ORTHANC_TOOLS, startOrthanc, type RunningOrthanc } from './support/orthanc.js';

const TOKEN = 'pacs-token-0123456789';

/** The fixture slide in the top-left quarter of a white canvas twice its size: three quarters glass. */
async function mostlyGlass(dir: string) {
  const src = await fixtureSource(dir);
  const path = join(dir, 'glass.tif');
  const { width, height } = src;
  await sharp(src.path, { limitInputPixels: false })
    .removeAlpha()
    .extend({ right: width, bottom: height, background: '#ffffff' })
    .tiff({ compression: 'jpeg', quality: 90, tile: true, tileWidth: 256, tileHeight: 256, pyramid: true })
    .toFile(path);
  return { ...src, path, width: 2 * width, height: 2 * height, openslide: false };
}

describe('DICOMweb against Orthanc', () => {
  let dir: string;
  let server: RunningServer | undefined;
  let orthanc: RunningOrthanc | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'histoseg-dicomweb-'));
  });
  after(async () => {
    await orthanc?.stop();
    await server?.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('segment --dicomweb fetches only tissue frames through a bearer-token gate, and --store puts a valid SEG in the study', async (t) => {
    if (!needTools(t, { ...DICOMIZER, ...ORTHANC_TOOLS })) return;
    const slide = await mostlyGlass(dir);
    const series = await dicomize(slide, join(dir, 'series'), 'jpeg');
    const files = readdirSync(series).map((f) => join(series, f));
    const seriesBytes = files.reduce((s, f) => s + statSync(f).size, 0);
    orthanc = await startOrthanc();
    for (const f of files) await orthanc.upload(f);
    const { dataset } = await readDicomHeader(files[0]!);
    const study = String(dataset.StudyInstanceUID);
    const seriesUid = String(dataset.SeriesInstanceUID);

    const config = loadConfig({ port: 0, metricsPort: 0, threads: 2, logLevel: 'silent' }, {});
    server = await startServer(config, createLogger('silent'), new Metrics(undefined, { processMetrics: false }));
    const gate = await bearerGate(orthanc.url, TOKEN);
    t.after(() => gate.close());
    const target = { url: `${gate.url}/dicom-web`, study, series: seriesUid };
    const common = { server: `127.0.0.1:${server.port}`, tile: 128, model: 'histoseg-bach@0.1.0' };

    await assert.rejects(segmentImage({ ...common, dicomweb: target }), /HTTP 401.*--dicomweb-token-file/);
    assert.ok(gate.refused > 0);

    const local = join(dir, 'local.dcm');
    const summary = await segmentImage({ ...common, dicomweb: { ...target, token: TOKEN }, store: true, dicomSeg: local, segOrganization: 'TILED_SPARSE' });
    assert.ok(summary.fetched, 'a DICOMweb run reports what it fetched');
    assert.ok(summary.read.skippedGlassTiles > 0, 'glass tiles were not fetched');
    assert.ok(summary.fetched.bytes < seriesBytes / 2, `fetched ${summary.fetched.bytes} of the series' ${seriesBytes} bytes`);

    // The SEG is in the study, as a new SEG series, and reads back to the label map written locally.
    assert.equal(summary.stored?.studyInstanceUid, study);
    const qido = (await (await fetch(`${orthanc.dicomweb}/studies/${study}/series`, { headers: { Accept: 'application/dicom+json' } })).json()) as Record<string, { Value?: string[] }>[];
    const segSeries = qido.find((s) => s['0020000E']?.Value?.[0] === summary.stored!.seriesInstanceUid);
    assert.equal(segSeries?.['00080060']?.Value?.[0], 'SEG');
    const res = await fetch(`${orthanc.dicomweb}/studies/${study}/series/${summary.stored!.seriesInstanceUid}/instances/${summary.stored!.sopInstanceUid}`, {
      headers: { Accept: 'multipart/related; type="application/dicom"' },
    });
    assert.equal(res.status, 200);
    const [part] = parseMultipart(new Uint8Array(await res.arrayBuffer()), res.headers.get('content-type') ?? '');
    const stored = await readDicomSeg(part!.data);
    const mine = await readDicomSeg(local);
    assert.ok(Buffer.from(stored.labels).equals(Buffer.from(mine.labels)));
    // The dicomizer writes no Frame of Reference; the SEG then has one of its own (copying is checked in dicom.test.ts).
    assert.equal(stored.dataset.FrameOfReferenceUID, dataset.FrameOfReferenceUID ?? mine.dataset.FrameOfReferenceUID);
    assert.equal(stored.dataset.StudyInstanceUID, study);
    if (haveTool('dciodvfy') || process.env.CI === 'true') assert.deepEqual((await dciodvfy(local)).errors, []);
  });
});
