/**
 * What `deno task client` prints for people, pure: answers become text with optional colours
 * (ANSI, only when the caller says the output is a terminal and NO_COLOR is unset). Text that
 * comes from the network (place names, client ids) is printed with its control characters
 * escaped, so an answer can never move the cursor or change the terminal's colours.
 *
 * @module
 */

import { distanceKm, parseLocation } from "../location.ts";

/** ANSI styles, or identity functions when colours are off. */
export interface Paint {
  bold(s: string): string;
  dim(s: string): string;
  green(s: string): string;
  red(s: string): string;
  yellow(s: string): string;
  cyan(s: string): string;
}

/** The styles for a terminal (`color`) or for anything else. */
export function paint(color: boolean): Paint {
  const sgr = (open: number, close: number) => (s: string) =>
    color ? `\x1b[${open}m${s}\x1b[${close}m` : s;
  return {
    bold: sgr(1, 22),
    dim: sgr(2, 22),
    green: sgr(32, 39),
    red: sgr(31, 39),
    yellow: sgr(33, 39),
    cyan: sgr(36, 39),
  };
}

/** Escapes control characters (C0, DEL, C1, bidi overrides) of untrusted text. */
export function clean(text: string): string {
  return text.replace(
    /[\p{Cc}\u202a-\u202e\u2066-\u2069]/gu,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** The fields of an AT line, leniently (the node produced it). */
export interface AtParts {
  server: string;
  skew: string;
  client: string;
  location: string;
  time: string;
  lat: number | null;
  lng: number | null;
}

/** Splits `AT server skew client location time`; null when it is not that shape. */
export function parseAt(line: string): AtParts | null {
  const f = line.split(" ");
  if (f.length !== 6 || f[0] !== "AT") return null;
  const loc = parseLocation(f[4]);
  return {
    server: f[1],
    skew: f[2],
    client: f[3],
    location: f[4],
    time: f[5],
    lat: loc?.latDeg ?? null,
    lng: loc?.lngDeg ?? null,
  };
}

/** `2018-03-02T20:52:14.918Z` for a POSIX time text, or "" when out of range. */
function isoTime(time: string): string {
  const ms = Number(time) * 1000;
  if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) return "";
  return new Date(ms).toISOString();
}

/** The readable answer to an IAMAT. */
export function renderAt(at: string, p: Paint): string {
  const a = parseAt(at);
  if (a === null) return clean(at);
  return `${p.green("recorded")}: ${p.bold(clean(a.client))} at ${
    clean(a.location)
  } by ${p.cyan(clean(a.server))} (client time ${clean(a.time)}${
    isoTime(a.time) ? ` = ${isoTime(a.time)}` : ""
  }, skew ${clean(a.skew)} s)`;
}

/** The width of text on a terminal, colour escapes left out. */
function width(text: string): number {
  // deno-lint-ignore no-control-regex
  return [...text.replace(/\x1b\[[0-9;]*m/g, "")].length;
}

/**
 * A table with a header row; every cell already cleaned (and maybe coloured). Columns are
 * padded to the widest cell.
 */
export function table(rows: string[][], p: Paint, indent = ""): string {
  if (rows.length === 0) return "";
  const widths = rows[0].map((_, i) =>
    Math.max(...rows.map((r) => width(r[i] ?? "")))
  );
  return rows.map((r, n) => {
    const line = r.map((cell, i) =>
      i === r.length - 1 ? cell : cell + " ".repeat(widths[i] - width(cell))
    ).join("  ").trimEnd();
    return indent + (n === 0 ? p.bold(line) : line);
  }).join("\n");
}

type Json = Record<string, unknown>;

function str(v: unknown): string {
  return typeof v === "string"
    ? v
    : v === undefined || v === null
    ? ""
    : String(v);
}

/** The readable answer to a WHATSAT: where the client is, then the places as a table. */
export function renderPlaces(at: string, places: Json, p: Paint): string {
  const a = parseAt(at);
  const head = a === null
    ? clean(at)
    : `${p.bold(clean(a.client))} is at ${clean(a.location)} (recorded by ${
      p.cyan(clean(a.server))
    }, client time ${clean(a.time)})`;
  const status = str(places.status);
  const results = Array.isArray(places.results) ? places.results as Json[] : [];
  if (status !== "OK" && status !== "ZERO_RESULTS") {
    const message = str(places.error_message);
    return `${head}\n${p.red("places upstream failed")}: ${clean(status)}${
      message ? `: ${clean(message)}` : ""
    }`;
  }
  if (results.length === 0) {
    return `${head}\n${p.yellow("no places")} (${clean(status)})`;
  }
  const rows = [["NAME", "DISTANCE", "VICINITY"]];
  for (const r of results) {
    const loc = ((r.geometry as Json | undefined)?.location ?? {}) as Json;
    const lat = Number(loc.lat);
    const lng = Number(loc.lng);
    const km = a?.lat != null && a.lng != null && Number.isFinite(lat) &&
        Number.isFinite(lng)
      ? `${distanceKm(a.lat, a.lng, lat, lng).toFixed(1)} km`
      : "?";
    // Nearby Search has `vicinity`; other shapes may carry only `formatted_address`.
    const where = str(r.vicinity) || str(r.formatted_address);
    rows.push([clean(str(r.name)), km, clean(where)]);
  }
  return `${head}\n${results.length} place(s):\n${table(rows, p, "  ")}`;
}

/** The centre of a geofence watch, for distances. */
export interface Centre {
  lat: number;
  lng: number;
}

/** One watch update, readable: when it arrived, who, where, and which node recorded it. */
export function renderUpdate(
  record: Json,
  p: Paint,
  now: Date,
  centre?: Centre,
): string {
  const lat = Number(record.latitude);
  const lng = Number(record.longitude);
  const away = centre && Number.isFinite(lat) && Number.isFinite(lng)
    ? `, ${
      distanceKm(centre.lat, centre.lng, lat, lng).toFixed(1)
    } km from the centre`
    : "";
  return `${p.dim(now.toISOString().slice(11, 23))} ${
    p.bold(clean(str(record.client)))
  } at ${clean(str(record.location))} (recorded by ${
    p.cyan(clean(str(record.server)))
  }, client time ${clean(str(record.time))}${away})`;
}

/** Counters `status` reads, as totals or as rates per second. */
export interface Counters {
  iamat: number | null;
  whatsat: number | null;
  invalid: number | null;
  recordsReceived: number | null;
  recordsSent: number | null;
}

/** One node as `status` saw it. */
export interface NodeStatus {
  name: string;
  host: string;
  port: number;
  httpPort: number | null;
  /** `loading`: up but its records are not loaded yet (`/readyz` 503). */
  status: "up" | "loading" | "down";
  /** How the state was learned: HTTP health and metrics, or a TCP connect to the client port. */
  probe: "http" | "tcp";
  /** Why HTTP or the node could not be read, when it could not. */
  note: string | null;
  clients: number | null;
  clientConnections: number | null;
  /** Neighbor name -> its link's state (`unknown` without metrics). */
  links: Record<string, "up" | "down" | "unknown">;
  totals: Counters | null;
  /** Per second, over `intervalMs`; null when only totals were taken. */
  rates: Counters | null;
}

/** The whole answer of `status`. */
export interface HerdStatus {
  topology: string;
  intervalMs: number;
  nodes: NodeStatus[];
}

function num(v: number | null | undefined): string {
  return v === null || v === undefined ? "-" : String(v);
}

function counter(
  total: number | null | undefined,
  rate: number | null | undefined,
): string {
  if (total === null || total === undefined) return "-";
  return rate === null || rate === undefined
    ? String(total)
    : `${total} (${rate.toFixed(1)}/s)`;
}

/** The readable `status`: one row per node, like `serf members`. */
export function renderStatus(s: HerdStatus, p: Paint): string {
  const rows = [[
    "NODE",
    "ADDRESS",
    "HTTP",
    "STATUS",
    "CLIENTS",
    "CONNS",
    "IAMAT",
    "WHATSAT",
    "INVALID",
    "LINKS",
  ]];
  const state = (st: NodeStatus["status"]) =>
    st === "up" ? p.green(st) : st === "down" ? p.red(st) : p.yellow(st);
  for (const n of s.nodes) {
    const links = Object.entries(n.links).map(([peer, st]) =>
      `${clean(peer)}:${
        st === "up" ? p.green(st) : st === "down" ? p.red(st) : st
      }`
    ).join(" ");
    rows.push([
      clean(n.name),
      `${clean(n.host)}:${n.port}`,
      n.httpPort === null ? "-" : String(n.httpPort),
      state(n.status),
      num(n.clients),
      num(n.clientConnections),
      counter(n.totals?.iamat, n.rates?.iamat),
      counter(n.totals?.whatsat, n.rates?.whatsat),
      counter(n.totals?.invalid, n.rates?.invalid),
      n.status === "down" ? "-" : links || "-",
    ]);
  }
  const notes = s.nodes.filter((n) => n.note !== null).map((n) =>
    `  ${clean(n.name)}: ${clean(n.note!)}`
  );
  return table(rows, p) +
    (notes.length > 0 ? `\n${p.dim("notes:")}\n${notes.join("\n")}` : "");
}
