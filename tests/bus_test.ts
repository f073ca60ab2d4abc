/**
 * The herd bus from outside, over real loopback TCP: records from an authenticated neighbor
 * are checked as strictly as client lines; a party on the path that alters, drops,
 * duplicates or replays a sealed frame gets the link dropped and the herd still converges;
 * handshakes are bounded; hostile bus connections never hold up clients; a short secret
 * stops a node at start; and nodes run as separate processes hold no socket on each other's
 * client ports.
 */

import assert from "assert";
import { HerdNode } from "../lib/node.ts";
import type { ServerSpec, Topology } from "../lib/topology.ts";
import { FrameDecoder, HEADER_BYTES } from "../lib/bus/frames.ts";
import { FakePeer } from "./bus_fake.ts";
import {
  exchange,
  FAST_FLOOD,
  freePorts,
  makeTopology,
  StubPlaces,
  TestHerd,
  waitFor,
} from "./helpers.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);
const SECRET = "test-secret-of-well-over-128-bits-0123456789";

function events(node: HerdNode, event: string): Record<string, unknown>[] {
  return node.log.memory.map((l) => JSON.parse(l)).filter((e) =>
    e.event === event
  );
}

function busPort(node: HerdNode): number {
  return node.config.topology.servers.get(node.name)!.peerPort;
}

/** An IAMAT that must be acknowledged with its AT line. */
async function acked(port: number, client: string, time: string) {
  const reply = await exchange(port, `IAMAT ${client} +1+1 ${time}\n`);
  assert.match(
    reply,
    new RegExp(`^AT \\S+ \\S+ ${client} \\+1\\+1 ${time}\\n$`),
  );
  return reply.slice(0, -1);
}

Deno.test("records from an authenticated neighbor with a field past its limit, or malformed, are refused and counted; clients keep being acknowledged; a neighbor that keeps sending them is dropped", async () => {
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: () => ({ secret: SECRET }),
  }).start("Alford").then((node) => ({
    node,
    async [Symbol.asyncDispose]() {
      await node.stop();
    },
  }));
  const alford = herd.node;
  const peer = await FakePeer.dial(busPort(alford));
  try {
    await peer.hello("Ball", "Alford", SECRET);
    const good = "AT Ball +0.000000001 good +1+1 100";
    const bad = [
      // The attack: a 70,000-digit field once stalled every KV commit.
      `AT Ball -${"9".repeat(70000)}.000000000 huge +1+1 ${"9".repeat(70000)}`,
      `AT Ball +0.000000001 ${"c".repeat(257)} +1+1 100`,
      `AT Ball +0.000000001 loc +1.${"0".repeat(16 * 1024)}+1 100`,
      `AT Ball +0.000000001 time +1+1 1.0000000001`,
      "AT Ball +1.00000000 skew +1+1 100",
      "AT Mallory +0.000000001 node +1+1 100",
      "AT Ball +0.000000001 malformed +1+1",
      "AT Ball +0.000000001 lat +91+1 100",
    ];
    await peer.sendRecords([bad[0], good, ...bad.slice(1)]);
    await waitFor(
      () => alford.store.get("good") === good,
      5000,
      "the good record",
    );
    await waitFor(() => alford.flood.stats.recordsInvalid === bad.length);
    for (
      const c of ["huge", "c".repeat(257), "loc", "time", "skew", "node", "lat"]
    ) {
      assert.equal(alford.store.get(c), undefined, c);
    }
    assert.equal(alford.flood.stats.recordsReceived, 1);
    assert.deepEqual(alford.flood.peerStatus()[0].recordsReceived, 1);
    // Logged within a budget, each with its reason, never the whole line.
    const logged = events(alford, "peer_record_invalid");
    assert.deepEqual(logged.map((e) => e.problem), [
      "longer than a client line",
      "bad client id",
      "longer than a client line",
    ]);
    assert.ok(logged.every((e) => (e.line as string).length <= 120));
    // The node's store and its acks go on.
    await acked(alford.port, "client-1", "101");
    // More of them: past the bound, the link is dropped.
    await peer.sendRecords(Array(20).fill(bad[4]));
    assert.equal(await peer.next(), null);
    await waitFor(() =>
      events(alford, "peer_dropped").some((e) =>
        String(e.reason).startsWith("more than 16 invalid records")
      )
    );
    await acked(alford.port, "client-2", "102");
  } finally {
    await peer.close();
  }
});

