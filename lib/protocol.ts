/**
 * The client protocol, pure: a received line becomes a command or an invalid line, and
 * replies are formatted to the byte. See PROTOCOL.md.
 *
 * @example
 * ```ts
 * parseCommand("IAMAT kiwi +34-118 1520023934.5").kind; // "IAMAT"
 * parseCommand("WHATSAT kiwi 51 5").kind; // "INVALID": radius above 50
 * formatInvalid("HELLO"); // "? HELLO\n"
 * ```
 * @module
 */

import { parseClientTime } from "./clock.ts";
import {
  compareDecimal,
  isZeroDecimal,
  shiftDecimal,
  UNSIGNED_DECIMAL,
} from "./decimal.ts";
import { type Location, parseLocation } from "./location.ts";
import { isClientId } from "./record.ts";

/** A client's report of where it is. */
export interface IamatCommand {
  kind: "IAMAT";
  client: string;
  /** The location as the client wrote it. */
  location: string;
  loc: Location;
  /** The time as the client wrote it. */
  time: string;
  timeNs: bigint;
}

/** A query for places near a known client. */
export interface WhatsatCommand {
  kind: "WHATSAT";
  client: string;
  /** Radius in metres, exact decimal (`10` km → `10000`). */
  radiusM: string;
  bound: number;
}

/** Anything else. */
export interface InvalidCommand {
  kind: "INVALID";
}

/** A parsed client line. */
export type Command = IamatCommand | WhatsatCommand | InvalidCommand;

const INVALID: InvalidCommand = { kind: "INVALID" };

/** True for the protocol's white space: space, tab, LF, VT, FF, CR. */
function isBlank(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/** Splits a line into fields on runs of white space, ignoring leading and trailing runs. */
export function splitFields(line: string): string[] {
  const fields: string[] = [];
  let start = -1;
  for (let i = 0; i < line.length; i++) {
    if (isBlank(line.charCodeAt(i))) {
      if (start >= 0) {
        fields.push(line.slice(start, i));
        start = -1;
      }
    } else if (start < 0) start = i;
  }
  if (start >= 0) fields.push(line.slice(start));
  return fields;
}

/** Parses one client line (without its line ending). */
export function parseCommand(line: string): Command {
  const f = splitFields(line);
  if (f.length !== 4) return INVALID;
  if (f[0] === "IAMAT") return parseIamat(f[1], f[2], f[3]);
  if (f[0] === "WHATSAT") return parseWhatsat(f[1], f[2], f[3]);
  return INVALID;
}

/**
 * The common location, valid at a glance: at most two integer digits of latitude under 90
 * and three of longitude under 180. Others go through `parseLocation`, which decides.
 */
const COMMON_LOCATION = /^[+-](\d{1,2})(?:\.\d+)?[+-](\d{1,3})(?:\.\d+)?$/;

function validLocation(text: string): boolean {
  const m = COMMON_LOCATION.exec(text);
  if (m !== null && Number(m[1]) < 90 && Number(m[2]) < 180) return true;
  return parseLocation(text) !== null;
}

function parseIamat(client: string, location: string, time: string): Command {
  if (!isClientId(client)) return INVALID;
  // Checked here, parsed only when asked for: a node answering IAMATs never reads `loc`,
  // and parsing it exactly (decimal comparisons) was a twentieth of a loaded node's CPU.
  if (!validLocation(location)) return INVALID;
  const timeNs = parseClientTime(time);
  if (timeNs === null) return INVALID;
  return {
    kind: "IAMAT",
    client,
    location,
    get loc(): Location {
      return parseLocation(location)!;
    },
    time,
    timeNs,
  };
}

function parseWhatsat(client: string, radius: string, bound: string): Command {
  if (!isClientId(client)) return INVALID;
  if (!UNSIGNED_DECIMAL.test(radius) || isZeroDecimal(radius)) return INVALID;
  if (compareDecimal(radius, "50") > 0) return INVALID;
  if (!/^0*\d{1,2}$/.test(bound)) return INVALID;
  const n = Number(bound);
  if (n < 1 || n > 20) return INVALID;
  return {
    kind: "WHATSAT",
    client,
    radiusM: shiftDecimal(radius, 3),
    bound: n,
  };
}

/** `? <line>` for anything invalid, the line as received. */
export function formatInvalid(line: string): string {
  return `? ${line}\n`;
}

/** The WHATSAT reply: the stored AT line, the JSON, and a final empty line. */
export function formatWhatsat(atLine: string, json: string): string {
  // Trailing newlines cut by hand: a regular expression anchored at the end scans the whole
  // answer (2 % of an offline WHATSAT's CPU).
  let end = json.length;
  while (end > 0 && json.charCodeAt(end - 1) === 10) end--;
  const body = end === json.length ? json : json.slice(0, end);
  return `${atLine}\n${body}\n\n`;
}

/**
 * JSON for a WHATSAT reply: indented for people reading `nc`, and never containing an empty
 * line (JSON.stringify escapes newlines inside strings).
 */
export function placesJson(answer: unknown): string {
  return JSON.stringify(answer, null, 2);
}
