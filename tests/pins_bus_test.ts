/**
 * Pins of the herd bus found missing by a mutation pass (`tests/mutation/`): each test here
 * fails when one small change to `lib/bus/` or `lib/flood.ts` is made (the mutation it
 * kills is named in its comment). Real nodes on loopback; the other side of a connection is
 * a real node or a `FakePeer` speaking the bus format by hand.
 */

import assert from "assert";
import { createCipheriv } from "node:crypto";
import type { HerdNode } from "../lib/node.ts";
import { busLimits, formatMessage, parseMessage } from "../lib/bus/codec.ts";
import { encodeFrame, FrameDecoder } from "../lib/bus/frames.ts";
import {
  directionKeyBits,
  importSecret,
  ivOf,
  session,
  toHex,
} from "../lib/bus/handshake.ts";
import { recordProblem } from "../lib/bus/record_check.ts";
import { FakePeer, TEST_NONCE } from "./bus_fake.ts";
import {
  exchange,
  fixedClock,
  makeTopology,
  tempDir,
  TestHerd,
  waitFor,
} from "./helpers.ts";

const SECRET = "test-secret-of-well-over-128-bits-0123456789";

function busPort(herd: TestHerd, name: string): number {
  return herd.topology.servers.get(name)!.peerPort;
}

function events(node: HerdNode, event: string): Record<string, unknown>[] {
  return node.log.memory.map((l) => JSON.parse(l)).filter((e) =>
    e.event === event
  );
}

// Mutation catchup-same-time-other-bytes.
Deno.test("catch-up sends a record the peer holds at the same time with other bytes: two nodes that took equal-time reports while apart agree", async () => {
  await using dir = await tempDir();
  const herd = new TestHerd({
    names: ["A", "B"],
    links: [["A", "B"]],
    config: () => ({
      dataDir: dir.path,
      clock: fixedClock(1700000001_000000000n),
    }),
  });
  try {
    // Each node alone (the other down) takes a report of kiwi at the same client time.
    const atA = "AT A +1.000000000 kiwi +34-118 1700000000";
    const atB = "AT B +1.000000000 kiwi +10-20 1700000000";
    const a = await herd.start("A");
    assert.equal(
      await exchange(a.port, "IAMAT kiwi +34-118 1700000000\n"),
      `${atA}\n`,
    );
    await herd.stop("A");
    const b = await herd.start("B");
    assert.equal(
      await exchange(b.port, "IAMAT kiwi +10-20 1700000000\n"),
      `${atB}\n`,
    );
    await herd.stop("B");
    // Together again, with no client traffic: both end with the same record, the one the
    // tie-break picks (the greater bytes), whichever of them held it.
    await herd.startAll();
    const winner = atA > atB ? atA : atB;
    await waitFor(
      () =>
        [...herd.nodes.values()].every((n) => n.store.get("kiwi") === winner),
      10_000,
      "both nodes to hold the tie-break's winner",
    );
  } finally {
    await herd.stopAll();
  }
});

// Mutation mac-without-role.
Deno.test("handshake: a node's own WELCOME proof reflected back as the dialer's PROOF is refused", async () => {
  await using herd = new TestHerd({
    names: ["A", "B"],
    links: [["A", "B"]],
    config: () => ({ secret: SECRET }),
  });
  const a = await herd.start("A");
  const peer = await FakePeer.dial(busPort(herd, "A"));
  try {
    // The fake does not know the secret: it can only send back what A proved.
    await peer.send({ kind: "hello", node: "B", nonce: TEST_NONCE });
    const w = await peer.next();
    assert.equal(w?.kind, "welcome");
    if (w?.kind !== "welcome") return;
    assert.match(w.proof, /^[0-9a-f]{64}$/);
    await peer.send({ kind: "proof", proof: w.proof });
    assert.deepEqual(await peer.next(), {
      kind: "refused",
      reason: "wrong secret",
    });
    assert.equal(await peer.next(), null);
    assert.equal(events(a, "peer_accepted").length, 0);
  } finally {
    await peer.close();
  }
});

