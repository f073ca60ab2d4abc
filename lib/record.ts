/**
 * The client record: the AT line a node produced for an IAMAT, kept and flooded verbatim.
 * `AT <node> <skew> <client> <location> <time>`, fields separated by single spaces.
 *
 * Records are totally ordered so every node picks the same winner: the greater client time
 * wins, and equal times are broken by comparing the whole line as bytes.
 *
 * @example
 * ```ts
 * const a = "AT Alford +0.1 kiwi +34-118 10.5";
 * const b = "AT Ball +0.2 kiwi +34-118 10.50";
 * compareRecords(a, b) < 0; // same time, "AT A" < "AT B" as bytes
 * ```
 * @module
 */

import { compareTimeText, parseClientTime } from "./clock.ts";
import { decodeUtf8 } from "./bytes.ts";
import { parseLocation } from "./location.ts";

/** The longest client id, in bytes. */
export const MAX_CLIENT_ID_BYTES = 256;

/** The time field of an AT line (its last field). */
export function timeOf(line: string): string {
  return line.slice(line.lastIndexOf(" ") + 1);
}

/** Total order on AT lines: by client time, then by the line's bytes. */
export function compareRecords(a: string, b: string): number {
  const byTime = compareTimeText(timeOf(a), timeOf(b));
  if (byTime !== 0) return byTime;
  return a === b ? 0 : a < b ? -1 : 1;
}

/**
 * `compareRecords` of two lines held as bytes (`a[aFrom, aTo)` and `b[bFrom, bTo)`, one
 * byte a char, as stored values hold them), without making strings of them: a load that
 * replays a log compares every record with the one it replaces.
 */
export function compareRecordsIn(
  a: Uint8Array,
  aFrom: number,
  aTo: number,
  b: Uint8Array,
  bFrom: number,
  bTo: number,
): number {
  // An empty range has no space to look back from (and lastIndexOf(x, -1) would search
  // from the end of the whole value).
  const aSpace = aTo > aFrom ? a.lastIndexOf(SPACE, aTo - 1) : -1;
  const bSpace = bTo > bFrom ? b.lastIndexOf(SPACE, bTo - 1) : -1;
  const byTime = compareTimeIn(
    a,
    Math.max(aFrom, aSpace + 1),
    aTo,
    b,
    Math.max(bFrom, bSpace + 1),
    bTo,
  );
  if (byTime !== 0) return byTime;
  return compareBytes(a, aFrom, aTo, b, bFrom, bTo);
}

const SPACE = 32;
const DOT = 46;
const ZERO = 48;

/** `compareTimeText` of `a[af, at)` and `b[bf, bt)`, step for step. */
function compareTimeIn(
  a: Uint8Array,
  af: number,
  at: number,
  b: Uint8Array,
  bf: number,
  bt: number,
): number {
  let da = a.indexOf(DOT, af);
  if (da < 0 || da >= at) da = at;
  let db = b.indexOf(DOT, bf);
  if (db < 0 || db >= bt) db = bt;
  // The integer parts without leading zeros (one digit kept): the longer is larger.
  while (af < da - 1 && a[af] === ZERO) af++;
  while (bf < db - 1 && b[bf] === ZERO) bf++;
  if (da - af !== db - bf) return (da - af) - (db - bf);
  const byInteger = compareBytes(a, af, da, b, bf, db);
  if (byInteger !== 0) return byInteger;
  // The fractions, each padded with zeros to nine digits, compared as text.
  const fa = da < at ? da + 1 : at;
  const fb = db < bt ? db + 1 : bt;
  const la = Math.max(at - fa, 9);
  const lb = Math.max(bt - fb, 9);
  for (let k = 0; k < la && k < lb; k++) {
    const ca = fa + k < at ? a[fa + k] : ZERO;
    const cb = fb + k < bt ? b[fb + k] : ZERO;
    if (ca !== cb) return ca < cb ? -1 : 1;
  }
  return la === lb ? 0 : la < lb ? -1 : 1;
}

/** `a[af, at)` against `b[bf, bt)` as text: -1, 0 or 1. */
function compareBytes(
  a: Uint8Array,
  af: number,
  at: number,
  b: Uint8Array,
  bf: number,
  bt: number,
): number {
  const n = Math.min(at - af, bt - bf);
  for (let k = 0; k < n; k++) {
    const d = a[af + k] - b[bf + k];
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  const la = at - af;
  const lb = bt - bf;
  return la === lb ? 0 : la < lb ? -1 : 1;
}

/** The client id of a well-formed AT line (its fourth field). */
export function clientOf(line: string): string {
  let start = 0;
  for (let n = 0; n < 3; n++) start = line.indexOf(" ", start) + 1;
  return line.slice(start, line.indexOf(" ", start));
}

/** Builds the AT line for an IAMAT received by `node`. */
export function formatAt(
  node: string,
  skew: string,
  client: string,
  location: string,
  time: string,
): string {
  return `AT ${node} ${skew} ${client} ${location} ${time}`;
}

/**
 * A client id: 1 to 256 bytes of printable, non-blank characters. ASCII is the common case;
 * other bytes must form valid UTF-8 without controls, format characters or white space.
 */
export function isClientId(id: string): boolean {
  const n = id.length;
  if (n === 0 || n > MAX_CLIENT_ID_BYTES) return false;
  let ascii = true;
  for (let i = 0; i < n; i++) {
    const c = id.charCodeAt(i);
    if (c >= 0x80) ascii = false;
    else if (c <= 0x20 || c === 0x7f) return false;
  }
  if (ascii) return true;
  const text = decodeUtf8(id);
  return text !== null && !/[\p{C}\p{Z}]/u.test(text);
}

const SKEW = /^[+-]\d+\.\d{9}$/;

/** The parts of a valid AT line. */
export interface AtFields {
  node: string;
  skew: string;
  client: string;
  location: string;
  time: string;
}

/**
 * Validates an AT line received from a peer, strictly: exactly the shape `formatAt`
 * produces. Returns its fields, or null.
 */
export function parseAtLine(line: string): AtFields | null {
  const f = line.split(" ");
  if (f.length !== 6 || f[0] !== "AT") return null;
  const [, node, skew, client, location, time] = f;
  if (!isClientId(node) || !SKEW.test(skew) || !isClientId(client)) {
    return null;
  }
  if (parseLocation(location) === null || parseClientTime(time) === null) {
    return null;
  }
  return { node, skew, client, location, time };
}
