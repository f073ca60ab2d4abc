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
  port: number;
  /** Symmetric neighbor names, sorted. */
  neighbors: string[];
}

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
  const ports = new Map<number, string>();
  for (const [name, spec] of entries) {
    if (!NAME.test(name)) {
      throw new TopologyError(
        `${source}: server name ${
          JSON.stringify(name)
        } must be 1-64 letters, digits, '.', '_' or '-'`,
      );
    }
    const other = ports.get(spec.port);
    if (other !== undefined) {
      throw new TopologyError(
        `${source}: duplicate port ${spec.port}: used by both ${other} and ${name}`,
      );
    }
    ports.set(spec.port, name);
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