// Mutation welcome-other-name.
Deno.test("handshake: a node refuses a WELCOME that answers under another node's name, and sends no PROOF", async () => {
  const topology = makeTopology(["A", "B", "C"], [["A", "B"], ["B", "C"]]);
  // B's bus port is held by a fake that answers as C (a node of the herd, not the one dialed).
  using listener = Deno.listen({
    hostname: "127.0.0.1",
    port: topology.servers.get("B")!.peerPort,
  });
  await using herd = new TestHerd({ topology });
  const a = await herd.start("A");
  const peer = new FakePeer(await listener.accept());
  try {
    const hello = await peer.next();
    assert.deepEqual(hello?.kind, "hello");
    if (hello?.kind !== "hello") return;
    assert.equal(hello.node, "A");
    // An open bus: proofs are "-", so only the name can tell.
    await peer.send({
      kind: "welcome",
      node: "C",
      nonce: "ab".repeat(16),
      proof: "-",
    });
    assert.deepEqual(await peer.next(), {
      kind: "refused",
      reason: "expected B",
    });
    assert.equal(a.flood.peerStatus()[0].state, "down");
  } finally {
    await peer.close();
  }
});

// Mutation older-inbound-left-open.
Deno.test("flood: a neighbor that authenticates again has its older inbound connection closed", async () => {
  await using herd = new TestHerd({ names: ["A", "B"], links: [["A", "B"]] });
  const a = await herd.start("A");
  const first = await FakePeer.dial(busPort(herd, "A"));
  const second = await FakePeer.dial(busPort(herd, "A"));
  try {
    await first.hello("B", "A");
    await second.hello("B", "A");
    // The first connection is closed by A: EOF, after nothing it did not ask for.
    let msg;
    for (let i = 0; i < 100; i++) {
      msg = await first.next(5000);
      if (msg === null) break;
    }
    assert.equal(msg, null, "the older inbound connection is still open");
    // The newer one still works: a record sent on it is taken.
    const line = "AT B +0.000000000 kiwi +34-118 1700000000";
    await second.sendRecords([line]);
    await waitFor(() => a.store.get("kiwi") === line);
  } finally {
    await first.close();
    await second.close();
  }
});

// Mutation invalid-records-threshold.
Deno.test("bus inbound: a neighbor may send maxInvalidRecords invalid records and stay; one more drops it", async () => {
  await using herd = new TestHerd({
    names: ["A", "B"],
    links: [["A", "B"]],
    config: () => ({ flood: { maxInvalidRecords: 3 } }),
  });
  const a = await herd.start("A");
  const peer = await FakePeer.dial(busPort(herd, "A"));
  try {
    await peer.hello("B", "A");
    const bad = "AT Mallory +0.000000000 kiwi +34-118 1700000000";
    await peer.sendRecords([bad, bad]);
    await peer.sendRecords([bad]);
    // Still connected: a valid record sent after the three invalid ones is taken.
    const good = "AT B +0.000000000 lime +34-118 1700000000";
    await peer.sendRecords([good]);
    await waitFor(() => a.store.get("lime") === good);
    assert.equal(a.flood.stats.recordsInvalid, 3);
    assert.equal(events(a, "peer_dropped").length, 0);
    await peer.sendRecords([bad]);
    assert.equal(await peer.next(), null);
    assert.deepEqual(
      events(a, "peer_dropped").map((e) => e.reason),
      ["more than 3 invalid records"],
    );
    assert.equal(a.store.get("kiwi"), undefined);
  } finally {
    await peer.close();
  }
});

// Mutation sum-without-reading.
Deno.test("catch-up acceptor: a peer that sends 4,000 SUMs and reads none of the ~44 MB of answers is dropped as not reading", async () => {
  await using herd = new TestHerd({ names: ["A", "B"], links: [["A", "B"]] });
  const a = await herd.start("A");
  const peer = await FakePeer.dial(busPort(herd, "A"));
  try {
    await peer.hello("B", "A");
    peer.stopReading();
    // A root A does not have: each SUM is answered with its ~11 KB of bucket digests.
    const sum = await peer.frame("SUM 0000000000000000");
    const sums = new Uint8Array(sum.length * 4000);
    for (let i = 0; i < 4000; i++) sums.set(sum, i * sum.length);
    await peer.sendRaw(sums).catch(() => {});
    await waitFor(
      () =>
        events(a, "peer_dropped").some((e) =>
          e.peer === "B" && e.reason === "not reading"
        ),
      10_000,
      "A to drop the peer that does not read",
    );
  } finally {
    await peer.close();
  }
});

