/**
 * Replication between nodes, in process over real loopback TCP: records reach every node,
 * the record order decides the same winner everywhere, a node that was stopped or cut off
 * catches up without new client traffic, peers authenticate with the herd secret, nobody
 * outside the herd can write into it, and a stalled neighbor costs bounded memory and never
 * delays a client.
 *
 * Fake neighbors speak the bus format (see `lib/bus/codec.ts`) by hand over the bus port,
 * so what a node sends to its peers is checked message by message.
 */

import assert from "assert";
import { bytesToString } from "../lib/bytes.ts";
import { formatSkew, parseClientTime } from "../lib/clock.ts";
import type { HerdNode } from "../lib/node.ts";
import { importSecret, prove } from "../lib/bus/handshake.ts";
import { formatAt } from "../lib/record.ts";
import {
  exchange,
  FAST_FLOOD,
  fixedClock,
  makeTopology,
  TestHerd,
  waitFor,
} from "./helpers.ts";
import { FakePeer, TEST_NONCE } from "./bus_fake.ts";

const NOW = 2000000000000000000n; // receive time of every node (fixed clock)

/** The AT line `node` produces for `IAMAT client loc time` at NOW. */
function at(node: string, client: string, loc: string, time: string): string {
  const skew = formatSkew(NOW - parseClientTime(time)!);
  return formatAt(node, skew, client, loc, time);
}

/** Sends one IAMAT and checks the exact reply. */
async function iamat(
  herd: TestHerd,
  node: string,
  client: string,
  loc: string,
  time: string,
): Promise<string> {
  const line = at(node, client, loc, time);
  assert.equal(
    await exchange(herd.port(node), `IAMAT ${client} ${loc} ${time}\n`),
    line + "\n",
  );
  return line;
}

/** Every record of a node, sorted, one a line. */
function dump(node: HerdNode): string {
  return [...node.store.records()].sort().join("\n");
}

/** Waits until every running node holds exactly `expected` (client → AT line). */
async function converged(
  herd: TestHerd,
  expected: Map<string, string>,
  timeoutMs = 5000,
): Promise<void> {
  const want = [...expected.values()].sort().join("\n");
  await waitFor(
    () => [...herd.nodes.values()].every((n) => dump(n) === want),
    timeoutMs,
    `every node to hold ${expected.size} records`,
  ).catch((e) => {
    const got = [...herd.nodes.values()].map((n) => `${n.name}:\n${dump(n)}`)
      .join("\n");
    throw new Error(`${(e as Error).message}\nwant:\n${want}\n${got}`);
  });
}

function fixed(extra: Record<string, unknown> = {}) {
  return () => ({ clock: fixedClock(NOW), ...extra });
}

function events(node: HerdNode, event: string): Record<string, unknown>[] {
  return node.log.memory.map((l) => JSON.parse(l)).filter((e) =>
    e.event === event
  );
}

/** A node's bus port. */
function busPort(node: HerdNode): number {
  return node.config.topology.servers.get(node.name)!.peerPort;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A line-oriented TCP connection for fake peers and bulk clients. One background reader
 * fills the buffer until `stopReading()` (after which the kernel buffers fill up, as with a
 * stalled process) or EOF.
 */
class LineConn {
  readonly conn: Deno.TcpConn;
  readonly #done: Promise<void>;
  #buf = "";
  #eof = false;
  #stop = false;
  #wake: (() => void) | null = null;
  /** Every byte received, as a byte string. */
  received = "";
  /** Every byte sent, as a byte string. */
  sent = "";

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.#done = this.#pump();
  }

  static async connect(port: number): Promise<LineConn> {
    return new LineConn(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async #pump(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (!this.#stop) {
        const n = await this.conn.read(chunk);
        if (n === null) break;
        const text = bytesToString(chunk.subarray(0, n));
        this.#buf += text;
        this.received += text;
        this.#wake?.();
      }
    } catch {
      /* closed */
    } finally {
      this.#eof = true;
      this.#wake?.();
    }
  }

  /** The next line (without `\n`), or null at EOF. */
  async line(timeoutMs = 5000): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#buf.indexOf("\n");
      if (i >= 0) {
        const line = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        return line;
      }
      if (this.#eof) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no line within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  /** Reads `n` lines. */
  async lines(n: number, timeoutMs = 10000): Promise<string[]> {
    const out: string[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < n) {
      const l = await this.line(Math.max(1, deadline - Date.now()));
      if (l === null) throw new Error(`EOF after ${out.length} of ${n} lines`);
      out.push(l);
    }
    return out;
  }

  async send(text: string): Promise<void> {
    this.sent += text;
    const bytes = new TextEncoder().encode(text);
    let off = 0;
    while (off < bytes.length) {
      off += await this.conn.write(bytes.subarray(off));
    }
  }

  /** Stops reading after the read in progress: from then on the peer's writes pile up. */
  stopReading(): void {
    this.#stop = true;
  }

  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch { /* closed */ }
    await this.#done;
  }
}

