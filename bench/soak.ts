/**
 * `deno task soak`: attacks one node of a five-node herd as a hostile client would, and
 * prints, for each attack, the node's RSS before, at its peak and after, and the latencies
 * of an innocent probe client that keeps connecting and sending one IAMAT every 100 ms.
 *
 * The node runs `main.ts` in its own process (what users run), with the offline places
 * provider; its four neighbors are listed in the topology but not started, so it also keeps
 * redialing them, as a node of a half-started herd does. RSS is read from /proc/PID/status.
 *
 * ```sh
 * deno task soak                       # every attack, full size
 * deno task soak --only=pipeline,idle  # some attacks
 * deno task soak --scale=0.1           # smaller counts (a quick look)
 * deno task soak --heap                # also the JS heap at each peak (slow; inflates RSS)
 * deno task soak --gc                  # also RSS after a full GC forced through the inspector
 * deno task soak --node-env=K=V --v8-flags=--max-semi-space-size=1  # the node's env and V8
 * ```
 *
 * Half of the churned connections close with a TCP RST: Deno has no SO_LINGER, so those
 * connections send an IAMAT and close without reading its reply; Linux answers close() with
 * unread received data by a RST instead of a FIN (RFC 2525, 2.17).
 *
 * Every loop is bounded in count and in time.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { checkReply, type FuzzLine, LineFuzzer } from "../tests/fuzz.ts";
import { freePorts } from "../tests/helpers.ts";
import { ROOT } from "./common.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    only: { type: "string" },
    scale: { type: "string", default: "1" },
    heap: { type: "boolean", default: false },
    gc: { type: "boolean", default: false },
    seed: { type: "string", default: "9" },
    "node-env": { type: "string", multiple: true, default: [] },
    "v8-flags": { type: "string" },
  },
});
const SCALE = Number(flags.scale);
const NAMES = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];
const LIMIT = 16 * 1024;
const KNOWN = Array.from({ length: 20 }, (_, i) => `known-${i}`);
const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const scaled = (n: number) => Math.max(1, Math.round(n * SCALE));

function latin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function text(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode.apply(
      null,
      bytes.subarray(i, i + 8192) as unknown as number[],
    );
  }
  return s;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** Rejects after `ms`: every await on the network in this file is bounded. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) =>
      timer = setTimeout(() => reject(new Error(`${what}: over ${ms} ms`)), ms)
    ),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------- the node

const dir = await Deno.makeTempDir({ prefix: "herd-soak-" });
const ports = freePorts(NAMES.length * 2 + 1);
const servers: Record<string, unknown> = {};
NAMES.forEach((n, i) =>
  servers[n] = {
    host: "127.0.0.1",
    port: ports[i * 2],
    peerPort: ports[i * 2 + 1],
    neighbors: [NAMES[(i + 1) % NAMES.length]],
  }
);
await Deno.writeTextFile(`${dir}/topology.json`, JSON.stringify({ servers }));
const PORT = ports[0];
const INSPECT = ports[NAMES.length * 2];

/** The node under attack: a fresh process for each attack, so that each row starts clean. */
let child: Deno.ChildProcess;
/** Lines the node printed, counted (an operator's terminal). */
const printed = { out: 0, err: 0 };
let streams: Promise<void>[] = [];

