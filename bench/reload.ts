/**
 * Restart with many clients stored: build a node's KV with `BENCH_CLIENTS` clients
 * (default 1,000,000) through the store's own group commit and snapshot, then measure, for
 * a real `main.ts` process: spawn to listening (TCP connect succeeds) and spawn to fully
 * loaded (its `store_loaded` line), with the node's CPU time and resident memory then; and, in
 * this process, the load's wall and CPU time and memory per client once loaded (V8 heap, and
 * `external`: the stored values the loaded lines stay in).
 *
 * `BENCH_LOG_ROUNDS` (default 0) updates every client that many times more after the
 * snapshot, so that the restart also reads a log of that many times the clients: 2 is the
 * worst case a node that never has a quiet second can leave (docs/store.md).
 *
 * Run with `--v8-flags=--expose-gc` for the memory figure.
 *
 * @module
 */

import process from "node:process";
import { Store } from "../lib/store.ts";
import {
  gc,
  NodeProcess,
  processCpuMs,
  result,
  waitListening,
  writeTopology,
} from "./common.ts";

/** Full collections until freed ArrayBuffers have left `external` (they are swept later). */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resident memory of a process in MB, from `/proc` (Linux; null elsewhere). */
function processRssMb(pid: number): number | null {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
    return Number.isFinite(kb) ? Math.round(kb / 1024) : null;
  } catch {
    return null;
  }
}

const clients = Number(Deno.env.get("BENCH_CLIENTS") ?? 1_000_000);
const logRounds = Number(Deno.env.get("BENCH_LOG_ROUNDS") ?? 0);
const dir = await Deno.makeTempDir({ prefix: "herd-bench-reload-" });
try {
  const topo = await writeTopology(dir, ["Alford"], []);
  await Deno.mkdir(`${dir}/data`);
  const kvPath = `${dir}/data/Alford.kv`;

  // Build the state through the store itself.
  let t0 = performance.now();
  {
    const kv = await Deno.openKv(kvPath);
    const store = await Store.open(kv, {
      snapshotMinRecords: Number.MAX_SAFE_INTEGER,
    });
    await store.loaded;
    for (let round = 0; round <= logRounds; round++) {
      for (let i = 0; i < clients; i += 10_000) {
        for (let j = i; j < Math.min(clients, i + 10_000); j++) {
          store.offer(
            `AT Alford +0.263873386 client-${j} +34.${j % 1000000}-118.445127 ${
              1700000000 + j + round * clients
            }.918963997`,
            `client-${j}`,
          );
        }
        await store.durable()?.promise;
      }
      // The first round is the snapshot; later rounds stay in the log.
      if (round === 0) await store.snapshot();
    }
    await store.close();
    kv.close();
  }
  const buildMs = performance.now() - t0;

  // Memory per client, in this process.
  await settle();
  const m0 = Deno.memoryUsage();
  const kv = await Deno.openKv(kvPath);
  t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const store = await Store.open(kv);
  await store.loaded;
  const loadInProcessMs = performance.now() - t0;
  // CPU time (every thread, KV's included) varies less than wall time on a shared machine.
  const cpu = process.cpuUsage(cpu0);
  await settle();
  const m1 = Deno.memoryUsage();
  // Loaded lines stay in the values KV handed over: ArrayBuffers, counted in `external`.
  const perClient = (bytes: number) => Math.round(bytes / store.size);
  const heapPerClient = perClient(m1.heapUsed - m0.heapUsed);
  const externalPerClient = perClient(m1.external - m0.external);
  await store.close();
  kv.close();

  // A real restart.
  const node = new NodeProcess("Alford", topo.path, `${dir}/data`);
  try {
    const listenMs = await waitListening(
      topo.ports.get("Alford")!,
      node.started,
    );
    const loaded = await node.waitLine(/store_loaded/, 120_000);
    const cpuMs = processCpuMs(node.child.pid);
    const rssMb = processRssMb(node.child.pid);
    result("reload", {
      clients,
      ...(logRounds > 0 ? { log_records: logRounds * clients } : {}),
      build_s: Math.round(buildMs / 100) / 10,
      spawn_to_listening_ms: Math.round(listenMs),
      spawn_to_loaded_ms: Math.round(loaded.ms),
      ...(cpuMs === null ? {} : { spawn_to_loaded_cpu_ms: cpuMs }),
      load_in_process_ms: Math.round(loadInProcessMs),
      load_in_process_cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
      heap_bytes_per_client: heapPerClient,
      external_bytes_per_client: externalPerClient,
      memory_bytes_per_client: heapPerClient + externalPerClient,
      ...(rssMb === null ? {} : { node_rss_mb: rssMb }),
    });
  } finally {
    await node.stop();
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
