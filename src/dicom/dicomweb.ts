// A slide on a DICOMweb server (a PACS): the series' metadata once (WADO-RS), then only the frames that region reads
// need, several per request, in their stored transfer syntax (no transcoding on the server). STOW-RS sends instances
// (the SEG) back. A bearer token, when given, goes with every request.
import dcmjs from 'dcmjs';
import { DicomSlideError, SUPPORTED_TRANSFER_SYNTAXES, wsiInstanceFromDataset, type WsiInstance } from './dicomFrames.js';
import { DicomWsi, type FrameSource } from './dicomWsi.js';

/** Frames asked for in one WADO-RS request (a URL stays short, a response a few MB). */
const FRAMES_PER_REQUEST = 32;

export interface DicomWebTarget {
  /** DICOMweb root, e.g. http://pacs:8042/dicom-web */
  url: string;
  study: string;
  series: string;
  /** Bearer token for a server that needs one. */
  token?: string;
}

export class DicomWebError extends Error {
  override name = 'DicomWebError';
}

const UID = /^[0-9]+(\.[0-9]+)*$/;

function root(t: DicomWebTarget): string {
  let u: URL;
  try {
    u = new URL(t.url);
  } catch {
    throw new DicomWebError(`--dicomweb ${t.url} is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new DicomWebError(`--dicomweb must be an http(s) URL, got ${u.protocol}`);
  for (const [what, uid] of [['study', t.study], ['series', t.series]] as const) {
    if (!UID.test(uid) || uid.length > 64) throw new DicomWebError(`--${what} "${uid}" is not a DICOM UID`);
  }
  return t.url.replace(/\/+$/, '');
}

function headers(t: DicomWebTarget, accept: string): Record<string, string> {
  return { Accept: accept, ...(t.token ? { Authorization: `Bearer ${t.token}` } : {}) };
}

async function request(t: DicomWebTarget, url: string, init: RequestInit & { headers: Record<string, string> }): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, init);
  } catch (err) {
    throw new DicomWebError(`DICOMweb ${init.method ?? 'GET'} ${url} failed: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`);
  }
  if (!res.ok) {
    const hint = res.status === 401 || res.status === 403 ? (t.token ? ' (the token was refused)' : ' (the server wants credentials: --dicomweb-token-file)') : '';
    throw new DicomWebError(`DICOMweb ${init.method ?? 'GET'} ${url}: HTTP ${res.status} ${res.statusText}${hint}`);
  }
  return res;
}

/** Splits a multipart/related body into its parts (headers and bytes). */
export function parseMultipart(body: Uint8Array, contentType: string): { headers: Record<string, string>; data: Uint8Array }[] {
  const m = /boundary="?([^";]+)"?/i.exec(contentType);
  if (!m) throw new DicomWebError(`multipart answer without a boundary (Content-Type: ${contentType})`);
  const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const delim = Buffer.from(`--${m[1]}`);
  const parts: { headers: Record<string, string>; data: Uint8Array }[] = [];
  let pos = buf.indexOf(delim);
  while (pos >= 0) {
    const start = pos + delim.length;
    if (buf[start] === 0x2d && buf[start + 1] === 0x2d) break; // closing --boundary--
    const headerEnd = buf.indexOf('\r\n\r\n', start);
    if (headerEnd < 0) break;
    const next = buf.indexOf(Buffer.concat([Buffer.from('\r\n'), delim]), headerEnd + 4);
    if (next < 0) throw new DicomWebError('truncated multipart answer');
    const hs: Record<string, string> = {};
    for (const line of buf.toString('latin1', start, headerEnd).split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0) hs[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    parts.push({ headers: hs, data: new Uint8Array(buf.buffer, buf.byteOffset + headerEnd + 4, next - headerEnd - 4) });
    pos = next + 2;
  }
  return parts;
}

/** The transfer syntax a frame part says it is in (transfer-syntax parameter; image/jpeg alone means baseline). */
function partTransferSyntax(contentType: string): string | undefined {
  const m = /transfer-syntax=["']?([0-9.]+)/i.exec(contentType);
  if (m) return m[1];
  if (/^image\/jpeg\b/i.test(contentType)) return '1.2.840.10008.1.2.4.50';
  if (/^application\/octet-stream\b/i.test(contentType)) return '1.2.840.10008.1.2.1';
  return undefined;
}

export class DicomWebFrameSource implements FrameSource {
  /** Response body bytes received (metadata and frames). */
  bytesFetched = 0;
  framesFetched = 0;
  requests = 0;
  constructor(private readonly target: DicomWebTarget) {}

  async readFrames(inst: WsiInstance, indices: readonly number[]): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    for (let i = 0; i < indices.length; i += FRAMES_PER_REQUEST) {
      const batch = indices.slice(i, i + FRAMES_PER_REQUEST);
      const url = `${root(this.target)}/studies/${this.target.study}/series/${this.target.series}/instances/${inst.sopInstanceUid}/frames/${batch.map((f) => f + 1).join(',')}`;
      const res = await request(this.target, url, { headers: headers(this.target, 'multipart/related; type="application/octet-stream"; transfer-syntax=*') });
      const body = new Uint8Array(await res.arrayBuffer());
      this.requests++;
      this.bytesFetched += body.length;
      const parts = parseMultipart(body, res.headers.get('content-type') ?? '');
      if (parts.length !== batch.length) throw new DicomWebError(`${url}: ${parts.length} frames in the answer, asked for ${batch.length}`);
      const ts = partTransferSyntax(parts[0]!.headers['content-type'] ?? res.headers.get('content-type') ?? '');
      if (!ts || !SUPPORTED_TRANSFER_SYNTAXES.includes(ts)) throw new DicomWebError(`${url}: frames in transfer syntax ${ts ?? '(not stated)'}, which histoseg does not decode`);
      inst.transferSyntax = ts;
      this.framesFetched += parts.length;
      out.push(...parts.map((p) => p.data));
    }
    return out;
  }

  async close(): Promise<void> {}
}

/** Opens a series on a DICOMweb server: all its VOLUME instances are the pyramid. */
export async function openDicomWebSeries(target: DicomWebTarget): Promise<{ url: string; dicom: DicomWsi; source: DicomWebFrameSource }> {
  const url = `${root(target)}/studies/${target.study}/series/${target.series}/metadata`;
  const res = await request(target, url, { headers: headers(target, 'application/dicom+json') });
  const text = await res.text();
  const source = new DicomWebFrameSource(target);
  source.bytesFetched += Buffer.byteLength(text);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new DicomWebError(`${url}: the answer is not DICOM JSON`);
  }
  if (!Array.isArray(json) || json.length === 0) throw new DicomWebError(`${url}: no instances in the series`);
  const instances: WsiInstance[] = [];
  for (const item of json as Record<string, unknown>[]) {
    const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(item);
    // The stored transfer syntax is in the metadata when the server says (Available Transfer Syntax UID), else
    // the first frame answer tells.
    const ts = typeof ds.AvailableTransferSyntaxUID === 'string' ? ds.AvailableTransferSyntaxUID : '';
    try {
      instances.push(wsiInstanceFromDataset(ds, ts, `${url} instance ${ds.SOPInstanceUID}`));
    } catch (err) {
      if (err instanceof DicomSlideError && /SOP class/.test(err.message)) continue; // e.g. a SEG in the same series
      throw err;
    }
  }
  return { url, dicom: new DicomWsi(`${target.url} series ${target.series}`, instances, source), source };
}

/** STOW-RS: sends DICOM instances to the study's server; returns the identity of the first stored instance. */
export async function storeInstances(
  target: DicomWebTarget,
  files: readonly Uint8Array[],
): Promise<{ studyInstanceUid: string; seriesInstanceUid: string; sopInstanceUid: string }> {
  const boundary = `histoseg-${crypto.randomUUID()}`;
  const chunks: Buffer[] = [];
  for (const f of files) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), Buffer.from(f.buffer, f.byteOffset, f.byteLength), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  const url = `${root(target)}/studies/${target.study}`;
  const res = await request(target, url, {
    method: 'POST',
    headers: { ...headers(target, 'application/dicom+json'), 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}` },
    body: Buffer.concat(chunks),
  });
  const answer = (await res.json().catch(() => ({}))) as Record<string, { Value?: unknown[] }>;
  const failed = answer['00081198']?.Value ?? [];
  if (failed.length > 0) throw new DicomWebError(`${url}: the server refused ${failed.length} of ${files.length} instances: ${JSON.stringify(failed).slice(0, 500)}`);
  const first = files[0]!;
  const dict = dcmjs.data.DicomMessage.readFile(first.buffer.slice(first.byteOffset, first.byteOffset + first.byteLength) as ArrayBuffer, { untilTag: '7FE00010' });
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict);
  return { studyInstanceUid: String(ds.StudyInstanceUID), seriesInstanceUid: String(ds.SeriesInstanceUID), sopInstanceUid: String(ds.SOPInstanceUID) };
}