const NONCE = /^[0-9a-f]{32}$/;

/** Sends many IAMATs on one connection and returns the replies. */
async function bulk(port: number, lines: string[]): Promise<string[]> {
  const c = await LineConn.connect(port);
  try {
    await c.send(lines.map((l) => l + "\n").join(""));
    return await c.lines(lines.length, 20000);
  } finally {
    await c.close();
  }
}

/** Milliseconds for one IAMAT round trip. */
async function iamatMs(port: number, client: string): Promise<number> {
  const t0 = performance.now();
  const reply = await exchange(port, `IAMAT ${client} +1+1 1\n`, 2000);
  assert.match(reply, new RegExp(`^AT \\S+ \\S+ ${client} \\+1\\+1 1\\n$`));
  return performance.now() - t0;
}

Deno.test("a record accepted by any node reaches all five nodes of the default herd", async () => {
  await using herd = await new TestHerd({ config: fixed() }).startAll();
  const expected = new Map<string, string>();
  expected.set("kiwi", await iamat(herd, "Alford", "kiwi", "+34-118", "10"));
  expected.set("lime", await iamat(herd, "Holiday", "lime", "+1.5-2.5", "11"));
  await converged(herd, expected);
  expected.set("kiwi", await iamat(herd, "Ball", "kiwi", "+35-117", "12"));
  await converged(herd, expected);
});

Deno.test("the newer record wins on every node whichever order the two arrive in", async () => {
  await using herd = await new TestHerd({ config: fixed() }).startAll();
  // Both at once, at opposite ends of the ring: nodes see them in different orders.
  const [newer] = await Promise.all([
    iamat(herd, "Alford", "kiwi", "+1+1", "200.000000001"),
    iamat(herd, "Ball", "kiwi", "+2+2", "200"),
  ]);
  await converged(herd, new Map([["kiwi", newer]]));
  // An older record arriving after the herd agreed is answered but replaces nothing.
  await iamat(herd, "Holiday", "kiwi", "+3+3", "199.999999999");
  await iamat(herd, "Welsh", "lime", "+4+4", "1"); // a later update, to know the older one had time to spread
  await converged(
    herd,
    new Map([["kiwi", newer], ["lime", at("Welsh", "lime", "+4+4", "1")]]),
  );
});

Deno.test("equal client times are resolved identically everywhere by the AT line's bytes", async () => {
  await using herd = await new TestHerd({ config: fixed() }).startAll();
  // Same client, same time, two nodes: "AT Holiday ..." > "AT Alford ..." as bytes.
  const [a, h] = await Promise.all([
    iamat(herd, "Alford", "kiwi", "+1+1", "300"),
    iamat(herd, "Holiday", "kiwi", "+1+1", "300"),
  ]);
  assert.ok(h > a);
  // Equal in value though written differently: "100.5" and "100.50".
  const [w, b] = await Promise.all([
    iamat(herd, "Welsh", "lime", "+2+2", "100.5"),
    iamat(herd, "Ball", "lime", "+2+2", "100.50"),
  ]);
  assert.ok(w > b);
  await converged(herd, new Map([["kiwi", h], ["lime", w]]));
  assert.equal(herd.nodes.get("Alford")!.store.get("kiwi"), h);
  assert.equal(herd.nodes.get("Holiday")!.store.get("kiwi"), h);
});

Deno.test("a node stopped while updates happen catches up from its neighbors after restart, with no client traffic", async () => {
  await using herd = await new TestHerd({ config: fixed() }).startAll();
  const expected = new Map<string, string>();
  for (let i = 0; i < 5; i++) {
    expected.set(`c${i}`, await iamat(herd, "Alford", `c${i}`, "+1+1", "10"));
  }
  await converged(herd, expected);
  await herd.stop("Hamilton");
  // Updates while it is down: to clients it knew, and new clients, on both its sides.
  expected.set("c0", await iamat(herd, "Alford", "c0", "+2+2", "20"));
  expected.set("c1", await iamat(herd, "Holiday", "c1", "+3+3", "20"));
  expected.set("d0", await iamat(herd, "Ball", "d0", "+4+4", "20"));
  await waitFor(
    () => herd.nodes.get("Holiday")!.store.get("c0") === expected.get("c0"),
  );
  const t0 = performance.now();
  const hamilton = await herd.start("Hamilton"); // in-memory: it starts empty
  await converged(herd, expected);
  const ms = performance.now() - t0;
  assert.ok(ms < 2000, `caught up in ${ms} ms`);
  const caughtUp = events(hamilton, "peer_caught_up");
  assert.ok(caughtUp.some((e) => (e.accepted as number) > 0), "logged counts");
});

