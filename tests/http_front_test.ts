/**
 * The HTTP port's TCP front against real in-process nodes over real TCP: a connection that
 * sends nothing or half a head is answered 408 and cut at the header deadline, a head too
 * large 431, connections past the cap are closed at once, an idle keep-alive connection is
 * cut, while a keep-alive client that keeps talking and a WebSocket watcher that only
 * answers pings live across several idle periods. Bounds are shortened through the node's
 * `http` tuning; the counters are read from `/metrics`. Without the front (plain
 * `Deno.serve`), the first three tests time out waiting for the close.
 */

import assert from "assert";
import { nodeArgs } from "../lib/herd.ts";
import { headEnd } from "../lib/http/front.ts";
import type { HttpTuning } from "../lib/http/server.ts";
import {
  fixedClock,
  makeTopology,
  tempDir,
  TestHerd,
  waitFor,
  writeTopologyFile,
} from "./helpers.ts";

const NOW = 1520023935182837383n;
const enc = new TextEncoder();
const dec = new TextDecoder();

function frontHerd(http: HttpTuning): TestHerd {
  return new TestHerd({
    topology: makeTopology(["Alford"], [], { http: true }),
    config: () => ({ clock: fixedClock(NOW), http }),
  });
}

function httpPort(herd: TestHerd): number {
  return herd.topology.servers.get("Alford")!.httpPort!;
}

function dial(herd: TestHerd): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port: httpPort(herd) });
}

/** Everything the server sends until it closes; throws if it is still open at `timeoutMs`. */
async function untilClosed(conn: Deno.Conn, timeoutMs = 8000): Promise<string> {
  let out = "";
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  const buf = new Uint8Array(4096);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      out += dec.decode(buf.subarray(0, n));
    }
  } catch (e) {
    if (!timedOut && !(e instanceof Deno.errors.ConnectionReset)) throw e;
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) throw new Error(`still open after ${timeoutMs} ms`);
  conn.close();
  return out;
}

/** Sends one request on a kept-alive connection and reads its whole answer. */
async function roundTrip(
  conn: Deno.Conn,
  path: string,
  extra = "",
): Promise<string> {
  await conn.write(
    enc.encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`),
  );
  let text = "";
  const buf = new Uint8Array(4096);
  for (let i = 0; i < 100; i++) {
    const n = await conn.read(buf);
    if (n === null) throw new Error(`closed after ${JSON.stringify(text)}`);
    text += dec.decode(buf.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    const len = /content-length: (\d+)/i.exec(text);
    if (end >= 0 && len && text.length >= end + 4 + Number(len[1])) return text;
  }
  throw new Error("no whole answer");
}

async function metrics(herd: TestHerd): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${httpPort(herd)}/metrics`);
  return await res.text();
}

function answer(status: string, error: string): string {
  const body = JSON.stringify({ error });
  return `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\n` +
    `content-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`;
}

Deno.test("headEnd finds the empty line after a head, CRLF or LF, across reads", () => {
  const b = (s: string) => enc.encode(s);
  const h = b("GET / HTTP/1.1\r\nHost: x\r\n\r\nbody");
  assert.equal(headEnd(h, 0, h.length), h.length - 4);
  assert.equal(headEnd(h, 26, h.length), h.length - 4); // only the last LF is new
  assert.equal(headEnd(b("GET / HTTP/1.0\n\n"), 0, 16), 16);
  assert.equal(headEnd(b("GET / HTTP/1.1\r\nHost: x\r\n"), 0, 25), -1);
  assert.equal(headEnd(b("\r\n"), 0, 2), -1);
});

