/**
 * Nodes as separate `main.ts` processes, the way the course's grading client runs them:
 * once they are linked, the only process holding a socket on a node's client port is that
 * node, so `lsof -ti:PORT | xargs kill` stops that node and no other. Read from `/proc`
 * (`/proc/net/tcp*` for the sockets, `/proc/PID/fd` for who holds them).
 */

import assert from "assert";
import { exchange, freePorts, waitFor } from "./helpers.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);

/** Socket inodes whose local or remote port is `port` (TIME_WAIT ones have no inode). */
async function socketsOnPort(port: number): Promise<Set<string>> {
  const out = new Set<string>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const local = parseInt(f[1].split(":")[1], 16);
      const remote = parseInt(f[2].split(":")[1], 16);
      if ((local === port || remote === port) && f[9] !== "0") out.add(f[9]);
    }
  }
  return out;
}

/** Every process that holds one of `inodes`, by pid. */
async function holders(inodes: Set<string>): Promise<Set<number>> {
  const pids = new Set<number>();
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      for await (const fd of Deno.readDir(`/proc/${e.name}/fd`)) {
        const link = await Deno.readLink(`/proc/${e.name}/fd/${fd.name}`)
          .catch(() => "");
        const m = /^socket:\[(\d+)\]$/.exec(link);
        if (m && inodes.has(m[1])) pids.add(Number(e.name));
      }
    } catch { /* gone, or not ours to read */ }
  }
  return pids;
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
        const own = await holders(await socketsOnPort(port(n)));
        assert.deepEqual([...own], [pidOf.get(n)], `client port of ${n}`);
      }
      // The check sees other processes: each bus port is held by its node and neighbors.
      const bus = await holders(await socketsOnPort(servers.A.peerPort));
      assert.ok(bus.has(pidOf.get("A")!));
      assert.ok(bus.has(pidOf.get("B")!) && bus.has(pidOf.get("C")!));
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
