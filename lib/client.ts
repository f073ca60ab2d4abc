/**
 * `deno task client`: talk to a node of the herd from a terminal.
 *
 * ```sh
 * deno task client iamat kiwi.cs.ucla.edu +34.068930-118.445127
 * deno task client --node Hamilton whatsat kiwi.cs.ucla.edu 10 5
 * deno task client watch kiwi.cs.ucla.edu
 * deno task client status
 * ```
 *
 * Least privilege, like `deno task herd`: the task starts this file with read access (to find
 * the topology) and the right to run Deno, and nothing else. It reads the topology, then runs
 * itself again (`--here`) with only what the command needs: read of that one topology file,
 * network to the topology's own addresses (client and HTTP ports; `--host H --port P` adds
 * that one), and the `NO_COLOR` variable. So the code that parses what nodes send runs without
 * any file, write, run or wider network access. The second start costs one Deno start (about
 * 60 ms here). Started any other way (`deno run --allow-net ... lib/client.ts`, no run
 * permission), it runs in this process with what it was given.
 *
 * The commands, output and exit codes are in `lib/client/run.ts`.
 *
 * @module
 */

import { readEnv } from "./config.ts";
import { parseClientArgs } from "./client/args.ts";
import { runClient } from "./client/run.ts";
import { loadTopology } from "./topology.ts";

const CLIENT = decodeURIComponent(new URL(import.meta.url).pathname);
const CONFIG = decodeURIComponent(
  new URL("../deno.json", import.meta.url).pathname,
);

/** Writes every byte (a pipe may take fewer than asked in one write). */
function writeAll(w: { writeSync(p: Uint8Array): number }, text: string) {
  const bytes = new TextEncoder().encode(text);
  for (let off = 0; off < bytes.length;) {
    off += w.writeSync(bytes.subarray(off));
  }
}

/** `host:port` for `--allow-net` (IPv6 hosts in brackets). */
function netEntry(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/**
 * The `deno run` arguments that run the client with only what `argv` needs, or null when it
 * should run in this process (bad arguments, --help, an unreadable topology: all reported
 * there, with no network).
 */
export async function scopedArgs(argv: string[]): Promise<string[] | null> {
  let args;
  try {
    args = parseClientArgs(argv);
  } catch {
    return null;
  }
  if (args.here || args.command.kind === "help") return null;
  const net = new Set<string>();
  const read: string[] = [];
  if (args.target.kind === "address") {
    net.add(netEntry(args.target.host, args.target.port));
  }
  const needsTopology = args.target.kind === "node" ||
    args.command.kind !== "iamat" && args.command.kind !== "whatsat";
  if (needsTopology) {
    try {
      const topology = await loadTopology(args.topology);
      for (const s of topology.servers.values()) {
        net.add(netEntry(s.host, s.port));
        if (s.httpPort !== undefined) net.add(netEntry(s.host, s.httpPort));
      }
      read.push(args.topology);
    } catch {
      return null;
    }
  }
  return [
    "run",
    "--no-prompt",
    "--config",
    CONFIG,
    ...(read.length > 0 ? [`--allow-read=${read.join(",")}`] : []),
    ...(net.size > 0 ? [`--allow-net=${[...net].join(",")}`] : []),
    "--allow-env=NO_COLOR",
    CLIENT,
    "--here",
    ...argv,
  ];
}

/** Runs the client in a child process with scoped permissions; its exit code. */
async function relaunch(deno: string, args: string[]): Promise<number> {
  const child = new Deno.Command(deno, {
    args,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // Ctrl-C reaches the child from the terminal too; a SIGTERM sent to this process alone is
  // passed on. Either way this process waits for the child and returns its code.
  const forward = (signal: Deno.Signal) => () => {
    try {
      child.kill(signal);
    } catch { /* already gone */ }
  };
  const onInt = forward("SIGINT");
  const onTerm = forward("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  try {
    const status = await child.status;
    return status.signal !== null
      ? 128 + signalNumber(status.signal)
      : status.code;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
  }
}

function signalNumber(signal: Deno.Signal): number {
  return signal === "SIGINT" ? 2 : signal === "SIGTERM" ? 15 : 1;
}

/**
 * The Deno this process may start: itself, or `deno` on the PATH (`--allow-run=deno` grants
 * the PATH's `deno`, which may be a symbolic link to `Deno.execPath()`); null when neither.
 */
function runnableDeno(): string | null {
  for (const command of [Deno.execPath(), "deno"]) {
    try {
      if (
        Deno.permissions.querySync({ name: "run", command }).state === "granted"
      ) {
        return command;
      }
    } catch { /* not a command this Deno can ask about */ }
  }
  return null;
}

async function main(): Promise<number> {
  const deno = runnableDeno();
  if (deno !== null) {
    const scoped = await scopedArgs(Deno.args);
    if (scoped !== null) return await relaunch(deno, scoped);
  }
  const controller = new AbortController();
  let watching = false;
  let signals = 0;
  const onSignal = () => {
    // Ctrl-C ends a watch cleanly (exit 0); anywhere else it stops at once. Under `deno task`
    // it may arrive twice (terminal and launcher): only a third one means "stop now".
    if (!watching || ++signals > 2) Deno.exit(130);
    controller.abort();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let color = false;
  try {
    color = Deno.stdout.isTerminal() && readEnv("NO_COLOR") === undefined;
  } catch { /* not a terminal */ }
  return await runClient(Deno.args, {
    out: (line) => writeAll(Deno.stdout, `${line}\n`),
    err: (line) => writeAll(Deno.stderr, `${line}\n`),
    color,
    signal: controller.signal,
    watching: (on) => (watching = on),
  });
}

if (import.meta.main) Deno.exit(await main());
