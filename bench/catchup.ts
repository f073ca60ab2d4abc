/**
 * Catch-up: in a herd that already holds `BENCH_CATCHUP_CLIENTS` clients (default
 * 1,000,000, written to both nodes' KV through the store before they start), a node that
 * missed `BENCH_MISSED` updates (default 60,000) while it was down rejoins; time from its
 * start until it holds them all, with no client traffic. Then the cost of a reconnection
 * when nothing differs: bytes exchanged on its links.
 *
 * In one process: two real nodes on loopback with disk-backed KV. `catch_up_cpu_ms` is the
 * process's CPU (both nodes, every thread) over the catch-up: it varies less than the wall
 * time on a shared machine.
 *
 * @module
 */

import { HerdNode } from "../lib/node.ts";
import { Store } from "../lib/store.ts";
import { StubPlaces } from "../tests/helpers.ts";
import { makeTopology } from "../tests/helpers.ts";
import { pipelineIamats, processCpuMs, result } from "./common.ts";

const missed = Number(Deno.env.get("BENCH_MISSED") ?? 60_000);
const base = Number(Deno.env.get("BENCH_CATCHUP_CLIENTS") ?? 1_000_000);
const dir = await Deno.makeTempDir({ prefix: "herd-bench-catchup-" });

/** Writes `base` clients into `path` through the store (its group commit and snapshot). */
async function build(path: string): Promise<void> {
  const kv = await Deno.openKv(path);
  const store = await Store.open(kv, {
    snapshotMinRecords: Number.MAX_SAFE_INTEGER,
  });
  await store.loaded;
  for (let i = 0; i < base; i += 10_000) {
    for (let j = i; j < Math.min(base, i + 10_000); j++) {
      store.offer(
        `AT Alford +0.263873386 held-${j} +34.${j % 1000000}-118.445127 ${
          1700000000 + j
        }.918963997`,
        `held-${j}`,
      );
    }
    await store.durable()?.promise;
  }
  await store.snapshot();
  await store.close();
  kv.close();
}
const topology = makeTopology(["Alford", "Ball"], [["Alford", "Ball"]]);
const make = (name: string) =>
  new HerdNode({
    name,
    topology,
    dataDir: dir,
    places: new StubPlaces(),
    console: false,
  });
async function waitUntil(
  check: () => boolean,
  timeoutMs: number,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 2));
  }
}
try {
  const tb = performance.now();
  await Promise.all([build(`${dir}/Alford.kv`), build(`${dir}/Ball.kv`)]);
  const buildS = Math.round((performance.now() - tb) / 100) / 10;
  // Ball holds the herd's clients and is down; Alford takes `missed` new clients.
  const a = make("Alford");
  await a.start();
  await a.store.loaded;
  await pipelineIamats(topology.servers.get("Alford")!.port, missed);
  let ball = make("Ball");
  const t0 = performance.now();
  const cpu0 = processCpuMs(Deno.pid);
  await ball.start();
  await waitUntil(() => ball.store.size >= base + missed, 120_000);
  const catchUpMs = performance.now() - t0;
  const cpu1 = processCpuMs(Deno.pid);
  await waitUntil(() => ball.flood.connected().length === 1, 5000);
  await new Promise((r) => setTimeout(r, 300));
  await ball.stop();
  const catchUpBytes = ball.flood.stats.bytesIn + ball.flood.stats.bytesOut;

  // Reconnect with nothing different.
  ball = make("Ball");
  await ball.start();
  await ball.store.loaded;
  await waitUntil(() => ball.flood.connected().length === 1, 5000);
  await new Promise((r) => setTimeout(r, 300)); // both directions sum and answer
  await ball.stop();
  const idleBytes = ball.flood.stats.bytesIn + ball.flood.stats.bytesOut;
  await a.stop();
  result("catchup", {
    clients_held: base,
    build_s: buildS,
    missed_updates: missed,
    catch_up_ms: Math.round(catchUpMs),
    // NaN where /proc cannot be read (not Linux).
    catch_up_cpu_ms: cpu0 === null || cpu1 === null ? NaN : cpu1 - cpu0,
    catch_up_bytes: catchUpBytes,
    in_sync_reconnect_bytes: idleBytes,
  });
} finally {
  await Deno.remove(dir, { recursive: true });
}
