/**
 * Pins of the node's behaviour found missing by a mutation pass (`tests/mutation/`): each
 * test here fails when one small change to `lib/` is made (the mutation it kills is named in
 * its comment). Real nodes on loopback; only the outside world is stubbed: the places
 * provider, and Deno KV (through the node's `openKv` seam), whose commits a test can hold
 * the way a slow disk would.
 */

import assert from "assert";
import type { HerdNode } from "../lib/node.ts";
import { FakePeer } from "./bus_fake.ts";
import {
  Client,
  exchange,
  fixedClock,
  makeTopology,
  measuredKv,
  StubPlaces,
  TestHerd,
  waitFor,
} from "./helpers.ts";

function events(node: HerdNode, event: string): Record<string, unknown>[] {
  return node.log.memory.map((l) => JSON.parse(l)).filter((e) =>
    e.event === event
  );
}

/** KV commits that wait while `held` is true, as on a disk that has stalled. */
class CommitHold {
  held = false;
  #waiters: (() => void)[] = [];
  /** Commits that reached KV while held (they wait for `release`). */
  waiting = 0;

  wait(): Promise<void> {
    if (!this.held) return Promise.resolve();
    this.waiting++;
    return new Promise((r) => this.#waiters.push(r));
  }

  release(): void {
    this.held = false;
    for (const w of this.#waiters.splice(0)) w();
  }
}

/** A node's `openKv` whose KVs hold their commits on `hold` (the node's injection seam). */
function heldOpenKv(hold: CommitHold): (path: string) => Promise<Deno.Kv> {
  return async (path) => {
    const m = measuredKv(await Deno.openKv(path));
    m.setGate(() => hold.wait());
    return m.kv;
  };
}

/**
 * Starts `herd`'s A and B (B's commits held on `hold`), has A take an IAMAT for kiwi, and
 * waits until B holds the record in memory with its commit to KV waiting; returns B and
 * the record.
 */
async function heldAtB(
  herd: TestHerd,
  hold: CommitHold,
): Promise<{ b: HerdNode; at: string }> {
  await herd.start("A");
  const b = await herd.start("B");
  await waitFor(() => b.flood.peerStatus()[0].state === "up");
  hold.held = true;
  const at = "AT A +1.000000000 kiwi +34-118 1700000000";
  assert.equal(
    await exchange(herd.port("A"), "IAMAT kiwi +34-118 1700000000\n"),
    `${at}\n`,
  );
  await waitFor(() => b.store.get("kiwi") === at && hold.waiting > 0);
  return { b, at };
}

/**
 * Writes `chunk` whole, over and over (at most `maxBytes` in all), until one write makes no
 * progress for `stallMs`; returns the bytes written by then, or null if all went through.
 */
async function writeUntilStalled(
  conn: Deno.Conn,
  chunk: Uint8Array,
  maxBytes: number,
  stallMs: number,
): Promise<number | null> {
  let sent = 0;
  let off = 0;
  while (sent < maxBytes) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<"stalled">((r) => {
      timer = setTimeout(() => r("stalled"), stallMs);
    });
    const writing = conn.write(chunk.subarray(off));
    writing.catch(() => {}); // rejected when the test closes the connection
    const n = await Promise.race([writing, stalled]);
    clearTimeout(timer);
    if (n === "stalled") return sent;
    sent += n;
    off = (off + n) % chunk.length;
  }
  return null;
}

// Mutation whatsat-not-durable.
Deno.test("WHATSAT: a record learned from a peer is not served before it is durable", async () => {
  const hold = new CommitHold();
  const places = new StubPlaces();
  let askedBeforeDurable = false;
  const respond = places.respond;
  places.respond = (q) => {
    if (hold.held) askedBeforeDurable = true;
    return respond(q);
  };
  await using herd = new TestHerd({
    names: ["A", "B"],
    links: [["A", "B"]],
    config: (name) => ({
      clock: fixedClock(1700000001_000000000n),
      ...(name === "B" ? { places, openKv: heldOpenKv(hold) } : {}),
    }),
  });
  try {
    const { at } = await heldAtB(herd, hold);
    using c = await Client.connect(herd.port("B"));
    await c.send("WHATSAT kiwi 10 2\n");
    // Give B ample time to (wrongly) serve it: nothing may reach the places provider yet.
    const deadline = Date.now() + 1000;
    while (Date.now() < deadline && places.queries.length === 0) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(places.queries.length, 0, "served before durable");
    hold.release();
    const reply = await c.readUntil("\n\n", 1, 10_000);
    assert.ok(reply.startsWith(`${at}\n{`), reply.slice(0, 100));
    assert.equal(askedBeforeDurable, false);
  } finally {
    hold.release();
  }
});

// Mutations inbound-ignores-congestion and store-never-congested.
Deno.test("bus inbound: while the store's commits are congested the node stops reading a neighbor's records, so its writes stall in TCP", async () => {
  const hold = new CommitHold();
  await using herd = new TestHerd({
    names: ["A", "B"],
    links: [["A", "B"]],
    config: (name) => name === "A" ? { openKv: heldOpenKv(hold) } : {},
  });
  const a = await herd.start("A");
  const peer = await FakePeer.dial(
    a.config.topology.servers.get("A")!.peerPort,
  );
  try {
    await peer.hello("B", "A");
    hold.held = true;
    // Records of ~14 KB, 64 to a frame: the store's congestion bound (32 MiB) is reached
    // after ~37 frames; then TCP's buffers fill and the fake's writes stall.
    const loc = `+34.${"1".repeat(7000)}-118.${"2".repeat(7000)}`;
    let n = 0;
    const frame = () => {
      const records = [];
      for (let i = 0; i < 64; i++) {
        records.push(`AT B +0.000000000 c${n++} ${loc} 1700000000`);
      }
      return peer.frame(`RECORDS\n${records.join("\n")}`);
    };
    let sent = 0;
    let stalled = false;
    // At most 160 frames (~144 MB): four times what a congested node may take.
    for (let i = 0; i < 160 && !stalled; i++) {
      const bytes = await frame();
      const left = await writeUntilStalled(
        peer.conn,
        bytes,
        bytes.length,
        3000,
      );
      // A frame is written whole or the writes stalled (the loop then ends).
      if (left !== null) stalled = true;
      else sent += bytes.length;
    }
    assert.ok(stalled, `the node read all ${sent} bytes while congested`);
  } finally {
    hold.release();
    await peer.close();
  }
});

// Mutation reading-ignores-room (lib/server.ts: to run after the server merge too).
Deno.test("client port: a client that pipelines without reading is no longer read once its replies pile up, so its writes stall in TCP", async () => {
  await using herd = await new TestHerd({
    topology: makeTopology(["A"], []),
  }).startAll();
  using c = await Client.connect(herd.port("A"));
  // Invalid lines of 16,000 bytes: each is answered "? " and the line. At most 128 MB.
  const chunk = new TextEncoder().encode(`${"x".repeat(15_999)}\n`.repeat(64));
  const sent = await writeUntilStalled(c.conn, chunk, 128 * 1024 * 1024, 3000);
  assert.notEqual(sent, null, "the node read 128 MB without its replies read");
});

// Mutation no-linger-after-overlong-line (lib/server.ts: to run after the server merge too).
Deno.test("client port: after an over-long line the replies queued before it all arrive, then EOF, while the client is still sending", async () => {
  await using herd = await new TestHerd({
    topology: makeTopology(["A"], []),
    config: () => ({ maxLineBytes: 1024 }),
  }).startAll();
  const node = herd.nodes.get("A")!;
  using c = await Client.connect(herd.port("A"));
  // 2,000 invalid lines (~2 MB of replies the client does not read yet), then a line far
  // over the limit that the client keeps sending while the node answers.
  const line = "y".repeat(1000);
  const before = `${line}\n`.repeat(2000);
  const sending = c.send(before + "X".repeat(4 * 1024 * 1024) + "\n").catch(
    () => {},
  );
  await waitFor(
    () => events(node, "line_too_long").length === 1,
    10_000,
    "the over-long line",
  );
  const reply = await c.readAll(20_000);
  await sending;
  assert.equal(reply.length, (line.length + 3) * 2000 + 1024 + 3);
  assert.equal(
    reply,
    `? ${line}\n`.repeat(2000) + `? ${"X".repeat(1024)}\n`,
  );
});

/** Blocks this process's event loop for `ms` (the node under test shares it). */
function busyFor(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) { /* hold the loop */ }
}

