/**
 * `deno task client` arguments, pure: the command line becomes a validated request or a
 * `UsageError` with one clear line (the client prints it with the usage text and exits 2).
 *
 * Only what would otherwise corrupt the request is checked here: a field with white space in
 * it would become several fields, or a second line, on the wire. Everything the protocol
 * decides (a bad location, a radius of 51) goes to the node as written, and the node's `?`
 * is the answer, so the client never disagrees with the herd about what is valid.
 *
 * @example
 * ```ts
 * const a = parseClientArgs(["--json", "whatsat", "kiwi", "10", "5"]);
 * a.command; // { kind: "whatsat", client: "kiwi", radius: "10", bound: "5" }
 * ```
 * @module
 */

import { parseArgs } from "node:util";
import { DEFAULT_TOPOLOGY } from "../config.ts";

/** A mistake on the command line; its message is one line. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Which node to talk to. */
export type Target =
  | { kind: "node"; name?: string }
  | { kind: "address"; host: string; port: number };

/** What the client is asked to do. */
export type ClientCommand =
  | { kind: "help" }
  | { kind: "iamat"; client: string; location: string; time?: string }
  | { kind: "whatsat"; client: string; radius: string; bound: string }
  | { kind: "watch"; client: string; count?: number }
  | {
    kind: "watch-near";
    lat: number;
    lng: number;
    /** As written, sent to the node verbatim. */
    near: string;
    radius: string;
    count?: number;
  }
  | { kind: "status"; intervalMs: number };

/** The parsed command line. */
export interface ClientArgs {
  topology: string;
  /** True when `--topology` was given (the default file may be absent with --host). */
  topologyGiven: boolean;
  target: Target;
  json: boolean;
  command: ClientCommand;
  /** Internal: this process already runs with scoped permissions (see `lib/client.ts`). */
  here: boolean;
}

/** The client's defaults, in one place. */
export const CLIENT_DEFAULTS = {
  /** A reply on the line protocol must complete within this (WHATSAT is bounded at 5 s). */
  replyTimeoutMs: 10_000,
  /** Connecting (TCP, HTTP, WebSocket) gives up after this. */
  connectTimeoutMs: 3_000,
  /** The largest reply read on the line protocol (20 places are ~20 KB). */
  maxReplyBytes: 4 * 1024 * 1024,
  /** The largest /metrics or /healthz body read by `status`. */
  maxScrapeBytes: 4 * 1024 * 1024,
  /** `status`: the time between the two scrapes that give rates. */
  statusIntervalMs: 1_000,
  /** `status --interval`: the longest interval accepted. */
  maxStatusIntervalMs: 60_000,
  /** The geofence radius limit of the watch (PROTOCOL.md). */
  maxWatchRadiusKm: 50,
} as const;

/** The usage text. */
export const CLIENT_USAGE =
  `usage: deno task client [--topology FILE] [--node NAME | --host H --port P] [--json] COMMAND ...

commands:
  iamat CLIENT LOCATION [TIME]      report where CLIENT is (TIME: POSIX seconds, default now)
  whatsat CLIENT RADIUS BOUND       places within RADIUS km of CLIENT, at most BOUND of them
  watch CLIENT [--count N]          print each update of CLIENT (HTTP watch) until Ctrl-C
  watch --near LAT,LNG --radius KM [--count N]
                                    print each update within KM of a point until Ctrl-C
  status [--interval SECONDS]       every node of the topology: up/down, clients, links, rates
                                    (rates from two scrapes SECONDS apart; 0: totals only; default 1)

options:
  --topology FILE   topology file (default: topology.json beside main.ts)
  --node NAME       the node to talk to (default: the first of the topology)
  --host H --port P talk to the node at H:P (its client port) instead
  --json            one JSON object per answer, for scripts
  -h, --help        this text

exit codes: 0 success, 1 the node refused the request ("?"), 2 usage error,
            3 the node could not be reached or did not answer in time
environment: NO_COLOR (no colours; colours are used only when stdout is a terminal)`;

const COMMANDS = ["iamat", "whatsat", "watch", "status"];

