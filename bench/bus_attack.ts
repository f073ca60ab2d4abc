/**
 * The hostile bus row of issue 9, measured: 300 connections to a node's bus port say
 * `HERD HELLO <neighbor>` and then stream 1 MB without a line end, while an innocent client
 * sends an IAMAT every 20 ms. Prints the node's RSS before, at its peak (sampled every
 * 10 ms from /proc) and after, and the innocent client's slowest and median reply.
 *
 * ```sh
 * deno run -A bench/bus_attack.ts      # Linux (reads /proc/PID/status)
 * ```
 *
 * @module
 */

import { NodeProcess, result, writeTopology } from "./common.ts";

const CONNS = Number(Deno.env.get("BENCH_ATTACK_CONNS") ?? 300);
const BYTES = 1024 * 1024;

async function rssMb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
  return kb / 1024;
}

async function write(conn: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

const dir = await Deno.makeTempDir({ prefix: "herd-bench-attack-" });
const { path, ports } = await writeTopology(dir, ["Alford", "Ball"], [[
  "Alford",
  "Ball",
]]);
const topo = JSON.parse(await Deno.readTextFile(path));
const bus: number = topo.servers.Alford.peerPort;
const port = ports.get("Alford")!;
const node = new NodeProcess("Alford", path, `${dir}/data`);
try {
  await node.waitLine(/listening/);
  const pid = node.child.pid;
  // Let it settle, then warm the IAMAT path once.
  await new Promise((r) => setTimeout(r, 1000));
  const probe = async (i: number): Promise<number> => {
    const t0 = performance.now();
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await write(
      c,
      new TextEncoder().encode(`IAMAT probe-${i} +1+1 ${i + 1}\n`),
    );
    const buf = new Uint8Array(512);
    await c.read(buf);
    c.close();
    return performance.now() - t0;
  };
  await probe(0);
  const before = await rssMb(pid);
  let peak = before;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await rssMb(pid));
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const latencies: number[] = [];
  let probing = true;
  const prober = (async () => {
    for (let i = 1; probing && i < 10_000; i++) {
      latencies.push(await probe(i));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const hello = new TextEncoder().encode("HERD HELLO Ball ");
  const chunk = new TextEncoder().encode("x".repeat(64 * 1024));
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONNS }, async () => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: bus });
    try {
      await write(c, hello);
      for (let sent = 0; sent < BYTES; sent += chunk.length) {
        await write(c, chunk);
      }
    } catch { /* cut off by the node */ }
    c.close();
  }));
  const attackMs = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 2000));
  probing = false;
  await prober;
  sampling = false;
  await sampler;
  const after = await rssMb(pid);
  latencies.sort((a, b) => a - b);
  result(`bus attack: ${CONNS} connections say HERD HELLO then stream 1 MB`, {
    "attack ms": attackMs.toFixed(0),
    "RSS before MB": before.toFixed(1),
    "RSS peak MB": peak.toFixed(1),
    "RSS peak growth MB": (peak - before).toFixed(1),
    "RSS after 2 s MB": after.toFixed(1),
    "probe IAMATs": latencies.length,
    "probe median ms": latencies[latencies.length >> 1].toFixed(1),
    "probe slowest ms": latencies.at(-1)!.toFixed(1),
  });
} finally {
  await node.stop();
  await Deno.remove(dir, { recursive: true });
}