async function startNode(): Promise<void> {
  child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      `--allow-write=${dir}`,
      "--allow-env",
      ...(flags.heap || flags.gc ? [`--inspect=127.0.0.1:${INSPECT}`] : []),
      ...(flags["v8-flags"] ? [`--v8-flags=${flags["v8-flags"]}`] : []),
      `${ROOT}/main.ts`,
      "--name",
      "Alford",
      "--topology",
      `${dir}/topology.json`,
      "--data",
      dir,
    ],
    env: {
      PLACES_PROVIDER: "offline",
      ...Object.fromEntries(flags["node-env"].map((kv) => kv.split("="))),
    },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  streams = ([[child.stdout, "out"], [child.stderr, "err"]] as const).map(
    async ([stream, key]) => {
      for await (const t of stream.pipeThrough(new TextDecoderStream())) {
        for (const c of t) if (c === "\n") printed[key]++;
      }
    },
  );
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port: PORT })).close();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error("the node did not start");
      await sleep(50);
    }
  }
  // Known clients, and a warm gazetteer, before anything is measured.
  for (const c of KNOWN) {
    await ask(`IAMAT ${c} +34.068930-118.445127 1600000000.5\n`, "\n");
  }
  await ask(`WHATSAT ${KNOWN[0]} 10 20\n`, "\n\n", 60_000);
}

async function stopNode(): Promise<string> {
  child.kill("SIGTERM");
  const status = await within(child.status, 20_000, "node stop").catch(() => {
    child.kill("SIGKILL");
    return child.status;
  });
  await Promise.all(streams);
  const logs = [...Deno.readDirSync(dir)].filter((e) =>
    e.name.startsWith("Alford.log")
  )
    .map((l) =>
      `${l.name} ${
        (Deno.statSync(`${dir}/${l.name}`).size / 1048576).toFixed(1)
      } MB`
    );
  for (const e of Deno.readDirSync(dir)) {
    if (e.name !== "topology.json") {
      await Deno.remove(`${dir}/${e.name}`, { recursive: true });
    }
  }
  return `exit ${status.code}; ${logs.join(", ")}`;
}

