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

import { z } from "zod";

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

const schema = z.strictObject({
  servers: z.record(
    z.string(),
    z.strictObject({
      host: z.string().min(1),
      port: z.number().int().min(1).max(65535),
      peerPort: z.number().int().min(1).max(65535).optional(),
      httpPort: z.number().int().min(1).max(65535).optional(),
      neighbors: z.array(z.string()).default([]),
    }),
  ),
});

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
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length > 0 ? issue.path.join(".") : "top level";
    throw new TopologyError(`${source}: at ${where}: ${issue.message}`);
  }
  const entries = Object.entries(parsed.data.servers);
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

/** Reads and validates a topology file. */
export async function loadTopology(path: string): Promise<Topology> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new TopologyError(
      `cannot read topology file ${path}: ${(e as Error).message}`,
    );
  }
  return parseTopology(text, path);
}
