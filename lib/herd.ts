/**
 * `deno task herd`: runs every node of a topology in one terminal, each as its own process
 * with the least privilege it needs (network to its own port, its neighbors and the places
 * host; read of the topology; read and write of the data directory; the environment
 * variables it reads), every output line prefixed with the node's name. One Ctrl-C (or
 * SIGTERM) stops them all cleanly. `deno task node --name X` runs one node the same way.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ENV_VARS, readEnv } from "./config.ts";
import { LEGACY_NEARBY_URL, NEW_NEARBY_URL } from "./places.ts";
import {
  loadTopology,
  type ServerSpec,
  type Topology,
  TopologyError,
} from "./topology.ts";

const LIB = decodeURIComponent(new URL(".", import.meta.url).pathname).replace(
  /\/$/,
  "",
);
const MAIN = decodeURIComponent(
  new URL("../main.ts", import.meta.url).pathname,
);
const CONFIG = decodeURIComponent(
  new URL("../deno.json", import.meta.url).pathname,
);
const DEFAULT_TOPOLOGY = decodeURIComponent(
  new URL("../topology.json", import.meta.url).pathname,
);

/**
 * Deno's npm cache: the offline gazetteer reads its data file from there, so a node needs
 * read access to it (and to nothing else outside its data directory).
 */
export async function npmCacheDir(): Promise<string | null> {
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return JSON.parse(new TextDecoder().decode(out.stdout)).npmCache ?? null;
  } catch {
    return null;
  }
}

/** The `deno run` arguments that run `spec` with least privilege. */
export function nodeArgs(
  spec: ServerSpec,
  topology: Topology,
  topologyPath: string,
  dataDir: string,
  kv: string | undefined,
  npmCache: string | null = null,
): string[] {
  const net = new Set<string>([`${spec.host}:${spec.port}`]);
  for (const n of spec.neighbors) {
    const peer = topology.servers.get(n)!;
    net.add(`${peer.host}:${peer.port}`);
  }
  const placesUrl = readEnv("PLACES_URL");
  for (
    const u of placesUrl ? [placesUrl] : [LEGACY_NEARBY_URL, NEW_NEARBY_URL]
  ) {
    try {
      net.add(new URL(u).host);
    } catch { /* main.ts reports a bad PLACES_URL */ }
  }
  if (kv && /^https?:\/\//.test(kv)) net.add(new URL(kv).host);
  const args = [
    "run",
    "--config",
    CONFIG,
    `--allow-net=${[...net].join(",")}`,
    `--allow-read=${
      [topologyPath, dataDir, LIB, npmCache].filter(Boolean).join(",")
    }`,
    `--allow-write=${dataDir}`,
    `--allow-env=${ENV_VARS.join(",")}`,
    MAIN,
    "--name",
    spec.name,
    "--topology",
    topologyPath,
    "--data",
    dataDir,
  ];
  if (kv) args.push("--kv", kv);
  return args;
}

async function pipeLines(
  stream: ReadableStream<Uint8Array>,
  prefix: string,
  write: (s: string) => void,
): Promise<void> {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (rest + text).split("\n");
    rest = parts.pop()!;
    for (const p of parts) write(`${prefix}${p}\n`);
  }
  if (rest) write(`${prefix}${rest}\n`);
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        topology: { type: "string", default: DEFAULT_TOPOLOGY },
        data: { type: "string", default: "data" },
        kv: { type: "string" },
        name: { type: "string", multiple: true },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`herd: ${(e as Error).message.split("\n")[0]}`);
    return 2;
  }
  let topology: Topology;
  try {
    topology = await loadTopology(values.topology);
  } catch (e) {
    if (e instanceof TopologyError) {
      console.error(`herd: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const names = values.name ?? [...topology.servers.keys()];
  for (const n of names) {
    if (!topology.servers.has(n)) {
      console.error(
        `herd: unknown node name ${JSON.stringify(n)}; the topology has: ${
          [...topology.servers.keys()].join(", ")
        }`,
      );
      return 2;
    }
  }
  await Deno.mkdir(values.data, { recursive: true });
  const npmCache = await npmCacheDir();
  const width = Math.max(...names.map((n) => n.length));
  const out = new TextEncoder();
  const write = (s: string) => Deno.stdout.writeSync(out.encode(s));
  const children = names.map((name) => {
    const spec = topology.servers.get(name)!;
    const child = new Deno.Command(Deno.execPath(), {
      args: nodeArgs(
        spec,
        topology,
        values.topology,
        values.data,
        values.kv,
        npmCache,
      ),
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const prefix = `${name.padEnd(width)} | `;
    const piping = Promise.all([
      pipeLines(child.stdout, prefix, write),
      pipeLines(child.stderr, prefix, write),
    ]);
    return { name, child, piping };
  });
  let stopping = false;
  const stopAll = (signal: Deno.Signal) => {
    if (stopping) return;
    stopping = true;
    write(`herd: stopping ${names.length} node(s)\n`);
    for (const c of children) {
      try {
        c.child.kill(signal);
      } catch { /* already gone */ }
    }
  };
  const onInt = () => stopAll("SIGINT");
  const onTerm = () => stopAll("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  const results = await Promise.all(children.map(async (c) => {
    const status = await c.child.status;
    await c.piping;
    if (!stopping) {
      write(
        `herd: ${c.name} exited with code ${status.code}; stopping the rest\n`,
      );
      stopAll("SIGTERM");
    }
    return status.code;
  }));
  Deno.removeSignalListener("SIGINT", onInt);
  Deno.removeSignalListener("SIGTERM", onTerm);
  const failed = results.filter((c) => c !== 0).length;
  write(`herd: all nodes stopped${failed ? ` (${failed} failed)` : ""}\n`);
  return failed === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
