/**
 * The places providers behind one interface: what WHATSAT asks about "near this client".
 *
 * Three providers answer in the Google legacy Nearby Search response shape
 * (`html_attributions`, `results`, `status`, `error_message`), so the node never cares which
 * one it has:
 *
 * - `google`: the legacy Nearby Search web service (GET, `location`/`radius`/`key`);
 * - `google-new`: Places API (New) Nearby Search (POST with a field mask), mapped back to the
 *   legacy shape;
 * - `offline`: GeoNames cities from an embedded gazetteer, loaded in a worker (see
 *   `gazetteer.ts`), so a fresh checkout runs with no key and no network.
 *
 * Every `nearby()` resolves, never rejects, within the configured timeout: an upstream that
 * fails, hangs or talks nonsense becomes a failure answer with `results: []`, a status and an
 * `error_message` from which the API key has been scrubbed. The Google providers sit behind the
 * cache, coalescing and concurrency limit of `places_cache.ts`.
 *
 * @example
 * ```ts
 * import { createPlaces, placesConfigFromEnv } from "./places.ts";
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
 * });
 * console.log(answer.status, answer.results.length);
 * await places.close();
 * ```
 *
 * @module
 */
import {
  createCachedProvider,
  failureAnswer,
  reasonMessage,
  type UpstreamCall,
} from "./places_cache.ts";
import { createOfflinePlaces } from "./gazetteer.ts";

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
  /** Always resolves, never rejects, within the configured timeout; results already cut to q.bound. */
  nearby(q: NearbyQuery): Promise<PlacesAnswer>;
  /** Optional: start background loading (offline gazetteer) right after the node listens. */
  warm?(): void;
  /** Release timers, workers, in-flight requests (tests run with --sanitize-ops --sanitize-resources). Idempotent. */
  close(): Promise<void> | void;
  /** Numbers for operators: upstream calls, cache hits/misses, coalesced, in flight, queue length, rejections, failures by status. */
  stats(): Record<string, number>;
}

/** Which provider a node uses and its bounds; every bound has a default. */
export interface PlacesConfig {
  provider: "google" | "google-new" | "offline";
  apiKey?: string;
  /** Endpoint override (PLACES_URL). Default legacy: https://maps.googleapis.com/maps/api/place/nearbysearch/json ; new: https://places.googleapis.com/v1/places:searchNearby */
  url?: string;
  /** Default 4500: whole upstream call incl. body; the node must answer within 5 s. */
  timeoutMs?: number;
  /** Default 60_000. */
  cacheTtlMs?: number;
  /** Default 10_000 (LRU). */
  cacheMaxEntries?: number;
  /** Default 16 upstream requests at once. */
  maxInFlight?: number;
  /** Default 1024 waiting; beyond that answer at once with an OVER_QUERY_LIMIT failure answer. */
  maxQueue?: number;
  /** offline only: directory for the gazetteer's pre-indexed cache file (e.g. the data dir). Default none. */
  cacheDir?: string;
}

/** The legacy Nearby Search endpoint, used when PLACES_URL is not set. */
export const LEGACY_NEARBY_URL =
  "https://maps.googleapis.com/maps/api/place/nearbysearch/json";

/** The Places API (New) Nearby Search endpoint, used when PLACES_URL is not set. */
export const NEW_NEARBY_URL =
  "https://places.googleapis.com/v1/places:searchNearby";

/**
 * The Places API (New) fields the legacy mapping uses, and no others: Google bills by the
 * most expensive field asked for. `rating` and `userRatingCount` put the call in the
 * "Enterprise" tier; everything else here is "Pro".
 */
export const NEW_API_FIELD_MASK = [
  "places.id",
  "places.displayName",
  "places.location",
  "places.viewport",
  "places.shortFormattedAddress",
  "places.formattedAddress",
  "places.types",
  "places.rating",
  "places.userRatingCount",
  "places.businessStatus",
].join(",");

/** The most bytes of an upstream body read; a Nearby Search answer is tens of KB. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

const PROVIDERS = ["google", "google-new", "offline"] as const;

/**
 * Reads PLACES_PROVIDER, PLACES_API_KEY and PLACES_URL, so `main.ts` only has to print the
 * warnings and turn a thrown Error (one clear line naming the variable) into exit code 2.
 * The default provider is `google` when a key is set, else `offline`, so a fresh checkout runs.
 */