Deno.test("a node with a data directory keeps its records across a restart and receives only what it missed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "herd-flood-" });
  try {
    await using herd = await new TestHerd({
      config: (name) => ({
        clock: fixedClock(NOW),
        ...(name === "Hamilton" ? { kv: `${dir}/Hamilton.kv` } : {}),
      }),
    }).startAll();
    const expected = new Map<string, string>();
    for (let i = 0; i < 20; i++) {
      expected.set(`c${i}`, await iamat(herd, "Ball", `c${i}`, "+1+1", "10"));
    }
    await converged(herd, expected);
    await herd.stop("Hamilton");
    expected.set("c0", await iamat(herd, "Alford", "c0", "+2+2", "20"));
    expected.set("new", await iamat(herd, "Welsh", "new", "+3+3", "20"));
    await waitFor(() => herd.nodes.get("Holiday")!.store.size === 21);
    const hamilton = await herd.start("Hamilton");
    await converged(herd, expected);
    const loaded = events(hamilton, "store_loaded");
    assert.equal(loaded.length, 1);
    assert.equal(loaded[0].clients, 20); // its own records came from its disk
    // From its neighbors it accepted only the two updates it missed.
    await waitFor(() =>
      events(hamilton, "peer_caught_up").reduce(
        (n, e) => n + (e.accepted as number),
        0,
      ) === 2
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("catch-up sends only the records the other side lacks or holds older, not whole buckets", async () => {
  const dir = await Deno.makeTempDir({ prefix: "herd-flood-" });
  try {
    await using herd = await new TestHerd({
      names: ["Alford", "Ball"],
      links: [["Alford", "Ball"]],
      config: (name) => ({
        clock: fixedClock(NOW),
        ...(name === "Ball" ? { kv: `${dir}/Ball.kv` } : {}),
      }),
    }).startAll();
    // 3,000 clients: about three per bucket, so a whole-bucket exchange would show.
    const lines = Array.from(
      { length: 3000 },
      (_, i) => `IAMAT c${i} +1+1 10\n`,
    );
    await exchange(herd.port("Alford"), lines.join(""));
    await waitFor(() => herd.nodes.get("Ball")!.store.size === 3000, 10_000);
    await herd.stop("Ball");
    const changed = ["c1", "c500", "c1000", "c2999", "fresh"];
    for (const c of changed) await iamat(herd, "Alford", c, "+2+2", "20");
    const ball = await herd.start("Ball");
    await waitFor(() =>
      changed.every((c) =>
        ball.store.get(c) === herd.nodes.get("Alford")!.store.get(c)
      )
    );
    await waitFor(() => events(ball, "peer_caught_up").length > 0);
    const caughtUp = events(ball, "peer_caught_up");
    assert.equal(caughtUp.reduce((n, e) => n + (e.received as number), 0), 5);
    assert.equal(caughtUp.reduce((n, e) => n + (e.accepted as number), 0), 5);
    // And Ball, which holds nothing newer, sends Alford nothing.
    await waitFor(() =>
      events(ball, "peer_sync_sent").length > 0 ||
      events(ball, "peer_caught_up").length > 0
    );
    const sent = events(ball, "peer_sync_sent").reduce(
      (n, e) => n + (e.records as number),
      0,
    );
    assert.equal(sent, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a record made from a client line at the 16 KiB limit floods like any other", async () => {
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: fixed(),
  }).startAll();
  // The longest valid IAMAT: its AT line is longer than the client line limit.
  const head = "IAMAT big +1.";
  const tail = "+1 1";
  const iamatLine = head + "1".repeat(16 * 1024 - head.length - tail.length) +
    tail;
  assert.equal(iamatLine.length, 16 * 1024);
  const reply = await exchange(herd.port("Alford"), iamatLine + "\n");
  assert.ok(
    reply.startsWith("AT Alford ") && reply.length > 16 * 1024 + 1,
    reply.slice(0, 40),
  );
  await waitFor(() =>
    herd.nodes.get("Ball")!.store.get("big") === reply.slice(0, -1)
  );
  // And the link still carries everything after it.
  const after = await iamat(herd, "Alford", "after", "+2+2", "2");
  await waitFor(() => herd.nodes.get("Ball")!.store.get("after") === after);
});

Deno.test("a peer that asks for digests without reading the answers is dropped, not buffered", async () => {
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: fixed(),
  }).start("Alford").then((node) => ({
    node,
    async [Symbol.asyncDispose]() {
      await node.stop();
    },
  }));
  const c = await FakePeer.dial(busPort(herd.node));
  await c.hello("Ball", "Alford");
  c.stopReading();
  // Ask for digests over and over and never read; the node must give up on us.
  const sum = await c.frame("SUM 0000000000000000");
  const sums = new Uint8Array(sum.length * 2000);
  for (let i = 0; i < 2000; i++) sums.set(sum, i * sum.length);
  let closed = false;
  for (let i = 0; i < 100 && !closed; i++) {
    await c.sendRaw(sums).catch(() => (closed = true));
    await new Promise((r) => setTimeout(r, 10));
    closed ||= events(herd.node, "peer_dropped").some((e) =>
      e.reason === "not reading"
    );
  }
  assert.ok(closed, "the node dropped the peer");
  await c.close();
});

Deno.test("a cut-off node and the rest of the herd converge when the nodes between them return", async () => {
  await using herd = await new TestHerd({ config: fixed() }).startAll();
  const expected = new Map<string, string>();
  expected.set("seen", await iamat(herd, "Ball", "seen", "+1+1", "1"));
  await converged(herd, expected);
  // Alford's only neighbors are Hamilton and Welsh: without them it is alone.
  await Promise.all([herd.stop("Hamilton"), herd.stop("Welsh")]);
  expected.set("west", await iamat(herd, "Alford", "west", "+1+1", "100"));
  expected.set("east", await iamat(herd, "Ball", "east", "+2+2", "100"));
  await iamat(herd, "Alford", "both", "+1+1", "200");
  expected.set("both", await iamat(herd, "Holiday", "both", "+2+2", "300"));
  expected.set("both2", await iamat(herd, "Alford", "both2", "+1+1", "500"));
  await iamat(herd, "Ball", "both2", "+2+2", "400");
  expected.set("seen", await iamat(herd, "Holiday", "seen", "+5+5", "2"));
  const ball = herd.nodes.get("Ball")!;
  await waitFor(() =>
    ball.store.get("both") === expected.get("both") &&
    ball.store.get("seen") === expected.get("seen")
  );
  assert.equal(ball.store.get("west"), undefined);
  assert.equal(herd.nodes.get("Alford")!.store.get("east"), undefined);
  await Promise.all([herd.start("Hamilton"), herd.start("Welsh")]);
  await converged(herd, expected);
});

Deno.test("nodes sharing the herd secret authenticate, replicate, and never log the secret", async () => {
  const secret = "correct horse battery staple 7f3a";
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: fixed({ secret }),
  }).startAll();
  const expected = new Map<string, string>();
  expected.set("kiwi", await iamat(herd, "Alford", "kiwi", "+1+1", "1"));
  await converged(herd, expected);
  for (const node of herd.nodes.values()) {
    await waitFor(() => events(node, "peer_authenticated").length === 2);
    const sides = events(node, "peer_authenticated").map((e) => e.side).sort();
    assert.deepEqual(sides, ["acceptor", "dialer"]);
    assert.equal(events(node, "peer_connected")[0].authenticated, true);
    assert.equal(events(node, "peer_refused").length, 0);
    assert.ok(!node.log.memory.join("\n").includes(secret));
    assert.ok(!node.log.memory.join("\n").includes("horse"));
  }
});

