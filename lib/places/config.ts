/**
 * The places configuration: which provider a node uses and every bound it keeps, with the
 * defaults in one object, read from the environment (`PLACES_PROVIDER`, `PLACES_API_KEY`,
 * `PLACES_URL`, `PLACES_CACHE_ENTRIES`).
 *
 * A mistake in the environment is a {@linkcode PlacesConfigError} whose message is one line
 * naming the variable, so `main.ts` and `lib/herd.ts` tell it from any other failure by its
 * type and print it as an operator error (exit 2). A bound that a program got wrong (not a
 * positive number) is a `RangeError` from {@linkcode resolvePlacesConfig}.
 *
 * @example
 * ```ts
 * import { placesConfigFromEnv, PlacesConfigError } from "./config.ts";
 *
 * try {
 *   const { config, warnings } = placesConfigFromEnv({ PLACES_PROVIDER: "offline" });
 *   for (const warning of warnings) console.error(warning);
 *   console.log(config.provider); // "offline"
 * } catch (error) {
 *   if (!(error instanceof PlacesConfigError)) throw error;
 *   console.error(error.message); // one line, e.g. PLACES_PROVIDER must be one of ...
 * }
 * ```
 *
 * @module
 */
import { makeScrubber } from "./contract.ts";

/** The providers a node can use. */
export const PROVIDERS = ["google", "google-new", "offline"] as const;

/** One of {@linkcode PROVIDERS}. */
export type ProviderName = typeof PROVIDERS[number];

/** Which provider a node uses and its bounds; every bound has a default in {@linkcode PLACES_DEFAULTS}. */
export interface PlacesConfig {
  provider: ProviderName;
  apiKey?: string;
  /** Endpoint override (PLACES_URL). Default legacy: {@linkcode LEGACY_NEARBY_URL}; new: {@linkcode NEW_NEARBY_URL}. */
  url?: string;
  /** Whole upstream call incl. body, and the longest any caller waits; the node must answer within 5 s. */
  timeoutMs?: number;
  /** How long a successful Google answer is served from the cache. 0 disables the cache. */
  cacheTtlMs?: number;
  /** Most answers in the cache (LRU). 0 disables the cache. */
  cacheMaxEntries?: number;
  /** Most bytes of answers (their JSON) in the cache (LRU). */
  cacheMaxBytes?: number;
  /** Most upstream requests at once. */
  maxInFlight?: number;
  /**
   * Most distinct requests waiting for an upstream slot (Google), or queries waiting for the
   * gazetteer to load (offline); beyond that an OVER_QUERY_LIMIT failure answer at once.
   */
  maxQueue?: number;
  /** Most callers waiting on upstream requests at once, coalesced ones included. */
  maxWaiting?: number;
  /** offline only: directory for the gazetteer's pre-indexed cache file (e.g. the data dir). Default none. */
  cacheDir?: string;
}

/** The config with every bound filled in and checked. */
export type ResolvedPlacesConfig =
  & Required<Omit<PlacesConfig, "apiKey" | "url" | "cacheDir">>
  & Pick<PlacesConfig, "apiKey" | "url" | "cacheDir">;

/** Every bound's default, in one place. */
export const PLACES_DEFAULTS = {
  /** Below the node's 5 s WHATSAT bound, so an upstream timeout is still an answer in time. */
  timeoutMs: 4500,
  cacheTtlMs: 60_000,
  cacheMaxEntries: 10_000,
  /** A legacy Nearby Search answer is 10 to 60 KB of JSON: a few thousand answers. */
  cacheMaxBytes: 64 * 1024 * 1024,
  /**
   * The offline provider's answer cache (its `cacheMaxEntries` when the config sets none):
   * an answer never changes, so it is kept until the bounds push it out. A node with the
   * gazetteer rests at 87 to 92 MB; an answer of 20 places holds about 11 KB (measured, see
   * `answerBytes` in gazetteer.ts), so a full cache adds at most 8 MiB and the node stays
   * under 100 MB. The entries bound binds first for small answers.
   */
  offlineCacheMaxEntries: 1024,
  /** The offline provider's `cacheMaxBytes` when the config sets none: about 740 full answers. */
  offlineCacheMaxBytes: 8 * 1024 * 1024,
  maxInFlight: 16,
  maxQueue: 1024,
  maxWaiting: 4096,
} as const;

/** The legacy Nearby Search endpoint, used when PLACES_URL is not set. */
export const LEGACY_NEARBY_URL =
  "https://maps.googleapis.com/maps/api/place/nearbysearch/json";

/** The Places API (New) Nearby Search endpoint, used when PLACES_URL is not set. */
export const NEW_NEARBY_URL =
  "https://places.googleapis.com/v1/places:searchNearby";

/** An environment variable the operator got wrong; the message is one line naming it. */
export class PlacesConfigError extends Error {
  override name = "PlacesConfigError";
  /** The variable at fault, e.g. "PLACES_PROVIDER". */
  readonly variable: string;

  constructor(variable: string, message: string) {
    super(message.replace(/\s*[\n\r\v\f\u0085\u2028\u2029]+\s*/g, " "));
    this.variable = variable;
  }
}

/**
 * Reads PLACES_PROVIDER, PLACES_API_KEY, PLACES_URL and PLACES_CACHE_ENTRIES (the answer
 * cache's entries, whichever the provider; 0 turns the cache off). The default provider is `google` when
 * a key is set, else `offline`, so a fresh checkout runs.
 *
 * @throws {PlacesConfigError} for an unknown provider, a URL that is not http(s), or a
 * PLACES_CACHE_ENTRIES that is not a whole number.
 */