/** What the proxy does to the next frame from the dialer once armed. */
type Fault = "flip" | "drop" | "duplicate" | "replay";

/**
 * A TCP proxy on the path from one node to another's bus port. Frames pass unchanged until
 * `arm(fault)`: then the next frame from the dialer is altered, dropped, duplicated, or
 * replayed after the one that follows it.
 */
class PathProxy {
  readonly listener: Deno.TcpListener;
  readonly #target: number;
  readonly #conns = new Set<Deno.TcpConn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;
  #armed: Fault | null = null;
  #held: Uint8Array | null = null;
  faults = 0;

  constructor(port: number, target: number) {
    this.listener = Deno.listen({ hostname: "127.0.0.1", port });
    this.#target = target;
    this.#accepting = this.#accept();
  }

  arm(fault: Fault): void {
    this.#armed = fault;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let inbound: Deno.TcpConn;
      try {
        inbound = await this.listener.accept();
      } catch {
        return;
      }
      let outbound: Deno.TcpConn;
      try {
        outbound = await Deno.connect({
          hostname: "127.0.0.1",
          port: this.#target,
        });
      } catch {
        inbound.close();
        continue;
      }
      this.#conns.add(inbound);
      this.#conns.add(outbound);
      const t = Promise.all([
        this.#pump(inbound, outbound, true),
        this.#pump(outbound, inbound, false),
      ]).then(() => {});
      this.#tasks.add(t);
    }
  }

  async #pump(from: Deno.TcpConn, to: Deno.TcpConn, tamper: boolean) {
    const buf = new Uint8Array(64 * 1024);
    const decoder = new FrameDecoder(64 * 1024 * 1024);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        if (!tamper) {
          await write(to, buf.subarray(0, n));
          continue;
        }
        for (const body of decoder.push(buf.subarray(0, n)).frames) {
          for (const frame of this.#apply(withHeader(body))) {
            await write(to, frame);
          }
        }
      }
    } catch { /* closed */ }
    for (const c of [from, to]) {
      try {
        c.close();
      } catch { /* closed */ }
      this.#conns.delete(c);
    }
  }

  /** The frames to forward for `frame`. */
  #apply(frame: Uint8Array): Uint8Array[] {
    if (this.#held !== null) {
      const replayed = this.#held;
      this.#held = null;
      return [frame, replayed];
    }
    const fault = this.#armed;
    if (fault === null) return [frame];
    this.#armed = null;
    this.faults++;
    switch (fault) {
      case "flip": {
        const bad = frame.slice();
        bad[bad.length - 3] ^= 0x20;
        return [bad];
      }
      case "drop":
        return [];
      case "duplicate":
        return [frame, frame];
      case "replay":
        this.#held = frame;
        return [frame];
    }
  }

  async close(): Promise<void> {
    this.listener.close();
    await this.#accepting;
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await Promise.all([...this.#tasks]);
  }
}

function withHeader(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, HEADER_BYTES);
  return out;
}