Deno.test("a wrong secret is refused both ways, nothing crosses, it is retried with backoff, and the right one is then accepted", async () => {
  const secrets: Record<string, string> = {
    Alford: "the-right-secret-91c2",
    Ball: "a-wrong-secret-03de",
  };
  const dir = await Deno.makeTempDir({ prefix: "herd-flood-" });
  await using _cleanup = {
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: (name) => ({
      clock: fixedClock(NOW),
      secret: secrets[name],
      ...(name === "Ball" ? { kv: `${dir}/Ball.kv` } : {}), // Ball keeps "lime"
    }),
  }).startAll();
  const alford = herd.nodes.get("Alford")!;
  const ball = herd.nodes.get("Ball")!;
  const kiwi = await iamat(herd, "Alford", "kiwi", "+1+1", "1");
  const lime = await iamat(herd, "Ball", "lime", "+2+2", "1");
  for (const node of [alford, ball]) {
    await waitFor(() =>
      events(node, "peer_refused").some((e) =>
        e.side === "dialer" && e.reason === "wrong secret"
      ) &&
      events(node, "peer_refused").some((e) =>
        e.side === "acceptor" && e.reason === "peer refused us: wrong secret"
      )
    );
  }
  const t0 = performance.now();
  const before = alford.flood.stats.refused;
  await sleep(500);
  const during = alford.flood.stats.refused - before;
  const ms = performance.now() - t0;
  // Retried, but with backoff (capped at 200 ms here): a handful of attempts, not a loop.
  assert.ok(during >= 2, `retried ${during} times`);
  assert.ok(during <= 60, `retried ${during} times in ${ms} ms`);
  assert.equal(alford.store.get("lime"), undefined);
  assert.equal(ball.store.get("kiwi"), undefined);
  assert.deepEqual(alford.flood.connected(), []);
  for (const node of [alford, ball]) {
    const log = node.log.memory.join("\n");
    assert.ok(!log.includes(secrets.Alford) && !log.includes(secrets.Ball));
  }
  // Ball comes back with the right secret: accepted, and what each side missed crosses.
  await herd.stop("Ball");
  secrets.Ball = secrets.Alford;
  const ball2 = await herd.start("Ball");
  await converged(herd, new Map([["kiwi", kiwi], ["lime", lime]]));
  await waitFor(() => events(ball2, "peer_authenticated").length === 2);
  assert.ok(!ball2.log.memory.join("\n").includes(secrets.Alford));
});

