import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  bachXmlToLabels,
  geoJsonToLabels,
  labelsToBachXml,
  labelsToGeoJson,
  parseBachXml,
  rasterisePolygons,
} from '../src/data/labels/annotations.js';

const CLASSES = ['normal', 'benign', 'in situ', 'invasive'];

/** 200x150: a benign ring with a hole that holds an in-situ blob, an invasive block on the edge, a wobbly blob. */
function constructedMask(): { labels: Uint8Array; width: number; height: number } {
  const width = 200;
  const height = 150;
  const labels = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const d = Math.hypot(x - 60, y - 70);
      let v = 0;
      if (d < 40) v = 1;
      if (d < 18) v = 0;
      if (Math.hypot(x - 62, y - 68) < 7) v = 2;
      if (x >= 170 && y >= 20 && y < 90) v = 3;
      const a = Math.atan2(y - 120, x - 140);
      if (Math.hypot(x - 140, y - 120) < 18 + 6 * Math.sin(5 * a)) v = 2;
      labels[y * width + x] = v;
    }
  }
  return { labels, width, height };
}

function agreement(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.length, b.length);
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

test('rasterising is crisp: class values come out exact and pixel centres decide', async () => {
  const labels = await rasterisePolygons(
    [{ classIndex: 3, rings: [[[1, 1], [4, 1], [4, 3], [1, 3]]] }],
    6,
    4,
  );
  const expected = new Uint8Array(24);
  for (let y = 1; y < 3; y++) for (let x = 1; x < 4; x++) expected[y * 6 + x] = 3;
  assert.deepEqual(labels, expected);
});

test('GeoJSON round trip: mask -> GeoJSON -> mask', async () => {
  const { labels, width, height } = constructedMask();
  const doc = labelsToGeoJson(labels, width, height, CLASSES) as { features: { properties: { classification: { name: string } } }[] };
  assert.deepEqual(
    doc.features.map((f) => f.properties.classification.name),
    ['benign', 'in situ', 'invasive'],
  );
  const back = await geoJsonToLabels(JSON.parse(JSON.stringify(doc)), width, height, CLASSES);
  assert.ok(agreement(labels, back) > 0.98, `agreement ${agreement(labels, back)}`);
  // The hole of the ring stays background.
  assert.equal(back[70 * width + 50], 0);
  assert.equal(back[68 * width + 62], 2);
});

test('BACH XML round trip, holes as negative regions', async () => {
  const { labels, width, height } = constructedMask();
  const xml = labelsToBachXml(labels, width, height, CLASSES, { mpp: 7.5 });
  assert.match(xml, /NegativeROA="1"/);
  assert.match(xml, /Text="in situ"/);
  const back = await bachXmlToLabels(xml, width, height, CLASSES);
  assert.ok(agreement(labels, back) > 0.98, `agreement ${agreement(labels, back)}`);
  assert.equal(back[70 * width + 50], 0);
});

test('rasterising at a scale: level-0 coordinates onto a half-size map', async () => {
  const { labels, width, height } = constructedMask();
  const doc = labelsToGeoJson(labels, width, height, CLASSES);
  const half = await geoJsonToLabels(doc, width / 2, height / 2, CLASSES, { scale: 0.5 });
  const nearest = new Uint8Array((width / 2) * (height / 2));
  for (let y = 0; y < height / 2; y++) for (let x = 0; x < width / 2; x++) nearest[y * (width / 2) + x] = labels[(2 * y + 1) * width + 2 * x + 1]!;
  assert.ok(agreement(nearest, half) > 0.97, `agreement ${agreement(nearest, half)}`);
});

test('BACH long class names map through aliases', () => {
  const xml = `<?xml version="1.0"?><Annotations><Annotation Id="1"><Regions>
    <Region Id="1" Text="Carcinoma in situ"><Vertices><Vertex X="1" Y="1"/><Vertex X="5" Y="1"/><Vertex X="5" Y="5"/></Vertices></Region>
  </Regions></Annotation></Annotations>`;
  assert.throws(() => parseBachXml(xml, CLASSES, { source: 'a.xml' }), /a\.xml: Annotation 1 Region 1 has unknown class "Carcinoma in situ"/);
  const polys = parseBachXml(xml, CLASSES, { aliases: { carcinomainsitu: 2 } });
  assert.equal(polys[0]!.classIndex, 2);
});

test('annotation errors name the file and the feature', async () => {
  const square = [[[1, 1], [5, 1], [5, 5], [1, 5], [1, 1]]];
  const feature = (name: string, coordinates = square) => ({
    type: 'Feature',
    geometry: { type: 'Polygon', coordinates },
    properties: { classification: { name } },
  });
  const fc = (...features: object[]) => ({ type: 'FeatureCollection', features });
  await assert.rejects(
    geoJsonToLabels(fc(feature('benign'), feature('Tumor')), 10, 10, CLASSES, { source: 's.geojson' }),
    /s\.geojson: feature 1 has unknown class "Tumor"/,
  );
  await assert.rejects(
    geoJsonToLabels(fc(feature('benign', [[[1, 1], [50, 1], [50, 5], [1, 1]]])), 10, 10, CLASSES, { source: 's.geojson' }),
    /s\.geojson: feature 0 has vertex \(50, 1\) outside the slide/,
  );
  await assert.rejects(
    geoJsonToLabels(fc({ type: 'Feature', geometry: { type: 'LineString', coordinates: [[0, 0], [1, 1]] }, properties: {} }), 10, 10, CLASSES),
    /LineString; only Polygon and MultiPolygon/,
  );
  await assert.rejects(geoJsonToLabels({ hello: 1 }, 10, 10, CLASSES, { source: 'x.json' }), /x\.json: not a GeoJSON/);
  await assert.rejects(bachXmlToLabels('<Annotations><Annotation>', 10, 10, CLASSES, { source: 'b.xml' }), /b\.xml: malformed XML/);
  // Class names match case-insensitively, ignoring spaces and underscores; QuPath's bare-array export is accepted.
  const ok = await geoJsonToLabels([feature('In_Situ')], 10, 10, CLASSES);
  assert.equal(ok[3 * 10 + 3], 2);
});
