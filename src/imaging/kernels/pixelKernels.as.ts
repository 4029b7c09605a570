// AssemblyScript source of the per-pixel kernels of the tile path, compiled by `npm run build:kernels` into
// pixelKernelsWasm.ts. Each one is the same algorithm as its TypeScript twin (named beside it), which stays as the
// reference the tests compare with and the path for tiles too large for the kernels' memory. Pointers are byte
// offsets into this module's memory; the caller (pixelKernels.ts) lays the buffers out.

/** tissue.ts threshold: 1 where 10 (max - min) >= max and max > 0 (HSV saturation >= 1/10); returns the count. */
export function saturationMask(rgb: usize, n: i32, out: usize, k: i32): i32 {
  let count: i32 = 0;
  for (let i: i32 = 0; i < n; i++) {
    const p = rgb + <usize>(i * 3);
    const r = <i32>load<u8>(p);
    const g = <i32>load<u8>(p, 1);
    const b = <i32>load<u8>(p, 2);
    const hi = max<i32>(max<i32>(r, g), b);
    const lo = min<i32>(min<i32>(r, g), b);
    const t = <i32>(k * (hi - lo) >= hi) & <i32>(hi > 0);
    store<u8>(out + <usize>i, <u8>t);
    count += t;
  }
  return count;
}

/**
 * tissue.ts fillHoles: background not 4-connected to the border becomes tissue. `padded` holds (w + 2)(h + 2)
 * bytes and `stack` 4 (w + 2)(h + 2). Returns the tissue count.
 */
export function fillHoles(mask: usize, w: i32, h: i32, padded: usize, stack: usize): i32 {
  const REACHED: u8 = 2;
  const pw = w + 2;
  memory.fill(padded, REACHED, <usize>pw);
  memory.fill(padded + <usize>((h + 1) * pw), REACHED, <usize>pw);
  for (let y: i32 = 0; y < h; y++) {
    const o = padded + <usize>((y + 1) * pw);
    store<u8>(o, REACHED);
    memory.copy(o + 1, mask + <usize>(y * w), <usize>w);
    store<u8>(o + <usize>(w + 1), REACHED);
  }
  let top: i32 = 0;
  // Seeds: the four edges of the image inside the ring.
  for (let x: i32 = 0; x < w; x++) {
    top = seed(padded, stack, top, pw + 1 + x);
    top = seed(padded, stack, top, h * pw + 1 + x);
  }
  for (let y: i32 = 0; y < h; y++) {
    top = seed(padded, stack, top, (y + 1) * pw + 1);
    top = seed(padded, stack, top, (y + 1) * pw + w);
  }
  while (top > 0) {
    top--;
    const i = load<i32>(stack + (<usize>top << 2));
    top = seed(padded, stack, top, i - 1);
    top = seed(padded, stack, top, i + 1);
    top = seed(padded, stack, top, i - pw);
    top = seed(padded, stack, top, i + pw);
  }
  let count: i32 = 0;
  for (let y: i32 = 0; y < h; y++) {
    const o = padded + <usize>((y + 1) * pw + 1);
    const d = mask + <usize>(y * w);
    for (let x: i32 = 0; x < w; x++) {
      const t = <i32>(load<u8>(o + <usize>x) != REACHED);
      store<u8>(d + <usize>x, <u8>t);
      count += t;
    }
  }
  return count;
}

// @ts-ignore: decorator
@inline
function seed(padded: usize, stack: usize, top: i32, i: i32): i32 {
  const p = padded + <usize>i;
  if (load<u8>(p) == 0) {
    store<u8>(p, 2);
    store<i32>(stack + (<usize>top << 2), i);
    return top + 1;
  }
  return top;
}

/**
 * tissue.ts opening: a square erosion then dilation of side 2r + 1 on bit-packed rows, windows clipped to the
 * tile. `a` and `b` hold ceil(w / 32) h words each. Rewrites mask; returns the tissue count.
 */
export function opening(mask: usize, w: i32, h: i32, r: i32, a: usize, b: usize): i32 {
  const wpr = (w + 31) >>> 5;
  for (let y: i32 = 0; y < h; y++) {
    for (let k: i32 = 0; k < wpr; k++) {
      const x0 = k << 5;
      const x1 = min<i32>(w, x0 + 32);
      let word: i32 = 0;
      for (let x = x0; x < x1; x++) word |= <i32>load<u8>(mask + <usize>(y * w + x)) << (x - x0);
      store<i32>(a + (<usize>(y * wpr + k) << 2), word);
    }
  }
  rowPass(a, b, w, h, wpr, r, true);
  colPass(b, a, h, wpr, r, true);
  rowPass(a, b, w, h, wpr, r, false);
  colPass(b, a, h, wpr, r, false);
  let count: i32 = 0;
  for (let y: i32 = 0; y < h; y++) {
    for (let k: i32 = 0; k < wpr; k++) {
      let word = load<i32>(a + (<usize>(y * wpr + k) << 2));
      const x0 = k << 5;
      const x1 = min<i32>(w, x0 + 32);
      for (let x = x0; x < x1; x++) {
        const v = word & 1;
        store<u8>(mask + <usize>(y * w + x), <u8>v);
        count += v;
        word >>>= 1;
      }
    }
  }
  return count;
}

