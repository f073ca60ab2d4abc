/**
 * The places answer contract: what WHATSAT asks (`NearbyQuery`), what every provider answers
 * (`PlacesAnswer`, in the Google legacy Nearby Search shape), and what a provider promises
 * (`PlacesProvider`): it always resolves, never rejects, within the query's bound, with its
 * results already cut to the client's bound. The node relies on that promise and keeps no
 * timer or cut of its own.
 *
 * A leaf module: the helpers every provider shares (the failure answer, the cut to the bound,
 * the deadline race, the key scrubber) live here so that no provider imports another.
 *
 * @example
 * ```ts
 * import { answerWithin, cutToBound, failureAnswer } from "./contract.ts";
 *
 * const answer = await answerWithin(new Promise(() => {}), 10);
 * console.log(answer.status); // UNKNOWN_ERROR: nothing came within 10 ms
 * cutToBound(failureAnswer("ZERO_RESULTS", "none"), 5);
 * ```
 *
 * @module
 */

import { within } from "../async.ts";

/** What WHATSAT asks: a point, a radius and how many results the client wants. */
export interface NearbyQuery {
  /** Latitude as the client wrote it, without a leading "+" (e.g. "34.068930", "-5"). Used verbatim in the upstream request. */
  lat: string;
  /** Longitude as the client wrote it, without a leading "+" (e.g. "-118.445127"). */
  lng: string;
  /** The same as numbers. */
  latDeg: number;
  lngDeg: number;
  /** Radius in metres as an exact decimal string (client km x 1000, e.g. "10000", "500", "1234.5"). Used verbatim as `radius=` upstream. */
  radiusM: string;
  /** Radius in metres as a number. */
  radiusMeters: number;
  /** 1..20: results are cut to this many. */
  bound: number;
  /**
   * The client's stored AT line, when the node knows it. The Google cache is then keyed by
   * it: a client asking again before it moves is answered from the cache, while every new
   * position report gets its own upstream request with its own exact coordinates.
   */
  record?: string;
  /**
   * The caller's bound in milliseconds: the answer comes within this long of the call (a
   * failure answer if need be). The provider's own timeout applies when it is shorter or
   * when this is absent. The node passes its `whatsatTimeoutMs` here.
   */
  timeoutMs?: number;
}

/** Legacy Nearby Search shape: what the node prints after the AT line, whatever the provider. */
export interface PlacesAnswer {
  html_attributions: unknown[];
  results: unknown[];
  status: string;
  error_message?: string;
  [key: string]: unknown;
}

/** One places provider; the node codes against this and nothing else. */
export interface PlacesProvider {
  /** "google" | "google-new" | "offline" */
  readonly name: string;
  /** Human description for the start line, e.g. "google (https://maps.googleapis.com/...)" or "offline (GeoNames cities, 135233 places)"; never contains the key. */
  describe(): string;
  /**
   * Always resolves, never rejects, within `q.timeoutMs` (or the provider's own timeout if
   * shorter); results already cut to `q.bound`.
   */
  nearby(q: NearbyQuery): Promise<PlacesAnswer>;
  /** Optional: start background loading (offline gazetteer) right after the node listens. */
  warm?(): void;
  /** Release timers, workers, in-flight requests (tests run with --sanitize-ops --sanitize-resources). Idempotent. */
  close(): Promise<void> | void;
  /**
   * Numbers for operators: requests, cache hits and misses, what waits and in flight, each
   * bound's limit and how often it was hit. Flat, so a metrics page can print every entry as
   * a gauge or counter (docs/places.md lists them).
   */
  stats(): Record<string, number>;
}

/**
 * A failure answer in the legacy shape. The one place that builds them, so every failure the
 * node sends has the same four fields.
 */
export function failureAnswer(status: string, message: string): PlacesAnswer {
  return {
    html_attributions: [],
    results: [],
    status,
    error_message: message,
  };
}

/** Upstream statuses that mean "the call worked"; only these are cached. */
const SUCCESS_STATUSES: ReadonlySet<string> = new Set(["OK", "ZERO_RESULTS"]);

/** Whether an answer is a success (and so may be cached and counted as such). */
export function isSuccess(answer: PlacesAnswer): boolean {
  return SUCCESS_STATUSES.has(answer.status);
}

/**
 * A copy of `answer` with `results` cut to `bound`. A copy, so a cached answer is never
 * changed by what a caller does with its own.
 */
export function cutToBound(answer: PlacesAnswer, bound: number): PlacesAnswer {
  return { ...answer, results: answer.results.slice(0, Math.max(0, bound)) };
}

/** The bound a provider with timeout `ownMs` owes query `q`: the shorter of the two. */
export function boundFor(q: NearbyQuery, ownMs: number): number {
  const asked = q.timeoutMs;
  return asked !== undefined && asked > 0 && asked < ownMs ? asked : ownMs;
}

/** The message of an abort reason or thrown value, whatever its type. */
export function reasonMessage(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
}

/** The message a caller gets when no answer comes within its bound. */
export function timeoutMessage(timeoutMs: number): string {
  return `places upstream did not answer within ${timeoutMs} ms`;
}

/**
 * `work`, or a failure answer if it has not settled within `ms` (or rejects): the contract's
 * deadline for a provider with nothing better to say, such as a test double.
 *
 * @example
 * ```ts
 * import { answerWithin } from "./contract.ts";
 *
 * const never = new Promise<never>(() => {});
 * (await answerWithin(never, 5)).error_message; // "places upstream did not answer within 5 ms"
 * ```
 */
export async function answerWithin(
  work: PlacesAnswer | Promise<PlacesAnswer>,
  ms: number,
): Promise<PlacesAnswer> {
  try {
    return await within(
      Promise.resolve(work),
      ms,
      () => failureAnswer("UNKNOWN_ERROR", timeoutMessage(ms)),
    );
  } catch (error) {
    return failureAnswer(
      "UNKNOWN_ERROR",
      `places failed: ${reasonMessage(error)}`,
    );
  }
}

/**
 * A function that replaces every occurrence of the key (as written and URL-encoded) with
 * "***". Applied to every upstream body and every error message, because a fetch error can
 * quote the request URL and the key must never reach a client.
 */
export function makeScrubber(
  apiKey: string | undefined,
): (text: string) => string {
  if (apiKey === undefined || apiKey === "") return (text) => text;
  const forms = [...new Set([apiKey, encodeURIComponent(apiKey)])];
  return (text) =>
    forms.reduce((out, form) => out.split(form).join("***"), text);
}
