/**
 * The cache, coalescing and concurrency limit in front of a paid places upstream.
 *
 * Google bills every Nearby Search call, and a herd of clients asking about the same spot would
 * otherwise pay for the same answer again and again. This module puts three things between the
 * node and the upstream:
 *
 * - an LRU cache of successful answers (`OK`, `ZERO_RESULTS`) for a TTL, keyed by provider,
 *   radius and the client's record (or the location rounded to 4 decimal places, about 11 m),
 *   bounded in entries and in bytes (an answer counts as the length of its JSON). The cut to
 *   the client's bound happens after the cache, so one full upstream answer serves every bound;
 * - coalescing: identical requests in flight share one upstream call, and the callers waiting
 *   on upstream calls (coalesced or not) are bounded in number;
 * - a limit on upstream calls at once, with a bounded FIFO behind it.
 *
 * A full queue or too many waiting callers is answered at once with an `OVER_QUERY_LIMIT`
 * failure answer rather than growing without bound; each such hit is counted and told in a
 * rate-limited warning line (`bounds.ts`). Every caller gets an answer within its bound (the
 * query's `timeoutMs` or the provider's, whichever is shorter), whether it waited in the
 * queue, joined a call in flight or started one; failures are answers, never rejections.
 *
 * @example
 * ```ts
 * import { createCachedProvider } from "./cache.ts";
 *
 * const places = createCachedProvider({
 *   name: "google",
 *   description: "google (a fake)",
 *   upstream: () => Promise.resolve({ html_attributions: [], results: [], status: "ZERO_RESULTS" }),
 *   timeoutMs: 4500,
 *   cacheTtlMs: 60_000,
 *   cacheMaxEntries: 10_000,
 *   cacheMaxBytes: 64 * 1024 * 1024,
 *   maxInFlight: 16,
 *   maxQueue: 1024,
 *   maxWaiting: 4096,
 *   now: Date.now,
 *   scrub: (text) => text,
 *   warn: (line) => console.error(line),
 * });
 * ```
 *
 * @module
 */
import { within } from "../async.ts";
import { fnv1a } from "../digest.ts";
import { createAnswerCache } from "./answer_cache.ts";
import { createBoundLog } from "./bounds.ts";
import {
  boundFor,
  cutToBound,
  failureAnswer,
  isSuccess,
  type NearbyQuery,
  type PlacesAnswer,
  type PlacesProvider,
  reasonMessage,
  timeoutMessage,
} from "./contract.ts";
import type { UpstreamCall } from "./upstream.ts";

/** What {@linkcode createCachedProvider} needs: the upstream and every bound, explicitly. */
export interface CachedProviderOptions {
  /** Provider name, also the first part of the cache key. */
  name: string;
  /** What {@linkcode PlacesProvider.describe} returns. */
  description: string;
  /** The call that asks the upstream. */
  upstream: UpstreamCall;
  /** Bound on each caller's wait and on each upstream call, in milliseconds. */
  timeoutMs: number;
  /** How long a successful answer is served from the cache, in milliseconds. */
  cacheTtlMs: number;
  /** Most answers kept; the least recently used goes first. 0 disables the cache. */
  cacheMaxEntries: number;
  /** Most bytes of answers kept (the length of each answer's JSON). */
  cacheMaxBytes: number;
  /** Most upstream calls at once. */
  maxInFlight: number;
  /** Most distinct requests waiting for an upstream slot. */
  maxQueue: number;
  /** Most callers waiting on upstream calls at once (coalesced callers included). */
  maxWaiting: number;
  /** The clock for the cache TTL and the bound log (injected so tests can move time). */
  now: () => number;
  /** Removes secrets from any text that may end up in an answer. */
  scrub: (text: string) => string;
  /** Receives the rate-limited line told when a bound is hit. */
  warn: (line: string) => void;
}

/** Failure statuses counted by name in stats; anything else counts as `OTHER`. */
const KNOWN_FAILURES: ReadonlySet<string> = new Set([
  "INVALID_REQUEST",
  "OVER_QUERY_LIMIT",
  "REQUEST_DENIED",
  "UNKNOWN_ERROR",
  "NOT_FOUND",
]);

/**
 * The cache key of a query: provider and radius in metres, with the client's record (its AT
 * line) when the node supplies it, else the location rounded to 4 decimal places (about
 * 11 m; integers of 1e-4 degrees avoid "-0.0000" and float formatting surprises).
 */
