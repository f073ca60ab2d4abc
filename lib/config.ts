/**
 * The operator's contract, as data: command-line flags (`node:util` `parseArgs`, checked
 * with zod) and environment variables become a validated node configuration. Every mistake
 * is a `ConfigError` with one clear line; `main.ts` prints it and exits 2.
 *
 * @example
 * ```ts
 * const flags = parseFlags(["--name", "Alford"]);
 * flags.name; // "Alford"
 * ```
 * @module
 */

import { parseArgs } from "node:util";
import { z } from "zod";
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

const flagSchema = z.object({
  name: z.string({ error: "--name is required" }).min(1, "--name is empty"),
  topology: z.string().min(1, "--topology is empty").default(DEFAULT_TOPOLOGY),
  data: z.string().min(1, "--data is empty").default("data"),
  kv: z.string().min(1, "--kv is empty").optional(),
  help: z.boolean().default(false),
});

/** Parses `main.ts` flags strictly: unknown flags, positionals and missing values are errors. */
export function parseFlags(args: string[]): Flags {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        name: { type: "string" },
        topology: { type: "string" },
        data: { type: "string" },
        kv: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new ConfigError(firstLine((e as Error).message));
  }
  if (values.help) return { name: "", topology: "", data: "", help: true };
  const parsed = flagSchema.safeParse(values);
  if (!parsed.success) throw new ConfigError(parsed.error.issues[0].message);
  return parsed.data;
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

function firstLine(s: string): string {
  return s.split("\n")[0];
}
