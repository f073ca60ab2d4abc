/**
 * A record from a neighbor, checked as strictly as a client line, pure: the AT line must be
 * one that some node of this herd could have written for some valid IAMAT.
 *
 * - the shape `AT <node> <skew> <client> <location> <time>`, single spaces;
 * - the node one of the topology's node names;
 * - the skew as `formatSkew` writes it: a sign, digits without leading zeros, a point and
 *   exactly 9 digits, never `-0.000000000`, and no more integer digits than the larger of
 *   the time's and the clock's (20) plus one;
 * - the client id, location and time as IAMAT allows them (`isClientId`, `parseLocation`,
 *   `parseClientTime`), and together no longer than a client line can carry.
 *
 * @example
 * ```ts
 * const nodes = new Set(["Alford"]);
 * recordProblem("AT Alford +0.263873386 kiwi +34-118 1520023934.9", nodes, 16384); // null
 * recordProblem("AT Mallory +0.263873386 kiwi +34-118 1520023934.9", nodes, 16384); // "unknown node"
 * ```
 * @module
 */

import { parseClientTime } from "../clock.ts";
import { parseLocation } from "../location.ts";
import { isClientId } from "../record.ts";

/** Integer digits of a clock reading for centuries to come. */
const CLOCK_DIGITS = 20;
const SKEW = /^([+-])(0|[1-9]\d*)\.(\d{9})$/;

/**
 * The common record in one pass, a subset of the valid ones: an ASCII client id, a
 * location whose degrees have at most two (latitude) and three (longitude) integer digits,
 * a skew of at most 20 integer digits. Checking one of these with `recordProblem`'s full
 * path (a split, the location parser and its exact decimal comparisons, a bigint for the
 * time) took a quarter of the CPU of a node that only relays (docs/benchmarks.md).
 */
const COMMON =
  /^AT ([^ ]+) ([+-])(0|[1-9]\d{0,19})\.(\d{9}) [\x21-\x7e]{1,256} [+-](\d{1,2})(?:\.\d+)?[+-](\d{1,3})(?:\.\d+)? \d+(?:\.\d{1,9})?$/;

/** What is wrong with `line` as a peer's record, or null when it is valid. */
export function recordProblem(
  line: string,
  nodes: ReadonlySet<string>,
  clientLineBytes: number,
): string | null {
  // The fast path accepts only what the full path below accepts: it returns null or
  // falls through, never a problem of its own.
  const m = COMMON.exec(line);
  if (
    m !== null && nodes.has(m[1]) &&
    !(m[2] === "-" && m[3] === "0" && m[4] === "000000000") &&
    Number(m[5]) < 90 && Number(m[6]) < 180 &&
    // client + location + time: the line less "AT", five spaces, the node and the skew.
    line.length - 7 - m[1].length - (m[3].length + 11) + 8 <= clientLineBytes
  ) {
    return null;
  }
  return fullCheck(line, nodes, clientLineBytes);
}

/** The full check alone, without the fast path (tests compare the two). */
export function fullCheck(
  line: string,
  nodes: ReadonlySet<string>,
  clientLineBytes: number,
): string | null {
  const f = line.split(" ");
  if (f.length !== 6 || f[0] !== "AT") return "malformed";
  const [, node, skew, client, location, time] = f;
  if (!nodes.has(node)) return "unknown node";
  // "IAMAT" + three single spaces: the shortest client line these fields fit in.
  if (client.length + location.length + time.length + 8 > clientLineBytes) {
    return "longer than a client line";
  }
  if (!isClientId(client)) return "bad client id";
  if (parseLocation(location) === null) return "bad location";
  if (parseClientTime(time) === null) return "bad time";
  const m = SKEW.exec(skew);
  if (m === null) return "bad skew";
  if (m[1] === "-" && m[2] === "0" && m[3] === "000000000") return "bad skew";
  const timeDigits = time.indexOf(".") < 0 ? time.length : time.indexOf(".");
  if (m[2].length > Math.max(timeDigits, CLOCK_DIGITS) + 1) {
    return "bad skew";
  }
  return null;
}
