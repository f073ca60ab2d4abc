/**
 * `deno task herd`: runs every node of a topology in one terminal, every output line
 * prefixed with its node's name; one Ctrl-C (or SIGTERM) stops them all cleanly.
 *
 * The nodes run in one child process (`--here`), started with the union of the least
 * privileges its nodes need (network to their own ports, their neighbors and the places
 * host; read of the topology, the data directory, `lib/` and the npm cache; write of the
 * data directory; the environment variables a node reads). One process boots in ~0.1 s,
 * where five booting at once on two cores took ~0.8 s before the last one listened.
 *
 * `deno task node --name X` runs one node as its own process (`main.ts`) with exactly that
 * node's privileges.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { newSecret } from "./bus/secret.ts";
import { DEFAULT_TOPOLOGY, ENV_VARS, herdSecret, readEnv } from "./config.ts";
import { httpSocketPath } from "./http/server.ts";
import type { PlacesProvider } from "./places/contract.ts";
import {
  endpointOf,
  PlacesConfigError,
  placesConfigFromEnv,
} from "./places/config.ts";
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
const HERD = decodeURIComponent(new URL(import.meta.url).pathname);

/**
 * Deno's npm cache: the offline gazetteer reads its data file from there, so a node needs
 * read access to it (and to nothing else outside its data directory).
 */
