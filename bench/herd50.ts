/**
 * Cost growth: a herd of `BENCH_HERD50_NODES` nodes (default 50) in one process, linked as a
 * random graph where every node has `BENCH_HERD50_DEGREE` neighbors (default 3; seeded, so
 * every run builds the same connected graph), each node with its KV in memory.
 *
 * `BENCH_HERD50_SAMPLES` IAMATs (default 200), one at a time at idle, go to the first node;
 * for each, the time from the client's send until every node holds the record (so until the
 * farthest node has it, `graph_diameter` hops away at most), with p50 and p99; and the bus
 * messages an update costs: records sent on every link, in all, per IAMAT. A flood sends
 * each record once on every link but back toward where it came from, and two neighbors that
 * accept it at the same moment cross: at most twice the number of links.
 *
 * Bounded: at most 5 s a sample, 120 s in all.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { HerdNode } from "../lib/node.ts";
import { makeTopology, StubPlaces } from "../tests/helpers.ts";
import { result } from "./common.ts";
import { rng } from "../tests/random.ts";

const N = Number(Deno.env.get("BENCH_HERD50_NODES") ?? 50);
const DEGREE = Number(Deno.env.get("BENCH_HERD50_DEGREE") ?? 3);
const SAMPLES = Number(Deno.env.get("BENCH_HERD50_SAMPLES") ?? 200);

/** Eccentricities by breadth-first search: the hops from `from` to every node. */
function hops(adj: number[][], from: number): number[] {
  const d = new Array(adj.length).fill(-1);
  d[from] = 0;
  const queue = [from];
  for (let i = 0; i < queue.length; i++) {
    for (const m of adj[queue[i]]) {
      if (d[m] < 0) {
        d[m] = d[queue[i]] + 1;
        queue.push(m);
      }
    }
  }
  return d;
}

/**
 * A random `degree`-regular graph by the pairing model: stubs shuffled and paired, retried
 * (bounded) until there is no loop, no double link, and the graph is connected.
 */
function regularGraph(n: number, degree: number, random: () => number) {
  for (let attempt = 0; attempt < 10_000; attempt++) {
    const stubs: number[] = [];
    for (let i = 0; i < n; i++) for (let k = 0; k < degree; k++) stubs.push(i);
    for (let i = stubs.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [stubs[i], stubs[j]] = [stubs[j], stubs[i]];
    }
    const seen = new Set<string>();
    const links: [number, number][] = [];
    let ok = stubs.length % 2 === 0;
    for (let i = 0; ok && i < stubs.length; i += 2) {
      const [a, b] = [
        Math.min(stubs[i], stubs[i + 1]),
        Math.max(stubs[i], stubs[i + 1]),
      ];
      if (a === b || seen.has(`${a}-${b}`)) ok = false;
      seen.add(`${a}-${b}`);
      links.push([a, b]);
    }
    if (!ok) continue;
    const adj: number[][] = Array.from({ length: n }, () => []);
    for (const [a, b] of links) {
      adj[a].push(b);
      adj[b].push(a);
    }
    if (hops(adj, 0).every((d) => d >= 0)) return { links, adj };
  }
  throw new Error(`no connected ${degree}-regular graph on ${n} nodes`);
}

function pct(sorted: number[], p: number): number {
  const i = Math.min(
    sorted.length - 1,
    Math.max(0, Math.ceil(p / 100 * sorted.length) - 1),
  );
  return Math.round(sorted[i] * 100) / 100;
}

const benchDeadline = performance.now() + 120_000;
const { links, adj } = regularGraph(N, DEGREE, rng(42));
const names = Array.from(
  { length: N },
  (_, i) => `N${String(i).padStart(2, "0")}`,
);
const topology = makeTopology(
  names,
  links.map(([a, b]) => [names[a], names[b]]),
);
const nodes = names.map((name) =>
  new HerdNode({
    name,
    topology,
    dataDir: null,
    places: new StubPlaces(),
    console: false,
  })
);
const tick = () => new Promise<void>((r) => setImmediate(r));
try {
  for (const n of nodes) await n.start();
  // Every outbound link up before measuring.
  while (
    nodes.some((n, i) => n.flood.connected().length < adj[i].length) &&
    performance.now() < benchDeadline
  ) await new Promise((r) => setTimeout(r, 20));
  const origin = topology.servers.get(names[0])!;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: origin.port });
  conn.setNoDelay(true);
  const enc = new TextEncoder();
  const sent0 = nodes.reduce((s, n) => s + n.flood.stats.recordsSent, 0);
  const all: number[] = [];
  let failed = 0;
  for (let k = 0; k < SAMPLES && performance.now() < benchDeadline; k++) {
    const client = `herd50-${k}`;
    const t0 = performance.now();
    await conn.write(
      enc.encode(`IAMAT ${client} +34.068930-118.445127 ${1700000000 + k}.5\n`),
    );
    let missing = nodes.length;
    const deadline = t0 + 5000;
    while (missing > 0 && performance.now() < deadline) {
      await tick();
      missing = 0;
      for (const n of nodes) if (!n.store.has(client)) missing++;
    }
    if (missing > 0) failed++;
    else all.push(performance.now() - t0);
    // The ack (durable at the origin) and a pause, so every sample starts at idle.
    await new Promise((r) => setTimeout(r, 5));
  }
  conn.close();
  const sent = nodes.reduce((s, n) => s + n.flood.stats.recordsSent, 0) - sent0;
  all.sort((a, b) => a - b);
  const diameter = Math.max(...adj.map((_, i) => Math.max(...hops(adj, i))));
  result("herd of 50: propagation to every node", {
    nodes: N,
    links: links.length,
    graph_diameter: diameter,
    hops_from_origin: Math.max(...hops(adj, 0)),
    samples: all.length,
    failed,
    to_farthest_p50_ms: all.length ? pct(all, 50) : "none",
    to_farthest_p99_ms: all.length ? pct(all, 99) : "none",
    bus_messages_per_update:
      Math.round(sent / Math.max(1, all.length + failed) * 10) / 10,
    bound_2x_links: 2 * links.length,
  });
} finally {
  await Promise.all(nodes.map((n) => n.stop()));
}