function rssKb(): number {
  const status = Deno.readTextFileSync(`/proc/${child.pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

/** One request/answer on a fresh connection; its latency in ms. */
async function ask(
  line: string,
  until: string,
  timeoutMs = 10_000,
): Promise<string> {
  const conn = await within(
    Deno.connect({ hostname: "127.0.0.1", port: PORT }),
    timeoutMs,
    "connect",
  );
  try {
    await writeAll(conn, enc.encode(line));
    const buf = new Uint8Array(64 * 1024);
    let got = "";
    const deadline = Date.now() + timeoutMs;
    while (!got.includes(until) && Date.now() < deadline) {
      const n = await within(conn.read(buf), timeoutMs, "read");
      if (n === null) break;
      got += text(buf.subarray(0, n));
    }
    return got;
  } finally {
    conn.close();
  }
}

// ---------------------------------------------------------------- measuring

/** RSS every 50 ms, and an innocent client (bench/soak_probe.ts) every 100 ms, while an attack runs. */
class Watch {
  peakKb = 0;
  readonly latencies: number[] = [];
  failures = 0;
  #stop = false;
  #loops: Promise<void>[] = [];
  /** The innocent client runs in a worker: the attackers' work here never delays it. */
  readonly #probe = new Worker(new URL("./soak_probe.ts", import.meta.url), {
    type: "module",
  });

  start(): this {
    this.#loops.push((async () => {
      while (!this.#stop) {
        this.peakKb = Math.max(this.peakKb, rssKb());
        await sleep(50);
      }
    })());
    this.#probe.postMessage(PORT);
    return this;
  }

  async stop(): Promise<void> {
    this.#stop = true;
    const done = new Promise<{ latencies: number[]; failures: number }>((r) =>
      this.#probe.onmessage = (e) => r(e.data)
    );
    this.#probe.postMessage("stop");
    const { latencies, failures } = await within(done, 10_000, "probe");
    this.latencies.push(...latencies);
    this.failures += failures;
    this.#probe.terminate();
    await Promise.all(this.#loops);
  }

  summary(): string {
    const s = [...this.latencies].sort((a, b) => a - b);
    const p50 = s[Math.floor(s.length / 2)] ?? NaN;
    const max = s[s.length - 1] ?? NaN;
    return `probe n=${s.length} p50=${p50.toFixed(1)}ms max=${
      max.toFixed(0)
    }ms failed=${this.failures}`;
  }
}

const rows: string[] = [];

async function attack(
  name: string,
  run: (watch: Watch) => Promise<string>,
  settleMs = 3000,
): Promise<void> {
  if (flags.only && !flags.only.split(",").includes(name)) return;
  await startNode();
  await sleep(1000);
  if (flags.heap) console.log(`${name} before: ${await memoryUsage()}`);
  const before = rssKb();
  const printedBefore = printed.out + printed.err;
  const watch = new Watch().start();
  const t0 = performance.now();
  let detail: string;
  try {
    detail = await run(watch);
  } catch (e) {
    detail = `FAILED: ${(e as Error).message}`;
  }
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  await sleep(settleMs);
  await watch.stop();
  const after = rssKb();
  const mb = (kb: number) => (kb / 1024).toFixed(0);
  const mbSigned = (kb: number) => `${kb >= 0 ? "+" : ""}${mb(kb)}`;
  if (flags.heap) console.log(`${name} after: ${await memoryUsage()}`);
  let collected = "";
  if (flags.gc) {
    await devtools("HeapProfiler.collectGarbage", {});
    await sleep(1000);
    collected = `, after a full GC ${mbSigned(rssKb() - before)} MB`;
  }
  const stopped = await stopNode();
  const row =
    `${name.padEnd(9)} ${secs}s  RSS before ${mb(before)} MB, peak +${
      mb(watch.peakKb - before)
    } MB, after ${settleMs / 1000}s ${
      mbSigned(after - before)
    } MB${collected}; ${watch.summary()}; ` +
    `terminal +${
      printed.out + printed.err - printedBefore
    } lines; ${detail}; node ${stopped}`;
  console.log(row);
  rows.push(row);
}

// ---------------------------------------------------------------- attacks

/** 100,000 fuzzed lines over 20 connections; every reply checked. */
await attack("fuzz", async () => {
  const total = scaled(100_000);
  const conns = 20;
  let answered = 0;
  let wrong = 0;
  let firstError = "";
  const seed = Number(flags.seed);
  await within(
    Promise.all(Array.from({ length: conns }, async (_, c) => {
      const fuzz = new LineFuzzer(seed * 100 + c, "Alford", LIMIT, KNOWN);
      let left = Math.ceil(total / conns);
      while (left > 0) {
        // One connection: up to 2,000 lines; one in four ends with a 64 KiB token.
        const n = Math.min(left, 2000);
        const lines: FuzzLine[] = Array.from({ length: n }, () => fuzz.next());
        if (c % 4 === 0) lines[n - 1] = fuzz.overLong();
        left -= n;
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: PORT });
        const writing = (async () => {
          for (let i = 0; i < n; i += 100) {
            const chunk = lines.slice(i, i + 100).map((l) => l.text + "\n")
              .join("");
            await writeAll(conn, latin1(chunk));
          }
        })().catch(() => {});
        const buf = new Uint8Array(256 * 1024);
        let got = "";
        let next = 0;
        for (;;) {
          while (next < n) {
            const r = checkReply(got, lines[next].expect);
            if (r === 0) break;
            if (r instanceof Error) {
              wrong++;
              firstError ||= `line ${
                JSON.stringify(lines[next].text.slice(0, 80))
              }: ${r.message}`;
              got = "";
              next = n;
              break;
            }
            got = got.slice(r);
            answered++;
            next++;
          }
          if (next >= n) break;
          const k = await within(conn.read(buf), 30_000, "fuzz read");
          if (k === null) break;
          got += text(buf.subarray(0, k));
        }
        await writing;
        conn.close();
        if (next < n) {
          wrong += n - next;
          firstError ||= `connection closed with ${n - next} lines unanswered`;
        }
      }
    })),
    600_000,
    "fuzz",
  );
  await atPeak("fuzz");
  return `${answered}/${total} answered correctly, ${wrong} wrong${
    firstError ? ` (first: ${firstError})` : ""
  }`;
});

/** Opens `total` connections to the node, 250 at a time, each within 10 s. */
async function openConnections(total: number): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < total; i += 250) {
    const batch = await Promise.all(
      Array.from(
        { length: Math.min(250, total - i) },
        () =>
          within(
            Deno.connect({ hostname: "127.0.0.1", port: PORT }),
            10_000,
            "connect",
          ),
      ),
    );
    conns.push(...batch);
  }
  return conns;
}

/** 5,000 connections opened, 100 of them asked, then closed: half with a RST. */
await attack("churn", async () => {
  const total = scaled(5000);
  const conns = await openConnections(total);
  // The RST half sends a line whose reply it never reads.
  await Promise.all(
    conns.filter((_, i) => i % 2 === 1).map((c, i) =>
      writeAll(c, enc.encode(`IAMAT churn-${i} +1+1 1600000000.5\n`))
    ),
  );
  // 100 of the FIN half are answered while all are open.
  const asked = conns.filter((_, i) => i % 2 === 0).slice(0, 100);
  const times = await Promise.all(asked.map(async (c, i) => {
    const t0 = performance.now();
    await writeAll(c, enc.encode(`IAMAT held-${i} +1+1 1600000000.5\n`));
    const buf = new Uint8Array(256);
    await within(c.read(buf), 10_000, "churn reply");
    return performance.now() - t0;
  }));
  await sleep(500); // the RST half's replies arrive unread
  await atPeak("churn");
  for (const c of conns) c.close();
  return `${total} connections; 100 answered, slowest ${
    Math.max(...times).toFixed(0)
  } ms`;
});

/** One connection pipelines 20,000 WHATSATs and never reads. */
await attack("pipeline", async () => {
  const total = scaled(20_000);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: PORT });
  const line = enc.encode(`WHATSAT ${KNOWN[1]} 10 20\n`.repeat(1000));
  let sent = 0;
  const deadline = Date.now() + 15_000;
  // Writes stall once the node stops reading (as it should): bounded by time.
  const writing = (async () => {
    while (sent < total && Date.now() < deadline) {
      await writeAll(conn, line);
      sent += 1000;
    }
  })().catch(() => {});
  await Promise.race([writing, sleep(15_000)]);
  const accepted = sent;
  await sleep(5000); // the node does its worst with what it took
  await atPeak("pipeline");
  conn.close();
  await writing;
  return `${accepted}/${total} WHATSATs written before the node stopped reading (15 s bound)`;
});

/** 10,000 idle connections; KB per connection; a fresh client answered meanwhile. */
await attack("idle", async (watch) => {
  const total = scaled(10_000);
  await sleep(500);
  const base = rssKb();
  const conns = await openConnections(total);
  await sleep(3000);
  const held = rssKb();
  await atPeak("idle");
  const fresh = performance.now();
  await ask(`IAMAT fresh +1+1 1600000000.5\n`, "\n", 10_000);
  const freshMs = performance.now() - fresh;
  for (const c of conns) c.close();
  watch.peakKb = Math.max(watch.peakKb, held);
  return `${total} idle: ${
    ((held - base) / total).toFixed(1)
  } KB each; fresh client ${freshMs.toFixed(0)} ms`;
});

/** 200 connections dribbling one byte per 100 ms for 10 s. */
await attack("dribble", async () => {
  const total = scaled(200);
  const conns = await Promise.all(
    Array.from(
      { length: total },
      () => Deno.connect({ hostname: "127.0.0.1", port: PORT }),
    ),
  );
  const line = enc.encode(`IAMAT dribble +1+1 1600000000.5\n`);
  let lines = 0;
  await Promise.all(conns.map(async (c, k) => {
    for (let i = 0; i < 100; i++) {
      await writeAll(
        c,
        line.subarray((i + k) % line.length, (i + k) % line.length + 1),
      );
      if ((i + k) % line.length === line.length - 1) lines++;
      await sleep(100);
    }
  }));
  for (const c of conns) c.close();
  return `${total} connections x 100 bytes; ${lines} lines completed`;
});

// ---------------------------------------------------------------- heap snapshots

/** With --heap: what the node's JS heap holds at an attack's worst moment. */
async function atPeak(label: string): Promise<void> {
  if (!flags.heap) return;
  try {
    console.log(`${label} at peak: ${await memoryUsage()}`);
    await heapSummary(label);
  } catch (e) {
    console.log(`heap snapshot failed: ${(e as Error).message}`);
  }
}

/** One DevTools protocol call to the node's main isolate; the result of the call with id 1. */
async function devtools(
  method: string,
  params: Record<string, unknown>,
  onEvent: (msg: { method: string; params: Record<string, string> }) => void =
    () => {},
): Promise<Record<string, unknown>> {
  const list = await (await fetch(`http://127.0.0.1:${INSPECT}/json/list`))
    .json();
  const ws = new WebSocket(list[0].webSocketDebuggerUrl);
  await new Promise((r, j) => {
    ws.onopen = r;
    ws.onerror = j;
  });
  const done = new Promise<Record<string, unknown>>((resolve) => {
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.id === 1) resolve(msg.result);
      else onEvent(msg);
    };
  });
  ws.send(JSON.stringify({ id: 1, method, params }));
  try {
    return await within(done, 120_000, method);
  } finally {
    ws.close();
  }
}

