/**
 * The `google-new` provider's upstream call: Places API (New) Nearby Search (POST with a field
 * mask), its answer mapped back to the legacy shape the node prints, field by field and status
 * by status.
 *
 * @example
 * ```ts
 * import { legacyPlace } from "./google_new.ts";
 *
 * legacyPlace({ id: "x", displayName: { text: "Royce Hall" } });
 * // { name: "Royce Hall", place_id: "x" }
 * ```
 *
 * @module
 */
import {
  failureAnswer,
  type NearbyQuery,
  type PlacesAnswer,
} from "./contract.ts";
import {
  callFailure,
  isHttpOk,
  isRecord,
  type Json,
  MAX_BODY_BYTES,
  parseObject,
  readBody,
  scrubAnswer,
  stringField,
  type UpstreamContext,
} from "./upstream.ts";

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

/** One Places API (New) Nearby Search call; always an answer, never a rejection. */
export async function callNew(
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