async function write(conn: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** The same topology, but `name`'s bus port replaced (where the others dial it). */
function dialingVia(topology: Topology, name: string, port: number): Topology {
  const servers = new Map<string, ServerSpec>();
  for (const [n, s] of topology.servers) {
    servers.set(n, n === name ? { ...s, peerPort: port } : s);
  }
  return { servers };
}

Deno.test("a party on the path that flips a byte, drops, duplicates or replays a sealed frame gets the link dropped; the herd still converges", async (t) => {
  for (const fault of ["flip", "drop", "duplicate", "replay"] as const) {
    await t.step(fault, async () => {
      const topology = makeTopology(["Alford", "Ball"], [["Alford", "Ball"]]);
      const [proxyPort] = freePorts(1);
      const proxy = new PathProxy(
        proxyPort,
        topology.servers.get("Ball")!.peerPort,
      );
      const node = (name: string, topo: Topology) =>
        new HerdNode({
          name,
          topology: topo,
          dataDir: null,
          places: new StubPlaces(),
          console: false,
          secret: SECRET,
          flood: FAST_FLOOD,
        });
      // Alford reaches Ball's bus through the proxy; Ball reaches Alford directly.
      const alford = node("Alford", dialingVia(topology, "Ball", proxyPort));
      const ball = node("Ball", topology);
      try {
        await alford.start();
        await ball.start();
        await waitFor(() => alford.flood.connected().length === 1);
        await waitFor(() => events(ball, "peer_accepted").length === 1);
        const before = await acked(alford.port, "before", "1");
        await waitFor(() => ball.store.get("before") === before);
        proxy.arm(fault);
        const records = [before];
        for (let i = 0; i < 3; i++) {
          records.push(await acked(alford.port, `after-${i}`, `${2 + i}`));
        }
        assert.equal(proxy.faults, 1);
        await waitFor(
          () =>
            events(ball, "peer_protocol_error").some((e) =>
              e.problem === "a frame failed authentication"
            ),
          5000,
          "Ball to refuse the frame",
        );
        // Alford reconnects and catch-up repairs whatever the fault cost.
        await waitFor(
          () => records.every((r) => ball.store.get(r.split(" ")[3]) === r),
          10_000,
          "the herd to converge",
        );
        assert.ok(events(alford, "peer_dropped").length >= 1);
        assert.equal(ball.store.size, 4);
      } finally {
        await Promise.all([alford.stop(), ball.stop()]);
        await proxy.close();
      }
    });
  }
});

Deno.test("handshakes are bounded: past the cap a bus connection is closed at once and counted; silent ones are cut at the deadline; a neighbor still gets in", async () => {
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: () => ({
      flood: { ...FAST_FLOOD, maxHandshakes: 4, handshakeTimeoutMs: 500 },
    }),
  }).start("Alford").then((node) => ({
    node,
    async [Symbol.asyncDispose]() {
      await node.stop();
    },
  }));
  const alford = herd.node;
  const silent: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      silent.push(
        await Deno.connect({ hostname: "127.0.0.1", port: busPort(alford) }),
      );
    }
    await waitFor(() => alford.flood.stats.handshakesRejected === 0);
    const extra: Deno.TcpConn[] = [];
    for (let i = 0; i < 3; i++) {
      extra.push(
        await Deno.connect({ hostname: "127.0.0.1", port: busPort(alford) }),
      );
    }
    await waitFor(() => alford.flood.stats.handshakesRejected === 3);
    for (const c of extra) {
      assert.equal(await c.read(new Uint8Array(1)).catch(() => null), null);
      c.close();
    }
    assert.equal(events(alford, "peer_handshakes_full").length, 3);
    // The silent ones are closed by the deadline.
    for (const c of silent) {
      assert.equal(await c.read(new Uint8Array(1)).catch(() => null), null);
    }
    const peer = await FakePeer.dial(busPort(alford));
    await peer.hello("Ball", "Alford");
    await peer.close();
  } finally {
    for (const c of silent) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  }
});

Deno.test("300 bus connections that say 'HERD HELLO <neighbor>' and stream without a line end are cut off; clients and the neighbor link carry on", async () => {
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
  }).startAll();
  const alford = herd.nodes.get("Alford")!;
  const ball = herd.nodes.get("Ball")!;
  await waitFor(() => alford.flood.connected().length === 1);
  const chunk = new TextEncoder().encode("x".repeat(64 * 1024));
  const hello = new TextEncoder().encode("HERD HELLO Ball ");
  let cut = 0;
  const attack = async () => {
    const c = await Deno.connect({
      hostname: "127.0.0.1",
      port: busPort(alford),
    });
    try {
      await write(c, hello);
      for (let sent = 0; sent < 1024 * 1024; sent += chunk.length) {
        await write(c, chunk);
      }
    } catch { /* cut off while sending */ }
    // Whatever the kernel had buffered, the node has closed the connection: a read ends.
    const timer = setTimeout(() => c.close(), 10_000);
    try {
      if (await c.read(new Uint8Array(64)) === null) cut++;
    } catch {
      cut++; // reset
    } finally {
      clearTimeout(timer);
      try {
        c.close();
      } catch { /* closed by the timer */ }
    }
  };
  const attacks = Array.from({ length: 300 }, attack);
  // Meanwhile clients are answered and records still flow to the neighbor.
  for (let i = 0; i < 20; i++) {
    const r = await acked(alford.port, `c${i}`, `${i + 1}`);
    await waitFor(() => ball.store.get(`c${i}`) === r);
  }
  await Promise.all(attacks);
  assert.equal(cut, 300);
  assert.deepEqual(alford.flood.connected(), ["Ball"]);
  assert.equal(alford.flood.peerStatus()[0].state, "up");
});

