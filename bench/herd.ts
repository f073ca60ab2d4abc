/**
 * The whole herd under load: five real `main.ts` processes in the default shape, plus a
 * probe that joins as a neighbor of Ball (the far side from Alford) and timestamps every
 * record it receives.
 *
 * 1. Propagation: IAMATs sent to Alford at a steady rate (BENCH_RATE a second, default
 *    2,000, for 3 s); latency from the client's send to the probe's receipt, which crosses
 *    Alford → Welsh → Ball → probe (three hops, two of them durable nodes in between).
 * 2. Throughput: BENCH_HERD_ACKS IAMATs (default 100,000) pipelined into Alford while the
 *    herd floods every one of them; durable acks a second at Alford, time until the probe
 *    has seen them all, and the CPU (every thread) the nodes spent per record: the herd's
 *    five together, Alford (which takes the IAMATs) and a relay on average.
 * 3. After the burst: 1.5 s after the nodes' CPU settles, propagation again at a trickle
 *    (BENCH_AFTER_RATE a second, default 100, for 3 s). At the default sizes every node's
 *    log is then due for a fold (every record is a new client: 111,000 records, at least
 *    the 100,000 a fold needs), which starts after a quiet second, and every heap has
 *    grown: what a node does in the background then, the trickle's records wait for.
 *
 * @module
 */

import { HerdNode } from "../lib/node.ts";
import { loadTopology, type Topology } from "../lib/topology.ts";
import { StubPlaces } from "../tests/helpers.ts";
import {
  NodeProcess,
  pipelineIamats,
  processCpuMs,
  result,
  waitListening,
  writeTopology,
} from "./common.ts";

const rate = Number(Deno.env.get("BENCH_RATE") ?? 2000);
const acks = Number(Deno.env.get("BENCH_HERD_ACKS") ?? 100_000);
const afterRate = Number(Deno.env.get("BENCH_AFTER_RATE") ?? 100);
/** How long each latency phase sends IAMATs, in seconds. */
const PHASE_SECONDS = 3;
const names = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh", "Probe"];
const links: [string, string][] = [
  ["Alford", "Hamilton"],
  ["Alford", "Welsh"],
  ["Ball", "Holiday"],
  ["Ball", "Welsh"],
  ["Hamilton", "Holiday"],
  ["Ball", "Probe"],
];

/**
 * The probe: a node of the herd in this process, Ball's neighbor, that timestamps every
 * record the moment the bus hands it over (its store's `offer`, wrapped), so it speaks the
 * bus exactly as nodes do (framing, handshake, catch-up).
 */
class Probe {
  readonly seen = new Map<string, number>();
  readonly node: HerdNode;

  constructor(topology: Topology) {
    this.node = new HerdNode({
      name: "Probe",
      topology,
      dataDir: null,
      places: new StubPlaces(),
      console: false,
    });
  }

  async start(): Promise<void> {
    await this.node.start();
    const store = this.node.store;
    const offer = store.offer.bind(store);
    store.offer = (line: string, client?: string, lazy?: boolean) => {
      const now = performance.now();
      const id = client ?? line.split(" ")[3];
      if (!this.seen.has(id)) this.seen.set(id, now);
      return offer(line, client, lazy);
    };
  }

  close(): Promise<void> {
    return this.node.stop();
  }
}

/**
 * Sends `perSecond` IAMATs a second to Alford for `seconds` (ids `prefix-N`), waits (at most
 * 10 s) until the probe behind Ball has them all, and returns each one's latency from its
 * send to the probe's receipt, sorted.
 */
async function latencies(
  port: number,
  perSecond: number,
  seconds: number,
  prefix: string,
): Promise<number[]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const enc = new TextEncoder();
  const sentAt = new Map<string, number>();
  const total = perSecond * seconds;
  const reading = (async () => {
    const buf = new Uint8Array(64 * 1024);
    let got = 0;
    while (got < total) {
      const n = await conn.read(buf);
      if (n === null) break;
      for (let i = 0; i < n; i++) if (buf[i] === 10) got++;
    }
  })();
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const id = `${prefix}-${i}`;
    sentAt.set(id, performance.now());
    await conn.write(enc.encode(`IAMAT ${id} +34.0-118.0 ${1700000000 + i}\n`));
  }
  // Every ack, or 10 s: a lost reply must not hold the bench until run.ts kills it.
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    reading,
    new Promise((r) => timer = setTimeout(r, 10_000)),
  ]);
  clearTimeout(timer);
  conn.close();
  await reading.catch(() => {});
  const deadline = performance.now() + 10_000;
  const pending = new Set(sentAt.keys());
  while (pending.size > 0 && performance.now() < deadline) {
    for (const id of pending) if (probe.seen.has(id)) pending.delete(id);
    await new Promise((r) => setTimeout(r, 5));
  }
  return [...sentAt].filter(([id]) => probe.seen.has(id))
    .map(([id, at]) => probe.seen.get(id)! - at).sort((a, b) => a - b);
}