// Mutation whatsat-unknown-before-bus.
for (const secret of [undefined, "a-test-secret-of-enough-length-0123456789"]) {
  Deno.test(
    `WHATSAT: a neighbor's record read in the same turn as a WHATSAT for its client answers it, not ? (${
      secret ? "closed" : "open"
    } bus)`,
    async () => {
      const places = new StubPlaces();
      await using herd = new TestHerd({
        names: ["A", "B"],
        links: [["A", "B"]],
        config: () => ({ places, secret }),
      });
      const a = await herd.start("A");
      const peer = await FakePeer.dial(
        a.config.topology.servers.get("A")!.peerPort,
      );
      try {
        await peer.hello("B", "A", secret);
        using c = await Client.connect(herd.port("A"));
        // The session is up, and its first read done, before the race.
        await c.send("WHATSAT nobody 10 1\n");
        assert.equal(await c.readUntil("\n"), "? WHATSAT nobody 10 1\n");
        const at = "AT B +0.500000000 kiwi +34-118 1700000000";
        const frame = await peer.frame(`RECORDS\n${at}`);
        // The WHATSAT reaches A's socket first, the record right after it; A's event loop
        // is held until both are there, so A reads them in one turn, the WHATSAT first.
        const asked = c.send("WHATSAT kiwi 10 1\n");
        const told = peer.sendRaw(frame);
        busyFor(50);
        await Promise.all([asked, told]);
        assert.equal(await c.readUntil("\n"), `${at}\n`);
        assert.ok(
          (await c.readUntil("\n\n")).startsWith('{\n  "html_attributions"'),
        );
      } finally {
        await peer.close();
      }
    },
  );
}