function rowPass(src: usize, dst: usize, w: i32, h: i32, wpr: i32, r: i32, erode: bool): void {
  const fill: i32 = erode ? -1 : 0;
  const tail = w & 31;
  const valid: i32 = tail == 0 ? -1 : (1 << tail) - 1;
  for (let y: i32 = 0; y < h; y++) {
    const o = y * wpr;
    const lastP = src + (<usize>(o + wpr - 1) << 2);
    const last = load<i32>(lastP);
    store<i32>(lastP, erode ? last | ~valid : last & valid);
    for (let k: i32 = 0; k < wpr; k++) {
      const cur = load<i32>(src + (<usize>(o + k) << 2));
      const next = k + 1 < wpr ? load<i32>(src + (<usize>(o + k + 1) << 2)) : fill;
      const prev = k > 0 ? load<i32>(src + (<usize>(o + k - 1) << 2)) : fill;
      let acc = cur;
      for (let d: i32 = 1; d <= r; d++) {
        const right = (cur >>> d) | (next << (32 - d));
        const left = (cur << d) | (prev >>> (32 - d));
        acc = erode ? acc & right & left : acc | right | left;
      }
      store<i32>(dst + (<usize>(o + k) << 2), acc);
    }
  }
}

function colPass(src: usize, dst: usize, h: i32, wpr: i32, r: i32, erode: bool): void {
  for (let y: i32 = 0; y < h; y++) {
    const lo = max<i32>(0, y - r);
    const hi = min<i32>(h - 1, y + r);
    for (let k: i32 = 0; k < wpr; k++) {
      let acc = load<i32>(src + (<usize>(lo * wpr + k) << 2));
      for (let yy = lo + 1; yy <= hi; yy++) {
        const v = load<i32>(src + (<usize>(yy * wpr + k) << 2));
        acc = erode ? acc & v : acc | v;
      }
      store<i32>(dst + (<usize>(y * wpr + k) << 2), acc);
    }
  }
}

/**
 * macenko.ts stainNormalizer: out = clamp(round(L[r] L[256 + g] L[512 + b] - 1)) per output channel, with the
 * 9 x 256 f64 tables at `lut` (channel o's at lut + 768 o). Rounding is to nearest, ties to even, as a
 * Uint8ClampedArray store does.
 */
export function stainMap(rgb: usize, n: i32, lut: usize, out: usize): void {
  for (let i: i32 = 0; i < n; i++) {
    const p = rgb + <usize>(i * 3);
    const r = <usize>load<u8>(p) << 3;
    const g = (<usize>load<u8>(p, 1) + 256) << 3;
    const b = (<usize>load<u8>(p, 2) + 512) << 3;
    const q = out + <usize>(i * 3);
    store<u8>(q, clampByte(load<f64>(lut + r) * load<f64>(lut + g) * load<f64>(lut + b) - 1));
    store<u8>(q, clampByte(load<f64>(lut + 6144 + r) * load<f64>(lut + 6144 + g) * load<f64>(lut + 6144 + b) - 1), 1);
    store<u8>(q, clampByte(load<f64>(lut + 12288 + r) * load<f64>(lut + 12288 + g) * load<f64>(lut + 12288 + b) - 1), 2);
  }
}

// @ts-ignore: decorator
@inline
function clampByte(v: f64): u8 {
  // nearest() is round-half-even; NaN compares false and becomes 0, as in a Uint8ClampedArray.
  const c = v > 0 ? (v < 255 ? nearest<f64>(v) : 255) : 0;
  return <u8>(<i32>c);
}

/**
 * tileProcessor.ts labelOneWindow: argmax over C planes of m x m f32 logits, nearest upsampling to n x n,
 * glass (tissue 0) to class 0, and per-class pixel counts (f64) added at `counts`. `small` holds m * m bytes and
 * `best` m * m f32.
 */
export function labelOneWindow(logits: usize, C: i32, m: i32, n: i32, tissue: usize, out: usize, counts: usize, small: usize, best: usize): void {
  const plane = m * m;
  for (let i: i32 = 0; i < plane; i++) {
    store<f32>(best + (<usize>i << 2), load<f32>(logits + (<usize>i << 2)));
    store<u8>(small + <usize>i, 0);
  }
  for (let c: i32 = 1; c < C; c++) {
    const off = c * plane;
    for (let i: i32 = 0; i < plane; i++) {
      const v = load<f32>(logits + (<usize>(off + i) << 2));
      if (v > load<f32>(best + (<usize>i << 2))) {
        store<f32>(best + (<usize>i << 2), v);
        store<u8>(small + <usize>i, <u8>c);
      }
    }
  }
  const f = n / m;
  for (let y: i32 = 0; y < n; y++) {
    const row = (y / f) * m;
    const o = y * n;
    for (let cx: i32 = 0; cx < m; cx++) {
      const label = <i32>load<u8>(small + <usize>(row + cx));
      let onTissue: i32 = 0;
      const x0 = o + cx * f;
      for (let x = x0; x < x0 + f; x++) {
        const t = <i32>load<u8>(tissue + <usize>x);
        store<u8>(out + <usize>x, <u8>(label & -t));
        onTissue += t;
      }
      const cp = counts + (<usize>label << 3);
      store<f64>(cp, load<f64>(cp) + <f64>onTissue);
      store<f64>(counts, load<f64>(counts) + <f64>(f - onTissue));
    }
  }
}
