/**
 * Nodes as separate `main.ts` processes, the way the course's grading client runs them:
 * once they are linked, the only process holding a socket on a node's client port is that
 * node, so `lsof -ti:PORT | xargs kill` stops that node and no other. Checked with that very
 * `lsof -ti:PORT` (`.ci/run` installs lsof when it is missing).
 */

import assert from "assert";
import { exchange, freePorts, waitFor } from "./helpers.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);

/**
 * The pids `lsof -ti:PORT` lists: every process holding a socket whose local or remote
 * port is PORT, exactly what the course's grading client kills.
 */
async function lsof(port: number): Promise<number[]> {
  const out = await new Deno.Command("lsof", {
    args: [`-ti:${port}`],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean)
    .map(Number).sort((a, b) => a - b);
}

Deno.test({
  name:
    "nodes run as separate processes: no process but a node itself holds a socket on its client port",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "herd-bus-proc-" });
    const names = ["A", "B", "C"];
    const ports = freePorts(6);
    const spec = (i: number) => ({
      port: ports[i * 2],
      peerPort: ports[i * 2 + 1],
    });
    const servers = {
      A: { host: "127.0.0.1", ...spec(0), neighbors: ["B", "C"] },
      B: { host: "127.0.0.1", ...spec(1), neighbors: ["C"] },
      C: { host: "127.0.0.1", ...spec(2), neighbors: [] },
    };
    await Deno.writeTextFile(`${dir}/t.json`, JSON.stringify({ servers }));
    const secret = "process-test-secret-with-enough-bits-0123";
    const procs = names.map((name) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "main.ts",
          "--name",
          name,
          "--topology",
          `${dir}/t.json`,
          "--data",
          `${dir}/data`,
        ],
        cwd: ROOT,
        env: { HERD_SECRET: secret, PLACES_PROVIDER: "offline" },
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn()
    );
    try {
      const port = (n: string) => servers[n as "A"].port;
      await waitFor(
        async () => {
          try {
            const r = await exchange(port("A"), "IAMAT kiwi +34-118 1\n", 2000);
            return r.startsWith("AT A ");
          } catch {
            return false;
          }
        },
        30_000,
        "A to answer",
      );
      // Every node learns kiwi over the bus (so every link is up), B and C included.
      for (const n of ["B", "C"]) {
        await waitFor(
          async () => {
            try {
              const r = await exchange(port(n), "WHATSAT kiwi 10 1\n", 5000);
              return r.startsWith("AT A ");
            } catch {
              return false;
            }
          },
          30_000,
          `${n} to learn kiwi`,
        );
      }
      const pidOf = new Map(names.map((n, i) => [n, procs[i].pid]));
      for (const n of names) {
        assert.deepEqual(
          await lsof(port(n)),
          [pidOf.get(n)],
          `client port of ${n}`,
        );
      }
      // The check sees other processes: A's bus port is held by A and its neighbors.
      assert.deepEqual(
        await lsof(servers.A.peerPort),
        [...pidOf.values()].sort((a, b) => a - b),
      );
    } finally {
      for (const p of procs) {
        try {
          p.kill("SIGTERM");
        } catch { /* exited */ }
      }
      await Promise.all(procs.map((p) => p.status));
      await Deno.remove(dir, { recursive: true });
    }
  },
});
