/**
 * Shared pieces of the benchmarks: temp topologies, node subprocesses, a pipelining IAMAT
 * load generator, and the one-line JSON result each benchmark prints for `bench/run.ts`.
 * Every loop is bounded in count and time.
 *
 * @module
 */

import { freePorts } from "../tests/helpers.ts";

export const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);

/** Writes a topology file for `names` linked by `links`; returns its path and ports. */
export async function writeTopology(
  dir: string,
  names: string[],
  links: [string, string][],
): Promise<{ path: string; ports: Map<string, number> }> {
  const ports = freePorts(names.length * 2);
  const servers: Record<
    string,
    { host: string; port: number; peerPort: number; neighbors: string[] }
  > = {};
  names.forEach((n, i) => (servers[n] = {
    host: "127.0.0.1",
    port: ports[i * 2],
    peerPort: ports[i * 2 + 1],
    neighbors: [],
  }));
  for (const [a, b] of links) servers[a].neighbors.push(b);
  const path = `${dir}/topology.json`;
  await Deno.writeTextFile(path, JSON.stringify({ servers }));
  return { path, ports: new Map(names.map((n, i) => [n, ports[i]])) };
}

/** A node running `main.ts` in its own process. */
export class NodeProcess {
  readonly child: Deno.ChildProcess;
  readonly started = performance.now();
  readonly lines: { at: number; text: string }[] = [];
  #reading: Promise<void>;

  constructor(
    name: string,
    topology: string,
    data: string,
    extra: string[] = [],
  ) {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}/main.ts`,
        "--name",
        name,
        "--topology",
        topology,
        "--data",
        data,
        ...extra,
      ],
      // Benchmarks never ask for places: a Google provider with an unused local URL keeps
      // the offline gazetteer (0.5 s of CPU a node at start) out of the figures.
      env: { PLACES_PROVIDER: "google", PLACES_URL: "http://127.0.0.1:9/" },
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    this.child = child;
    this.#reading = (async () => {
      let rest = "";
      for await (
        const t of child.stdout.pipeThrough(new TextDecoderStream())
      ) {
        const parts = (rest + t).split("\n");
        rest = parts.pop()!;
        for (const p of parts) {
          this.lines.push({ at: performance.now(), text: p });
        }
      }
    })();
  }

  /** ms from spawn until a line matching `re` was printed. */
  async waitLine(
    re: RegExp,
    timeoutMs = 60_000,
  ): Promise<{ ms: number; text: string }> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const hit = this.lines.find((l) => re.test(l.text));
      if (hit) return { ms: hit.at - this.started, text: hit.text };
      await new Promise((r) => setTimeout(r, 2));
    }
    throw new Error(`no line matching ${re} within ${timeoutMs} ms`);
  }

  async stop(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    try {
      this.child.kill(signal);
    } catch { /* gone */ }
    await this.child.status;
    await this.#reading;
  }
}

/** ms from now until a TCP connect to `port` succeeds. */
export async function waitListening(
  port: number,
  since: number,
  timeoutMs = 10_000,
): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return performance.now() - since;
    } catch {
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  throw new Error(`port ${port} not listening within ${timeoutMs} ms`);
}

/**
 * Sends `total` IAMATs over `conns` connections, each keeping `window` requests
 * outstanding, and waits for every reply. Returns elapsed ms.
 */
export async function pipelineIamats(
  port: number,
  total: number,
  conns = 16,
  window = 256,
  prefix = "client",
): Promise<number> {
  const enc = new TextEncoder();
  const per = Math.ceil(total / conns);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: conns }, async (_, c) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    const count = Math.min(per, total - c * per);
    let sent = 0;
    let acked = 0;
    const sendSome = async (n: number) => {
      let text = "";
      for (let i = 0; i < n && sent < count; i++, sent++) {
        const id = c * per + sent;
        text += `IAMAT ${prefix}-${id} +34.${id % 1000000}-118.445127 ${
          1700000000 + id
        }.${(id % 1000).toString().padStart(3, "0")}\n`;
      }
      if (text) {
        const bytes = enc.encode(text);
        let off = 0;
        while (off < bytes.length) off += await conn.write(bytes.subarray(off));
      }
    };
    await sendSome(window);
    const buf = new Uint8Array(256 * 1024);
    const deadline = performance.now() + 300_000;
    while (acked < count && performance.now() < deadline) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("node closed the connection");
      let got = 0;
      for (let i = 0; i < n; i++) if (buf[i] === 10) got++;
      acked += got;
      await sendSome(got);
    }
    conn.close();
    if (acked < count) throw new Error(`only ${acked}/${count} acked in time`);
  }));
  return performance.now() - t0;
}

/** Prints the benchmark's result for bench/run.ts. */
export function result(
  name: string,
  figures: Record<string, number | string>,
): void {
  console.log(`RESULT ${JSON.stringify({ name, ...figures })}`);
}

/** Forces a full GC when run with --v8-flags=--expose-gc. */
export function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/**
 * CPU time a process has used so far, in ms (user + system, every thread: KV's writer
 * included), from `/proc` (Linux; null elsewhere). CPU varies less than wall time on a
 * shared machine, so it is the figure to compare between runs.
 */
export function processCpuMs(pid: number): number | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime, fields 14 and 15 of proc(5), in clock ticks of 10 ms.
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}
