/**
 * What the HTTP port's TCP front costs: `GET /healthz` requests/s over kept-alive
 * connections, to the same kind of node three ways, in one process (client and node share
 * its event loop, so the figure is the whole per-request CPU cost, front included):
 *
 * - `plain`: straight to the `Deno.serve` behind a front, on its loopback TCP port (what
 *   the port was before the front);
 * - `front_unix`: through the front to `Deno.serve` on a Unix socket in the data dir (what
 *   `deno task herd` and the compiled binary run);
 * - `front_tcp`: through the front to a loopback `Deno.serve` (a node without a data dir).
 *
 * `BENCH_FRONT_CONNS` connections (default 16) each send requests one after another for
 * `BENCH_FRONT_MS` ms (default 3,000) per way; at most 1,000,000 requests per way.
 * Run with `deno run -A bench/http_front.ts`.
 *
 * @module
 */

import { HerdNode } from "../lib/node.ts";
import { fixedClock, makeTopology, StubPlaces } from "../tests/helpers.ts";
import { result } from "./common.ts";

const conns = Number(Deno.env.get("BENCH_FRONT_CONNS") ?? 16);
const ms = Number(Deno.env.get("BENCH_FRONT_MS") ?? 3000);
const MAX_REQUESTS = 1_000_000;

const enc = new TextEncoder();
const REQUEST = enc.encode("GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n");

/** Requests/s from `conns` keep-alive connections to `connect()` for `ms`. */
async function measure(connect: () => Promise<Deno.Conn>): Promise<number> {
  const deadline = performance.now() + ms;
  let done = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: conns }, async () => {
      const c = await connect();
      const buf = new Uint8Array(4096);
      try {
        while (performance.now() < deadline && done < MAX_REQUESTS) {
          await c.write(REQUEST);
          // One small answer: read until its body (`{"node":..,"status":"ok"}`) has ended.
          let text = "";
          while (!text.endsWith("}")) {
            const n = await c.read(buf);
            if (n === null) throw new Error("closed");
            text += new TextDecoder().decode(buf.subarray(0, n));
          }
          done++;
        }
      } finally {
        c.close();
      }
    }),
  );
  return Math.round(done / ((performance.now() - t0) / 1000));
}

async function node(name: string, dataDir: string | null): Promise<HerdNode> {
  const n = new HerdNode({
    name,
    topology: makeTopology([name], [], { http: true }),
    dataDir,
    places: new StubPlaces(),
    console: false,
    clock: fixedClock(1520023935182837383n),
  });
  await n.start();
  return n;
}

const dir = await Deno.makeTempDir({ prefix: "herd-bench-front-" });
const withDir = await node("U", dir);
const noDir = await node("T", null);
try {
  const tcp = noDir.http!.innerAddr as Deno.NetAddr;
  if (withDir.http!.innerAddr.transport !== "unix") {
    throw new Error("the node with a data dir did not serve on its socket");
  }
  const front = (n: HerdNode) => () =>
    Deno.connect({ hostname: "127.0.0.1", port: n.httpPort! });
  const plain = await measure(() =>
    Deno.connect({ hostname: tcp.hostname, port: tcp.port })
  );
  const frontUnix = await measure(front(withDir));
  const frontTcp = await measure(front(noDir));
  result("http_front", {
    conns,
    ms,
    plain_rps: plain,
    front_unix_rps: frontUnix,
    front_tcp_rps: frontTcp,
    front_unix_cost_pct: Math.round((1 - frontUnix / plain) * 1000) / 10,
  });
} finally {
  await withDir.stop();
  await noDir.stop();
  await Deno.remove(dir, { recursive: true });
}
