/**
 * Runs one node of the herd.
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-write --allow-env main.ts --name Alford
 * ```
 *
 * Flags and environment are described by `--help` and in the README. A mistake the operator
 * can fix (a bad flag, an unknown name, a bad topology, a port in use, an unusable data
 * directory) is one line on stderr and exit code 2. SIGINT and SIGTERM stop the node
 * cleanly with exit code 0.
 *
 * @module
 */

import {
  ConfigError,
  ENV_VARS,
  herdSecret,
  parseFlags,
  readEnv,
  USAGE,
} from "./lib/config.ts";
import { HerdNode, NodeStartError } from "./lib/node.ts";
import {
  createPlaces,
  PlacesConfigError,
  placesConfigFromEnv,
} from "./lib/places/mod.ts";
import { loadTopology, TopologyError } from "./lib/topology.ts";

/** One line on stderr, exit 2: what the operator sees for anything they can fix. */
function fail(message: string): never {
  console.error(`herd: ${oneLine(message)}`);
  Deno.exit(2);
}

function oneLine(text: string): string {
  return text.replace(/\s*[\n\v\f\r\u0085\u2028\u2029]+\s*/g, " ").trim();
}

/**
 * The line for an error thrown while starting. Ours already name the problem; anything else
 * (a permission the node was not given, a lock file it cannot open, ...) is still reported as
 * one line naming the node, never as a stack trace.
 */
function startError(e: unknown, name: string | undefined): string {
  if (
    e instanceof ConfigError || e instanceof TopologyError ||
    e instanceof NodeStartError || e instanceof PlacesConfigError
  ) return e.message;
  const message = e instanceof Error ? e.message : String(e);
  return `cannot start${name ? ` ${name}` : ""}: ${message}`;
}

async function main(): Promise<void> {
  if (typeof Deno.openKv !== "function") {
    fail(
      "Deno KV is not enabled: run with --unstable-kv (deno.json enables it)",
    );
  }
  let node: HerdNode | undefined;
  let started = false;
  let signals = 0;
  const stop = () => {
    node!.stop().then(() => Deno.exit(0), (e) => {
      console.error(
        `herd: error while stopping: ${oneLine((e as Error).message)}`,
      );
      Deno.exit(1);
    });
  };
  // Listening for signals before starting: a SIGINT or SIGTERM that arrives while the node
  // starts (a Ctrl-C right after `deno task herd`) stops it cleanly once it is up, instead
  // of killing it half-way.
  const onSignal = () => {
    // Ctrl-C under `deno task herd` arrives twice (terminal and launcher): only a third
    // signal means "stop now".
    if (++signals > 2) Deno.exit(130);
    if (signals === 1 && started) stop();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let name: string | undefined;
  try {
    const flags = parseFlags(Deno.args);
    if (flags.help) {
      console.log(USAGE);
      Deno.exit(0);
    }
    name = flags.name;
    const topology = await loadTopology(flags.topology);
    const env = Object.fromEntries(ENV_VARS.map((k) => [k, readEnv(k)]));
    const secret = herdSecret(env.HERD_SECRET);
    const { config, warnings } = placesConfigFromEnv(env);
    for (const w of warnings) console.error(`herd: warning: ${w}`);
    node = new HerdNode({
      name: flags.name,
      topology,
      dataDir: flags.data,
      kv: flags.kv,
      places: createPlaces({ ...config, cacheDir: flags.data }),
      secret,
    });
    await node.start();
  } catch (e) {
    fail(startError(e, name));
  }
  started = true;
  if (signals > 0) stop();
}

if (import.meta.main) await main();
