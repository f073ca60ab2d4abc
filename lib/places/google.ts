/**
 * The `google` provider's upstream call: the legacy Nearby Search web service (GET with
 * `location`, `radius` and `key`), whose answer is already the shape the node prints.
 *
 * @example
 * ```ts
 * import { legacyRequestUrl } from "./google.ts";
 *
 * const q = {
 *   lat: "34.068930", lng: "-118.445127", latDeg: 34.06893, lngDeg: -118.445127,
 *   radiusM: "10000", radiusMeters: 10000, bound: 5,
 * };
 * legacyRequestUrl("https://places.test/nearby", q, "KEY");
 * // "https://places.test/nearby?location=34.068930,-118.445127&radius=10000&key=KEY"
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
  MAX_BODY_BYTES,
  parseObject,
  readBody,
  scrubAnswer,
  stringField,
  type UpstreamContext,
} from "./upstream.ts";

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

/** One legacy Nearby Search call; always an answer, never a rejection. */
export async function callLegacy(
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
