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
  parseFlags,
  readEnv,
  USAGE,
} from "./lib/config.ts";
import { HerdNode, NodeStartError } from "./lib/node.ts";
import { createPlaces, placesConfigFromEnv } from "./lib/places.ts";
import { loadTopology, TopologyError } from "./lib/topology.ts";

function fail(message: string): never {
  console.error(`herd: ${message}`);
  Deno.exit(2);
}

async function main(): Promise<void> {
  if (typeof Deno.openKv !== "function") {
    fail(
      "Deno KV is not enabled: run with --unstable-kv (deno.json enables it)",
    );
  }
  let node: HerdNode;
  try {
    const flags = parseFlags(Deno.args);
    if (flags.help) {
      console.log(USAGE);
      return;
    }
    const topology = await loadTopology(flags.topology);
    const env = Object.fromEntries(ENV_VARS.map((k) => [k, readEnv(k)]));
    const { config, warnings } = placesConfigFromEnv(env);
    for (const w of warnings) console.error(`herd: warning: ${w}`);
    node = new HerdNode({
      name: flags.name,
      topology,
      dataDir: flags.data,
      kv: flags.kv,
      places: createPlaces(config),
      secret: env.HERD_SECRET,
    });
    await node.start();
  } catch (e) {
    if (
      e instanceof ConfigError || e instanceof TopologyError ||
      e instanceof NodeStartError
    ) fail(e.message);
    if (e instanceof Error && e.message.startsWith("PLACES_")) fail(e.message);
    throw e;
  }
  let signals = 0;
  const onSignal = () => {
    // Ctrl-C under `deno task herd` arrives twice (terminal and launcher): only a third
    // signal means "stop now".
    if (++signals > 2) Deno.exit(130);
    if (signals > 1) return;
    node.stop().then(() => Deno.exit(0), (e) => {
      console.error(`herd: error while stopping: ${(e as Error).message}`);
      Deno.exit(1);
    });
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
}

if (import.meta.main) await main();