export function placesConfigFromEnv(
  env: Record<string, string | undefined>,
): { config: PlacesConfig; warnings: string[] } {
  const apiKey = nonEmpty(env.PLACES_API_KEY);
  const provider = providerFromEnv(nonEmpty(env.PLACES_PROVIDER), apiKey);
  const url = urlFromEnv(nonEmpty(env.PLACES_URL), apiKey);
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
  return { config, warnings };
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed === undefined || trimmed === "" ? undefined : trimmed;
}

function providerFromEnv(
  value: string | undefined,
  apiKey: string | undefined,
): PlacesConfig["provider"] {
  if (value === undefined) return apiKey === undefined ? "offline" : "google";
  const provider = PROVIDERS.find((name) => name === value);
  if (provider === undefined) {
    throw new Error(
      `PLACES_PROVIDER must be one of ${PROVIDERS.join(", ")}, not ${
        JSON.stringify(value)
      }`,
    );
  }
  return provider;
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
    throw new Error(
      `PLACES_URL must be an http:// or https:// URL, not ${shown}`,
    );
  }
  return value;
}

/**
 * Builds the provider the config names. Throws only on a config a program got wrong (an
 * unknown provider or a bound that is not a positive number); everything at run time is an
 * answer.
 */
export function createPlaces(
  config: PlacesConfig,
  deps: { fetch?: typeof fetch; now?: () => number } = {},
): PlacesProvider {
  const timeoutMs = positive("timeoutMs", config.timeoutMs, 4500);
  const maxQueue = positive("maxQueue", config.maxQueue, 1024);
  if (config.provider === "offline") {
    return createOfflinePlaces({
      timeoutMs,
      maxQueue,
      cacheDir: config.cacheDir,
    });
  }
  if (config.provider !== "google" && config.provider !== "google-new") {
    throw new Error(
      `unknown places provider ${JSON.stringify(config.provider)}`,
    );
  }
  const legacy = config.provider === "google";
  const url = config.url ?? (legacy ? LEGACY_NEARBY_URL : NEW_NEARBY_URL);
  const scrub = makeScrubber(config.apiKey);
  const context: UpstreamContext = {
    url,
    apiKey: config.apiKey,
    fetch: deps.fetch ?? ((input, init) => fetch(input, init)),
    scrub,
  };
  const upstream: UpstreamCall = legacy
    ? (q, signal) => callLegacy(context, q, signal)
    : (q, signal) => callNew(context, q, signal);
  const keyNote = config.apiKey === undefined ? ", no API key" : "";
  return createCachedProvider({
    name: config.provider,
    description: scrub(`${config.provider} (${url}${keyNote})`),
    upstream,
    timeoutMs,
    cacheTtlMs: nonNegative("cacheTtlMs", config.cacheTtlMs, 60_000),
    cacheMaxEntries: nonNegative(
      "cacheMaxEntries",
      config.cacheMaxEntries,
      10_000,
    ),
    maxInFlight: positive("maxInFlight", config.maxInFlight, 16),
    maxQueue,
    now: deps.now ?? Date.now,
    scrub,
  });
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

/** What an upstream call needs besides the query. */
interface UpstreamContext {
  url: string;
  apiKey: string | undefined;
  fetch: typeof fetch;
  scrub: (text: string) => string;
}

/**
 * The legacy request URL. The comma in `location` stays a literal comma (as in Google's own
 * examples) rather than `%2C`; each value is percent-encoded on its own.
 */
export function legacyRequestUrl(
  base: string,
  q: NearbyQuery,
  apiKey?: string,
): string {
  const params = [
    `location=${encodeURIComponent(q.lat)},${encodeURIComponent(q.lng)}`,
    `radius=${encodeURIComponent(q.radiusM)}`,
  ];
  if (apiKey !== undefined) params.push(`key=${encodeURIComponent(apiKey)}`);
  const url = new URL(base);
  const existing = url.search.length > 1 ? url.search.slice(1) + "&" : "";
  url.search = existing + params.join("&");
  return url.href;
}

async function callLegacy(
  context: UpstreamContext,
  q: NearbyQuery,
  signal: AbortSignal,
): Promise<PlacesAnswer> {
  try {
    const url = legacyRequestUrl(context.url, q, context.apiKey);
    const response = await context.fetch(url, { signal });
    const body = await readBody(response, MAX_BODY_BYTES);
    return scrubAnswer(legacyAnswer(response.status, body), context.scrub);
  } catch (error) {
    return callFailure(error, signal, context.scrub);
  }
}

/** The request Places API (New) Nearby Search gets: method, headers and body. */
export function newApiRequest(q: NearbyQuery, apiKey?: string): RequestInit & {
  method: string;
  headers: Record<string, string>;
  body: string;
} {
  const headers: Record<string, string> = {
    "Content-Type": "application/json",
    "X-Goog-FieldMask": NEW_API_FIELD_MASK,
  };
  if (apiKey !== undefined) headers["X-Goog-Api-Key"] = apiKey;
  const body = {
    locationRestriction: {
      circle: {
        center: { latitude: q.latDeg, longitude: q.lngDeg },
        radius: q.radiusMeters,
      },
    },
    maxResultCount: 20,
  };
  return { method: "POST", headers, body: JSON.stringify(body) };
}

async function callNew(
  context: UpstreamContext,
  q: NearbyQuery,
  signal: AbortSignal,
): Promise<PlacesAnswer> {
  try {
    const init = newApiRequest(q, context.apiKey);
    const response = await context.fetch(context.url, { ...init, signal });
    const body = await readBody(response, MAX_BODY_BYTES);
    return scrubAnswer(newApiAnswer(response.status, body), context.scrub);
  } catch (error) {
    return callFailure(error, signal, context.scrub);
  }
}

/**
 * Removes the key from the one place an upstream answer could carry it, its
 * `error_message` (success answers never hold it). The body is parsed as received, so a
 * short key that happens to match ordinary text ("K" in "OK") cannot corrupt an answer.
 */
function scrubAnswer(
  answer: PlacesAnswer,
  scrub: (text: string) => string,
): PlacesAnswer {
  if (typeof answer.error_message !== "string") return answer;
  const message = scrub(answer.error_message);
  return message === answer.error_message
    ? answer
    : { ...answer, error_message: message };
}

/** A thrown fetch or body error as a failure answer; an abort says why it was aborted. */
function callFailure(
  error: unknown,
  signal: AbortSignal,
  scrub: (text: string) => string,
): PlacesAnswer {
  if (signal.aborted) {
    return failureAnswer("UNKNOWN_ERROR", scrub(reasonMessage(signal.reason)));
  }
  const message = error instanceof BodyTooLargeError
    ? error.message
    : `places upstream could not be reached: ${reasonMessage(error)}`;
  return failureAnswer("UNKNOWN_ERROR", scrub(message));
}

class BodyTooLargeError extends Error {}

/** The body as text, read to the end but never past `maxBytes`, so a runaway upstream cannot fill memory. */
async function readBody(response: Response, maxBytes: number): Promise<string> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      throw new BodyTooLargeError(
        `places upstream sent more than ${maxBytes} bytes`,
      );
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(all);
}

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Parses a body that should be a JSON object; the reason reads after "places upstream sent". */
function parseObject(
  text: string,
): { ok: true; value: Json } | { ok: false; reason: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: "invalid JSON" };
  }
  return isRecord(value)
    ? { ok: true, value }
    : { ok: false, reason: "JSON that is not an object" };
}

