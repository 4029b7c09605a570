/**
 * Nearest-neighbour resampling of a w x h label map into out (newW x newH), pixel centres aligned (source index
 * floor((x + 0.5) * w / newW)). Returns a function that fills output rows y0..y1-1, so a large map can be done in
 * steps. Hand-written rather than sharp: a label must never be blended, and the centre convention must be exact so
 * an integer upscale maps every source pixel to a full block.
 */
export function labelResampler(labels: Uint8Array, w: number, h: number, out: Uint8Array, newW: number, newH: number): (y0: number, y1: number) => void {
  if (labels.length < w * h || out.length < newW * newH) throw new RangeError(`labelResampler: ${w}x${h} -> ${newW}x${newH} does not fit the buffers`);
  const xs = new Int32Array(newW);
  for (let x = 0; x < newW; x++) xs[x] = Math.min(w - 1, Math.floor(((x + 0.5) * w) / newW));
  return (y0, y1) => {
    for (let y = y0; y < y1; y++) {
      const src = Math.min(h - 1, Math.floor(((y + 0.5) * h) / newH)) * w;
      const dst = y * newW;
      for (let x = 0; x < newW; x++) out[dst + x] = labels[src + xs[x]!]!;
    }
  };
}
