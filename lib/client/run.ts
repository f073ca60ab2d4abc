/**
 * `deno task client`, as a function: a command line in, text out through injected writers,
 * an exit code back. Nothing here touches `Deno.stdout`, signals or `Deno.exit`, so tests run
 * it in-process against real nodes and compare exact output.
 *
 * Exit codes: 0 success; 1 the node refused the request (`?`, or a refused watch); 2 a usage
 * or configuration error; 3 the node could not be reached or gave no valid answer in time.
 * Every failure is one line on stderr naming the node (and its address), never a stack trace.
 *
 * @module
 */

import { systemClock } from "../clock.ts";
import {
  loadTopology,
  type ServerSpec,
  type Topology,
  TopologyError,
} from "../topology.ts";
import {
  CLIENT_DEFAULTS,
  CLIENT_USAGE,
  type ClientArgs,
  type ClientCommand,
  parseClientArgs,
  UsageError,
} from "./args.ts";
import {
  describeEndpoint,
  type Endpoint,
  exchangeLine,
  reason,
  Unreachable,
} from "./line.ts";
import {
  paint,
  renderAt,
  renderPlaces,
  renderStatus,
  renderUpdate,
} from "./render.ts";
import { herdStatus } from "./status.ts";
import { watch, WatchRefused } from "./watch.ts";

/** The outside world of one client run. */
export interface ClientIo {
  /** Writes one line (without its `\n`) to stdout. */
  out(line: string): void;
  /** Writes one line (without its `\n`) to stderr. */
  err(line: string): void;
  /** Colours on (stdout is a terminal and NO_COLOR is unset). */
  color: boolean;
  /** Aborting it ends a running watch cleanly (Ctrl-C). */
  signal: AbortSignal;
  /** Told when a watch starts and ends (so Ctrl-C outside a watch can exit at once). */
  watching?(on: boolean): void;
  /** The current POSIX time in nanoseconds (default TIME of iamat); default the system's. */
  clock?: () => bigint;
  /** Wall time for watch lines; default `new Date()`. */
  now?: () => Date;
}

/** Exit codes. */
export const EXIT = { ok: 0, refused: 1, usage: 2, unreachable: 3 } as const;

/** A configuration problem (topology, node name): exit 2 with this one line. */
class ConfigProblem extends Error {}

/** The node answered with something that is not a reply of the protocol. */
class BadAnswer extends Unreachable {}

/** Runs the client; resolves to its exit code. */
export async function runClient(argv: string[], io: ClientIo): Promise<number> {
  const fail = (line: string) => io.err(`herd client: ${line}`);
  let args: ClientArgs;
  try {
    args = parseClientArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    fail(e.message);
    io.err(CLIENT_USAGE);
    return EXIT.usage;
  }
  if (args.command.kind === "help") {
    io.out(CLIENT_USAGE);
    return EXIT.ok;
  }
  try {
    return await dispatch(args, args.command, io);
  } catch (e) {
    if (e instanceof ConfigProblem || e instanceof TopologyError) {
      fail(e.message);
      return EXIT.usage;
    }
    if (e instanceof UsageError) {
      fail(e.message);
      io.err(CLIENT_USAGE);
      return EXIT.usage;
    }
    if (e instanceof WatchRefused) {
      fail(e.message);
      return EXIT.refused;
    }
    if (e instanceof Unreachable) {
      fail(e.message);
      return EXIT.unreachable;
    }
    if (e instanceof Deno.errors.NotCapable) {
      fail(`not permitted: ${reason(e)}`);
      return EXIT.usage;
    }
    fail(`unexpected error: ${reason(e)}`);
    return EXIT.unreachable;
  }
}

