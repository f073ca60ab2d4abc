/**
 * The topology file: which nodes exist, where they listen, and who talks with whom. Links
 * are symmetric: a link listed on either side exists. Every problem is reported as one
 * clear sentence naming it.
 *
 * @example
 * ```ts
 * const topo = parseTopology(
 *   '{"servers": {"A": {"host": "127.0.0.1", "port": 12000, "neighbors": ["B"]},' +
 *     ' "B": {"host": "127.0.0.1", "port": 12001, "neighbors": []}}}',
 *   "topology.json",
 * );
 * topo.servers.get("B")!.neighbors; // ["A"]
 * ```
 * @module
 */

/** One node as the herd knows it. */
export interface ServerSpec {
  name: string;
  host: string;
  /** The client port: the line protocol, and nothing else. */
  port: number;
  /** The bus port, where neighbors connect: `peerPort`, default `port + 10000`. */
  peerPort: number;
  /** The HTTP port (health, metrics, JSON API, live view), if the node serves HTTP. */
  httpPort?: number;
  /** Symmetric neighbor names, sorted. */
  neighbors: string[];
}

/** How far above the client port the bus port is by default (Redis Cluster's convention). */
export const PEER_PORT_OFFSET = 10000;

/** A validated topology. */
export interface Topology {
  servers: Map<string, ServerSpec>;
}