Deno.test("main.ts refuses a HERD_SECRET under 128 bits with one line and exit code 2", async () => {
  const topology = `${await Deno.makeTempDir({ prefix: "herd-bus-" })}/t.json`;
  try {
    const [port, peerPort] = freePorts(2);
    await Deno.writeTextFile(
      topology,
      JSON.stringify({
        servers: { A: { host: "127.0.0.1", port, peerPort, neighbors: [] } },
      }),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "main.ts",
        "--name",
        "A",
        "--topology",
        topology,
        "--kv",
        ":memory:",
      ],
      cwd: ROOT,
      env: { HERD_SECRET: "0123456789abcdef", PLACES_PROVIDER: "offline" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 2, stderr);
    assert.equal(
      stderr,
      "herd: HERD_SECRET is too short: it carries 64 bits, at least 128 are needed (32 hex digits, 22 base64 characters or 16 bytes); run deno task keygen for a good one\n",
    );
    assert.equal(out.stdout.length, 0);
  } finally {
    await Deno.remove(topology.slice(0, topology.lastIndexOf("/")), {
      recursive: true,
    });
  }
});

Deno.test("keygen prints one new 256-bit base64url secret a run, on stdout alone", async () => {
  const run = async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "lib/keygen.ts"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0);
    assert.equal(out.stderr.length, 0);
    return new TextDecoder().decode(out.stdout);
  };
  const [a, b] = await Promise.all([run(), run()]);
  assert.match(a, /^[A-Za-z0-9_-]{43}\n$/);
  assert.match(b, /^[A-Za-z0-9_-]{43}\n$/);
  assert.notEqual(a, b);
});

Deno.test("a bus port already in use stops the start with one line naming it, and frees the client port", async () => {
  const topology = makeTopology(["Alford", "Ball"], [["Alford", "Ball"]]);
  const spec = topology.servers.get("Alford")!;
  const holder = Deno.listen({ hostname: "127.0.0.1", port: spec.peerPort });
  try {
    const node = new HerdNode({
      name: "Alford",
      topology,
      dataDir: null,
      places: new StubPlaces(),
      console: false,
    });
    await assert.rejects(
      () => node.start(),
      new RegExp(
        `^NodeStartError: bus port ${spec.peerPort} on 127\\.0\\.0\\.1 is already in use`,
      ),
    );
    Deno.listen({ hostname: "127.0.0.1", port: spec.port }).close();
  } finally {
    holder.close();
  }
});

Deno.test("peerStatus: each neighbor down until its link is up, then up with its record counts", async () => {
  await using herd = new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
  });
  const alford = await herd.start("Alford");
  assert.deepEqual(alford.flood.peerStatus(), [
    { name: "Ball", state: "down", recordsSent: 0, recordsReceived: 0 },
  ]);
  const ball = await herd.start("Ball");
  await waitFor(() => alford.flood.peerStatus()[0].state === "up");
  const r = await acked(alford.port, "kiwi", "1");
  await waitFor(() => ball.store.get("kiwi") === r);
  await acked(ball.port, "lime", "2");
  await waitFor(() => alford.flood.peerStatus()[0].recordsReceived === 1);
  assert.deepEqual(alford.flood.peerStatus(), [
    { name: "Ball", state: "up", recordsSent: 1, recordsReceived: 1 },
  ]);
  await herd.stop("Ball");
  await waitFor(() => alford.flood.peerStatus()[0].state === "down");
});
