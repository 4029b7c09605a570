// Polygon annotations <-> label maps: QuPath GeoJSON and BACH (Aperio ImageScope) XML.
// Rasterising goes through an SVG rendered by sharp/librsvg without anti-aliasing (a pixel takes a class when its
// centre is inside the polygon); vectorising uses d3-contour's marching squares on one binary map per class.
import { contours } from 'd3-contour';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import sharp from 'sharp';
import { z } from 'zod';

/** [x, y] in pixel-corner coordinates: pixel (i, j) covers [i, i+1) x [j, j+1). */
export type Point = [number, number];
/** A closed ring; the first point need not be repeated at the end. */
export type Ring = Point[];

/** One labelled area: an outer ring and its holes (even-odd fill). */
export interface LabelledPolygon {
  classIndex: number;
  rings: Ring[];
}

/**
 * How far (as a share of the slide's width or height) a vertex may lie outside the slide before the annotation is
 * refused. Not from the paper: hand-drawn outlines often overshoot the edge a little, and the overshoot is clipped.
 */
export const ANNOTATION_BOUNDS_TOLERANCE = 0.01;

/** Label-map pixels per annotation unit: one factor, or [x, y] when rounding made the axes' factors differ. */
export type Scale = number | readonly [number, number];
const axes = (s: Scale): [number, number] => (typeof s === 'number' ? [s, s] : [s[0], s[1]]);

export interface RasterOptions {
  /** Label-map pixels per annotation coordinate unit (annotation mpp / label-map mpp); 1 when both are level 0. */
  scale?: Scale;
  /** Names the file in error messages. */
  source?: string;
  /** Extra class names (normalised as by normaliseClassName) mapped to class indices, e.g. BACH's long names. */
  aliases?: Readonly<Record<string, number>>;
}

/** Class names compare case-insensitively and ignore spaces, '_' and '-', so "In situ" matches "in_situ". */
export function normaliseClassName(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]/g, '');
}

export function classIndexOf(
  name: string,
  classes: readonly string[],
  aliases: Readonly<Record<string, number>> = {},
): number | undefined {
  const key = normaliseClassName(name);
  const i = classes.findIndex((c) => normaliseClassName(c) === key);
  return i >= 0 ? i : aliases[key];
}

/** classIndexOf that fails naming the region (`what`) and the known classes. */
function requireClassIndex(
  name: string,
  classes: readonly string[],
  aliases: Readonly<Record<string, number>> | undefined,
  what: string,
): number {
  const classIndex = classIndexOf(name, classes, aliases);
  if (classIndex === undefined) throw new Error(`${what} has unknown class "${name}" (known: ${classes.join(', ')})`);
  return classIndex;
}

// ---------------------------------------------------------------------------------------------------------------
// Rasterising

function fmtCoord(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/\.?0+$/, '');
}

function ringPath(ring: Ring, scale: Scale): string {
  if (ring.length < 3) return '';
  const [sx, sy] = axes(scale);
  const parts = ring.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${fmtCoord(x * sx)} ${fmtCoord(y * sy)}`);
  return parts.join('') + 'Z';
}

/** Checks every vertex against the slide (in annotation coordinates) and fails naming the file and the region. */
export function checkAnnotationBounds(polygons: readonly (LabelledPolygon & { where: string })[], width: number, height: number, source: string): void {
  const tolX = width * ANNOTATION_BOUNDS_TOLERANCE;
  const tolY = height * ANNOTATION_BOUNDS_TOLERANCE;
  for (const p of polygons) {
    for (const ring of p.rings) {
      for (const [x, y] of ring) {
        if (!Number.isFinite(x) || !Number.isFinite(y)) throw new Error(`${source}: ${p.where} has a non-numeric vertex`);
        if (x < -tolX || y < -tolY || x > width + tolX || y > height + tolY) {
          throw new Error(
            `${source}: ${p.where} has vertex (${x}, ${y}) outside the slide (${fmtCoord(width)}x${fmtCoord(height)} in annotation coordinates)`,
          );
        }
      }
    }
  }
}

/**
 * Paints polygons into a label map of width x height (0 where nothing is painted), in order, later ones on top.
 * Coordinates are multiplied by `scale` first.
 */
export async function rasterisePolygons(
  polygons: readonly LabelledPolygon[],
  width: number,
  height: number,
  scale: Scale = 1,
): Promise<Uint8Array> {
  const paths: string[] = [];
  for (const p of polygons) {
    if (p.classIndex < 0 || p.classIndex > 255) throw new Error(`class index ${p.classIndex} does not fit a label map`);
    const d = p.rings.map((r) => ringPath(r, scale)).join('');
    if (d && p.classIndex > 0) {
      const k = p.classIndex;
      paths.push(`<path fill="rgb(${k},${k},${k})" fill-rule="evenodd" d="${d}"/>`);
    } else if (d) {
      paths.push(`<path fill="#000" fill-rule="evenodd" d="${d}"/>`);
    }
  }
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" shape-rendering="crispEdges">` +
    `<rect width="${width}" height="${height}" fill="#000"/>${paths.join('')}</svg>`;
  const { data, info } = await sharp(Buffer.from(svg), { density: 72, limitInputPixels: false })
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== height) {
    throw new Error(`rendered annotation is ${info.width}x${info.height}, expected ${width}x${height}`);
  }
  const labels = new Uint8Array(width * height);
  const ch = info.channels;
  for (let i = 0; i < labels.length; i++) labels[i] = data[i * ch]!;
  return labels;
}