export function placesConfigFromEnv(
  env: Record<string, string | undefined>,
): { config: PlacesConfig; warnings: string[] } {
  const apiKey = nonEmpty(env.PLACES_API_KEY);
  const provider = providerFromEnv(nonEmpty(env.PLACES_PROVIDER), apiKey);
  const url = urlFromEnv(nonEmpty(env.PLACES_URL), apiKey);
  const cacheEntries = cacheEntriesFromEnv(nonEmpty(env.PLACES_CACHE_ENTRIES));
  const warnings: string[] = [];
  if (provider === "offline") {
    if (apiKey !== undefined) {
      warnings.push(
        "PLACES_API_KEY is set but PLACES_PROVIDER is offline: the key is not used",
      );
    }
    if (url !== undefined) {
      warnings.push(
        "PLACES_URL is set but PLACES_PROVIDER is offline: the URL is not used",
      );
    }
  } else if (apiKey === undefined) {
    warnings.push(
      `PLACES_PROVIDER is ${provider} but PLACES_API_KEY is not set: requests go without a key (fine for a local fake; Google will deny them)`,
    );
  }
  const config: PlacesConfig = { provider };
  if (apiKey !== undefined) config.apiKey = apiKey;
  if (url !== undefined) config.url = url;
  if (cacheEntries !== undefined) config.cacheMaxEntries = cacheEntries;
  return { config, warnings };
}

/** The endpoint a Google provider talks to: PLACES_URL, else Google's own. */
export function endpointOf(config: PlacesConfig): string {
  return config.url ??
    (config.provider === "google" ? LEGACY_NEARBY_URL : NEW_NEARBY_URL);
}

/**
 * The config with every bound filled from {@linkcode PLACES_DEFAULTS} and checked.
 *
 * @throws {RangeError} for a bound that is not a number in range (a program's mistake).
 * @throws {Error} for a provider that is not one of {@linkcode PROVIDERS}.
 */
export function resolvePlacesConfig(
  config: PlacesConfig,
): ResolvedPlacesConfig {
  if (!PROVIDERS.includes(config.provider)) {
    throw new Error(
      `unknown places provider ${JSON.stringify(config.provider)}`,
    );
  }
  const d = PLACES_DEFAULTS;
  const offline = config.provider === "offline";
  return {
    ...config,
    timeoutMs: positive("timeoutMs", config.timeoutMs, d.timeoutMs),
    cacheTtlMs: nonNegative("cacheTtlMs", config.cacheTtlMs, d.cacheTtlMs),
    cacheMaxEntries: nonNegative(
      "cacheMaxEntries",
      config.cacheMaxEntries,
      offline ? d.offlineCacheMaxEntries : d.cacheMaxEntries,
    ),
    cacheMaxBytes: positive(
      "cacheMaxBytes",
      config.cacheMaxBytes,
      offline ? d.offlineCacheMaxBytes : d.cacheMaxBytes,
    ),
    maxInFlight: positive("maxInFlight", config.maxInFlight, d.maxInFlight),
    maxQueue: positive("maxQueue", config.maxQueue, d.maxQueue),
    maxWaiting: positive("maxWaiting", config.maxWaiting, d.maxWaiting),
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed === undefined || trimmed === "" ? undefined : trimmed;
}

function providerFromEnv(
  value: string | undefined,
  apiKey: string | undefined,
): ProviderName {
  if (value === undefined) return apiKey === undefined ? "offline" : "google";
  const provider = PROVIDERS.find((name) => name === value);
  if (provider === undefined) {
    throw new PlacesConfigError(
      "PLACES_PROVIDER",
      `PLACES_PROVIDER must be one of ${PROVIDERS.join(", ")}, not ${
        JSON.stringify(value)
      }`,
    );
  }
  return provider;
}

/** PLACES_CACHE_ENTRIES: the answer cache's entries, 0 for none (e.g. to measure without it). */
function cacheEntriesFromEnv(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value)) {
    throw new PlacesConfigError(
      "PLACES_CACHE_ENTRIES",
      `PLACES_CACHE_ENTRIES must be a whole number of answers (0: no cache), not ${
        JSON.stringify(value)
      }`,
    );
  }
  return Number(value);
}

function urlFromEnv(
  value: string | undefined,
  apiKey: string | undefined,
): string | undefined {
  if (value === undefined) return undefined;
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (
    url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")
  ) {
    const shown = makeScrubber(apiKey)(JSON.stringify(value));
    throw new PlacesConfigError(
      "PLACES_URL",
      `PLACES_URL must be an http:// or https:// URL, not ${shown}`,
    );
  }
  return value;
}

function positive(
  name: string,
  value: number | undefined,
  fallback: number,
): number {
  const chosen = value ?? fallback;
  if (!Number.isFinite(chosen) || chosen <= 0) {
    throw new RangeError(
      `places ${name} must be a positive number, not ${chosen}`,
    );
  }
  return chosen;
}

function nonNegative(
  name: string,
  value: number | undefined,
  fallback: number,
): number {
  const chosen = value ?? fallback;
  if (!Number.isFinite(chosen) || chosen < 0) {
    throw new RangeError(`places ${name} must be zero or more, not ${chosen}`);
  }
  return chosen;
}
