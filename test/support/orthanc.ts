// A real PACS for tests: Debian's Orthanc with its DICOMweb plugin, on a free loopback port, in a temp folder;
// started by the test, awaited on its "started" log line, stopped after. And a bearer-token gate in front of it
// (Orthanc 1.10 has no token auth of its own) for the token code path.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ORTHANC = '/usr/sbin/Orthanc';
export const DICOMWEB_PLUGIN = '/usr/share/orthanc/plugins/libOrthancDicomWeb.so';
export const ORTHANC_TOOLS = { [ORTHANC]: 'orthanc', [DICOMWEB_PLUGIN]: 'orthanc-dicomweb' };

async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  s.close();
  await once(s, 'close');
  return port;
}

export interface RunningOrthanc {
  /** REST root, e.g. http://127.0.0.1:PORT */
  url: string;
  dicomweb: string;
  upload(file: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startOrthanc(): Promise<RunningOrthanc> {
  const dir = mkdtempSync(join(tmpdir(), 'histoseg-orthanc-'));
  const port = await freePort();
  const config = {
    Name: 'histoseg-test',
    HttpPort: port,
    DicomServerEnabled: false,
    StorageDirectory: join(dir, 'db'),
    IndexDirectory: join(dir, 'db'),
    RemoteAccessAllowed: false,
    AuthenticationEnabled: false,
    Plugins: [DICOMWEB_PLUGIN],
    DicomWeb: { Enable: true, Root: '/dicom-web/' },
  };
  writeFileSync(join(dir, 'orthanc.json'), JSON.stringify(config));
  const child: ChildProcess = spawn(ORTHANC, [join(dir, 'orthanc.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const started = new Promise<void>((resolve, reject) => {
    const onData = (b: Buffer) => {
      log += b.toString();
      if (log.includes('Orthanc has started')) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`Orthanc exited (${code}) before it started:\n${log.slice(-2000)}`)));
  });
  await started;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    dicomweb: `${url}/dicom-web`,
    async upload(file: string) {
      const res = await fetch(`${url}/instances`, { method: 'POST', body: await readFile(file) });
      if (!res.ok) throw new Error(`Orthanc refused ${file}: HTTP ${res.status}`);
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An HTTP gate that forwards to `target` only requests bearing `token`; 401 otherwise. */
export async function bearerGate(target: string, token: string): Promise<{ url: string; refused: number; close(): Promise<void> }> {
  const t = new URL(target);
  const state = { refused: 0 };
  const server: Server = createServer((req, res) => {
    if (req.headers.authorization !== `Bearer ${token}`) {
      state.refused++;
      res.writeHead(401, { 'WWW-Authenticate': 'Bearer' }).end();
      return;
    }
    const headers = { ...req.headers, host: t.host };
    delete headers.authorization;
    const up = request({ host: t.hostname, port: t.port, path: req.url, method: req.method, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.writeHead(502).end());
    req.pipe(up);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get refused() {
      return state.refused;
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