async function dispatch(
  args: ClientArgs,
  command: Exclude<ClientCommand, { kind: "help" }>,
  io: ClientIo,
): Promise<number> {
  const p = paint(io.color);
  const print = (value: unknown) => io.out(JSON.stringify(value));
  switch (command.kind) {
    case "iamat": {
      const endpoint = await clientEndpoint(args);
      const time = command.time ?? formatTime((io.clock ?? systemClock)());
      const line = `IAMAT ${command.client} ${command.location} ${time}`;
      const reply = await exchange(endpoint, line);
      if (refused(reply, endpoint, io)) return EXIT.refused;
      const at = firstLine(reply);
      if (!at.startsWith("AT ") || !reply.endsWith("\n")) {
        throw badAnswer(endpoint, reply);
      }
      if (args.json) print({ at });
      else io.out(renderAt(at, p));
      return EXIT.ok;
    }
    case "whatsat": {
      const endpoint = await clientEndpoint(args);
      const line =
        `WHATSAT ${command.client} ${command.radius} ${command.bound}`;
      const reply = await exchange(endpoint, line);
      if (refused(reply, endpoint, io)) return EXIT.refused;
      const at = firstLine(reply);
      let places: Record<string, unknown>;
      try {
        if (!at.startsWith("AT ") || !reply.endsWith("\n\n")) throw 0;
        places = JSON.parse(reply.slice(at.length + 1));
        if (places === null || typeof places !== "object") throw 0;
      } catch {
        throw badAnswer(endpoint, reply);
      }
      if (args.json) print({ at, places });
      else io.out(renderPlaces(at, places, p));
      return EXIT.ok;
    }
    case "watch":
    case "watch-near": {
      const { endpoint, spec } = await httpEndpoint(args);
      const query = command.kind === "watch"
        ? `client=${encodeURIComponent(command.client)}`
        : `near=${encodeURIComponent(command.near)}&radius=${
          encodeURIComponent(command.radius)
        }`;
      const centre = command.kind === "watch-near"
        ? { lat: command.lat, lng: command.lng }
        : undefined;
      if (!args.json) {
        io.err(
          p.dim(
            `watching ${
              command.kind === "watch"
                ? command.client
                : `within ${command.radius} km of ${command.near}`
            } on ${spec.name} (Ctrl-C stops)`,
          ),
        );
      }
      io.watching?.(true);
      try {
        const end = await watch({
          endpoint,
          query,
          count: command.count,
          connectTimeoutMs: CLIENT_DEFAULTS.connectTimeoutMs,
          signal: io.signal,
          onUpdate: (u) =>
            args.json ? print(u) : io.out(
              renderUpdate(u, p, (io.now ?? (() => new Date()))(), centre),
            ),
          onOdd: (text) =>
            io.err(
              `herd client: ${spec.name} sent a watch message that is not a JSON object: ${
                text.slice(0, 200)
              }`,
            ),
        });
        if (end.kind === "closed") {
          io.err(
            `herd client: ${spec.name} (${endpoint.host}:${endpoint.port}) closed the watch (code ${end.code}${
              end.reason ? `: ${end.reason}` : ""
            })`,
          );
          return EXIT.unreachable;
        }
        return EXIT.ok;
      } finally {
        io.watching?.(false);
      }
    }
    case "status": {
      if (args.target.kind === "address") {
        throw new UsageError(
          "status reads every node of the topology: --host and --port do not apply (--node NAME shows one)",
        );
      }
      const topology = await loadTopology(args.topology);
      const servers = args.target.name === undefined
        ? [...topology.servers.values()]
        : [named(topology, args.target.name, args.topology)];
      const status = await herdStatus(servers, args.topology, {
        connectTimeoutMs: CLIENT_DEFAULTS.connectTimeoutMs,
        maxScrapeBytes: CLIENT_DEFAULTS.maxScrapeBytes,
        intervalMs: command.intervalMs,
      });
      if (args.json) print(status);
      else io.out(renderStatus(status, p));
      return EXIT.ok;
    }
  }
}

/** POSIX nanoseconds as `seconds.nanoseconds` (9 digits), the way IAMAT carries time. */
export function formatTime(ns: bigint): string {
  return `${ns / 1_000_000_000n}.${
    (ns % 1_000_000_000n).toString().padStart(9, "0")
  }`;
}

function firstLine(reply: string): string {
  const i = reply.indexOf("\n");
  return i < 0 ? reply : reply.slice(0, i);
}

function exchange(endpoint: Endpoint, line: string): Promise<string> {
  return exchangeLine(endpoint, line, {
    connectTimeoutMs: CLIENT_DEFAULTS.connectTimeoutMs,
    replyTimeoutMs: CLIENT_DEFAULTS.replyTimeoutMs,
    maxReplyBytes: CLIENT_DEFAULTS.maxReplyBytes,
  });
}

/** A `?` answer: says so on stderr, with the line; true when it was one. */
function refused(reply: string, endpoint: Endpoint, io: ClientIo): boolean {
  if (!reply.startsWith("? ")) return false;
  io.err(
    `herd client: ${
      describeEndpoint(endpoint)
    } refused the request as invalid: ${firstLine(reply)}`,
  );
  return true;
}

function badAnswer(endpoint: Endpoint, reply: string): BadAnswer {
  if (reply === "") {
    return new BadAnswer(
      `${describeEndpoint(endpoint)} closed the connection without answering`,
    );
  }
  return new BadAnswer(
    `${
      describeEndpoint(endpoint)
    } answered something that is not a herd reply: ${
      JSON.stringify(reply.slice(0, 200))
    }`,
  );
}

function named(topology: Topology, name: string, path: string): ServerSpec {
  const spec = topology.servers.get(name);
  if (spec === undefined) {
    throw new ConfigProblem(
      `unknown node ${JSON.stringify(name)}; ${path} has: ${
        [...topology.servers.keys()].join(", ")
      }`,
    );
  }
  return spec;
}

/** The node's client port: `--host`/`--port`, or a node of the topology. */
async function clientEndpoint(args: ClientArgs): Promise<Endpoint> {
  if (args.target.kind === "address") {
    const { host, port } = args.target;
    return { label: `${host}:${port}`, host, port };
  }
  const topology = await loadTopology(args.topology);
  const spec = args.target.name === undefined
    ? topology.servers.values().next().value!
    : named(topology, args.target.name, args.topology);
  return { label: spec.name, host: spec.host, port: spec.port };
}

/** The node's HTTP port, from the topology (with `--host`/`--port`, the node listening there). */
async function httpEndpoint(
  args: ClientArgs,
): Promise<{ endpoint: Endpoint; spec: ServerSpec }> {
  const topology = await loadTopology(args.topology);
  let spec: ServerSpec;
  if (args.target.kind === "address") {
    const { host, port } = args.target;
    const found = [...topology.servers.values()].find((s) =>
      s.host === host && s.port === port
    );
    if (found === undefined) {
      throw new ConfigProblem(
        `watch needs the node's httpPort, and no node of ${args.topology} listens on ${host}:${port}: use --node NAME (with --topology FILE)`,
      );
    }
    spec = found;
  } else {
    spec = args.target.name === undefined
      ? topology.servers.values().next().value!
      : named(topology, args.target.name, args.topology);
  }
  if (spec.httpPort === undefined) {
    throw new ConfigProblem(
      `${spec.name} has no httpPort in ${args.topology}, and watch goes through the node's HTTP port: add "httpPort" to its entry`,
    );
  }
  return {
    endpoint: { label: spec.name, host: spec.host, port: spec.httpPort },
    spec,
  };
}