export async function npmCacheDir(): Promise<string | null> {
  // Deno's documented default locations, checked without starting another process; only
  // when none exists is `deno info` asked (it costs a process start, ~0.1 s of CPU).
  const env = (k: string) => {
    try {
      return Deno.env.get(k) || undefined;
    } catch {
      return undefined;
    }
  };
  const denoDir = env("DENO_DIR") ??
    (Deno.build.os === "darwin"
      ? env("HOME") && `${env("HOME")}/Library/Caches/deno`
      : Deno.build.os === "windows"
      ? env("LOCALAPPDATA") && `${env("LOCALAPPDATA")}\\deno`
      : (env("XDG_CACHE_HOME") ?? (env("HOME") && `${env("HOME")}/.cache`)) &&
        `${env("XDG_CACHE_HOME") ?? `${env("HOME")}/.cache`}/deno`);
  if (denoDir) {
    try {
      if ((await Deno.stat(`${denoDir}/npm`)).isDirectory) {
        return `${denoDir}/npm`;
      }
    } catch { /* not there: ask deno */ }
  }
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

/** Where a node's files and settings come from, for `nodeArgs`. */
export interface NodeArgsOptions {
  /** The topology file the node reads. */
  topologyPath: string;
  /** The node's data directory (its KV store, log and lock). */
  dataDir: string;
  /** The `--kv` override, if any. */
  kv?: string;
  /** Deno's npm cache (read by the offline gazetteer), when known. */
  npmCache?: string | null;
  /** The environment the node will see; default: this process's. */
  env?: Record<string, string | undefined>;
}

/**
 * The hosts (`host` or `host:port`) a node's places provider talks to: none for the offline
 * gazetteer, else the host of `PLACES_URL` or of the provider's default endpoint. An
 * environment `main.ts` would reject gives none (the node reports it and exits 2).
 */
export function placesHosts(env: Record<string, string | undefined>): string[] {
  try {
    const { config } = placesConfigFromEnv(env);
    if (config.provider === "offline") return [];
    return [new URL(endpointOf(config)).host];
  } catch (e) {
    if (e instanceof PlacesConfigError) return [];
    throw e;
  }
}

/**
 * The `deno run` arguments that run `spec` with least privilege: network to its own client,
 * bus and HTTP ports, its neighbors' bus ports and its places host (and a KV Connect host); read of the
 * topology, the data directory, `lib/` (the gazetteer worker) and the npm cache; write of
 * the data directory; the environment variables a node reads.
 */
export function nodeArgs(
  spec: ServerSpec,
  topology: Topology,
  opts: NodeArgsOptions,
): string[] {
  const env = opts.env ??
    Object.fromEntries(ENV_VARS.map((k) => [k, readEnv(k)]));
  // Its client port, bus port and HTTP port; its neighbors' bus ports, never their client
  // ports (nodes talk to each other over the bus only).
  const net = new Set<string>([
    `${spec.host}:${spec.port}`,
    `${spec.host}:${spec.peerPort}`,
  ]);
  if (spec.httpPort !== undefined) net.add(`${spec.host}:${spec.httpPort}`);
  for (const n of spec.neighbors) {
    const peer = topology.servers.get(n)!;
    net.add(`${peer.host}:${peer.peerPort}`);
  }
  for (const host of placesHosts(env)) net.add(host);
  const { kv, dataDir, topologyPath } = opts;
  if (kv && /^https?:\/\//.test(kv)) net.add(new URL(kv).host);
  // The HTTP face's own Unix socket behind its front (lib/http/server.ts): Deno grants a
  // socket by its absolute path only.
  if (spec.httpPort !== undefined) {
    net.add(`unix:${httpSocketPath(dataDir, spec.name)}`);
  }
  const args = [
    "run",
    "--config",
    CONFIG,
    `--allow-net=${[...net].join(",")}`,
    `--allow-read=${
      [topologyPath, dataDir, LIB, opts.npmCache].filter(Boolean).join(",")
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

/** Writes every byte to stdout (a pipe may take fewer than asked in one write). */
function writeStdout(bytes: Uint8Array): void {
  writeAllSync(Deno.stdout, bytes);
}

async function main(): Promise<number> {
  // Signals are ours from the start: a Ctrl-C while the launcher is still getting ready
  // must not kill it and leave nodes behind.
  const control: StopControl = { requested: null, stop: null };
  const on = (signal: Deno.Signal) => {
    control.requested ??= signal;
    control.stop?.(signal);
  };
  const onInt = () => on("SIGINT");
  const onTerm = () => on("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  try {
    return await launch(control);
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
  }
}

/** The first stop signal received, and what stops the nodes once they run. */
interface StopControl {
  requested: Deno.Signal | null;
  stop: ((signal: Deno.Signal) => void) | null;
}

async function launch(control: StopControl): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      options: {
        topology: { type: "string", default: DEFAULT_TOPOLOGY },
        data: { type: "string", default: "data" },
        kv: { type: "string" },
        name: { type: "string", multiple: true },
        here: { type: "boolean", default: false },
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
  try {
    await Deno.mkdir(values.data, { recursive: true });
  } catch (e) {
    console.error(
      `herd: data directory ${values.data} is not usable: ${
        (e as Error).message.split("\n")[0]
      }`,
    );
    return 2;
  }
  const npmCache = await npmCacheDir();
  const out = new TextEncoder();
  const write = (s: string) => writeStdout(out.encode(s));
  if (control.requested !== null) {
    write("herd: stopped before any node started\n");
    return 0;
  }
  if (values.here) return await runHere(control, topology, names, values);
  if (names.length > 1) {
    if (values.kv) {
      console.error(
        "herd: --kv names one store: give it with --name for a single node",
      );
      return 2;
    }
    // A herd started without a secret gets one of its own, so its bus is closed: sealed
    // and authenticated between its nodes, and closed to anyone else.
    let secret = readEnv("HERD_SECRET");
    if (secret === undefined) {
      secret = newSecret();
      write(
        "herd: no HERD_SECRET set: generated a random one for this run (not shown); the bus between its nodes is authenticated and encrypted\n",
      );
    }
    return await runInOneProcess(control, topology, names, {
      topologyPath: values.topology,
      dataDir: values.data,
      npmCache,
    }, secret);
  }
  const width = Math.max(...names.map((n) => n.length));
  const children = names.map((name) => {
    const spec = topology.servers.get(name)!;
    const child = new Deno.Command(Deno.execPath(), {
      args: nodeArgs(spec, topology, {
        topologyPath: values.topology,
        dataDir: values.data,
        kv: values.kv,
        npmCache,
      }),
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
  let sent: Deno.Signal | null = null;
  const stopAll = (signal: Deno.Signal) => {
    if (sent !== null) return;
    sent = signal;
    write(`herd: stopping ${names.length} node(s)\n`);
    for (const c of children) {
      try {
        c.child.kill(signal);
      } catch { /* already gone */ }
    }
  };
  control.stop = stopAll;
  if (control.requested !== null) stopAll(control.requested);
  const results = await Promise.all(children.map(async (c) => {
    const status = await c.child.status;
    await c.piping;
    if (sent === null) {
      write(
        `herd: ${c.name} exited with code ${status.code}; stopping the rest\n`,
      );
      stopAll("SIGTERM");
    }
    // A node that had not yet set up its own handling dies of the signal we sent it: it had
    // nothing to flush, so that is a clean stop too.
    const stoppedBySignal = status.signal !== null && status.signal === sent;
    return status.code === 0 || stoppedBySignal ? 0 : status.code;
  }));
  const failed = results.filter((c) => c !== 0).length;
  write(`herd: all nodes stopped${failed ? ` (${failed} failed)` : ""}\n`);
  if (failed === 0) return 0;
  return results.includes(2) ? 2 : 1;
}

/** The union of the privileges of `names`, as `--allow-*` flags. */
export function unionFlags(
  topology: Topology,
  names: string[],
  opts: NodeArgsOptions,
): string[] {
  const flags = new Map<string, Set<string>>();
  for (const name of names) {
    for (const arg of nodeArgs(topology.servers.get(name)!, topology, opts)) {
      const m = /^(--allow-[a-z]+)=(.*)$/.exec(arg);
      if (m === null) continue;
      const set = flags.get(m[1]) ?? new Set<string>();
      for (const v of m[2].split(",")) if (v) set.add(v);
      flags.set(m[1], set);
    }
  }
  return [...flags].filter(([, v]) => v.size > 0).map(([f, v]) =>
    `${f}=${[...v].join(",")}`
  );
}

/** Runs `names` in one child process with their union of privileges; relays its output. */
async function runInOneProcess(
  control: StopControl,
  topology: Topology,
  names: string[],
  opts: NodeArgsOptions,
  secret: string,
): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    env: { HERD_SECRET: secret },
    args: [
      "run",
      "--config",
      CONFIG,
      ...unionFlags(topology, names, opts),
      HERD,
      "--here",
      "--topology",
      opts.topologyPath,
      "--data",
      opts.dataDir,
      ...names.flatMap((n) => ["--name", n]),
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const out = new TextEncoder();
  const piping = Promise.all([
    pipeLines(child.stdout, "", (s) => writeStdout(out.encode(s))),
    pipeLines(
      child.stderr,
      "",
      (s) => writeAllSync(Deno.stderr, out.encode(s)),
    ),
  ]);
  let sent: Deno.Signal | null = null;
  control.stop = (signal) => {
    sent ??= signal;
    try {
      child.kill(signal);
    } catch { /* already gone */ }
  };
  if (control.requested !== null) control.stop(control.requested);
  const status = await child.status;
  await piping;
  return status.code === 0 || (status.signal !== null && status.signal === sent)
    ? 0
    : status.code;
}

/** The child of `runInOneProcess`: every node in this process, output prefixed by name. */
async function runHere(
  control: StopControl,
  topology: Topology,
  names: string[],
  values: { data: string; kv?: string },
): Promise<number> {
  const { HerdNode, NodeStartError } = await import("./node.ts");
  const { createPlaces } = await import("./places/mod.ts");
  const out = new TextEncoder();
  const write = (s: string) => writeStdout(out.encode(s));
  const width = Math.max(...names.map((n) => n.length));
  const prefix = (n: string) => `${n.padEnd(width)} | `;
  const env = Object.fromEntries(ENV_VARS.map((k) => [k, readEnv(k)]));
  let places: PlacesProvider;
  let secret: string | undefined;
  try {
    secret = herdSecret(env.HERD_SECRET);
    const { config, warnings } = placesConfigFromEnv(env);
    for (const w of warnings) write(`herd: warning: ${w}\n`);
    places = createPlaces({ ...config, cacheDir: values.data });
  } catch (e) {
    console.error(`herd: ${(e as Error).message.split("\n")[0]}`);
    return 2;
  }
  // One provider (one gazetteer index, one cache) serves every node; it is closed once.
  const shared: PlacesProvider = {
    name: places.name,
    describe: () => places.describe(),
    nearby: (q) => places.nearby(q),
    warm: () => places.warm?.(),
    close: () => {},
    stats: () => places.stats(),
  };
  const nodes = names.map((name) =>
    new HerdNode({
      name,
      topology,
      dataDir: values.data,
      places: shared,
      secret,
      print: (line) => write(`${prefix(name)}${line}\n`),
    })
  );
  const started = await Promise.allSettled(nodes.map((n) => n.start()));
  const stopAll = async () => {
    await Promise.allSettled(
      nodes.map((n, i) => started[i].status === "fulfilled" ? n.stop() : null),
    );
    await places.close();
  };
  let failed = 0;
  started.forEach((r, i) => {
    if (r.status === "fulfilled") return;
    failed++;
    const e = r.reason as Error;
    const message = e instanceof NodeStartError
      ? e.message
      : `cannot start ${names[i]}: ${e.message}`;
    write(`${prefix(names[i])}herd: ${message.split("\n")[0]}\n`);
    write(`herd: ${names[i]} exited with code 2; stopping the rest\n`);
  });
  if (failed > 0) {
    await stopAll();
    write(`herd: all nodes stopped (${failed} failed)\n`);
    return 2;
  }
  if (control.requested === null) {
    await new Promise<void>((resolve) => (control.stop = () => resolve()));
  }
  write(`herd: stopping ${names.length} node(s)\n`);
  await stopAll();
  write("herd: all nodes stopped\n");
  return 0;
}

/** Writes every byte with synchronous writes, looping over partial ones. */
function writeAllSync(
  w: { writeSync(p: Uint8Array): number },
  bytes: Uint8Array,
) {
  let off = 0;
  while (off < bytes.length) off += w.writeSync(bytes.subarray(off));
}

if (import.meta.main) Deno.exit(await main());
