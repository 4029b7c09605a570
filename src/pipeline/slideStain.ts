import { StainEstimator, stainNormalizer, type StainNormalizer, type StainParams } from '../imaging/macenko.js';

/** One tile's place in its slide's stain estimate: see SlideStain.turn. */
export interface StainTurn {
  /**
   * Adds this tile's tissue pixels to the slide's sample (after every earlier tile's, in `chunkPixels` steps with
   * `pause()` between) and returns the normaliser this tile is to use, or null while too few tissue pixels have
   * been seen to estimate.
   */
  sample(rgb: Uint8Array, pixels: number, tissue: Uint8Array, pause?: () => Promise<void>, chunkPixels?: number): Promise<StainNormalizer | null>;
  /** This tile adds nothing (background, invalid, failed): later tiles need not wait for it. Harmless after sample. */
  skip(): void;
}

/**
 * Macenko normalisation for one slide (one stream): the slide's stain is estimated from a sample of its first
 * tissue tiles, then frozen, rather than per tile, so neighbouring tiles are normalised alike.
 *
 * Reproducible: tiles take turns in the order they arrived (turn(), called synchronously on arrival), and tile k
 * is normalised with the estimate from the pixels of tiles 0..k exactly, however the tiles' decoding interleaves
 * or whatever else the server is doing.
 */
export class SlideStain {
  private readonly estimator = new StainEstimator();
  private source: StainParams | null = null;
  private normalizer: StainNormalizer | null = null;
  /** Resolves when the latest turn is done. */
  private last: Promise<void> = Promise.resolve();

  constructor(private readonly target: StainParams) {}

  turn(): StainTurn {
    const before = this.last;
    let finish!: () => void;
    this.last = new Promise<void>((r) => (finish = r));
    let taken = false;
    return {
      sample: async (rgb, pixels, tissue, pause, chunkPixels = 1 << 17) => {
        if (taken) throw new Error('StainTurn used twice');
        taken = true;
        try {
          await before;
          for (let a = 0; a < pixels && !this.estimator.ready; a += chunkPixels) {
            const n = Math.min(chunkPixels, pixels - a);
            this.estimator.add(rgb.subarray(a * 3, (a + n) * 3), n, tissue.subarray(a, a + n));
            if (pause && a + n < pixels) await pause();
          }
          return this.current();
        } finally {
          finish();
        }
      },
      skip: () => {
        if (taken) return;
        taken = true;
        void before.then(finish);
      },
    };
  }

  private current(): StainNormalizer | null {
    const params = this.estimator.tryParams();
    if (!params) return null;
    if (params !== this.source) {
      this.source = params;
      this.normalizer = stainNormalizer(params, this.target);
    }
    return this.normalizer;
  }
}
