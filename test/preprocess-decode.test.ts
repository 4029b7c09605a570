import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import sharp from 'sharp';
import {
  InvalidImageError,
  decodeImage,
  encodeMaskPng,
  resizeLabels,
  resizeRgb,
} from '../src/imaging/decode.js';
import { SLIDE_VARIANTS } from './support/slideTiles.js';

const LIMITS = { maxPixels: 16_777_216 };

/** A 3x2 RGBA image: opaque red, green, blue on top; transparent, half-transparent black, opaque grey below. */
async function rgbaPng(): Promise<Buffer> {
  const px = [255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 10, 20, 30, 0, 0, 0, 0, 128, 100, 100, 100, 255];
  return sharp(Buffer.from(px), { raw: { width: 3, height: 2, channels: 4 } }).png().toBuffer();
}

async function rejects(bytes: Uint8Array, pattern: RegExp, limits = LIMITS): Promise<void> {
  await assert.rejects(decodeImage(bytes, limits), (err: unknown) => {
    assert.ok(err instanceof InvalidImageError, `expected InvalidImageError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

function crc32(buf: Uint8Array): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** A PNG header claiming width x height RGB with no real pixel data: a decompression bomb's shape. */
function bombPng(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk('IHDR', ihdr), chunk('IDAT', new Uint8Array([0x78, 0x9c, 0x03, 0x00])), chunk('IEND', new Uint8Array())]);
}

test('PNG with alpha decodes to RGB flattened onto white', async () => {
  const img = await decodeImage(await rgbaPng(), LIMITS);
  assert.equal(img.width, 3);
  assert.equal(img.height, 2);
  assert.equal(img.data.length, 3 * 2 * 3);
  assert.deepEqual([...img.data.subarray(0, 9)], [255, 0, 0, 0, 255, 0, 0, 0, 255]);
  assert.deepEqual([...img.data.subarray(9, 12)], [255, 255, 255], 'transparent pixel becomes white');
  const half = [...img.data.subarray(12, 15)];
  assert.ok(half.every((v) => v >= 125 && v <= 130), `half-transparent black on white is mid grey, got ${half}`);
  assert.deepEqual([...img.data.subarray(15, 18)], [100, 100, 100]);
});

test('greyscale PNG decodes to three equal channels', async () => {
  const grey = await sharp(Buffer.from([0, 50, 100, 200]), { raw: { width: 2, height: 2, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toBuffer();
  assert.equal((await sharp(grey).metadata()).channels, 1);
  const img = await decodeImage(grey, LIMITS);
  assert.deepEqual([...img.data], [0, 0, 0, 50, 50, 50, 100, 100, 100, 200, 200, 200]);
});

test('JPEG, TIFF and WebP are accepted', async () => {
  const base = sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 200, g: 120, b: 180 } } });
  for (const bytes of [
    await base.clone().jpeg().toBuffer(),
    await base.clone().tiff().toBuffer(),
    await base.clone().webp({ lossless: true }).toBuffer(),
  ]) {
    const img = await decodeImage(bytes, LIMITS);
    assert.equal(img.width, 40);
    assert.equal(img.height, 30);
    assert.ok(Math.abs(img.data[0]! - 200) <= 3 && Math.abs(img.data[1]! - 120) <= 3 && Math.abs(img.data[2]! - 180) <= 3);
  }
});

test('bad input is refused with InvalidImageError and a clear message', async () => {
  await rejects(new Uint8Array(), /not an image/);
  await rejects(new TextEncoder().encode('hello, this is not an image at all'), /not an image/);
  const gif = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } }).gif().toBuffer();
  await rejects(gif, /unsupported format gif/);
  const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#a06080' } })
    .composite([{ input: Buffer.alloc(32 * 32 * 3, 7), raw: { width: 32, height: 32, channels: 3 }, left: 5, top: 9 }])
    .png({ compressionLevel: 0 })
    .toBuffer();
  await rejects(png.subarray(0, Math.floor(png.length * 0.6)), /truncated or corrupt PNG/);
  const jpeg = await sharp(png).jpeg().toBuffer();
  await rejects(jpeg.subarray(0, Math.floor(jpeg.length * 0.6)), /truncated or corrupt JPEG/);
});

test('decompression bombs are refused from the header, before decoding', async () => {
  await rejects(bombPng(50_000, 50_000), /image is 50000x50000 = 2\.5e9 pixels, over the limit of 16777216/);
  const ok = await sharp({ create: { width: 200, height: 100, channels: 3, background: '#fff' } }).png().toBuffer();
  await rejects(ok, /200x100 = 2\.0e4 pixels, over the limit of 19999/, { maxPixels: 19_999 });
  assert.equal((await decodeImage(ok, { maxPixels: 20_000 })).width, 200);
});

for (const variant of SLIDE_VARIANTS) {
  test(`the ${variant.kind} slide (Aperio-style pyramidal TIFF) is read from its header and held to the pixel limit`, async () => {
    const slide = await variant.load();
    const size = new RegExp(`${slide.width}x${slide.height} = .* pixels, over the limit of 1000000`);
    await rejects(readFileSync(slide.path), size, { maxPixels: 1_000_000 });
  });
}

test('resizeRgb averages areas when shrinking', async () => {
  const w = 8;
  const data = new Uint8Array(w * w * 3);
  for (let y = 0; y < w; y++) for (let x = 0; x < w; x++) data.fill((x + y) % 2 ? 255 : 0, (y * w + x) * 3, (y * w + x) * 3 + 3);
  const small = await resizeRgb({ data, width: w, height: w }, 4, 4);
  assert.equal(small.width, 4);
  assert.equal(small.data.length, 4 * 4 * 3);
  for (const v of small.data) assert.ok(v >= 120 && v <= 135, `checkerboard shrinks to grey, got ${v}`);
  const big = await resizeRgb({ data, width: w, height: w }, 13, 11);
  assert.equal(big.data.length, 13 * 11 * 3);
});

test('resizeLabels is nearest neighbour with centred pixels', async () => {
  const up = await resizeLabels(new Uint8Array([1, 2, 3, 4]), 2, 2, 4, 4);
  assert.deepEqual([...up], [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
  const down = await resizeLabels(up, 4, 4, 2, 2);
  assert.deepEqual([...down], [1, 2, 3, 4]);
  const odd = await resizeLabels(new Uint8Array([0, 5, 9]), 3, 1, 7, 2);
  assert.ok([...odd].every((v) => v === 0 || v === 5 || v === 9), 'no label is blended');
  assert.deepEqual([...odd.subarray(0, 7)], [0, 0, 5, 5, 5, 9, 9]);
});

test('encodeMaskPng writes an 8-bit single-channel PNG with one class index per pixel', async () => {
  const labels = new Uint8Array(7 * 5).map((_, i) => i % 4);
  const png = await encodeMaskPng(labels, 7, 5);
  const meta = await sharp(png).metadata();
  assert.equal(meta.format, 'png');
  assert.equal(meta.channels, 1);
  assert.equal(meta.depth, 'uchar');
  assert.equal(png[24], 8, 'IHDR bit depth');
  assert.equal(png[25], 0, 'IHDR colour type greyscale');
  const { data, info } = await sharp(png).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  assert.equal(info.channels, 1);
  assert.deepEqual([...data], [...labels]);
});

test('the JS PNG fast path decodes exactly as sharp does, for RGB, RGBA, grey and grey+alpha', async () => {
  const w = 37, h = 23;
  for (const channels of [1, 2, 3, 4] as const) {
    const raw = Buffer.alloc(w * h * channels);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 73 + (i >> 5) * 11) % 256;
    // sharp itself writes the PNG; sharp (flatten on white, to sRGB) is the reference decode.
    const png = await sharp(raw, { raw: { width: w, height: h, channels } }).png().toBuffer();
    const ref = await sharp(png).flatten({ background: '#ffffff' }).toColourspace('srgb').raw().toBuffer();
    const got = await decodeImage(png, { maxPixels: 1e6 });
    assert.equal(got.data.length, w * h * 3);
    let maxDiff = 0;
    for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i] - got.data[i]));
    assert.ok(maxDiff <= 1, `channels ${channels}: largest difference ${maxDiff}`);
  }
});
