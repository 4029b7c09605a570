// QuPath-compatible GeoJSON of a segmentation: a FeatureCollection with one Polygon feature per connected region of
// each non-background class, properties.classification { name, color: [r, g, b] } as QuPath writes it, in level-0
// pixel coordinates. annotations.ts reads it back (parseGeoJson / geoJsonToLabels) to the same label map.
import { contours } from 'd3-contour';
import type { LabelledPolygon, Point, Ring } from './annotations.js';

export interface GeoJsonClass {
  name: string;
  /** "#rrggbb" */
  color: string;
}

function rgb(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  return m ? [parseInt(m[1]!, 16), parseInt(m[2]!, 16), parseInt(m[3]!, 16)] : [128, 128, 128];
}

/** Drops vertices on the straight line between their neighbours. */
function simplify(ring: Ring): Ring {
  const pts = ring.length > 1 && ring[0]![0] === ring.at(-1)![0] && ring[0]![1] === ring.at(-1)![1] ? ring.slice(0, -1) : ring;
  const n = pts.length;
  return pts.filter((b, i) => {
    const a = pts[(i + n - 1) % n]!;
    const c = pts[(i + 1) % n]!;
    return (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) !== 0;
  });
}

/**
 * Upsampled-grid vertices back onto pixel corners: a corner that marching squares cut (a quarter pixel off) snaps
 * onto the corner, so every edge runs along pixel edges; repeated vertices go.
 */
function snap(ring: Point[]): Point[] {
  const out: Point[] = [];
  for (const [x, y] of ring) {
    const p: Point = [Math.round(x / 2), Math.round(y / 2)];
    const last = out.at(-1);
    if (!last || last[0] !== p[0] || last[1] !== p[1]) out.push(p);
  }
  return out;
}

/**
 * Outlines of each non-background class's connected regions along pixel edges, so rasterising them by pixel
 * centres gives back the map exactly. Marching squares runs on the map upsampled 2x (a saddle between diagonal
 * pixels then stays at their shared corner) and the cut corners snap back onto pixel corners: outlines with
 * diagonal edges would not survive librsvg's non-antialiased fill, which fills one-pixel notches next to them.
 */
export function regionsOf(labels: Uint8Array, width: number, height: number, numClasses: number): LabelledPolygon[] {
  if (labels.length !== width * height) throw new Error(`label map has ${labels.length} pixels, expected ${width}x${height}`);
  const W = 2 * width;
  const H = 2 * height;
  const present = new Set<number>(labels);
  for (const v of present) if (v >= numClasses) throw new Error(`label map has value ${v}, but there are only ${numClasses} classes`);
  const generator = contours().size([W, H]).thresholds([0.5]).smooth(false);
  const binary = new Array<number>(W * H);
  const out: LabelledPolygon[] = [];
  for (let k = 1; k < numClasses; k++) {
    if (!present.has(k)) continue;
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) binary[y * W + x] = labels[(y >> 1) * width + (x >> 1)] === k ? 1 : 0;
    for (const multi of generator(binary)) {
      for (const polygon of multi.coordinates) {
        const rings = polygon.map((r) => simplify(snap(r as Point[]))).filter((r) => r.length >= 3);
        if (rings.length > 0) out.push({ classIndex: k, rings });
      }
    }
  }
  return out;
}

const closed = (r: Ring): Ring => (r.length > 0 && (r[0]![0] !== r.at(-1)![0] || r[0]![1] !== r.at(-1)![1]) ? [...r, r[0]!] : r);

/**
 * `labels` is width x height at some scale; `toLevel0` multiplies its coordinates into level-0 pixels (level-0
 * width / label-map width). Vertices are pixel corners (exact for integer scales; rounded to 1/1000 px otherwise).
 */
export function segmentationToGeoJson(
  labels: Uint8Array,
  width: number,
  height: number,
  classes: readonly GeoJsonClass[],
  /** Level-0 pixels per label-map pixel: one factor, or [x, y]. */
  opts: { toLevel0?: number | readonly [number, number] } = {},
): { type: 'FeatureCollection'; features: object[] } {
  const t = opts.toLevel0 ?? 1;
  const [fx, fy] = typeof t === 'number' ? [t, t] : t;
  const q = (v: number, f: number) => Math.round(v * f * 1000) / 1000;
  const polygons = regionsOf(labels, width, height, classes.length);
  const features = polygons.map((p, i) => ({
    type: 'Feature',
    id: `histoseg-${i + 1}`,
    geometry: { type: 'Polygon', coordinates: p.rings.map((r) => closed(r).map(([x, y]) => [q(x, fx), q(y, fy)])) },
    properties: {
      objectType: 'annotation',
      classification: { name: classes[p.classIndex]!.name, color: rgb(classes[p.classIndex]!.color) },
      isLocked: false,
    },
  }));
  return { type: 'FeatureCollection', features };
}