function isHttpOk(status: number): boolean {
  return status >= 200 && status <= 299;
}

function stringField(body: Json, name: string): string | undefined {
  const value = body[name];
  return typeof value === "string" && value !== "" ? value : undefined;
}

/**
 * A legacy Nearby Search response (HTTP status and body text) as the node's answer: the body
 * itself on `OK`/`ZERO_RESULTS`, else a failure answer with the upstream's status and
 * error_message when it gave them.
 */
export function legacyAnswer(httpStatus: number, text: string): PlacesAnswer {
  const parsed = parseObject(text);
  if (!isHttpOk(httpStatus)) {
    const body = parsed.ok ? parsed.value : {};
    const status = stringField(body, "status");
    return failureAnswer(
      status === undefined || status === "OK" || status === "ZERO_RESULTS"
        ? "UNKNOWN_ERROR"
        : status,
      stringField(body, "error_message") ??
        `places upstream answered HTTP ${httpStatus}`,
    );
  }
  if (!parsed.ok) {
    return failureAnswer(
      "UNKNOWN_ERROR",
      `places upstream sent ${parsed.reason}`,
    );
  }
  const body = parsed.value;
  const status = stringField(body, "status");
  if (status === undefined) {
    return failureAnswer("UNKNOWN_ERROR", "places upstream sent no status");
  }
  if (status !== "OK" && status !== "ZERO_RESULTS") {
    return failureAnswer(
      status,
      stringField(body, "error_message") ??
        `places upstream answered status ${status}`,
    );
  }
  const results = body.results ?? (status === "ZERO_RESULTS" ? [] : undefined);
  if (!Array.isArray(results)) {
    return failureAnswer(
      "UNKNOWN_ERROR",
      "places upstream sent results that are not an array",
    );
  }
  const attributions = Array.isArray(body.html_attributions)
    ? body.html_attributions
    : [];
  return { ...body, html_attributions: attributions, results, status };
}