export function cacheKey(provider: string, q: NearbyQuery): string {
  if (q.record !== undefined) {
    // A 64-bit hash, not the record itself: records may be ~32 KB and entries are many.
    const r = q.record;
    return `${provider}|${q.radiusMeters}|${r.length}|${fnv1a(r, 1)}|${
      fnv1a(r, 2)
    }`;
  }
  const lat = Math.round(q.latDeg * 1e4);
  const lng = Math.round(q.lngDeg * 1e4);
  return `${provider}|${lat}|${lng}|${q.radiusMeters}`;
}

/** One upstream request and everyone waiting for it. */
interface Flight {
  readonly key: string;
  readonly query: NearbyQuery;
  readonly promise: Promise<PlacesAnswer>;
  readonly settle: (answer: PlacesAnswer) => void;
  waiters: number;
  running: boolean;
}

function newFlight(key: string, query: NearbyQuery): Flight {
  const { promise, resolve } = Promise.withResolvers<PlacesAnswer>();
  return { key, query, promise, settle: resolve, waiters: 0, running: false };
}

/**
 * A promise that resolves with the abort reason's message once `signal` aborts, and a
 * `dispose` that removes the listener when the race is over.
 */
function whenAborted(
  signal: AbortSignal,
): { promise: Promise<string>; dispose: () => void } {
  const { promise, resolve } = Promise.withResolvers<string>();
  const onAbort = () => resolve(reasonMessage(signal.reason));
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  return {
    promise,
    dispose: () => signal.removeEventListener("abort", onAbort),
  };
}

/** Calls the upstream; a synchronous throw becomes a rejected promise like any other failure. */
function startCall(
  upstream: UpstreamCall,
  q: NearbyQuery,
  signal: AbortSignal,
): Promise<PlacesAnswer> {
  try {
    return upstream(q, signal);
  } catch (error) {
    return Promise.reject(error);
  }
}

/** Waits until every promise has settled, or `ms` has passed, whichever comes first. */
async function settledWithin(
  promises: Promise<unknown>[],
  ms: number,
): Promise<void> {
  if (promises.length === 0) return;
  await within(Promise.allSettled(promises).then(() => {}), ms, () => {});
}

/**
 * A provider that answers from the cache, coalesces identical requests, and limits and queues
 * upstream calls. See the module doc for why; all state lives in this closure.
 */
