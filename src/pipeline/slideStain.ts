import { StainEstimator, stainNormalizer, type StainNormalizer, type StainParams } from '../imaging/macenko.js';

/**
 * Macenko normalisation for one slide (one stream): the slide's stain is estimated from a sample of its first
 * tissue tiles, then frozen, rather than per tile, so neighbouring tiles are normalised alike.
 */
export class SlideStain {
  private readonly estimator = new StainEstimator();
  private source: StainParams | null = null;
  private normalizer: StainNormalizer | null = null;

  constructor(private readonly target: StainParams) {}

  /**
   * The tile normalised into `out` (a new buffer when omitted), or the tile itself while too few tissue pixels
   * have been seen to estimate.
   */
  normalize(rgb: Uint8Array, pixels: number, tissue: Uint8Array, out?: Uint8Array): Uint8Array {
    if (!this.estimator.ready) this.estimator.add(rgb, pixels, tissue);
    const params = this.estimator.tryParams();
    if (!params) return rgb;
    if (params !== this.source) {
      this.source = params;
      this.normalizer = stainNormalizer(params, this.target);
    }
    return this.normalizer!(rgb, pixels, out);
  }
}
