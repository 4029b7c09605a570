import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import sharp from 'sharp';
import { fromFile } from 'geotiff';
import { MAX_STITCH_PIXELS } from '../src/cli/segmentCommand.js';
import { isTiffPath, writeLabelTiff } from '../src/data/labels/labelTiff.js';

const dir = mkdtempSync(join(tmpdir(), 'histoseg-label-tiff-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('a label map larger than a PNG may hold is written as a tiled TIFF, scaled with nearest neighbour', async () => {
  // Quadrants of classes 0..3 at the model's scale, scaled to a level 0 over the PNG limit.
  const side = 17_000;
  assert.ok(side * side > MAX_STITCH_PIXELS);
  const labels = Uint8Array.from([0, 1, 2, 3]);
  const path = join(dir, 'big.tif');
  await writeLabelTiff(path, { labels, width: 2, height: 2 }, side, side, 0.5);
  const meta = await sharp(path, { limitInputPixels: false }).metadata();
  assert.deepEqual([meta.width, meta.height, meta.channels], [side, side, 1]);
  const image = await (await fromFile(path)).getImage();
  assert.ok(image.isTiled && image.getTileWidth() === 512, 'tiled');
  const tag = (name: string) => (image.getFileDirectory() as unknown as { getValue(n: string): ArrayLike<number> | number }).getValue(name);
  assert.equal(tag('ResolutionUnit'), 3, 'resolution in centimetres');
  const [num, den] = Array.from(tag('XResolution') as ArrayLike<number>);
  assert.equal(num! / den!, 20_000, 'pixels per cm at 0.5 um/px');
  const at = async (left: number, top: number) =>
    (await sharp(path, { limitInputPixels: false }).extract({ left, top, width: 1, height: 1 }).extractChannel(0).raw().toBuffer())[0];
  assert.deepEqual(await Promise.all([at(0, 0), at(side - 1, 0), at(0, side - 1), at(side - 1, side - 1), at(side / 2 - 1, side / 2 - 1)]), [0, 1, 2, 3, 0]);
  assert.ok(isTiffPath('x.TIF') && isTiffPath('a/b.tiff') && !isTiffPath('x.png'));
});