// Mutation whatsat-unknown-sees-later-iamat.
Deno.test("WHATSAT: a client's IAMAT after its WHATSAT on the same connection does not answer the WHATSAT", async () => {
  const places = new StubPlaces();
  await using herd = new TestHerd({
    names: ["A"],
    links: [],
    config: () => ({ places, clock: fixedClock(1700000001_000000000n) }),
  });
  await herd.start("A");
  using c = await Client.connect(herd.port("A"));
  // One write: both lines are handled in one turn, the WHATSAT first.
  await c.send("WHATSAT kiwi 10 1\nIAMAT kiwi +34-118 1700000000\n");
  assert.equal(
    await c.readUntil("\n", 2),
    "? WHATSAT kiwi 10 1\nAT A +1.000000000 kiwi +34-118 1700000000\n",
  );
});

// Mutation http-record-not-durable.
Deno.test("HTTP: GET /v1/clients/ID does not serve a record learned from a peer before it is durable", async () => {
  const hold = new CommitHold();
  await using herd = new TestHerd({
    topology: makeTopology(["A", "B"], [["A", "B"]], { http: true }),
    config: (name) => ({
      clock: fixedClock(1700000001_000000000n),
      ...(name === "B" ? { openKv: heldOpenKv(hold) } : {}),
    }),
  });
  try {
    const { b, at } = await heldAtB(herd, hold);
    const asked = fetch(`http://127.0.0.1:${b.httpPort}/v1/clients/kiwi`);
    let answered = false;
    asked.then(() => answered = true, () => {});
    // Give B ample time to (wrongly) answer.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(answered, false, "served before durable");
    hold.release();
    const res = await asked;
    assert.equal(res.status, 200);
    assert.equal((await res.json()).at, at);
  } finally {
    hold.release();
  }
});