/**
 * Checks parsed polygons (annotation coordinates) against the slide, then rasterises them into a width x height
 * label map; `scale` is label-map pixels per annotation unit, `source` names the file in errors.
 */
export async function rasteriseAnnotations(
  polygons: readonly (LabelledPolygon & { where: string })[],
  width: number,
  height: number,
  scale: Scale,
  source: string,
): Promise<Uint8Array> {
  const [sx, sy] = axes(scale);
  checkAnnotationBounds(polygons, width / sx, height / sy, source);
  return rasterisePolygons(polygons, width, height, scale);
}

// ---------------------------------------------------------------------------------------------------------------
// Vectorising

/** Drops vertices that lie on the straight line between their neighbours (d3-contour emits one per pixel edge). */
function simplifyRing(ring: Ring): Ring {
  const pts = ring.length > 1 && ring[0]![0] === ring.at(-1)![0] && ring[0]![1] === ring.at(-1)![1] ? ring.slice(0, -1) : ring;
  const out: Ring = [];
  const n = pts.length;
  for (let i = 0; i < n; i++) {
    const [ax, ay] = pts[(i + n - 1) % n]!;
    const [bx, by] = pts[i]!;
    const [cx, cy] = pts[(i + 1) % n]!;
    if ((bx - ax) * (cy - by) - (by - ay) * (cx - bx) !== 0) out.push([bx, by]);
  }
  return out;
}

/**
 * Outlines of every non-background class (class 0 is what is left unannotated). Boundaries run through the
 * midpoints of pixel edges, so rasterising them again by pixel centres gives back the same map.
 */