/** Parses the client's command line; throws `UsageError`. */
export function parseClientArgs(argv: string[]): ClientArgs {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: {
        topology: { type: "string" },
        node: { type: "string" },
        host: { type: "string" },
        port: { type: "string" },
        json: { type: "boolean" },
        near: { type: "string" },
        radius: { type: "string" },
        count: { type: "string" },
        interval: { type: "string" },
        help: { type: "boolean", short: "h" },
        here: { type: "boolean" },
      },
      strict: true,
      allowPositionals: true,
    }));
  } catch (e) {
    throw new UsageError((e as Error).message.split("\n")[0]);
  }
  const str = (k: string) => values[k] as string | undefined;
  const base = {
    topology: str("topology") ?? DEFAULT_TOPOLOGY,
    topologyGiven: str("topology") !== undefined,
    json: values.json === true,
    here: values.here === true,
  };
  if (values.help) {
    return { ...base, target: { kind: "node" }, command: { kind: "help" } };
  }
  const target = parseTarget(str("node"), str("host"), str("port"));
  const [name, ...rest] = positionals;
  if (name === undefined) throw new UsageError("no command given");
  if (!COMMANDS.includes(name)) {
    throw new UsageError(
      `unknown command ${JSON.stringify(name)}; commands: ${
        COMMANDS.join(", ")
      }`,
    );
  }
  const only = (allowed: string[]) => {
    for (const k of ["near", "radius", "count", "interval"]) {
      if (values[k] !== undefined && !allowed.includes(k)) {
        throw new UsageError(`--${k} does not apply to ${name}`);
      }
    }
  };
  for (const field of rest) checkField(field);
  const command = ((): ClientCommand => {
    switch (name) {
      case "iamat":
        only([]);
        arity(name, rest, 2, 3, "iamat CLIENT LOCATION [TIME]");
        return {
          kind: "iamat",
          client: rest[0],
          location: rest[1],
          ...(rest[2] !== undefined ? { time: rest[2] } : {}),
        };
      case "whatsat":
        only([]);
        arity(name, rest, 3, 3, "whatsat CLIENT RADIUS BOUND");
        return {
          kind: "whatsat",
          client: rest[0],
          radius: rest[1],
          bound: rest[2],
        };
      case "watch":
        return parseWatch(rest, str("near"), str("radius"), str("count"));
      default:
        only(["interval"]);
        arity(name, rest, 0, 0, "status [--interval SECONDS]");
        return { kind: "status", intervalMs: parseInterval(str("interval")) };
    }
  })();
  return { ...base, target, command };
}

function parseTarget(
  node: string | undefined,
  host: string | undefined,
  port: string | undefined,
): Target {
  if (node !== undefined && (host !== undefined || port !== undefined)) {
    throw new UsageError("give either --node or --host and --port, not both");
  }
  if (host === undefined && port === undefined) {
    if (node === "") throw new UsageError("--node is empty");
    return node === undefined ? { kind: "node" } : { kind: "node", name: node };
  }
  if (host === undefined || host === "") {
    throw new UsageError("--port needs --host");
  }
  if (port === undefined) throw new UsageError("--host needs --port");
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw new UsageError(
      `--port ${JSON.stringify(port)} is not a port (1-65535)`,
    );
  }
  return { kind: "address", host, port: Number(port) };
}

/** A field goes on the wire as one field of one line: no white space, not empty. */
function checkField(field: string): void {
  if (field === "" || /[\s\u0085\u2028\u2029]/.test(field)) {
    throw new UsageError(
      `argument ${
        JSON.stringify(field)
      } is empty or contains white space; each argument is one field of the request`,
    );
  }
}

function arity(
  name: string,
  rest: string[],
  min: number,
  max: number,
  shape: string,
): void {
  if (rest.length < min || rest.length > max) {
    throw new UsageError(
      `${name} takes ${
        min === max ? min : `${min} to ${max}`
      } argument(s), got ${rest.length}: ${shape}`,
    );
  }
}

function parseCount(count: string | undefined): number | undefined {
  if (count === undefined) return undefined;
  if (!/^\d{1,9}$/.test(count) || Number(count) < 1) {
    throw new UsageError(
      `--count ${JSON.stringify(count)} is not a positive integer`,
    );
  }
  return Number(count);
}

function parseInterval(text: string | undefined): number {
  if (text === undefined) return CLIENT_DEFAULTS.statusIntervalMs;
  const s = Number(text);
  if (
    !/^\d+(\.\d+)?$/.test(text) ||
    s * 1000 > CLIENT_DEFAULTS.maxStatusIntervalMs
  ) {
    throw new UsageError(
      `--interval ${
        JSON.stringify(text)
      } is not a number of seconds from 0 to ${
        CLIENT_DEFAULTS.maxStatusIntervalMs / 1000
      }`,
    );
  }
  return Math.round(s * 1000);
}

function parseWatch(
  rest: string[],
  near: string | undefined,
  radius: string | undefined,
  countText: string | undefined,
): ClientCommand {
  const count = parseCount(countText);
  const withCount = count !== undefined ? { count } : {};
  if (near === undefined && radius === undefined) {
    arity("watch", rest, 1, 1, "watch CLIENT");
    return { kind: "watch", client: rest[0], ...withCount };
  }
  if (rest.length > 0) {
    throw new UsageError(
      "watch takes either CLIENT or --near LAT,LNG --radius KM, not both",
    );
  }
  if (near === undefined) throw new UsageError("--radius needs --near LAT,LNG");
  if (radius === undefined) throw new UsageError("--near needs --radius KM");
  const m = /^([+-]?\d+(?:\.\d+)?),([+-]?\d+(?:\.\d+)?)$/.exec(near);
  const lat = m ? Number(m[1]) : NaN;
  const lng = m ? Number(m[2]) : NaN;
  if (!m || Math.abs(lat) > 90 || Math.abs(lng) > 180) {
    throw new UsageError(
      `--near ${
        JSON.stringify(near)
      } is not LAT,LNG in decimal degrees (e.g. 34.0689,-118.4451)`,
    );
  }
  const km = Number(radius);
  if (
    !/^\d+(\.\d+)?$/.test(radius) || km <= 0 ||
    km > CLIENT_DEFAULTS.maxWatchRadiusKm
  ) {
    throw new UsageError(
      `--radius ${
        JSON.stringify(radius)
      } is not a distance in km above 0 and at most ${CLIENT_DEFAULTS.maxWatchRadiusKm}`,
    );
  }
  return { kind: "watch-near", lat, lng, near, radius, ...withCount };
}