Deno.test("a secret on one side and none on the other is refused both ways", async () => {
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: (name) => ({
      clock: fixedClock(NOW),
      ...(name === "Alford" ? { secret: "only-alford-has-it" } : {}),
    }),
  }).startAll();
  await iamat(herd, "Alford", "kiwi", "+1+1", "1");
  await iamat(herd, "Ball", "lime", "+1+1", "1");
  const alford = herd.nodes.get("Alford")!;
  const ball = herd.nodes.get("Ball")!;
  const reasons = (n: HerdNode) =>
    events(n, "peer_refused").map((e) => `${e.side}: ${e.reason}`);
  await waitFor(() =>
    reasons(alford).includes(
      "dialer: peer has no secret and this node has one",
    ) &&
    reasons(ball).includes(
      "dialer: peer uses a secret and this node has none",
    ) &&
    reasons(alford).some((r) => r.startsWith("acceptor: ")) &&
    reasons(ball).some((r) => r.startsWith("acceptor: "))
  );
  await sleep(200);
  assert.equal(alford.store.get("lime"), undefined);
  assert.equal(ball.store.get("kiwi"), undefined);
  assert.ok(!ball.log.memory.join("\n").includes("only-alford-has-it"));
  assert.ok(!alford.log.memory.join("\n").includes("only-alford-has-it"));
});

Deno.test("the handshake carries nonces and HMAC proofs only, and a proof replayed on a new nonce is refused", async () => {
  const secret = "s3cret-never-on-the-wire";
  const key = await importSecret(secret);
  await using herd = await new TestHerd({
    topology: makeTopology(["Alford", "Ball"], [["Alford", "Ball"]]),
    config: fixed({ secret }),
  }).start("Alford").then((n) => ({
    n,
    async [Symbol.asyncDispose]() {
      await n.stop();
    },
  }));
  const alford = herd.n;
  const ballBus = alford.config.topology.servers.get("Ball")!.peerPort;
  // Alford dials its neighbor Ball's bus port: we play Ball, knowing the secret.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: ballBus });
  const dialed = new FakePeer(await listener.accept());
  listener.close();
  try {
    const h = await dialed.next();
    assert.ok(h?.kind === "hello");
    assert.equal(h.node, "Alford");
    const nonceD = h.nonce;
    const nonceA = "0123456789abcdef0123456789abcdef";
    const proofA = await prove(
      key,
      "acceptor",
      "Alford",
      "Ball",
      nonceD,
      nonceA,
    );
    await dialed.send({
      kind: "welcome",
      node: "Ball",
      nonce: nonceA,
      proof: proofA,
    });
    const proofD = await prove(key, "dialer", "Alford", "Ball", nonceD, nonceA);
    assert.match(proofD, /^[0-9a-f]{64}$/);
    assert.deepEqual(await dialed.next(), { kind: "proof", proof: proofD });
    assert.ok(!dialed.received.includes(secret));
  } finally {
    await dialed.close();
  }
  // We dial Alford as Ball: a valid proof is accepted once; on a new nonce it is refused.
  const nonceD = "fedcba9876543210fedcba9876543210";
  const first = await FakePeer.dial(busPort(alford));
  let replayed: string;
  let firstNonceA: string;
  try {
    await first.send({ kind: "hello", node: "Ball", nonce: nonceD });
    const w = await first.next();
    assert.ok(w?.kind === "welcome");
    assert.equal(w.node, "Alford");
    assert.equal(
      w.proof,
      await prove(key, "acceptor", "Ball", "Alford", nonceD, w.nonce),
    );
    firstNonceA = w.nonce;
    replayed = await prove(key, "dialer", "Ball", "Alford", nonceD, w.nonce);
    await first.send({ kind: "proof", proof: replayed });
    assert.deepEqual(await first.next(), { kind: "ok" });
    assert.ok(!first.received.includes(secret));
  } finally {
    await first.close();
  }
  const again = await FakePeer.dial(busPort(alford));
  try {
    await again.send({ kind: "hello", node: "Ball", nonce: nonceD });
    const w = await again.next();
    assert.ok(w?.kind === "welcome");
    await again.send({ kind: "proof", proof: replayed });
    await again.sendRecords(["AT Ball +0.000000001 forged +1+1 9999999999"]);
    assert.match(w.nonce, NONCE);
    assert.notEqual(w.nonce, firstNonceA);
    assert.deepEqual(await again.next(), {
      kind: "refused",
      reason: "wrong secret",
    });
    assert.equal(await again.next(), null);
  } finally {
    await again.close();
  }
  assert.equal(alford.store.get("forged"), undefined);
  assert.ok(!alford.log.memory.join("\n").includes(secret));
});

