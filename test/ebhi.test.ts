import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import { loadSlideLabels } from '../src/data/datasets/dataset.js';
import { EBHI_CLASSES, ebhiMaskToLabels, ingestEbhi, readEbhiLabels } from '../src/data/datasets/ebhi.js';
import { EBHI_VARIANTS } from './support/testData.js';

test('mask colours map to classes; anti-aliased edges against black do not become a third class', () => {
  const px = (...rgb: number[][]) => Uint8Array.from(rgb.flat());
  const labels = ebhiMaskToLabels(
    px([0, 0, 0], [255, 255, 0], [110, 80, 50], [128, 128, 0], [100, 100, 0], [250, 250, 250], [3, 2, 1]),
    7,
    3,
  );
  // (128,128,0) is half yellow: plain nearest colour would call it Adenocarcinoma brown.
  assert.deepEqual([...labels], [0, 3, 1, 3, 0, 4, 0]);
});

for (const variant of EBHI_VARIANTS) {
  test(`the ${variant.kind} EBHI sample converts to the generic layout with labels matching labels.csv`, async (t) => {
    const EBHI = await variant.load();
    const out = await mkdtemp(join(tmpdir(), 'histoseg-ebhi-'));
    t.after(() => rm(out, { recursive: true, force: true }));
    const rows = await readEbhiLabels(EBHI);
    assert.equal(rows.length, 18);
    const ds = await ingestEbhi(EBHI, out);

    assert.deepEqual(ds.classes, EBHI_CLASSES.map((c) => c.name));
    assert.equal(ds.patches.length, rows.length);
    const expected = new Map(rows.map((r) => [r.file, r.classIndex]));
    for (const p of ds.patches) assert.equal(p.classIndex, expected.get(basename(p.path)), p.path);

    assert.equal(ds.slides.length, rows.length);
    assert.deepEqual(
      [...new Set(ds.slides.map((s) => s.split))].sort(),
      ['test', 'train', 'validation'],
    );
    // Every mask holds background and the image's own class only, and that class covers a real share of it.
    for (const slide of ds.slides) {
      const want = expected.get(`${slide.name}.png`)!;
      const { labels } = await loadSlideLabels(slide, ds);
      let own = 0;
      for (const v of labels) {
        if (v === want) own++;
        else assert.equal(v, 0, `${slide.name}: pixel of class ${v}, expected ${want} or background`);
      }
      assert.ok(own / labels.length > 0.3, `${slide.name}: only ${own} pixels of its class`);
    }
  });
}
