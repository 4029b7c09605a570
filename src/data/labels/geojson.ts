// QuPath-compatible GeoJSON of a segmentation: a FeatureCollection with one Polygon feature per connected region of
// each non-background class, properties.classification { name, color: [r, g, b] } as QuPath writes it, in level-0
// pixel coordinates. annotations.ts reads it back (parseGeoJson / geoJsonToLabels) to the same label map.
import { labelsToPolygons, type Ring } from './annotations.js';

export interface GeoJsonClass {
  name: string;
  /** "#rrggbb" */
  color: string;
}

function rgb(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  return m ? [parseInt(m[1]!, 16), parseInt(m[2]!, 16), parseInt(m[3]!, 16)] : [128, 128, 128];
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
  opts: { toLevel0?: number; measurements?: boolean } = {},
): { type: 'FeatureCollection'; features: object[] } {
  const f = opts.toLevel0 ?? 1;
  const q = (v: number) => Math.round(v * f * 1000) / 1000;
  const polygons = labelsToPolygons(labels, width, height, classes.length);
  const features = polygons.map((p, i) => ({
    type: 'Feature',
    id: `histoseg-${i + 1}`,
    geometry: { type: 'Polygon', coordinates: p.rings.map((r) => closed(r).map(([x, y]) => [q(x), q(y)])) },
    properties: {
      objectType: 'annotation',
      classification: { name: classes[p.classIndex]!.name, color: rgb(classes[p.classIndex]!.color) },
      isLocked: false,
    },
  }));
  return { type: 'FeatureCollection', features };
}
