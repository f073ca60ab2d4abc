/**
 * The JSON API's pure half: request bodies and query strings into the same commands the
 * line protocol parses (with the same rules, through the same parsers), and a record into
 * the JSON fields every answer and watcher message carries. No I/O here.
 *
 * Text from JSON and URLs is Unicode; the node's client ids and records are byte strings
 * (UTF-8, one char per byte), so ids are converted on the way in and out. Times stay
 * strings end to end: `"1520023934.918963997"` is never a float.
 *
 * @example
 * ```ts
 * parseIamatBody('{"client":"kiwi","location":"+34-118","time":"1.5"}');
 * // { kind: "IAMAT", client: "kiwi", location: "+34-118", ..., timeNs: 1500000000n }
 * recordFields("AT Alford +0.1 kiwi +34-118 1.5").latitude; // 34
 * ```
 * @module
 */

import { decodeUtf8, utf8ByteString } from "../bytes.ts";
import { parseClientTime } from "../clock.ts";
import { parseLocation } from "../location.ts";
import {
  type IamatCommand,
  parseCommand,
  type WhatsatCommand,
} from "../protocol.ts";
import { isClientId } from "../record.ts";

/** A request the API refuses; `error` is the JSON body's message. */
export interface ApiError {
  error: string;
}

/** The fields of a stored record, as `/v1/clients/ID` and watchers send them. */
export interface RecordFields {
  at: string;
  server: string;
  skew: string;
  client: string;
  location: string;
  time: string;
  latitude: number;
  longitude: number;
}

const CLIENT_RULE =
  "client must be 1 to 256 bytes of printable characters without white space";
const LOCATION_RULE =
  "location must be ISO 6709 decimal degrees with signs, like +34.068930-118.445127, latitude within 90 and longitude within 180";
const TIME_RULE =
  'time must be a string of POSIX seconds with up to 9 fraction digits, like "1520023934.918963997"';

/** Parses `POST /v1/iamat`'s body (already decoded as UTF-8 text). */
export function parseIamatBody(text: string): IamatCommand | ApiError {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { error: "the body must be a JSON object" };
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return { error: "the body must be a JSON object" };
  }
  const { client, location, time } = body as Record<string, unknown>;
  for (
    const [k, v] of [["client", client], ["location", location], [
      "time",
      time,
    ]] as const
  ) {
    if (typeof v !== "string") {
      return { error: `${k} is required and must be a string` };
    }
  }
  const id = utf8ByteString(client as string);
  if (!isClientId(id)) return { error: CLIENT_RULE };
  const loc = parseLocation(location as string);
  if (loc === null) return { error: LOCATION_RULE };
  const timeNs = parseClientTime(time as string);
  if (timeNs === null) return { error: TIME_RULE };
  return {
    kind: "IAMAT",
    client: id,
    location: location as string,
    loc,
    time: time as string,
    timeNs,
  };
}

/** A client id from a URL path segment (percent-encoded UTF-8) as a byte string. */
export function clientFromPath(segment: string): string | ApiError {
  let text: string;
  try {
    text = decodeURIComponent(segment);
  } catch {
    return { error: "the client id is not valid percent-encoded UTF-8" };
  }
  const id = utf8ByteString(text);
  return isClientId(id) ? id : { error: CLIENT_RULE };
}

/**
 * `?radius=KM&bound=N` for a client, checked by WHATSAT's own parser so both ways in
 * refuse exactly the same values.
 */
export function parseNearby(
  client: string,
  radius: string | null,
  bound: string | null,
): WhatsatCommand | ApiError {
  if (radius === null || bound === null) {
    return { error: "radius and bound are required: ?radius=KM&bound=N" };
  }
  const ok = /^[^\s]+$/;
  const cmd = ok.test(radius) && ok.test(bound)
    ? parseCommand(`WHATSAT x ${radius} ${bound}`)
    : null;
  if (cmd === null || cmd.kind !== "WHATSAT") {
    return {
      error:
        "radius must be a decimal number of km, 0 < radius <= 50, and bound an integer, 1 <= bound <= 20",
    };
  }
  return { ...cmd, client };
}

/** Byte string to text for JSON (records hold valid UTF-8; anything else stays as is). */
export function text(byteString: string): string {
  return decodeUtf8(byteString) ?? byteString;
}

/** The JSON fields of a stored AT line. */
export function recordFields(at: string): RecordFields {
  const f = at.split(" ");
  const loc = parseLocation(f[4]);
  return {
    at: text(at),
    server: text(f[1]),
    skew: f[2],
    client: text(f[3]),
    location: f[4],
    time: f[5],
    latitude: loc?.latDeg ?? NaN,
    longitude: loc?.lngDeg ?? NaN,
  };
}