Deno.test("a connection that sends nothing, or half a head, gets 408 at the header deadline and is closed", async () => {
  await using herd = await frontHerd({ headerTimeoutMs: 300 }).startAll();
  const silent = await dial(herd);
  const half = await dial(herd);
  await half.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n"));
  const t0 = performance.now();
  const [a, b] = await Promise.all([untilClosed(silent), untilClosed(half)]);
  const expected = answer(
    "408 Request Timeout",
    "the request head did not arrive within 300 ms",
  );
  assert.equal(a, expected);
  assert.equal(b, expected);
  assert.ok(performance.now() - t0 >= 250, "not cut before the deadline");
  const m = await metrics(herd);
  assert.match(m, /^herd_http_cut_total\{reason="header"\} 2$/m);
  assert.match(m, /^herd_http_cut_total\{reason="idle"\} 0$/m);
  assert.match(m, /^# TYPE herd_http_connections gauge$/m);
});

Deno.test("a first head over its limit gets 431 and is closed; one within it is served", async () => {
  await using herd = await frontHerd({ maxHeaderBytes: 1024 }).startAll();
  const big = await dial(herd);
  // Exactly one byte over, with no end of head: the front reads all of it, answers, closes.
  await big.write(enc.encode("GET / HTTP/1.1\r\nX: " + "a".repeat(1025 - 19)));
  assert.equal(
    await untilClosed(big),
    answer(
      "431 Request Header Fields Too Large",
      "the request head is larger than 1024 bytes",
    ),
  );
  const ok = await dial(herd);
  const text = await roundTrip(ok, "/healthz", `X: ${"b".repeat(900)}\r\n`);
  assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
  ok.close();
  assert.match(
    await metrics(herd),
    /^herd_http_cut_total\{reason="header"\} 1$/m,
  );
});

Deno.test("past the connection cap a connection is closed at once; below it again, served", async () => {
  await using herd = await frontHerd({ maxConnections: 3 }).startAll();
  const face = herd.nodes.get("Alford")!.http!;
  const held = [await dial(herd), await dial(herd), await dial(herd)];
  await waitFor(() => face.frontStats.connections === 3, 5000, "3 open");
  const over = await dial(herd);
  assert.equal(await untilClosed(over, 5000), "");
  assert.equal(face.frontStats.cuts.cap, 1);
  held.pop()!.close();
  await waitFor(() => face.frontStats.connections === 2, 5000, "2 open");
  const m = await metrics(herd);
  assert.match(m, /^herd_http_cut_total\{reason="cap"\} 1$/m);
  assert.match(m, /^herd_http_connections 3$/m); // the two held and this scrape
  for (const c of held) c.close();
});

Deno.test("a keep-alive client that keeps talking and a pinged watcher live across idle periods; a silent connection is cut", async () => {
  await using herd = await frontHerd({ idleTimeoutMs: 1000, wsIdleTimeoutS: 1 })
    .startAll();
  const port = httpPort(herd);
  const face = herd.nodes.get("Alford")!.http!;
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/watch?client=kiwi`);
  const messages: string[] = [];
  ws.onmessage = (e) => messages.push(e.data as string);
  const closed = new Promise<CloseEvent>((r) => (ws.onclose = r));
  await new Promise((r, j) => {
    ws.onopen = r;
    ws.onerror = () => j(new Error("cannot open the watch"));
  });
  const talker = await dial(herd);
  const silent = await dial(herd);
  assert.match(await roundTrip(silent, "/healthz"), /^HTTP\/1\.1 200 OK/);
  // Four requests 600 ms apart (2.4 s, over two idle periods) on one connection.
  for (let i = 0; i < 4; i++) {
    assert.match(await roundTrip(talker, "/healthz"), /^HTTP\/1\.1 200 OK/);
    await new Promise((r) => setTimeout(r, 600));
  }
  assert.equal(await untilClosed(silent, 5000), ""); // idle since its one answer
  assert.equal(face.frontStats.cuts.idle, 1);
  assert.match(await roundTrip(talker, "/healthz"), /^HTTP\/1\.1 200 OK/);
  talker.close();
  // The watcher was silent the whole time but for pings: it is open and gets an update.
  assert.equal(ws.readyState, WebSocket.OPEN);
  const res = await fetch(`http://127.0.0.1:${port}/v1/iamat`, {
    method: "POST",
    body: JSON.stringify({
      client: "kiwi",
      location: "+34.068930-118.445127",
      time: "1520023934.918963997",
    }),
  });
  assert.equal(res.status, 200);
  await res.body?.cancel();
  await waitFor(() => messages.length === 1, 5000, "the update");
  assert.equal(JSON.parse(messages[0]).client, "kiwi");
  assert.equal(face.frontStats.cuts.idle, 1);
  ws.close();
  await closed;
});

Deno.test("a node run with least privilege (nodeArgs) serves behind its front on <data>/<name>.http.sock, removed at stop", async () => {
  await using dir = await tempDir();
  const topology = makeTopology(["Alford"], [], { http: true });
  const topologyPath = await writeTopologyFile(topology, `${dir.path}/t.json`);
  const data = `${dir.path}/data`;
  await Deno.mkdir(data);
  const spec = topology.servers.get("Alford")!;
  const env = { PLACES_PROVIDER: "offline" };
  const args = nodeArgs(spec, topology, { topologyPath, dataDir: data, env });
  assert.ok(
    args.some((a) =>
      a.startsWith("--allow-net=") &&
      a.split(/[=,]/).includes(`unix:${data}/Alford.http.sock`)
    ),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  try {
    let text = "";
    await waitFor(
      async () => {
        try {
          const res = await fetch(`http://127.0.0.1:${spec.httpPort}/healthz`);
          text = await res.text();
          return res.status === 200;
        } catch {
          return false;
        }
      },
      20_000,
      "the node's /healthz",
    );
    assert.equal(text, JSON.stringify({ node: "Alford", status: "ok" }));
    const sock = await Deno.lstat(`${data}/Alford.http.sock`);
    assert.ok(sock.isSocket, "the socket file");
  } finally {
    child.kill("SIGTERM");
  }
  const out = await output;
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(!stderr.includes("http_socket_unusable"), stderr);
  await assert.rejects(
    () => Deno.lstat(`${data}/Alford.http.sock`),
    Deno.errors.NotFound,
  );
});