// Mutation record-length-off-by-one.
Deno.test("record check: a record whose fields fill a client line exactly passes; one byte more is refused", () => {
  const nodes = new Set(["A"]);
  const limit = busLimits.clientLineBytes;
  // "IAMAT " + client + " " + location + " " + time: 8 bytes besides the three fields.
  const client = "kiwi";
  const time = "1700000000";
  const fill = limit - 8 - client.length - time.length - "+34.-118".length;
  const exact = `+34.${"0".repeat(fill)}-118`;
  assert.equal(
    `IAMAT ${client} ${exact} ${time}`.length,
    limit,
    "the client line it came from, at the line limit",
  );
  const at = (loc: string) => `AT A +0.000000000 ${client} ${loc} ${time}`;
  assert.equal(recordProblem(at(exact), nodes, limit), null);
  assert.equal(
    recordProblem(at(`+34.0${exact.slice(4)}`), nodes, limit),
    "longer than a client line",
  );
});

// Mutations gcm-aad-dropped, gcm-sequence-not-counted, gcm-iv-high-word-dropped.
Deno.test("sealed frames KAT: AES-256-GCM under the direction key, IV 0^32 || seq, AAD the bus version; recomputed with node:crypto", async () => {
  const ND = "000102030405060708090a0b0c0d0e0f";
  const NA = "f0e0d0c0b0a090807060504030201000";
  const keys = (await importSecret(SECRET))!;
  const d = await session(keys, "dialer", "Alford", "Ball", ND, NA);
  const key = await directionKeyBits(keys, "dialer", "Alford", "Ball", ND, NA);
  const enc = (s: string) => new TextEncoder().encode(s);
  const bodies = ["SUM 0123456789abcdef", "SAME", "RECORDS\nAT x"];
  const sealed: string[] = [];
  for (const b of bodies) sealed.push(toHex(await d.sealer.seal(enc(b))));
  bodies.forEach((b, seq) => {
    const c = createCipheriv("aes-256-gcm", key, ivOf(seq));
    c.setAAD(enc("herd-bus-v1"));
    const want = Buffer.concat([c.update(b, "utf8"), c.final(), c.getAuthTag()])
      .toString("hex");
    assert.equal(sealed[seq], want, `frame ${seq}`);
  });
  // The same frame again (a replay) does not open a second time.
  const a = await session(keys, "acceptor", "Alford", "Ball", ND, NA);
  const first = await a.opener.open(
    Uint8Array.from(sealed[0].match(/../g)!.map((h) => parseInt(h, 16))),
  );
  assert.equal(new TextDecoder().decode(first!), bodies[0]);
  const again = await a.opener.open(
    Uint8Array.from(sealed[0].match(/../g)!.map((h) => parseInt(h, 16))),
  );
  assert.equal(again, null);
  // Frame 2^32 + 1 is not frame 1: the high word of the sequence number is in the IV.
  assert.notDeepEqual([...ivOf(2 ** 32 + 1)], [...ivOf(1)]);
});

// Mutations reason-off-by-one, records-per-frame-off-by-one, diff-duplicates.
Deno.test("codec: each list and text bound admits exactly its limit and refuses one more", () => {
  const reason = "r".repeat(busLimits.reasonBytes);
  assert.deepEqual(parseMessage(`REFUSED ${reason}`), {
    kind: "refused",
    reason,
  });
  assert.equal(parseMessage(`REFUSED ${reason}r`), null);
  const rec = "AT A +0.000000000 k +1+1 1";
  const records = Array(busLimits.recordsPerFrame).fill(rec);
  assert.equal(
    parseMessage(`RECORDS\n${records.join("\n")}`)?.kind,
    "records",
  );
  assert.equal(parseMessage(`RECORDS\n${[...records, rec].join("\n")}`), null);
  assert.deepEqual(parseMessage("DIFF 1,2"), { kind: "diff", buckets: [1, 2] });
  assert.equal(parseMessage("DIFF 1,1"), null);
  assert.equal(parseMessage("DIFF 2,1"), null);
  assert.equal(formatMessage({ kind: "diff", buckets: [1, 2] }), "DIFF 1,2");
});

// Mutation frame-length-off-by-one.
Deno.test("frames: a body of exactly the bound is taken; one byte more is refused", () => {
  const max = 64;
  const ok = new FrameDecoder(max).push(encodeFrame(new Uint8Array(max)));
  assert.equal(ok.frames.length, 1);
  assert.equal(ok.frames[0].length, max);
  const over = new FrameDecoder(max).push(encodeFrame(new Uint8Array(max + 1)));
  assert.equal(over.frames.length, 0);
  assert.equal(
    over.error,
    `frame of ${max + 1} bytes over the bound of ${max}`,
  );
});
