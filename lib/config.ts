/**
 * The operator's contract, as data: command-line flags and environment variables become a
 * validated node configuration. Every mistake is a `ConfigError` with one clear line;
 * `main.ts` prints it and exits 2.
 *
 * @example
 * ```ts
 * const flags = parseFlags(["--name", "Alford"]);
 * flags.name; // "Alford"
 * ```
 * @module
 */

import { secretProblem } from "./bus/secret.ts";

/** A user-caused configuration problem; its message is one line. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** The flags of `main.ts`. */
export interface Flags {
  name: string;
  topology: string;
  data: string;
  kv?: string;
  help: boolean;
}

/** The default topology: `topology.json` beside `main.ts`. */
export const DEFAULT_TOPOLOGY = decodeURIComponent(
  new URL("../topology.json", import.meta.url).pathname,
);

/** Usage text for `--help`. */
export const USAGE =
  `usage: deno run <permissions> main.ts --name NAME [--topology FILE] [--data DIR] [--kv PATH_OR_URL]

  --name NAME        which node of the topology this process is
  --topology FILE    topology file (default: topology.json beside main.ts)
  --data DIR         directory for this node's KV store, log and lock (default: data/)
  --kv PATH_OR_URL   KV store override: a path, :memory:, or a KV Connect URL
                     (with DENO_KV_ACCESS_TOKEN)

environment: PLACES_API_KEY, PLACES_URL, PLACES_PROVIDER (google | google-new | offline),
             PLACES_CACHE_ENTRIES (answers kept; 0: none), HERD_SECRET, DENO_KV_ACCESS_TOKEN`;

/** The value flags of `main.ts`; `--help` (`-h`) is the one without a value. */
const VALUE_FLAGS = ["name", "topology", "data", "kv"] as const;
type ValueFlag = typeof VALUE_FLAGS[number];

/**
 * Parses `main.ts` flags strictly: unknown flags, positionals and missing values are errors.
 * `--flag value` and `--flag=value` both work, and the last of a repeated flag wins. (By
 * hand: `node:util`'s `parseArgs` and a zod schema were 55 ms of a node's 200 ms from spawn
 * to listening, and 11 MB of its memory; docs/benchmarks.md, round four.)
 */
export function parseFlags(args: string[]): Flags {
  const values: Partial<Record<ValueFlag, string>> = {};
  let help = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "-h" || arg === "--help") {
      help = true;
      continue;
    }
    if (arg === "--" && i === args.length - 1) break; // nothing after it: as parseArgs did
    if (!arg.startsWith("--") || arg === "--") {
      const extra = arg === "--" ? args[i + 1] ?? "--" : arg;
      throw new ConfigError(
        arg.startsWith("-") && arg !== "--"
          ? `unknown flag '${arg}'`
          : `unexpected argument '${extra}': main.ts takes flags only`,
      );
    }
    const eq = arg.indexOf("=");
    const flag = arg.slice(2, eq < 0 ? undefined : eq);
    if (!(VALUE_FLAGS as readonly string[]).includes(flag)) {
      throw new ConfigError(
        flag === "help" ? "--help takes no value" : `unknown flag '--${flag}'`,
      );
    }
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      const next = args[i + 1];
      if (next === undefined || (next.startsWith("-") && next !== "-")) {
        throw new ConfigError(`--${flag} needs a value: --${flag} <value>`);
      }
      value = next;
      i++;
    }
    values[flag as ValueFlag] = value;
  }
  if (help) return { name: "", topology: "", data: "", help: true };
  if (values.name === undefined) throw new ConfigError("--name is required");
  for (const flag of VALUE_FLAGS) {
    if (values[flag] === "") throw new ConfigError(`--${flag} is empty`);
  }
  return {
    name: values.name,
    topology: values.topology ?? DEFAULT_TOPOLOGY,
    data: values.data ?? "data",
    ...(values.kv !== undefined ? { kv: values.kv } : {}),
    help: false,
  };
}

/** Reads one environment variable; unset (or not permitted) reads as undefined. */
export function readEnv(name: string): string | undefined {
  try {
    const v = Deno.env.get(name);
    return v === "" ? undefined : v;
  } catch {
    return undefined;
  }
}

/** The environment variables a node reads. */
export const ENV_VARS = [
  "PLACES_API_KEY",
  "PLACES_URL",
  "PLACES_PROVIDER",
  "PLACES_CACHE_ENTRIES",
  "HERD_SECRET",
  "DENO_KV_ACCESS_TOKEN",
] as const;

/**
 * `HERD_SECRET` as a node uses it: unset stays unset (an open bus), a secret under 128 bits
 * (see `bus/secret.ts` for the rule) is a `ConfigError` that never quotes it.
 */
export function herdSecret(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const problem = secretProblem(value);
  if (problem !== null) throw new ConfigError(problem);
  return value;
}