/** The node's `Deno.memoryUsage()` in MB (main isolate heap, external buffers, RSS). */
async function memoryUsage(): Promise<string> {
  const r = await devtools("Runtime.evaluate", {
    expression: "JSON.stringify(Deno.memoryUsage())",
    returnByValue: true,
  }) as { result: { value: string } };
  const m = JSON.parse(r.result.value) as Record<string, number>;
  return Object.entries(m).map(([k, v]) => `${k} ${(v / 1048576).toFixed(1)}`)
    .join(", ") + " (MB)";
}

/**
 * Takes a heap snapshot of the node through its inspector (the DevTools protocol over a
 * WebSocket) and prints the constructors holding the most bytes (self size).
 */
async function heapSummary(label: string): Promise<void> {
  const chunks: string[] = [];
  await devtools("HeapProfiler.takeHeapSnapshot", {}, (msg) => {
    if (msg.method === "HeapProfiler.addHeapSnapshotChunk") {
      chunks.push(msg.params.chunk);
    }
  });
  const snap = JSON.parse(chunks.join(""));
  const fields: string[] = snap.snapshot.meta.node_fields;
  const types: string[] = snap.snapshot.meta.node_types[0];
  const F = fields.length;
  const iType = fields.indexOf("type");
  const iName = fields.indexOf("name");
  const iSize = fields.indexOf("self_size");
  const by = new Map<string, { n: number; bytes: number }>();
  let total = 0;
  for (let i = 0; i < snap.nodes.length; i += F) {
    const type = types[snap.nodes[i + iType]];
    const name = type === "object" || type === "native" || type === "closure"
      ? `${type}:${snap.strings[snap.nodes[i + iName]]}`.slice(0, 60)
      : type;
    const size = snap.nodes[i + iSize];
    total += size;
    const e = by.get(name) ?? { n: 0, bytes: 0 };
    e.n++;
    e.bytes += size;
    by.set(name, e);
  }
  const top = [...by.entries()].sort((a, b) => b[1].bytes - a[1].bytes).slice(
    0,
    8,
  );
  console.log(
    `heap after ${label}: ${(total / 1048576).toFixed(1)} MB in the JS heap`,
  );
  for (const [name, e] of top) {
    console.log(
      `  ${(e.bytes / 1048576).toFixed(1).padStart(7)} MB ${
        String(e.n).padStart(8)
      }  ${name}`,
    );
  }
}

// ---------------------------------------------------------------- the end

await Deno.remove(dir, { recursive: true });
console.log("\nsummary");
for (const r of rows) console.log(r);