/**
 * A latency phase's figures under `prefix`: its rate, samples, lost IAMATs, p50 / p99 / max
 * (ms, two decimals), from `sorted` (`latencies` of `perSecond` for `PHASE_SECONDS`).
 */
function latencyFigures(
  prefix: string,
  perSecond: number,
  sorted: number[],
): Record<string, number> {
  const ms2 = (x: number) => Math.round(x * 100) / 100;
  return {
    [`${prefix}_rate_per_s`]: perSecond,
    [`${prefix}_samples`]: sorted.length,
    [`${prefix}_lost`]: perSecond * PHASE_SECONDS - sorted.length,
    [`${prefix}_p50_ms`]: ms2(percentile(sorted, 0.5)),
    [`${prefix}_p99_ms`]: ms2(percentile(sorted, 0.99)),
    [`${prefix}_max_ms`]: ms2(sorted[sorted.length - 1]),
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

const dir = await Deno.makeTempDir({ prefix: "herd-bench-herd-" });
const topo = await writeTopology(dir, names, links);
const probe = new Probe(await loadTopology(topo.path));
const nodes = names.filter((n) => n !== "Probe").map((n) =>
  new NodeProcess(n, topo.path, `${dir}/data`)
);
try {
  await probe.start();
  for (const [i, n] of nodes.entries()) {
    await waitListening(topo.ports.get(names[i])!, n.started);
  }
  await nodes[1].waitLine(/peer_accepted .*peer=Probe/, 10_000);
  const linked = performance.now() + 10_000;
  while (
    probe.node.flood.connected().length < 1 && performance.now() < linked
  ) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const alford = topo.ports.get("Alford")!;
  // Warm up (JIT, first commits, the initial digest exchanges), then let the herd go quiet.
  await pipelineIamats(alford, 5000, 4, 64, "warm");
  await new Promise((r) => setTimeout(r, 1500));

  // 1. Propagation latency at a steady rate.
  const lat = await latencies(alford, rate, PHASE_SECONDS, "lat");

  // 2. Throughput while the herd floods, and the CPU each node spent on it.
  const before = probe.seen.size;
  const cpu0 = nodes.map((n) => processCpuMs(n.child.pid) ?? 0);
  // (NaN where /proc cannot be read: not Linux.)
  const t1 = performance.now();
  const ms = await pipelineIamats(alford, acks, 16, 256, "load");
  const deadline2 = performance.now() + 60_000;
  while (probe.seen.size < before + acks && performance.now() < deadline2) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const allSeenMs = performance.now() - t1;
  // The probe behind Ball has seen every record; other nodes may still be committing (a
  // neighbor's record waits up to 20 ms): read the CPU once it stops moving (within 2 s).
  const cpuNow = () => nodes.map((n) => processCpuMs(n.child.pid));
  let cpu1 = cpuNow();
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const next = cpuNow();
    const still = next.every((v, k) => v === cpu1[k]);
    cpu1 = next;
    if (still) break;
  }
  const cpuUs = cpu1.map((v, i) =>
    v === null ? NaN : (v - cpu0[i]) * 1000 / acks
  );
  const round1 = (x: number) => Math.round(x * 10) / 10;
  const atProbe = probe.seen.size - before;

  // 3. Propagation at a trickle once the burst is over (see the module's comment).
  await new Promise((r) => setTimeout(r, 1500));
  const after = await latencies(alford, afterRate, PHASE_SECONDS, "after");

  result("herd", {
    ...latencyFigures("propagation", rate, lat),
    herd_iamats: acks,
    herd_acks_per_s: Math.round(acks / (ms / 1000)),
    herd_all_at_probe_ms: Math.round(allSeenMs),
    herd_records_at_probe: atProbe,
    herd_cpu_us_per_record: round1(cpuUs.reduce((a, b) => a + b, 0)),
    alford_cpu_us_per_iamat: round1(cpuUs[0]),
    relay_cpu_us_per_record: round1(
      cpuUs.slice(1).reduce((a, b) => a + b, 0) / (cpuUs.length - 1),
    ),
    ...latencyFigures("after_burst", afterRate, after),
  });
} finally {
  await Promise.all(nodes.map((n) => n.stop()));
  await probe.close();
  await Deno.remove(dir, { recursive: true });
}