Deno.test("a plain client's AT line gets '? AT ...' and is stored on no node", async () => {
  await using herd = await new TestHerd({ config: fixed() }).startAll();
  const forged = "AT Ball +0.000000001 victim +1+1 9999999999";
  assert.equal(
    await exchange(herd.port("Alford"), forged + "\n" + forged + "\n"),
    `? ${forged}\n? ${forged}\n`,
  );
  // A later record reaching every node shows the forged one had every chance to spread.
  const later = await iamat(herd, "Alford", "sentinel", "+1+1", "1");
  await converged(herd, new Map([["sentinel", later]]));
});

Deno.test("herd lines on the client port are invalid client lines; a bus connection naming a node that is not a neighbor is refused; nothing is stored", async () => {
  await using herd = await new TestHerd({ config: fixed() }).startAll();
  const alford = herd.nodes.get("Alford")!;
  // Holiday is in the herd but not Alford's neighbor; NotANeighbor is not in the herd at all.
  for (const name of ["NotANeighbor", "Holiday", "Hamilton"]) {
    const lines = [
      `HERD HELLO ${name} ${TEST_NONCE}`,
      "HERD PROOF -",
      `AT ${name} +0.000000001 victim +1+1 9999999999`,
    ];
    const reply = await exchange(herd.port("Alford"), lines.join("\n") + "\n");
    assert.equal(reply, lines.map((l) => `? ${l}\n`).join(""));
  }
  assert.deepEqual(events(alford, "peer_refused"), []);
  for (const name of ["NotANeighbor", "Holiday"]) {
    const c = await FakePeer.dial(busPort(alford));
    try {
      await c.send({ kind: "hello", node: name, nonce: TEST_NONCE });
      await c.sendRecords([`AT ${name} +0.000000001 victim +1+1 9999999999`]);
      assert.deepEqual(await c.next(), {
        kind: "refused",
        reason: `Alford does not list ${name} as a neighbor`,
      });
      assert.equal(await c.next(), null);
    } finally {
      await c.close();
    }
  }
  const refused = events(alford, "peer_refused");
  assert.deepEqual(refused.map((e) => e.peer), ["NotANeighbor", "Holiday"]);
  const later = await iamat(herd, "Alford", "sentinel", "+1+1", "1");
  await converged(herd, new Map([["sentinel", later]]));
});

Deno.test("a record frame cut short by a dropped peer connection is discarded, even when its bytes so far parse", async () => {
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: fixed(),
  }).start("Alford").then((node) => ({
    node,
    async [Symbol.asyncDispose]() {
      await node.stop();
    },
  }));
  // Ball (a configured neighbor, no secret) sends one whole record, then the first bytes of
  // another whose time is cut inside its digits ("17000" of "1700000000"), and drops.
  const whole = "AT Ball +0.000000000 whole +1+1 1700000000";
  const cutShort = "AT Ball +0.000000000 cut +1+1 17000";
  const c = await FakePeer.dial(busPort(herd.node));
  await c.hello("Ball", "Alford");
  await c.sendRecords([whole]);
  const frame = await c.frame(`RECORDS\n${cutShort}00000`);
  await c.sendRaw(frame.subarray(0, frame.length - 5));
  await c.close();
  await waitFor(
    () => herd.node.store.get("whole") === whole,
    2000,
    "the whole record",
  );
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(herd.node.store.get("cut"), undefined);
});

