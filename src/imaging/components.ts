// Connected components of a label map, 8-connected, one pass of union-find plus a relabelling pass.
// Written here because no well-kept npm package labels typed-array masks (sharp/libvips has no labelling
// operation exposed, and the npm "connected components" packages are for graphs); it is small and tested.

export interface Component {
  /** 1-based id, as written into the `ids` map. */
  id: number;
  /** Class value shared by every pixel of the component. */
  classIndex: number;
  area: number;
  /** Inclusive bounding box. */
  minX: number;
  minY: number;
  maxX: number;
  maxY: number;
}

export interface ComponentMap {
  /** Component id per pixel, 0 where the pixel is not in any labelled component. */
  ids: Int32Array;
  components: Component[];
}

function find(parent: Int32Array, x: number): number {
  while (parent[x] !== x) {
    parent[x] = parent[parent[x]!]!; // path halving
    x = parent[x]!;
  }
  return x;
}

/**
 * Labels 8-connected regions of equal value. Pixels whose value is `ignore` (default 0, background) belong to no
 * component. Components are numbered in raster order of their first pixel.
 */
export function connectedComponents(labels: Uint8Array, width: number, height: number, ignore = 0): ComponentMap {
  if (labels.length !== width * height) throw new Error(`label map has ${labels.length} pixels, expected ${width}x${height}`);
  const n = labels.length;
  const parent = new Int32Array(n);
  for (let i = 0; i < n; i++) parent[i] = i;
  const union = (a: number, b: number) => {
    const ra = find(parent, a);
    const rb = find(parent, b);
    if (ra !== rb) parent[Math.max(ra, rb)] = Math.min(ra, rb);
  };
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const v = labels[i]!;
      if (v === ignore) continue;
      // Already-visited neighbours: W, NW, N, NE.
      if (x > 0 && labels[i - 1] === v) union(i, i - 1);
      if (y > 0) {
        const up = i - width;
        if (labels[up] === v) union(i, up);
        if (x > 0 && labels[up - 1] === v) union(i, up - 1);
        if (x < width - 1 && labels[up + 1] === v) union(i, up + 1);
      }
    }
  }
  const ids = new Int32Array(n);
  const rootToId = new Map<number, number>();
  const components: Component[] = [];
  for (let i = 0; i < n; i++) {
    const v = labels[i]!;
    if (v === ignore) continue;
    const root = find(parent, i);
    let id = rootToId.get(root);
    const x = i % width;
    const y = (i - x) / width;
    if (id === undefined) {
      id = components.length + 1;
      rootToId.set(root, id);
      components.push({ id, classIndex: v, area: 0, minX: x, minY: y, maxX: x, maxY: y });
    }
    ids[i] = id;
    const c = components[id - 1]!;
    c.area += 1;
    if (x < c.minX) c.minX = x;
    if (x > c.maxX) c.maxX = x;
    if (y < c.minY) c.minY = y;
    if (y > c.maxY) c.maxY = y;
  }
  return { ids, components };
}
