// WebGPU serving gives the CPU engine's answers: the same tiles through the serving path (decode, tissue, windows,
// batcher, engine worker, labels, blending) on onnx/cpu and onnx/webgpu. In CI the GPU is Mesa's lavapipe.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { enginePlacement } from '../src/engine/engineDevices.js';
import { tissueFraction } from '../src/imaging/tissue.js';
import { ModelRegistry, type LoadedModel } from '../src/pipeline/modelRegistry.js';
import { TilePipeline, type TileInput, type TileResult } from '../src/pipeline/segmentTile.js';
import { renderSynthSlide } from '../src/synth/slides.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { haveSlide, SVS_PATH } from './support/slideTiles.js';
import { vulkanSkip } from './support/vulkan.js';

const MODELS = fileURLToPath(new URL('../models', import.meta.url));
/** Issue 11's parity bar. */
const PROB_TOLERANCE = 1e-4;
const MIN_MASK_AGREEMENT = 0.999;

/** Tissue tiles: regions of the real slide where ../shared has it, else of a synthetic slide. 8 one-window tiles and 1 that is blended. */
async function tissueTiles(): Promise<TileInput[]> {
  const { data, info } = haveSlide
    ? await sharp(SVS_PATH).removeAlpha().raw().toBuffer({ resolveWithObject: true })
    : await (async () => {
        const s = renderSynthSlide(11, 1024);
        return { data: s.rgb, info: { width: s.width, height: s.height } };
      })();
  const crop = async (left: number, top: number, width: number, height: number) => {
    const raw = Buffer.alloc(width * height * 3);
    for (let y = 0; y < height; y++) data.copy(raw, y * width * 3, ((top + y) * info.width + left) * 3, ((top + y) * info.width + left + width) * 3);
    return { raw, png: await sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer() };
  };
  const tiles: TileInput[] = [];
  for (let top = 0; top + 200 <= info.height && tiles.length < 9; top += 131) {
    for (let left = 0; left + 300 <= info.width && tiles.length < 9; left += 137) {
      const big = tiles.length === 8;
      const [w, h] = big ? [300, 200] : [128, 128];
      const { raw, png } = await crop(left, top, w, h);
      if (tissueFraction(raw, w, h) < 0.3) continue;
      tiles.push({ image: png, mpp: 0 });
    }
  }
  assert.equal(tiles.length, 9, 'found 9 tissue tiles');
  return tiles;
}

let cpu: ModelRegistry;
let gpu: ModelRegistry;

function registry(device: 'cpu' | 'webgpu'): ModelRegistry {
  const p = enginePlacement('onnx', device);
  return new ModelRegistry(
    {
      root: MODELS,
      engine: 'onnx',
      device,
      threads: 1,
      workers: 1,
      batchesPerWorker: p.batchesPerWorker,
      allowSoftwareGpu: true,
      maxBatch: p.maxBatch,
      maxDelayMs: 50,
      queueCapacity: 256,
      maxLoadedModels: 1,
    },
    createLogger('silent'),
    new Metrics(undefined, { processMetrics: false }),
  );
}

async function answers(model: LoadedModel, tiles: TileInput[]): Promise<TileResult[]> {
  const pipeline = new TilePipeline({ maxPixels: 4096 * 4096 });
  return Promise.all(tiles.map((t) => pipeline.segmentTile(t, { model, minTissueFraction: 0.05, omitMask: false, signal: new AbortController().signal })));
}

const skip = vulkanSkip();

before(async () => {
  if (skip) return;
  cpu = registry('cpu');
  gpu = registry('webgpu');
  await Promise.all([cpu.start(), gpu.start()]);
});

after(async () => {
  await Promise.all([cpu?.stop(), gpu?.stop()]);
});

test('WebGPU serving answers equal the CPU engine\'s on tissue tiles', { skip }, async () => {
  const [a, b] = await Promise.all([cpu.get('', ''), gpu.get('', '')]);
  assert.match(b.pool.engineName, /^onnx\/webgpu$/);
  assert.equal(b.pool.adapter?.software, true, 'CI runs on lavapipe');
  const tiles = await tissueTiles();
  const [ra, rb] = [await answers(a, tiles), await answers(b, tiles)];
  let same = 0;
  let total = 0;
  let worst = 0;
  for (let i = 0; i < tiles.length; i++) {
    const [x, y] = [ra[i]!, rb[i]!];
    assert.equal(x.status, 'segmented', `tile ${i}: ${x.error}`);
    assert.equal(y.status, x.status);
    assert.equal(y.probabilities.length, x.probabilities.length);
    x.probabilities.forEach((p, k) => (worst = Math.max(worst, Math.abs(p - y.probabilities[k]!))));
    assert.deepEqual([y.width, y.height], [x.width, x.height]);
    for (let j = 0; j < x.labels.length; j++) if (x.labels[j] === y.labels[j]) same++;
    total += x.labels.length;
  }
  assert.ok(worst <= PROB_TOLERANCE, `class probabilities differ by up to ${worst.toExponential(2)} (limit ${PROB_TOLERANCE})`);
  assert.ok(same / total >= MIN_MASK_AGREEMENT, `masks agree on ${((100 * same) / total).toFixed(3)}% of ${total} pixels`);
  // The probabilities are not all equal by accident: the tiles differ from one another.
  assert.ok(ra.some((r) => Math.abs(r.probabilities[0]! - ra[0]!.probabilities[0]!) > 1e-3), 'tiles give different answers');
});
