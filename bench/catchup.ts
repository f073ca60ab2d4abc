/**
 * Catch-up: a node that missed `BENCH_MISSED` updates (default 60,000) while it was down
 * rejoins; time from its start until it holds them all, with no client traffic. Then the
 * cost of a reconnection when nothing differs: bytes exchanged on its links.
 *
 * In one process: two real nodes on loopback with disk-backed KV.
 *
 * @module
 */

import { HerdNode } from "../lib/node.ts";
import { StubPlaces } from "../tests/helpers.ts";
import { makeTopology } from "../tests/helpers.ts";
import { pipelineIamats, result } from "./common.ts";

const missed = Number(Deno.env.get("BENCH_MISSED") ?? 60_000);
const dir = await Deno.makeTempDir({ prefix: "herd-bench-catchup-" });
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
  const a = make("Alford");
  await a.start();
  const down = make("Ball");
  await down.start();
  await down.stop(); // Ball has been here, and is now down
  await pipelineIamats(topology.servers.get("Alford")!.port, missed);
  let ball = make("Ball");
  const t0 = performance.now();
  await ball.start();
  await waitUntil(() => ball.store.size >= missed, 60_000);
  const catchUpMs = performance.now() - t0;
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
    missed_updates: missed,
    catch_up_ms: Math.round(catchUpMs),
    catch_up_bytes: catchUpBytes,
    in_sync_reconnect_bytes: idleBytes,
  });
} finally {
  await Deno.remove(dir, { recursive: true });
}