/** A user-caused problem with the topology; its message is one line. */
export class TopologyError extends Error {
  override name = "TopologyError";
  constructor(message: string) {
    // Text quoted from the file (a JSON syntax snippet, a key) may hold line breaks.
    super(message.replace(/[\n\v\f\r\u0085\u2028\u2029]+/g, " "));
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** A server's entry as the file gives it, checked. */
interface RawServer {
  host: string;
  port: number;
  peerPort?: number;
  httpPort?: number;
  neighbors: string[];
}

/** A field that does not fit: where (`servers.A.port`, or `[]` for the top level) and why. */
class ShapeError extends Error {
  constructor(readonly path: string[], message: string) {
    super(message);
  }
}

/** A JSON value's kind, as the messages name it (`1e999` parses to Infinity). */
function kind(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number" && !Number.isFinite(v)) return String(v);
  return typeof v;
}

/** The problem of a value of the wrong kind at `path`. */
function mismatch(path: string[], expected: string, v: unknown): ShapeError {
  return new ShapeError(
    path,
    `Invalid input: expected ${expected}, received ${kind(v)}`,
  );
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `v` as an object (its keys are checked later), or a ShapeError at `path`. */
function object(
  v: unknown,
  path: string[],
  expected = "object",
): Record<string, unknown> {
  if (!isObject(v)) throw mismatch(path, expected, v);
  return v;
}

/** Keys of `v` that are not in `keys`, as one problem (after the known keys are checked). */
function noOtherKeys(
  v: Record<string, unknown>,
  path: string[],
  keys: readonly string[],
): void {
  const other = Object.keys(v).filter((k) => !keys.includes(k));
  if (other.length === 0) return;
  const list = other.map((k) => JSON.stringify(k)).join(", ");
  throw new ShapeError(
    path,
    `Unrecognized key${other.length > 1 ? "s" : ""}: ${list}`,
  );
}

function port(v: unknown, path: string[]): number {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw mismatch(path, "number", v);
  }
  if (!Number.isInteger(v)) {
    throw new ShapeError(path, "Invalid input: expected int, received number");
  }
  if (v < 1) throw new ShapeError(path, "Too small: expected number to be >=1");
  if (v > 65535) {
    throw new ShapeError(path, "Too big: expected number to be <=65535");
  }
  return v;
}

const TOP_KEYS = ["servers"] as const;
const SERVER_KEYS = [
  "host",
  "port",
  "peerPort",
  "httpPort",
  "neighbors",
] as const;

/**
 * The file's servers, checked server by server (host, port, peerPort, httpPort, neighbors,
 * then unknown keys), then the top level's unknown keys: the first problem is reported.
 */
function checkedServers(raw: unknown): [string, RawServer][] {
  const top = object(raw, []);
  const all = object(top.servers, ["servers"], "record");
  const out: [string, RawServer][] = [];
  for (const [name, value] of Object.entries(all)) {
    const at = ["servers", name];
    const v = object(value, at);
    if (typeof v.host !== "string") {
      throw mismatch([...at, "host"], "string", v.host);
    }
    if (v.host.length === 0) {
      throw new ShapeError(
        [...at, "host"],
        "Too small: expected string to have >=1 characters",
      );
    }
    const spec: RawServer = {
      host: v.host,
      port: port(v.port, [...at, "port"]),
      neighbors: [],
    };
    if (v.peerPort !== undefined) {
      spec.peerPort = port(v.peerPort, [...at, "peerPort"]);
    }
    if (v.httpPort !== undefined) {
      spec.httpPort = port(v.httpPort, [...at, "httpPort"]);
    }
    if (v.neighbors !== undefined) {
      if (!Array.isArray(v.neighbors)) {
        throw mismatch([...at, "neighbors"], "array", v.neighbors);
      }
      v.neighbors.forEach((n: unknown, i: number) => {
        if (typeof n !== "string") {
          throw mismatch([...at, "neighbors", String(i)], "string", n);
        }
        spec.neighbors.push(n);
      });
    }
    noOtherKeys(v, at, SERVER_KEYS);
    out.push([name, spec]);
  }
  noOtherKeys(top, [], TOP_KEYS);
  return out;
}

/** Parses and validates topology JSON; `source` names the file in errors. */
export function parseTopology(text: string, source: string): Topology {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new TopologyError(
      `${source}: not valid JSON (${(e as Error).message})`,
    );
  }
  let entries: [string, RawServer][];
  try {
    entries = checkedServers(raw);
  } catch (e) {
    if (!(e instanceof ShapeError)) throw e;
    const where = e.path.length > 0 ? e.path.join(".") : "top level";
    throw new TopologyError(`${source}: at ${where}: ${e.message}`);
  }
  if (entries.length === 0) {
    throw new TopologyError(`${source}: "servers" lists no server`);
  }
  const links = new Map<string, Set<string>>();
  // Every port of one host (client, bus, HTTP) must differ: "host:port" -> "Name's role".
  const ports = new Map<string, string>();
  const take = (host: string, port: number, owner: string) => {
    const key = `${host}:${port}`;
    const other = ports.get(key);
    if (other !== undefined) {
      throw new TopologyError(
        `${source}: duplicate port ${port} on ${host}: used by both ${other} and ${owner}`,
      );
    }
    ports.set(key, owner);
  };
  for (const [name, spec] of entries) {
    if (!NAME.test(name)) {
      throw new TopologyError(
        `${source}: server name ${
          JSON.stringify(name)
        } must be 1-64 letters, digits, '.', '_' or '-'`,
      );
    }
    if (
      spec.peerPort === undefined &&
      spec.port + PEER_PORT_OFFSET > 65535
    ) {
      throw new TopologyError(
        `${source}: ${name} has port ${spec.port}, so its default bus port ${
          spec.port + PEER_PORT_OFFSET
        } does not exist: give it a "peerPort"`,
      );
    }
    take(spec.host, spec.port, `${name}'s client port`);
    take(
      spec.host,
      spec.peerPort ?? spec.port + PEER_PORT_OFFSET,
      `${name}'s bus port`,
    );
    if (spec.httpPort !== undefined) {
      take(spec.host, spec.httpPort, `${name}'s HTTP port`);
    }
    links.set(name, new Set());
  }
  for (const [name, spec] of entries) {
    for (const n of spec.neighbors) {
      if (!links.has(n)) {
        throw new TopologyError(
          `${source}: ${name} lists unknown neighbor ${JSON.stringify(n)}`,
        );
      }
      if (n === name) {
        throw new TopologyError(
          `${source}: ${name} lists itself as a neighbor`,
        );
      }
      links.get(name)!.add(n);
      links.get(n)!.add(name);
    }
  }
  const servers = new Map<string, ServerSpec>();
  for (const [name, spec] of entries) {
    servers.set(name, {
      name,
      host: spec.host,
      port: spec.port,
      peerPort: spec.peerPort ?? spec.port + PEER_PORT_OFFSET,
      ...(spec.httpPort !== undefined ? { httpPort: spec.httpPort } : {}),
      neighbors: [...links.get(name)!].sort(),
    });
  }
  return { servers };
}

/**
 * Reads and validates a topology file. One small file, read at start synchronously: an
 * async read takes a trip through the runtime's blocking thread pool.
 */
export function loadTopology(path: string): Promise<Topology> {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    return Promise.reject(
      new TopologyError(
        `cannot read topology file ${path}: ${(e as Error).message}`,
      ),
    );
  }
  try {
    return Promise.resolve(parseTopology(text, path));
  } catch (e) {
    return Promise.reject(e);
  }
}
