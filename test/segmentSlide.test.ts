import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Engine, EngineInput, EngineOutput } from '../src/engine/engine.js';
import { scoreSlides } from '../src/evaluation/evaluateModel.js';
import type { RgbImage } from '../src/imaging/decode.js';
import { inProcessModel } from '../src/pipeline/inProcessModel.js';
import { localSegmenter } from '../src/pipeline/localSegmenter.js';
import { imageSource, segmentSlide, type TileSegmenter } from '../src/pipeline/segmentSlide.js';
import { trainingManifest } from '../src/training/fit/validation.js';
import { IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, SEG16_SIZE } from '../src/util/constants.js';

// Four saturated colours (all tissue by the HSV rule), one per class.
const PALETTE = [
  [200, 60, 140],
  [60, 40, 200],
  [40, 170, 60],
  [210, 150, 20],
] as const;
const BLOCK = 32;

/**
 * A slide of 32 px blocks whose class is an asymmetric hash of the block's place, so a transposed or shifted tile
 * cannot match. Sizes are not multiples of the 512 px tile.
 */
function knownTruthSlide(width: number, height: number): { rgb: RgbImage; truth: Uint8Array } {
  const data = new Uint8Array(width * height * 3);
  const truth = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const bx = Math.floor(x / BLOCK);
      const by = Math.floor(y / BLOCK);
      const k = ((Math.imul(bx + 1, 0x9e3779b1) ^ Math.imul(by + 17, 0x85ebca6b)) >>> 28) & 3;
      truth[y * width + x] = k;
      data.set(PALETTE[k]!, (y * width + x) * 3);
    }
  }
  return { rgb: { data, width, height }, truth };
}

/** An engine that "sees" colours: each 8x8 cell of the 16x16 decoder output votes for its centre pixel's class. */
class ColourEngine implements Engine {
  readonly name = 'colour';
  readonly numClasses = PALETTE.length;
  async run(input: EngineInput): Promise<EngineOutput> {
    const n = input.n;
    const C = this.numClasses;
    const plane = INPUT_SIZE * INPUT_SIZE;
    const cell = INPUT_SIZE / SEG16_SIZE;
    const mask = new Float32Array(n * C * SEG16_SIZE * SEG16_SIZE);
    const cls = new Float32Array(n * C);
    for (let b = 0; b < n; b++) {
      for (let cy = 0; cy < SEG16_SIZE; cy++) {
        for (let cx = 0; cx < SEG16_SIZE; cx++) {
          const p = (cy * cell + cell / 2) * INPUT_SIZE + cx * cell + cell / 2;
          const rgb = [0, 1, 2].map((c) => Math.round((input.data[b * 3 * plane + c * plane + p]! * IMAGENET_STD[c]! + IMAGENET_MEAN[c]!) * 255));
          let best = 0;
          let bestD = Infinity;
          PALETTE.forEach((col, k) => {
            const d = col.reduce((s, v, i) => s + (v - rgb[i]!) ** 2, 0);
            if (d < bestD) [best, bestD] = [k, d];
          });
          mask[((b * C + best) * SEG16_SIZE + cy) * SEG16_SIZE + cx] = 10;
          cls[b * C + best] += 1;
        }
      }
    }
    return { mask, cls, maskSize: SEG16_SIZE };
  }
  async dispose(): Promise<void> {}
}

const manifest = trainingManifest(['a', 'b', 'c', 'd'], null);

describe('segmentSlide: one loop for serving, evaluation and validation', () => {
  it('stitches every tile at its place: a known-truth slide through the pipeline with a fake engine comes back exact', async () => {
    const slide = knownTruthSlide(1184, 800);
    const model = inProcessModel(manifest, new ColourEngine());
    try {
      const segmenter = localSegmenter({ context: (signal) => ({ model, minTissueFraction: 0.05, omitMask: false, signal }), maxPixels: 512 * 512 });
      const result = await segmentSlide(imageSource(slide.rgb), segmenter, { numClasses: 4, wantLabels: true });
      assert.deepEqual(result.tiles, { total: 6, segmented: 6, background: 0, invalid: 0 });
      let wrong = 0;
      for (let i = 0; i < slide.truth.length; i++) if (result.labels![i] !== slide.truth[i]) wrong++;
      assert.equal(wrong, 0, `${wrong} pixels differ from the truth`);
      const counts = [0, 1, 2, 3].map((k) => slide.truth.filter((v) => v === k).length);
      assert.deepEqual(result.pixels, counts);

      // evaluate --model and the trainer's validation score through the same loop.
      const { metrics, allBackground } = await scoreSlides([{ name: 'known', ...slide }], model);
      assert.equal(metrics.accuracy, 1);
      assert.equal(metrics.macroF1, 1);
      assert.ok(allBackground.accuracy !== null && allBackground.accuracy < 0.5);
    } finally {
      await model.batcher.stop();
    }
  });

  it('a transposed truth does not score perfectly (the check above can fail)', async () => {
    const slide = knownTruthSlide(800, 800);
    const transposed = new Uint8Array(slide.truth.length);
    for (let y = 0; y < 800; y++) for (let x = 0; x < 800; x++) transposed[x * 800 + y] = slide.truth[y * 800 + x]!;
    const model = inProcessModel(manifest, new ColourEngine());
    try {
      const { metrics } = await scoreSlides([{ name: 't', rgb: slide.rgb, truth: transposed }], model);
      assert.ok(metrics.accuracy !== null && metrics.accuracy < 0.5, `accuracy ${metrics.accuracy}`);
    } finally {
      await model.batcher.stop();
    }
  });

  it('fails loudly when the segmenter answers fewer tiles than were sent', async () => {
    const slide = knownTruthSlide(600, 300);
    const short: TileSegmenter = {
      async *segmentTiles(tiles) {
        let first = true;
        for await (const t of tiles) {
          if (!first) return;
          first = false;
          yield { status: 'background', labels: new Uint8Array(t.region.width * t.region.height), fractions: [1, 0, 0, 0] };
        }
      },
    };
    await assert.rejects(segmentSlide(imageSource(slide.rgb), short, { numClasses: 4, wantLabels: true }), /answered 1 of 2 tiles/);
  });
});