Deno.test("a node with a secret refuses a peer that skips the proof, and accepts nothing it sent", async () => {
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: (name) => ({
      clock: fixedClock(NOW),
      ...(name === "Alford" ? { secret: "alford-secret-of-enough-bits" } : {}),
    }),
  }).start("Alford").then((n) => ({
    n,
    async [Symbol.asyncDispose]() {
      await n.stop();
    },
  }));
  const c = await FakePeer.dial(busPort(herd.n));
  try {
    await c.send({ kind: "hello", node: "Ball", nonce: TEST_NONCE });
    await c.send({ kind: "proof", proof: "-" });
    await c.sendRecords(["AT Ball +0.000000001 victim +1+1 9999999999"]);
    const w = await c.next();
    assert.ok(w?.kind === "welcome");
    assert.match(w.proof, /^[0-9a-f]{64}$/);
    assert.deepEqual(await c.next(), {
      kind: "refused",
      reason: "peer has no secret and this node has one",
    });
    assert.equal(await c.next(), null);
  } finally {
    await c.close();
  }
  assert.equal(herd.n.store.get("victim"), undefined);
});

Deno.test("a record is relayed to every neighbor but the one it came from", async () => {
  // Alford's neighbors: Ball (played by this test) and Hamilton (a real node).
  const topology = makeTopology(["Alford", "Ball", "Hamilton"], [
    ["Alford", "Ball"],
    ["Alford", "Hamilton"],
  ]);
  const ballBus = topology.servers.get("Ball")!.peerPort;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: ballBus });
  await using herd = new TestHerd({ topology, config: fixed() });
  const alford = await herd.start("Alford");
  await herd.start("Hamilton");
  const inbound = new FakePeer(await listener.accept()); // Alford's link to "Ball"
  listener.close();
  const outbound = await FakePeer.dial(busPort(alford));
  try {
    assert.equal(await inbound.welcome("Ball"), "Alford");
    await outbound.hello("Ball", "Alford");
    const fromBall = "AT Ball +0.000000001 fromball +1+1 100";
    await outbound.sendRecords([fromBall]);
    const hamilton = herd.nodes.get("Hamilton")!;
    await waitFor(() => hamilton.store.get("fromball") === fromBall);
    const direct = await iamat(herd, "Alford", "direct", "+2+2", "100");
    await waitFor(() => hamilton.store.get("direct") === direct);
    // Everything Alford sent "Ball": digest checks (answered SAME) and only its own record.
    const records: string[] = [];
    for (let i = 0; i < 100 && records.length === 0; i++) {
      const msg = (await inbound.next())!;
      if (msg.kind === "sum") await inbound.send({ kind: "same" });
      else if (msg.kind === "records") records.push(...msg.records);
      else assert.fail(`unexpected ${msg.kind}`);
    }
    assert.deepEqual(records, [direct]);
    assert.ok(!inbound.received.includes("fromball"));
  } finally {
    await Promise.all([inbound.close(), outbound.close()]);
  }
});

