import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { credentials, makeClientConstructor, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { connect, segmentTiles, type HistosegClients } from '../src/client/segmentationClient.js';
import { TileStatus, type SegmentTilesResponse, type Tile } from '../src/proto/gen/histoseg/v1/segmentation.js';
import { TokenAuth } from '../src/server/auth.js';
import { loadConfig } from '../src/server/config.js';
import { startServer, type RunningServer } from '../src/server/grpcServer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { tissueTiles } from './support/slideTiles.js';

const haveOpenssl = spawnSync('openssl', ['version']).status === 0;
const PATIENT_ID = 'PATIENT-12345-MRN';

/** A throwaway CA and a server certificate for 127.0.0.1 and localhost, signed by it. */
function makeCertificates(dir: string): { ca: string; cert: string; key: string } {
  const p = (f: string) => join(dir, f);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const run = (args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  run(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '1', '-subj', '/CN=histoseg test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  run(['req', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=localhost']);
  writeFileSync(p('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  run(['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p('server.pem'), '-days', '1', '-extfile', p('ext.cnf')]);
  return { ca: p('ca.pem'), cert: p('server.pem'), key: p('server.key') };
}

function metadataWith(header?: string): Metadata {
  const md = new Metadata();
  if (header !== undefined) md.set('authorization', header);
  return md;
}

async function collect(clients: HistosegClients, tiles: Tile[]): Promise<SegmentTilesResponse[]> {
  const out: SegmentTilesResponse[] = [];
  for await (const r of segmentTiles(clients, tiles)) out.push(r);
  return out;
}

function expectCode(code: status) {
  return (err: ServiceError) => {
    assert.equal(err.code, code, `expected ${status[code]}, got ${status[err.code]}: ${err.details}`);
    return true;
  };
}

describe('TokenAuth', () => {
  let dir: string;
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const SEG = 's'.repeat(16) + 'egment-token';
  const TRAIN = 't'.repeat(16) + 'rain-token';

  before(() => (dir = mkdtempSync(join(tmpdir(), 'histoseg-auth-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses malformed tokens files with the file, the line and what was expected', () => {
    const cases: [string, RegExp][] = [
      [`segment ${SEG}\nroot ${TRAIN}\n`, /line 2: expected "<role> <token>" with role one of segment, train, admin/],
      ['segment\n', /line 1: expected "<role> <token>"/],
      [`segment ${SEG} extra\n`, /line 1: expected "<role> <token>"/],
      ['segment short\n', /line 1: token shorter than 16 characters/],
      ['# only a comment\n\n', /has no tokens/],
      ['', /has no tokens/],
    ];
    cases.forEach(([text, pattern], i) => {
      const path = file(`bad${i}.txt`, text);
      assert.throws(() => TokenAuth.fromFile(path), (err: Error) => {
        assert.match(err.message, pattern);
        assert.ok(err.message.includes(path), `names the file: ${err.message}`);
        assert.ok(!err.message.includes(SEG) && !err.message.includes(TRAIN), 'never echoes a token');
        return true;
      });
    });
    assert.throws(() => TokenAuth.fromFile(join(dir, 'missing.txt')), /missing\.txt/);
  });

  it('reads comments, blank lines and CRLF; train implies segment; segment may not train', () => {
    const auth = TokenAuth.fromFile(file('ok.txt', `# tokens\r\n\r\nsegment ${SEG}\r\n  train   ${TRAIN}  \r\n`));
    assert.equal(auth.roleOf(SEG), 'segment');
    assert.equal(auth.roleOf(TRAIN), 'train');
    assert.equal(auth.roleOf(SEG + 'x'), undefined);
    assert.equal(auth.check(metadataWith(`Bearer ${SEG}`), 'segment'), null);
    assert.equal(auth.check(metadataWith(`bearer ${TRAIN}`), 'segment'), null, 'the train role implies segment');
    assert.equal(auth.check(metadataWith(`Bearer ${TRAIN}`), 'train'), null);
    assert.equal(auth.check(metadataWith(`Bearer ${SEG}`), 'train')?.code, status.PERMISSION_DENIED);
    for (const header of [undefined, '', SEG, `Basic ${SEG}`, `Bearer ${SEG} more`, 'Bearer wrong-token-0123456789']) {
      assert.equal(auth.check(metadataWith(header), 'segment')?.code, status.UNAUTHENTICATED, `header ${JSON.stringify(header)}`);
    }
  });

  it('orders roles segment < train < admin: each includes those below it and nothing above', () => {
    const ADMIN = 'a'.repeat(16) + 'dmin-token';
    const auth = TokenAuth.fromFile(file('roles.txt', `segment ${SEG}\ntrain ${TRAIN}\nadmin ${ADMIN}\n`));
    const allowed = (token: string, need: 'segment' | 'train' | 'admin') => auth.check(metadataWith(`Bearer ${token}`), need) === null;
    assert.deepEqual([allowed(SEG, 'segment'), allowed(SEG, 'train'), allowed(SEG, 'admin')], [true, false, false]);
    assert.deepEqual([allowed(TRAIN, 'segment'), allowed(TRAIN, 'train'), allowed(TRAIN, 'admin')], [true, true, false]);
    assert.deepEqual([allowed(ADMIN, 'segment'), allowed(ADMIN, 'train'), allowed(ADMIN, 'admin')], [true, true, true]);
    const denied = auth.check(metadataWith(`Bearer ${TRAIN}`), 'admin');
    assert.equal(denied?.code, status.PERMISSION_DENIED);
    assert.match(denied!.message, /needs the admin role/);
    assert.equal(TokenAuth.fromFile(file('both2.txt', `admin ${ADMIN}\nsegment ${ADMIN}\n`)).roleOf(ADMIN), 'admin');
  });

  it('gives the train role to a token listed under both roles', () => {
    const auth = TokenAuth.fromFile(file('both.txt', `train ${TRAIN}\nsegment ${TRAIN}\n`));
    assert.equal(auth.roleOf(TRAIN), 'train');
  });
});

// Skips only off CI: with CI=true a missing openssl fails the test (.ci/install-openssl.sh installs it).
const skip = !haveOpenssl && process.env.CI !== 'true' ? 'openssl is not installed: cannot make test certificates (apt-get install openssl)' : false;

describe('TLS and bearer tokens over gRPC', { skip }, () => {
  let dir: string;
  let server: RunningServer;
  let address: string;
  let certs: { ca: string; cert: string; key: string };
  const segmentToken = randomBytes(24).toString('hex');
  const trainToken = randomBytes(24).toString('hex');
  const wrongToken = randomBytes(24).toString('hex');
  const logChunks: string[] = [];
  const opened: HistosegClients[] = [];
  let tile: Tile;

  const client = (opts: Parameters<typeof connect>[1]) => {
    const c = connect(address, opts);
    opened.push(c);
    return c;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'histoseg-tls-'));
    certs = makeCertificates(dir);
    const tokensFile = join(dir, 'tokens');
    writeFileSync(tokensFile, `segment ${segmentToken}\ntrain ${trainToken}\n`);
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logChunks.push(chunk.toString());
        cb();
      },
    });
    const config = loadConfig({ port: 0, metricsPort: 0, threads: 2, tlsCert: certs.cert, tlsKey: certs.key, tokensFile, logLevel: 'trace' }, {});
    server = await startServer(config, createLogger(config.logLevel, sink), new Metrics(undefined, { processMetrics: false }));
    // By name: TLS must not be given an IP address as the server name (RFC 6066); the certificate names both.
    address = `localhost:${server.port}`;
    [tile] = await tissueTiles([{ left: 1024, top: 1024, width: 512, height: 512, mpp: 2.0 }]);
    tile.tileId = PATIENT_ID;
  });

  after(async () => {
    for (const c of opened) c.close();
    await server?.shutdown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a plaintext client', async () => {
    await assert.rejects(collect(client({ token: segmentToken }), [tile]), expectCode(status.UNAVAILABLE));
  });

  it('answers UNAUTHENTICATED without a token or with a wrong one, on both services', async () => {
    for (const token of [undefined, wrongToken]) {
      const c = client({ caFile: certs.ca, token });
      await assert.rejects(collect(c, [tile]), expectCode(status.UNAUTHENTICATED));
      await assert.rejects(
        new Promise((resolve, reject) => c.models.listModels({}, c.metadata(), (e, r) => (e ? reject(e) : resolve(r)))),
        expectCode(status.UNAUTHENTICATED),
      );
    }
  });

  it('segments a tile with the segment token, and with the train token (train implies segment)', async () => {
    for (const token of [segmentToken, trainToken]) {
      const answers = await collect(client({ caFile: certs.ca, token }), [tile, { ...tile, image: tile.image.subarray(0, 200) }]);
      assert.deepEqual(answers.map((a) => a.tileId), [PATIENT_ID, PATIENT_ID]);
      assert.equal(answers[0].status, TileStatus.TILE_STATUS_SEGMENTED, answers[0].error);
      assert.ok(answers[0].mask.length > 0);
      assert.equal(answers[1].status, TileStatus.TILE_STATUS_INVALID, 'a corrupt tile is answered INVALID');
    }
  });

  it('answers health checks over TLS without a token', async () => {
    const Health = makeClientConstructor(healthService, 'Health');
    const health = new Health(address, credentials.createSsl(readFileSync(certs.ca))) as unknown as {
      check(req: { service: string }, cb: (e: Error | null, r: { status: string | number }) => void): void;
      close(): void;
    };
    try {
      const res = await new Promise<{ status: string | number }>((resolve, reject) => health.check({ service: '' }, (e, r) => (e ? reject(e) : resolve(r))));
      assert.ok(res.status === 'SERVING' || res.status === 1, `health is ${res.status}`);
    } finally {
      health.close();
    }
  });

  it('never logs a token, a tile id or image bytes', () => {
    const logs = logChunks.join('');
    assert.match(logs, /"msg":"serving"/, 'the logs were captured');
    assert.match(logs, /"tls":true,"auth":true/);
    for (const secret of [segmentToken, trainToken, wrongToken, PATIENT_ID, 'PATIENT-12345']) {
      assert.ok(!logs.includes(secret), `logs contain ${secret}`);
    }
    // Image bytes as base64, as a JSON byte array, or as hex (PNG signature and a run from the middle of the tile).
    const mid = Buffer.from(tile.image.subarray(1000, 1024));
    for (const leak of ['iVBORw0KGgo', '137,80,78,71', '89504e47', mid.toString('base64'), mid.toString('hex'), Array.from(mid).join(',')]) {
      assert.ok(!logs.includes(leak), `logs contain image bytes (${leak})`);
    }
  });
});
