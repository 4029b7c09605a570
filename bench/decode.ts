/**
 * `npm run bench:decode`: what the stricter decode costs. For JPEG tiles, decodeImage (header read, pixel-limit
 * check, the scan walk of imaging/jpegScan.ts, sharp with failOn 'warning') against a bare sharp decode (the old
 * path: one sharp pipeline with failOn 'error'), alternated in one run and compared as a ratio; and the longest the
 * event loop waits while a 4096x4096 JPEG's scan is walked. Writes bench/results/decode.{json,md}.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { decodeImage } from '../src/imaging/decode.js';
import { checkJpegScan, checkJpegScanSync } from '../src/imaging/jpegScan.js';

const OUT_DIR = fileURLToPath(new URL('results', import.meta.url));
const ROUNDS = 40;

/** Tissue-coloured, blurred noise: compresses like a tile, not like a flat colour. */
async function tile(width: number, height: number): Promise<Buffer> {
  const px = Buffer.alloc(width * height * 3);
  let s = 12345;
  for (let i = 0; i < width * height; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const t = (s >>> 24) / 255;
    px[i * 3] = 150 + Math.round(60 * t);
    px[i * 3 + 1] = 60 + Math.round(70 * (1 - t));
    px[i * 3 + 2] = 140 + Math.round(50 * t);
  }
  return sharp(px, { raw: { width, height, channels: 3 } }).blur(1.5).jpeg({ quality: 90 }).toBuffer();
}

async function bare(bytes: Buffer): Promise<void> {
  await sharp(bytes, { failOn: 'error' }).autoOrient().flatten({ background: '#ffffff' }).toColourspace('srgb').raw().toBuffer();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function compare(bytes: Buffer, rounds: number): Promise<{ checkedMs: number; bareMs: number; walkMs: number }> {
  const checked: number[] = [];
  const plain: number[] = [];
  const walk: number[] = [];
  for (let i = 0; i < rounds; i++) {
    // Alternate, so drift on a shared machine hits both alike.
    let t = performance.now();
    await decodeImage(bytes, { maxPixels: 1 << 25 });
    checked.push(performance.now() - t);
    t = performance.now();
    await bare(bytes);
    plain.push(performance.now() - t);
    t = performance.now();
    checkJpegScanSync(bytes);
    walk.push(performance.now() - t);
  }
  return { checkedMs: median(checked), bareMs: median(plain), walkMs: median(walk) };
}

const small = await tile(512, 512);
const big = await tile(4096, 4096);
const smallRes = await compare(small, ROUNDS);
const bigRes = await compare(big, 5);
const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
await checkJpegScan(big);
h.disable();
const result = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, note: 'shared with other jobs: ratios, not absolute times' },
  jpeg512: { bytes: small.length, ...smallRes, ratio: smallRes.checkedMs / smallRes.bareMs },
  jpeg4096: { bytes: big.length, ...bigRes, ratio: bigRes.checkedMs / bigRes.bareMs },
  asyncWalk4096MaxEventLoopDelayMs: h.max / 1e6,
};
const f = (x: number) => x.toFixed(2);
const md = [
  '# Decode benchmark',
  '',
  `${result.date}, ${result.machine.cpus} x ${result.machine.model}, Node ${process.version}; the machine was shared with other jobs, so compare the ratios. \`npm run bench:decode\`: median of ${ROUNDS} (512 px) and 5 (4096 px) alternated rounds.`,
  '',
  '| JPEG tile | bytes | decodeImage (header, limit, scan walk, failOn warning) | bare sharp decode (old path) | ratio | scan walk alone |',
  '|---|---|---|---|---|---|',
  `| 512x512 | ${small.length} | ${f(smallRes.checkedMs)} ms | ${f(smallRes.bareMs)} ms | ${f(result.jpeg512.ratio)} | ${f(smallRes.walkMs)} ms |`,
  `| 4096x4096 | ${big.length} | ${f(bigRes.checkedMs)} ms | ${f(bigRes.bareMs)} ms | ${f(result.jpeg4096.ratio)} | ${f(bigRes.walkMs)} ms |`,
  '',
  `Longest event-loop delay while the 4096x4096 scan is walked in slices (checkJpegScan): ${f(result.asyncWalk4096MaxEventLoopDelayMs)} ms.`,
  '',
].join('\n');
mkdirSync(OUT_DIR, { recursive: true });
writeFileSync(join(OUT_DIR, 'decode.json'), JSON.stringify(result, null, 2) + '\n');
writeFileSync(join(OUT_DIR, 'decode.md'), md);
process.stdout.write(md);