Deno.test("reconnecting two nodes that hold the same records costs a few hundred bytes, not the state", async () => {
  const dir = await Deno.makeTempDir({ prefix: "herd-flood-" });
  try {
    await using herd = new TestHerd({
      names: ["Alford", "Ball"],
      links: [["Alford", "Ball"]],
      config: (name) => ({
        clock: fixedClock(NOW),
        // No idle digest checks: the only exchange is the one on connection.
        flood: { ...FAST_FLOOD, syncIntervalMs: 60_000 },
        ...(name === "Ball" ? { kv: `${dir}/Ball.kv` } : {}),
      }),
    });
    await herd.startAll();
    const n = 2000;
    const lines = Array.from(
      { length: n },
      (_, i) =>
        `IAMAT client-${i}.example.org +34.068930-118.445127 ${1000 + i}.5`,
    );
    await bulk(herd.port("Alford"), lines);
    const alford = herd.nodes.get("Alford")!;
    await waitFor(() => herd.nodes.get("Ball")!.store.size === n);
    const stateBytes = dump(alford).length;
    assert.ok(stateBytes > 100_000);
    const caughtUpBefore = events(alford, "peer_caught_up").length;
    const syncedBefore = alford.flood.stats.syncRecordsSent;
    await herd.stop("Ball");
    const ball = await herd.start("Ball");
    await waitFor(() =>
      events(ball, "peer_caught_up").length === 1 &&
      events(alford, "peer_caught_up").length === caughtUpBefore + 1 &&
      ball.flood.connected().length === 1
    );
    await sleep(50);
    for (const node of [alford, ball]) {
      assert.equal(events(node, "peer_caught_up").at(-1)!.same, true);
    }
    assert.equal(ball.flood.stats.syncRecordsSent, 0);
    assert.equal(alford.flood.stats.syncRecordsSent, syncedBefore);
    // Ball's counters start with its restart: both connections, handshakes and digest roots.
    const bytes = ball.flood.stats.bytesIn + ball.flood.stats.bytesOut;
    assert.ok(bytes < 600, `${bytes} bytes for a state of ${stateBytes}`);
    assert.equal(dump(ball), dump(alford));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a neighbor that stops reading overflows a bounded outbox: counted, logged, dropped, clients unaffected, caught up later", async () => {
  const topology = makeTopology(["Alford", "Ball"], [["Alford", "Ball"]]);
  const ballBus = topology.servers.get("Ball")!.peerPort;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: ballBus });
  let stalled: FakePeer | null = null;
  try {
    await using herd = new TestHerd({
      topology,
      config: fixed({ flood: { ...FAST_FLOOD, maxOutboxBytes: 64 * 1024 } }),
    });
    const alford = await herd.start("Alford");
    stalled = new FakePeer(await listener.accept());
    listener.close();
    await stalled.welcome("Ball");
    stalled.stopReading();
    await waitFor(() => alford.flood.connected().length === 1);
    const port = herd.port("Alford");
    const id = (i: number) => `client-${i}-${"x".repeat(200)}`;
    let sent = 0;
    let slowest = 0;
    for (
      let round = 0;
      round < 40 && alford.flood.stats.outboxOverflows === 0;
      round++
    ) {
      const lines = Array.from(
        { length: 1000 },
        (_, i) => `IAMAT ${id(sent + i)} +1+1 ${sent + i}`,
      );
      const replies = await bulk(port, lines);
      assert.equal(replies.length, 1000);
      sent += 1000;
      slowest = Math.max(slowest, await iamatMs(port, "probe"));
    }
    assert.equal(alford.flood.stats.outboxOverflows, 1, `after ${sent} IAMATs`);
    const overflow = events(alford, "peer_outbox_overflow");
    assert.equal(overflow.length, 1);
    assert.equal(overflow[0].peer, "Ball");
    assert.equal(overflow[0].limit, 64 * 1024);
    assert.ok((overflow[0].bytes as number) <= 64 * 1024);
    await waitFor(() =>
      events(alford, "peer_dropped").some((e) => e.reason === "outbox overflow")
    );
    // Clients keep being answered at once while the neighbor is stalled and after the drop.
    for (let i = 0; i < 20; i++) {
      slowest = Math.max(slowest, await iamatMs(port, `after-${i}`));
    }
    assert.ok(slowest < 250, `slowest IAMAT ${slowest} ms`);
    // The real Ball comes up on that port and gets everything by catch-up.
    await stalled.close();
    stalled = null;
    const ball = await herd.start("Ball");
    await waitFor(
      () => ball.store.size === alford.store.size,
      10_000,
      `Ball to catch up ${alford.store.size} records`,
    );
    assert.equal(dump(ball), dump(alford));
    assert.equal(alford.flood.stats.outboxOverflows, 1);
  } finally {
    await stalled?.close();
    try {
      listener.close();
    } catch { /* closed */ }
  }
});

Deno.test("a neighbor that accepts connections but never answers does not delay client replies", async () => {
  const topology = makeTopology(["Alford", "Ball", "Welsh"], [
    ["Alford", "Ball"],
    ["Alford", "Welsh"],
  ]);
  const listener = Deno.listen({
    hostname: "127.0.0.1",
    port: topology.servers.get("Ball")!.peerPort,
  });
  const held: FakePeer[] = [];
  const accepting = (async () => {
    try {
      for (let i = 0; i < 100; i++) {
        held.push(new FakePeer(await listener.accept()));
      }
    } catch { /* listener closed */ }
  })();
  try {
    await using herd = new TestHerd({ topology, config: fixed() });
    await herd.start("Alford");
    await herd.start("Welsh");
    const port = herd.port("Alford");
    let slowest = 0;
    for (let i = 0; i < 30; i++) {
      slowest = Math.max(slowest, await iamatMs(port, `c${i}`));
    }
    assert.ok(slowest < 250, `slowest IAMAT ${slowest} ms`);
    assert.ok(held.length >= 1);
    assert.equal((await held[0].next())?.kind, "hello");
    // The healthy neighbor got everything meanwhile.
    await waitFor(() => herd.nodes.get("Welsh")!.store.size === 30);
  } finally {
    listener.close();
    await accepting;
    await Promise.all(held.map((c) => c.close()));
  }
});