/** Places API (New) error statuses (google.rpc.Code names) as legacy statuses. */
const LEGACY_STATUS_FOR: Readonly<Record<string, string>> = {
  PERMISSION_DENIED: "REQUEST_DENIED",
  UNAUTHENTICATED: "REQUEST_DENIED",
  INVALID_ARGUMENT: "INVALID_REQUEST",
  RESOURCE_EXHAUSTED: "OVER_QUERY_LIMIT",
};

/** The google.rpc.Code name an HTTP status stands for when the body does not say. */
function rpcStatusForHttp(httpStatus: number): string {
  switch (httpStatus) {
    case 400:
      return "INVALID_ARGUMENT";
    case 401:
      return "UNAUTHENTICATED";
    case 403:
      return "PERMISSION_DENIED";
    case 429:
      return "RESOURCE_EXHAUSTED";
    default:
      return "UNKNOWN";
  }
}

/**
 * A Places API (New) response as the node's legacy answer: places mapped one by one, `OK` when
 * there are some, `ZERO_RESULTS` when `places` is missing or empty, and `{"error": ...}` or
 * an HTTP error turned into the legacy status that means the same.
 */
export function newApiAnswer(httpStatus: number, text: string): PlacesAnswer {
  const parsed = parseObject(text);
  const error = parsed.ok ? parsed.value.error : undefined;
  if (!isHttpOk(httpStatus) || error !== undefined) {
    return newApiFailure(httpStatus, isRecord(error) ? error : {});
  }
  if (!parsed.ok) {
    return failureAnswer(
      "UNKNOWN_ERROR",
      `places upstream sent ${parsed.reason}`,
    );
  }
  const places = parsed.value.places ?? [];
  if (!Array.isArray(places)) {
    return failureAnswer(
      "UNKNOWN_ERROR",
      "places upstream sent places that are not an array",
    );
  }
  const results = places.filter(isRecord).map(legacyPlace);
  return {
    html_attributions: [],
    results,
    status: results.length > 0 ? "OK" : "ZERO_RESULTS",
  };
}

function newApiFailure(httpStatus: number, error: Json): PlacesAnswer {
  const rpcStatus = stringField(error, "status") ??
    rpcStatusForHttp(httpStatus);
  const fallback = isHttpOk(httpStatus)
    ? `places upstream answered error ${rpcStatus}`
    : `places upstream answered HTTP ${httpStatus}`;
  return failureAnswer(
    LEGACY_STATUS_FOR[rpcStatus] ?? "UNKNOWN_ERROR",
    stringField(error, "message") ?? fallback,
  );
}

/** `{latitude, longitude}` as legacy `{lat, lng}`, or undefined when either is not a number. */
function legacyLatLng(
  value: unknown,
): { lat: number; lng: number } | undefined {
  if (!isRecord(value)) return undefined;
  const { latitude, longitude } = value;
  if (typeof latitude !== "number" || typeof longitude !== "number") {
    return undefined;
  }
  return { lat: latitude, lng: longitude };
}

function legacyGeometry(place: Json): Json | undefined {
  const location = legacyLatLng(place.location);
  if (location === undefined) return undefined;
  const geometry: Json = { location };
  const viewport = isRecord(place.viewport) ? place.viewport : {};
  const northeast = legacyLatLng(viewport.high);
  const southwest = legacyLatLng(viewport.low);
  if (northeast !== undefined && southwest !== undefined) {
    geometry.viewport = { northeast, southwest };
  }
  return geometry;
}

/**
 * One Places API (New) place as a legacy result, in the legacy key order. Fields the place
 * lacks (or has in an unexpected type) are left out rather than invented.
 */
export function legacyPlace(place: Json): Json {
  const displayName = isRecord(place.displayName) ? place.displayName : {};
  const types = Array.isArray(place.types)
    ? place.types.filter((type): type is string => typeof type === "string")
    : undefined;
  const fields: [string, unknown][] = [
    ["business_status", stringField(place, "businessStatus")],
    ["geometry", legacyGeometry(place)],
    ["name", stringField(displayName, "text")],
    ["place_id", stringField(place, "id")],
    ["rating", typeof place.rating === "number" ? place.rating : undefined],
    ["types", types],
    [
      "user_ratings_total",
      typeof place.userRatingCount === "number"
        ? place.userRatingCount
        : undefined,
    ],
    [
      "vicinity",
      stringField(place, "shortFormattedAddress") ??
        stringField(place, "formattedAddress"),
    ],
  ];
  return Object.fromEntries(fields.filter(([, value]) => value !== undefined));
}
