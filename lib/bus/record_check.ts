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

/** What is wrong with `line` as a peer's record, or null when it is valid. */
export function recordProblem(
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