export function labelsToPolygons(labels: Uint8Array, width: number, height: number, numClasses: number): LabelledPolygon[] {
  if (labels.length !== width * height) throw new Error(`label map has ${labels.length} pixels, expected ${width}x${height}`);
  const present = new Set<number>(labels);
  const generator = contours().size([width, height]).thresholds([0.5]).smooth(false);
  const out: LabelledPolygon[] = [];
  const binary = new Array<number>(width * height);
  for (let k = 1; k < numClasses; k++) {
    if (!present.has(k)) continue;
    for (let i = 0; i < labels.length; i++) binary[i] = labels[i] === k ? 1 : 0;
    for (const multi of generator(binary)) {
      for (const polygon of multi.coordinates) {
        const rings = polygon.map((r) => simplifyRing(r as Ring)).filter((r) => r.length >= 3);
        if (rings.length > 0) out.push({ classIndex: k, rings });
      }
    }
  }
  for (const v of present) {
    if (v >= numClasses) throw new Error(`label map has value ${v}, but there are only ${numClasses} classes`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// QuPath GeoJSON

const Position = z.array(z.number()).min(2);
const PolygonCoords = z.array(z.array(Position));
const Geometry = z.discriminatedUnion('type', [
  z.object({ type: z.literal('Polygon'), coordinates: PolygonCoords }),
  z.object({ type: z.literal('MultiPolygon'), coordinates: z.array(PolygonCoords) }),
  z.object({ type: z.enum(['Point', 'MultiPoint', 'LineString', 'MultiLineString', 'GeometryCollection']) }).loose(),
]);
const Feature = z
  .object({
    type: z.literal('Feature'),
    geometry: Geometry.nullable(),
    properties: z
      .object({ classification: z.object({ name: z.string() }).loose().optional() })
      .loose()
      .nullable()
      .optional(),
  })
  .loose();
/** QuPath writes a FeatureCollection; older versions a bare array of Features, or a single Feature. */
const GeoJsonDocument = z.union([
  z.object({ type: z.literal('FeatureCollection'), features: z.array(z.unknown()) }).loose(),
  z.array(z.unknown()),
  z.object({ type: z.literal('Feature') }).loose(),
]);

const toRing = (r: number[][]): Ring => r.map((p) => [p[0]!, p[1]!] as Point);

/** Reads the labelled polygons of a QuPath GeoJSON export; fails naming the feature for anything it cannot use. */
export function parseGeoJson(
  doc: unknown,
  classes: readonly string[],
  opts: Pick<RasterOptions, 'source' | 'aliases'> = {},
): (LabelledPolygon & { where: string })[] {
  const source = opts.source ?? 'GeoJSON';
  const top = GeoJsonDocument.safeParse(doc);
  if (!top.success) throw new Error(`${source}: not a GeoJSON FeatureCollection, Feature or array of Features`);
  const features = Array.isArray(top.data) ? top.data : top.data.type === 'FeatureCollection' ? (top.data.features as unknown[]) : [top.data];
  const out: (LabelledPolygon & { where: string })[] = [];
  features.forEach((raw, i) => {
    const where = `feature ${i}`;
    const f = Feature.safeParse(raw);
    if (!f.success) throw new Error(`${source}: ${where} is not a valid GeoJSON Feature: ${z.prettifyError(f.error)}`);
    const geometry = f.data.geometry;
    if (geometry === null) return;
    if (geometry.type !== 'Polygon' && geometry.type !== 'MultiPolygon') {
      throw new Error(`${source}: ${where} is a ${geometry.type}; only Polygon and MultiPolygon features label pixels`);
    }
    const name = f.data.properties?.classification?.name;
    if (name === undefined) throw new Error(`${source}: ${where} has no properties.classification.name`);
    const classIndex = requireClassIndex(name, classes, opts.aliases, `${source}: ${where}`);
    const polys = geometry.type === 'Polygon' ? [geometry.coordinates] : geometry.coordinates;
    for (const poly of polys) out.push({ classIndex, rings: poly.map(toRing), where });
  });
  return out;
}

/** Rasterises a QuPath GeoJSON export (level-0 pixel coordinates) into a width x height label map. */
export async function geoJsonToLabels(
  doc: unknown,
  width: number,
  height: number,
  classes: readonly string[],
  opts: RasterOptions = {},
): Promise<Uint8Array> {
  return rasteriseAnnotations(parseGeoJson(doc, classes, opts), width, height, opts.scale ?? 1, opts.source ?? 'GeoJSON');
}

const closeRing = (r: Ring): Ring =>
  r.length > 0 && (r[0]![0] !== r.at(-1)![0] || r[0]![1] !== r.at(-1)![1]) ? [...r, r[0]!] : r;

/** A QuPath-style GeoJSON FeatureCollection with one MultiPolygon feature per class; `scale` divides coordinates. */
export function polygonsToGeoJson(polygons: readonly LabelledPolygon[], classes: readonly string[], scale = 1): object {
  const byClass = new Map<number, Ring[][]>();
  for (const p of polygons) {
    const rings = p.rings.map((r) => closeRing(r.map(([x, y]) => [x / scale, y / scale] as Point)));
    byClass.set(p.classIndex, [...(byClass.get(p.classIndex) ?? []), rings]);
  }
  const features = [...byClass.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([k, polys]) => ({
      type: 'Feature',
      geometry: { type: 'MultiPolygon', coordinates: polys },
      properties: { objectType: 'annotation', classification: { name: classes[k] } },
    }));
  return { type: 'FeatureCollection', features };
}

/**
 * QuPath-style GeoJSON of the non-background classes of a label map (one MultiPolygon feature per class).
 * `scale` divides the coordinates, e.g. to write level-0 coordinates for a downscaled map.
 */
export function labelsToGeoJson(
  labels: Uint8Array,
  width: number,
  height: number,
  classes: readonly string[],
  opts: { scale?: number } = {},
): object {
  return polygonsToGeoJson(labelsToPolygons(labels, width, height, classes.length), classes, opts.scale ?? 1);
}

// ---------------------------------------------------------------------------------------------------------------
// BACH (Aperio ImageScope) XML: Annotations/Annotation/Regions/Region[@Text]/Vertices/Vertex[@X,@Y], level-0 pixels.

const xmlParser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseAttributeValue: false,
  isArray: (name) => ['Annotation', 'Region', 'Vertex'].includes(name),
});

interface XmlRegion {
  '@_Text'?: string;
  '@_NegativeROA'?: string;
  '@_Id'?: string;
  Vertices?: { Vertex?: { '@_X'?: string; '@_Y'?: string }[] } | string;
}
interface XmlAnnotation {
  '@_Name'?: string;
  '@_Id'?: string;
  Regions?: { Region?: XmlRegion[] } | string;
}

/**
 * Reads BACH/ImageScope XML. The class of a region is its Text attribute, else its Annotation's Name. A region with
 * NegativeROA="1" is a hole: it is cut (even-odd) out of the closest preceding positive region of its Annotation.
 */
export function parseBachXml(
  xml: string,
  classes: readonly string[],
  opts: Pick<RasterOptions, 'source' | 'aliases'> = {},
): (LabelledPolygon & { where: string })[] {
  const source = opts.source ?? 'XML';
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new Error(`${source}: malformed XML at line ${valid.err.line}: ${valid.err.msg}`);
  const doc = xmlParser.parse(xml) as { Annotations?: { Annotation?: XmlAnnotation[] } | string };
  if (doc.Annotations === undefined) throw new Error(`${source}: no <Annotations> root element`);
  const annotations = typeof doc.Annotations === 'string' ? [] : (doc.Annotations.Annotation ?? []);
  const out: (LabelledPolygon & { where: string })[] = [];
  annotations.forEach((ann, a) => {
    const regions = typeof ann.Regions === 'object' ? (ann.Regions.Region ?? []) : [];
    let current: (LabelledPolygon & { where: string }) | undefined;
    regions.forEach((reg, r) => {
      const where = `Annotation ${ann['@_Id'] ?? a + 1} Region ${reg['@_Id'] ?? r + 1}`;
      const vertices = typeof reg.Vertices === 'object' ? (reg.Vertices.Vertex ?? []) : [];
      const ring: Ring = vertices.map((v, i) => {
        const x = Number(v['@_X']);
        const y = Number(v['@_Y']);
        if (v['@_X'] === undefined || v['@_Y'] === undefined || !Number.isFinite(x) || !Number.isFinite(y)) {
          throw new Error(`${source}: ${where} vertex ${i} lacks numeric X and Y`);
        }
        return [x, y];
      });
      if (reg['@_NegativeROA'] === '1') {
        if (!current) throw new Error(`${source}: ${where} is a negative region with no region before it to cut`);
        current.rings.push(ring);
        return;
      }
      const name = (reg['@_Text'] ?? '').trim() || (ann['@_Name'] ?? '').trim();
      if (!name) throw new Error(`${source}: ${where} has no class (empty Text and Annotation Name)`);
      const classIndex = requireClassIndex(name, classes, opts.aliases, `${source}: ${where}`);
      current = { classIndex, rings: [ring], where };
      out.push(current);
    });
  });
  return out;
}

/** Rasterises BACH XML (level-0 pixel coordinates) into a width x height label map. */
export async function bachXmlToLabels(
  xml: string,
  width: number,
  height: number,
  classes: readonly string[],
  opts: RasterOptions = {},
): Promise<Uint8Array> {
  return rasteriseAnnotations(parseBachXml(xml, classes, opts), width, height, opts.scale ?? 1, opts.source ?? 'XML');
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** BACH-style XML of the non-background classes: one Annotation per class, holes as NegativeROA="1" regions. */
export function labelsToBachXml(
  labels: Uint8Array,
  width: number,
  height: number,
  classes: readonly string[],
  opts: { scale?: number; mpp?: number } = {},
): string {
  const scale = opts.scale ?? 1;
  const polygons = labelsToPolygons(labels, width, height, classes.length);
  const lines = ['<?xml version="1.0" encoding="UTF-8"?>'];
  lines.push(opts.mpp !== undefined ? `<Annotations MicronsPerPixel="${opts.mpp}">` : '<Annotations>');
  let regionId = 0;
  for (let k = 1; k < classes.length; k++) {
    const mine = polygons.filter((p) => p.classIndex === k);
    if (mine.length === 0) continue;
    const name = xmlEscape(classes[k]!);
    lines.push(`  <Annotation Id="${k}" Name="${name}" Type="4" Visible="1">`, '    <Regions>');
    for (const p of mine) {
      p.rings.forEach((ring, i) => {
        regionId += 1;
        lines.push(`      <Region Id="${regionId}" Type="0" Text="${name}" NegativeROA="${i === 0 ? 0 : 1}">`, '        <Vertices>');
        for (const [x, y] of ring) lines.push(`          <Vertex X="${fmtCoord(x / scale)}" Y="${fmtCoord(y / scale)}" Z="0"/>`);
        lines.push('        </Vertices>', '      </Region>');
      });
    }
    lines.push('    </Regions>', '  </Annotation>');
  }
  lines.push('</Annotations>');
  return lines.join('\n') + '\n';
}
