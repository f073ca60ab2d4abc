/**
 * The places providers behind one interface: what WHATSAT asks about "near this client".
 *
 * Three providers answer in the Google legacy Nearby Search response shape
 * (`html_attributions`, `results`, `status`, `error_message`), so the node never cares which
 * one it has:
 *
 * - `google`: the legacy Nearby Search web service (`google.ts`);
 * - `google-new`: Places API (New) Nearby Search, mapped back to the legacy shape
 *   (`google_new.ts`);
 * - `offline`: GeoNames cities from an embedded gazetteer (`gazetteer.ts`), so a fresh
 *   checkout runs with no key and no network.
 *
 * The Google providers sit behind the cache, coalescing and concurrency limit of `cache.ts`.
 * Every provider keeps the contract of `contract.ts`: `nearby()` resolves, never rejects,
 * within the query's bound, results cut to the client's bound.
 *
 * The module map, arrows pointing one way: `contract.ts` (a leaf) ← `bounds.ts`, `config.ts`,
 * `upstream.ts` ← `google.ts`, `google_new.ts`, `cache.ts`; `gazetteer_index.ts` ←
 * `gazetteer_messages.ts`, `gazetteer_file.ts` ← `gazetteer_worker.ts` (a worker, loaded by
 * URL), `gazetteer.ts`; all of them ← this module.
 *
 * @example
 * ```ts
 * import { createPlaces, placesConfigFromEnv } from "./mod.ts";
 *
 * const { config, warnings } = placesConfigFromEnv(Deno.env.toObject());
 * for (const warning of warnings) console.error(warning);
 * const places = createPlaces(config);
 * places.warm?.();
 * const answer = await places.nearby({
 *   lat: "34.068930",
 *   lng: "-118.445127",
 *   latDeg: 34.06893,
 *   lngDeg: -118.445127,
 *   radiusM: "10000",
 *   radiusMeters: 10000,
 *   bound: 5,
 *   timeoutMs: 5000,
 * });
 * console.log(answer.status, answer.results.length);
 * await places.close();
 * ```
 *
 * @module
 */
import { warnOnStderr } from "./bounds.ts";
import { createCachedProvider } from "./cache.ts";
import {
  endpointOf,
  type PlacesConfig,
  resolvePlacesConfig,
} from "./config.ts";
import { makeScrubber, type PlacesProvider } from "./contract.ts";
import { createOfflinePlaces } from "./gazetteer.ts";
import { callLegacy } from "./google.ts";
import { callNew } from "./google_new.ts";
import type { UpstreamCall, UpstreamContext } from "./upstream.ts";

export type { NearbyQuery, PlacesAnswer, PlacesProvider } from "./contract.ts";
export {
  LEGACY_NEARBY_URL,
  NEW_NEARBY_URL,
  PLACES_DEFAULTS,
  type PlacesConfig,
  PlacesConfigError,
  placesConfigFromEnv,
} from "./config.ts";
export { NEW_API_FIELD_MASK } from "./google_new.ts";

/** What the outside world gives a provider; tests pass stubs. */
export interface PlacesDeps {
  fetch?: typeof fetch;
  /** The clock of the cache TTL and of rate-limited lines. */
  now?: () => number;
  /** Where a bound's rate-limited line goes. Default: `herd: warning: ...` on stderr. */
  warn?: (line: string) => void;
}

/**
 * Builds the provider the config names.
 *
 * @throws {RangeError} for a bound that is not a number in range, and an Error for an unknown
 * provider: mistakes of a program, not of an operator (those are `PlacesConfigError`s from
 * `placesConfigFromEnv`). Everything at run time is an answer.
 */
export function createPlaces(
  config: PlacesConfig,
  deps: PlacesDeps = {},
): PlacesProvider {
  const resolved = resolvePlacesConfig(config);
  const now = deps.now ?? Date.now;
  const warn = deps.warn ?? warnOnStderr;
  if (resolved.provider === "offline") {
    return createOfflinePlaces({
      timeoutMs: resolved.timeoutMs,
      maxQueue: resolved.maxQueue,
      cacheMaxEntries: resolved.cacheMaxEntries,
      cacheMaxBytes: resolved.cacheMaxBytes,
      cacheDir: resolved.cacheDir,
      warn,
      now,
    });
  }
  const url = endpointOf(resolved);
  const scrub = makeScrubber(resolved.apiKey);
  const context: UpstreamContext = {
    url,
    apiKey: resolved.apiKey,
    fetch: deps.fetch ?? ((input, init) => fetch(input, init)),
    scrub,
  };
  const upstream: UpstreamCall = resolved.provider === "google"
    ? (q, signal) => callLegacy(context, q, signal)
    : (q, signal) => callNew(context, q, signal);
  const keyNote = resolved.apiKey === undefined ? ", no API key" : "";
  return createCachedProvider({
    name: resolved.provider,
    description: scrub(`${resolved.provider} (${url}${keyNote})`),
    upstream,
    timeoutMs: resolved.timeoutMs,
    cacheTtlMs: resolved.cacheTtlMs,
    cacheMaxEntries: resolved.cacheMaxEntries,
    cacheMaxBytes: resolved.cacheMaxBytes,
    maxInFlight: resolved.maxInFlight,
    maxQueue: resolved.maxQueue,
    maxWaiting: resolved.maxWaiting,
    now,
    scrub,
    warn,
  });
}
