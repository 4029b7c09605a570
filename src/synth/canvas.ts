// The drawing surface of one synthetic slide: stain concentration maps, the label map, and what is drawn where.

/** What occupies a pixel, so later layers (stromal cells, vessels) keep out of structures already drawn. */
export const OCCUPANT_STROMA = 0;
export const OCCUPANT_EPITHELIUM = 1;
export const OCCUPANT_LUMEN = 2;

export class SlideCanvas {
  readonly size: number;
  /** Hematoxylin and eosin concentrations (decadic OD units before the slide's stain strength). */
  readonly h: Float32Array;
  readonly e: Float32Array;
  /** Class index per pixel (0 = normal tissue and glass). */
  readonly label: Uint8Array;
  /** Occupant per pixel. */
  readonly occupant: Uint8Array;
  /** Tissue coverage 0..1 (0 = bare glass). */
  readonly tissue: Float32Array;
  /** Fat share 0..1 of the tissue (adipose regions). */
  readonly fat: Float32Array;

  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.size = width * height;
    this.h = new Float32Array(this.size);
    this.e = new Float32Array(this.size);
    this.label = new Uint8Array(this.size);
    this.occupant = new Uint8Array(this.size);
    this.tissue = new Float32Array(this.size);
    this.fat = new Float32Array(this.size);
  }

  inside(x: number, y: number): boolean {
    return x >= 0 && y >= 0 && x < this.width && y < this.height;
  }

  /**
   * Visits, row by row, the canvas pixels of the square of half-side `ext` around pixel (floor x, floor y): fn gets
   * the pixel's index and coordinates and its centre's offset (dx, dy) from (x, y).
   */
  forEachNear(x: number, y: number, ext: number, fn: (i: number, px: number, py: number, dx: number, dy: number) => void): void {
    const x0 = Math.floor(x);
    const y0 = Math.floor(y);
    for (let py = y0 - ext; py <= y0 + ext; py++) {
      for (let px = x0 - ext; px <= x0 + ext; px++) {
        if (this.inside(px, py)) fn(py * this.width + px, px, py, px + 0.5 - x, py + 0.5 - y);
      }
    }
  }

  /** Moves eosin at pixel i toward `value` by coverage `cov` (0..1): anti-aliased painting. */
  blendE(i: number, value: number, cov: number): void {
    this.e[i] = this.e[i]! + (value - this.e[i]!) * cov;
  }

  /**
   * Adds one nucleus of hematoxylin mass `amount` centred at (x, y) (pixel centres at i + 0.5).
   * At 7.5 um/px a nucleus is about one pixel: small ones are split bilinearly over 4 pixels, larger (atypical)
   * ones spread as a normalised Gaussian of `sigma` px.
   */
  nucleus(x: number, y: number, amount: number, sigma = 0): void {
    if (sigma < 0.6) {
      const fx = x - 0.5;
      const fy = y - 0.5;
      const x0 = Math.floor(fx);
      const y0 = Math.floor(fy);
      const tx = fx - x0;
      const ty = fy - y0;
      this.addH(x0, y0, amount * (1 - tx) * (1 - ty));
      this.addH(x0 + 1, y0, amount * tx * (1 - ty));
      this.addH(x0, y0 + 1, amount * (1 - tx) * ty);
      this.addH(x0 + 1, y0 + 1, amount * tx * ty);
      return;
    }
    const r = Math.ceil(2 * sigma);
    const cx = Math.floor(x);
    const cy = Math.floor(y);
    const inv = 1 / (2 * sigma * sigma);
    let total = 0;
    for (let dy = -r; dy <= r; dy++) {
      for (let dx = -r; dx <= r; dx++) {
        const ddx = cx + dx + 0.5 - x;
        const ddy = cy + dy + 0.5 - y;
        total += Math.exp(-(ddx * ddx + ddy * ddy) * inv);
      }
    }
    const k = amount / total;
    for (let dy = -r; dy <= r; dy++) {
      for (let dx = -r; dx <= r; dx++) {
        const ddx = cx + dx + 0.5 - x;
        const ddy = cy + dy + 0.5 - y;
        this.addH(cx + dx, cy + dy, k * Math.exp(-(ddx * ddx + ddy * ddy) * inv));
      }
    }
  }

  private addH(x: number, y: number, v: number): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = y * this.width + x;
    this.h[i] = this.h[i]! + v;
  }
}

/** Separable 3-tap blur in place: the optics' point spread, which softens single-pixel nuclei into speckle. */
export function blur3(map: Float32Array, width: number, height: number, side: number): void {
  const centre = 1 - 2 * side;
  const tmp = new Float32Array(map.length);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      const l = map[row + (x > 0 ? x - 1 : x)]!;
      const r = map[row + (x < width - 1 ? x + 1 : x)]!;
      tmp[row + x] = centre * map[row + x]! + side * (l + r);
    }
  }
  for (let y = 0; y < height; y++) {
    const up = (y > 0 ? y - 1 : y) * width;
    const down = (y < height - 1 ? y + 1 : y) * width;
    const row = y * width;
    for (let x = 0; x < width; x++) {
      map[row + x] = centre * tmp[row + x]! + side * (tmp[up + x]! + tmp[down + x]!);
    }
  }
}
