// The synthetic slide that stands in for ../shared's real one (test/support/slideTiles.ts) must serve every test that
// cuts tissue from it: this runs whether or not the real slide is present, so CI checks the stand-in too.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import sharp from 'sharp';
import { openSlide } from '../src/data/slides/slideReader.js';
import { tissueFraction } from '../src/imaging/tissue.js';
import { syntheticSlide, SYNTH_SLIDE_MPP } from './support/slideTiles.js';

test('the synthetic test slide is an Aperio-style pyramid that states its MPP, and holds tissue where tests cut it', async () => {
  const slide = await syntheticSlide();
  const info = await openSlide(slide.path);
  assert.deepEqual([info.width, info.height, info.mpp], [slide.width, slide.height, SYNTH_SLIDE_MPP]);
  assert.ok(Math.abs(SYNTH_SLIDE_MPP - 0.5) < 0.01, 'level 0 is at about 20X, as the real slide');
  assert.ok(info.levels.length >= 3, `a pyramid: ${info.levels.length} levels`);
  // The end-to-end tests cut level-0 regions up to 2200 x 2900 (as from the real 2220 x 2967 slide).
  assert.ok(slide.width >= 2200 && slide.height >= 2900, `${slide.width}x${slide.height}`);

  // Every 512-px block of the area those regions span is mostly tissue, and the slide's rim is glass.
  const blockTissue = async (left: number, top: number, side: number) => {
    const { data, info: i } = await sharp(slide.path).extract({ left, top, width: side, height: side }).resize(128, 128).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    return tissueFraction(new Uint8Array(data.buffer, data.byteOffset, data.length), i.width, i.height);
  };
  for (let top = 900; top + 512 <= 2900; top += 256) {
    for (let left = 500; left + 512 <= 2100; left += 256) {
      const f = await blockTissue(left, top, 512);
      assert.ok(f > 0.5, `block at (${left}, ${top}): tissue fraction ${f}`);
    }
  }
  assert.ok((await blockTissue(0, 0, 128)) < 0.05, 'the top-left corner is glass');
});
