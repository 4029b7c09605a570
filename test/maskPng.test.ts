import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { decodePlainPng, encodeGreyPng } from '../src/imaging/png.js';

test('encodeGreyPng writes a PNG that sharp reads back exactly', async () => {
  const w = 131, h = 67;
  const labels = new Uint8Array(w * h).map((_, i) => ((i * 7919) >> 4) % 5);
  const png = encodeGreyPng(labels, w, h);
  const meta = await sharp(png).metadata();
  assert.deepEqual([meta.width, meta.height, meta.channels, meta.depth], [w, h, 1, 'uchar']);
  const back = await sharp(png).extractChannel(0).raw().toBuffer();
  assert.deepEqual(new Uint8Array(back), labels);
});

test('decodePlainPng undoes every PNG row filter, for 1 to 4 channels', async () => {
  const w = 53, h = 41;
  for (const channels of [1, 2, 3, 4] as const) {
    const raw = Buffer.alloc(w * h * channels);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 73 + (i >> 5) * 11 + ((i * i) >> 7)) % 256;
    // Adaptive filtering makes libpng pick among None, Sub, Up, Average and Paeth row by row.
    let img = sharp(raw, { raw: { width: w, height: h, channels } });
    if (channels <= 2) img = img.toColourspace('b-w'); // else sharp 0.35 widens grey to RGB
    const png = await img.png({ adaptiveFiltering: true, compressionLevel: 9 }).toBuffer();
    const got = decodePlainPng(png);
    assert.ok(got, `channels ${channels}: fast path declined`);
    assert.deepEqual([got.width, got.height, got.channels], [w, h, channels]);
    assert.deepEqual(Buffer.from(got.data), raw);
  }
});

test('decodePlainPng declines what it does not handle, leaving it to sharp', async () => {
  const rgb = Buffer.alloc(16 * 16 * 3, 100);
  const palette = await sharp(rgb, { raw: { width: 16, height: 16, channels: 3 } }).png({ palette: true }).toBuffer();
  assert.equal(decodePlainPng(palette), undefined);
  const png = await sharp(rgb, { raw: { width: 16, height: 16, channels: 3 } }).png().toBuffer();
  assert.equal(decodePlainPng(png.subarray(0, png.length - 20)), undefined, 'truncated');
  const flipped = Buffer.from(png);
  flipped[40] ^= 0xff;
  assert.equal(decodePlainPng(flipped), undefined, 'bad CRC');
});

test('decodePlainPng declines image data longer than the header promises (no unbounded inflate)', () => {
  const png = Buffer.from(encodeGreyPng(new Uint8Array(64 * 64).fill(1), 64, 64));
  // Claim 64x4: the IDAT still inflates to 64 rows.
  png.writeUInt32BE(4, 8 + 8 + 4);
  png.writeUInt32BE(crc32(png.subarray(12, 12 + 4 + 13)), 12 + 4 + 13);
  assert.equal(decodePlainPng(png), undefined);
  const ok = encodeGreyPng(new Uint8Array(64 * 4).fill(1), 64, 4);
  assert.equal(decodePlainPng(ok)?.height, 4, 'the honest file decodes');
});

test('decodePlainPng: damage inside IDAT is caught by zlib even though the IDAT CRC is not re-checked', async () => {
  const rgb = Buffer.alloc(32 * 32 * 3).map((_, i) => (i * 37) % 251);
  const png = await sharp(rgb, { raw: { width: 32, height: 32, channels: 3 } }).png().toBuffer();
  const idat = png.indexOf('IDAT', 0, 'latin1');
  const len = png.readUInt32BE(idat - 4);
  let caught = 0;
  for (let k = 0; k < 16; k++) {
    const bad = Buffer.from(png);
    bad[idat + 4 + 2 + Math.floor(((len - 8) * k) / 16)] ^= 0x5a;
    if (decodePlainPng(bad) === undefined) caught++;
  }
  assert.equal(caught, 16, 'every flipped IDAT byte is declined (and left to sharp, which reports it)');
});