export function createCachedProvider(
  options: CachedProviderOptions,
): PlacesProvider {
  const cache = createAnswerCache(
    options.cacheMaxEntries,
    options.cacheMaxBytes,
    options.cacheTtlMs,
  );
  const bounds = createBoundLog({ warn: options.warn, now: options.now });
  const flights = new Map<string, Flight>();
  const queue = new Map<string, Flight>();
  const controllers = new Set<AbortController>();
  const upstreamCalls = new Set<Promise<PlacesAnswer>>();
  const counts: Record<string, number> = {
    requests: 0,
    cacheHits: 0,
    cacheMisses: 0,
    coalesced: 0,
    upstreamCalls: 0,
    upstreamSuccesses: 0,
    upstreamFailures: 0,
    callerTimeouts: 0,
  };
  let running = 0;
  let waiting = 0;
  let closed = false;

  function count(name: string): void {
    counts[name] = (counts[name] ?? 0) + 1;
  }

  function recordOutcome(answer: PlacesAnswer): void {
    if (isSuccess(answer)) {
      count("upstreamSuccesses");
      return;
    }
    count("upstreamFailures");
    const status = KNOWN_FAILURES.has(answer.status) ? answer.status : "OTHER";
    count(`failures.${status}`);
  }

  async function askUpstream(flight: Flight): Promise<PlacesAnswer> {
    const controller = new AbortController();
    controllers.add(controller);
    const timer = setTimeout(
      () => controller.abort(new Error(timeoutMessage(options.timeoutMs))),
      options.timeoutMs,
    );
    const aborted = whenAborted(controller.signal);
    const call = startCall(options.upstream, flight.query, controller.signal);
    upstreamCalls.add(call);
    const forget = () => upstreamCalls.delete(call);
    call.then(forget, forget);
    try {
      return await Promise.race([
        call,
        aborted.promise.then((message) =>
          failureAnswer("UNKNOWN_ERROR", message)
        ),
      ]);
    } catch (error) {
      return failureAnswer(
        "UNKNOWN_ERROR",
        options.scrub(`places upstream call failed: ${reasonMessage(error)}`),
      );
    } finally {
      clearTimeout(timer);
      aborted.dispose();
      controllers.delete(controller);
    }
  }

  async function run(flight: Flight): Promise<void> {
    running++;
    flight.running = true;
    count("upstreamCalls");
    const answer = await askUpstream(flight);
    running--;
    flights.delete(flight.key);
    recordOutcome(answer);
    if (isSuccess(answer) && !closed) {
      const evicted = cache.set(flight.key, answer, options.now());
      if (evicted > 0) {
        bounds.hit(
          "cacheFull",
          `the answer cache is full (${options.cacheMaxEntries} answers or ${options.cacheMaxBytes} bytes); the least recently used answers are evicted`,
        );
      }
    }
    flight.settle(answer);
    pump();
  }

  function pump(): void {
    while (!closed && running < options.maxInFlight && queue.size > 0) {
      const next = queue.values().next().value as Flight;
      queue.delete(next.key);
      void run(next);
    }
  }

  /** A caller stops waiting; a queued flight nobody waits for any more is dropped. */
  function leave(flight: Flight): void {
    flight.waiters--;
    if (flight.waiters > 0 || flight.running) return;
    queue.delete(flight.key);
    flights.delete(flight.key);
    flight.settle(
      failureAnswer("UNKNOWN_ERROR", timeoutMessage(options.timeoutMs)),
    );
  }

  function waitFor(flight: Flight, ms: number): Promise<PlacesAnswer> {
    flight.waiters++;
    waiting++;
    const { promise, resolve } = Promise.withResolvers<PlacesAnswer>();
    const timer = setTimeout(() => {
      count("callerTimeouts");
      resolve(failureAnswer("UNKNOWN_ERROR", timeoutMessage(ms)));
      leave(flight);
    }, ms);
    void flight.promise.then((answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
    return promise.finally(() => waiting--);
  }

  /** The flight for `key`: the one in flight or queued, a new one, or none if the queue is full. */
  function flightFor(key: string, q: NearbyQuery): Flight | undefined {
    const existing = flights.get(key);
    if (existing !== undefined) {
      count("coalesced");
      return existing;
    }
    const canRun = running < options.maxInFlight;
    if (!canRun && queue.size >= options.maxQueue) return undefined;
    const flight = newFlight(key, q);
    flights.set(key, flight);
    if (canRun) void run(flight);
    else queue.set(key, flight);
    return flight;
  }

  function overLimit(bound: string, why: string): PlacesAnswer {
    bounds.hit(bound, why);
    return failureAnswer(
      "OVER_QUERY_LIMIT",
      `the node's places queue is full (${why}); try again later`,
    );
  }

  async function nearby(q: NearbyQuery): Promise<PlacesAnswer> {
    count("requests");
    if (closed) {
      return failureAnswer("UNKNOWN_ERROR", "places provider is closed");
    }
    const key = cacheKey(options.name, q);
    const cached = cache.get(key, options.now());
    if (cached !== undefined) {
      count("cacheHits");
      return cutToBound(cached, q.bound);
    }
    count("cacheMisses");
    if (waiting >= options.maxWaiting) {
      return overLimit(
        "waitingFull",
        `${options.maxWaiting} callers wait for upstream answers`,
      );
    }
    const flight = flightFor(key, q);
    if (flight === undefined) {
      return overLimit(
        "queueFull",
        `${options.maxQueue} requests waiting for ${options.maxInFlight} upstream calls`,
      );
    }
    return cutToBound(
      await waitFor(flight, boundFor(q, options.timeoutMs)),
      q.bound,
    );
  }

  /**
   * Aborts what is in flight and waits (at most `timeoutMs`) for those upstream calls to end,
   * so no fetch outlives the provider.
   */
  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    for (const flight of queue.values()) {
      flights.delete(flight.key);
      flight.settle(
        failureAnswer("UNKNOWN_ERROR", "places provider is closed"),
      );
    }
    queue.clear();
    for (const controller of controllers) {
      controller.abort(new Error("places provider is closed"));
    }
    await settledWithin([...upstreamCalls], options.timeoutMs);
  }

  function stats(): Record<string, number> {
    return {
      ...counts,
      rejectedQueueFull: bounds.count("queueFull"),
      rejectedWaitingFull: bounds.count("waitingFull"),
      inFlight: running,
      maxInFlight: options.maxInFlight,
      queued: queue.size,
      maxQueue: options.maxQueue,
      waiting,
      maxWaiting: options.maxWaiting,
      flights: flights.size,
      cacheEntries: cache.size,
      cacheMaxEntries: options.cacheMaxEntries,
      cacheBytes: cache.bytes,
      cacheMaxBytes: options.cacheMaxBytes,
      cacheEvictions: cache.evictions,
    };
  }

  return {
    name: options.name,
    describe: () => options.description,
    nearby,
    close,
    stats,
  };
}
