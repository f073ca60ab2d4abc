/**
 * Durable IAMAT acks per second at one node (a real `main.ts` process on disk-backed KV),
 * with 16 pipelining connections of 256 outstanding requests; against the same number of
 * durable writes done the naive way (one awaited `kv.set` per message, 16 concurrent
 * writers) in the same run.
 *
 * `BENCH_ACKS` sets the number of IAMATs (default 200,000).
 *
 * @module
 */

import {
  NodeProcess,
  pipelineIamats,
  result,
  waitListening,
  writeTopology,
} from "./common.ts";

const total = Number(Deno.env.get("BENCH_ACKS") ?? 200_000);
const dir = await Deno.makeTempDir({ prefix: "herd-bench-acks-" });
try {
  const topo = await writeTopology(dir, ["Alford"], []);
  const node = new NodeProcess("Alford", topo.path, `${dir}/data`);
  try {
    await waitListening(topo.ports.get("Alford")!, node.started);
    await pipelineIamats(topo.ports.get("Alford")!, 5000, 4, 64, "warm");
    const ms = await pipelineIamats(topo.ports.get("Alford")!, total);
    const groupRate = Math.round(total / (ms / 1000));
    // The naive way, in this process, for a bounded time.
    const kv = await Deno.openKv(`${dir}/naive.kv`);
    const line = new TextEncoder().encode(
      "AT Alford +0.263873386 client-000000 +34.068930-118.445127 1520023934.918963997",
    );
    let writes = 0;
    const until = performance.now() + 3000;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 16 }, async (_, w) => {
      for (let i = 0; performance.now() < until && i < 1_000_000; i++) {
        await kv.set(["c", `client-${w}-${i}`], line);
        writes++;
      }
    }));
    const naiveRate = Math.round(writes / ((performance.now() - t0) / 1000));
    kv.close();
    result("acks", {
      iamats: total,
      group_commit_acks_per_s: groupRate,
      one_set_per_message_per_s: naiveRate,
      speedup: Math.round((groupRate / naiveRate) * 10) / 10,
    });
  } finally {
    await node.stop();
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
