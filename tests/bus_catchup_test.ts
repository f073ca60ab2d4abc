/**
 * Specification of catch-up (`lib/bus/catchup.ts`) with a fake wire and a real digest: the
 * dialer sends only what the acceptor lacks or holds older, and the lists a peer sends it
 * are bounded in entries and bytes.
 */

import assert from "assert";
import fc from "fast-check";
import type { BusMessage } from "../lib/bus/codec.ts";
import { CatchupDialer, lineHash } from "../lib/bus/catchup.ts";
import { newStats } from "../lib/bus/types.ts";
import { bucketOf, Digest, fnv1a } from "../lib/digest.ts";
import { clientOf, timeOf } from "../lib/record.ts";

/** A store of `records` (one per client) as catch-up sees it; positions are array indices. */
function storeOf(records: string[]) {
  const digest = new Digest();
  for (const r of records) digest.replace(clientOf(r), undefined, r);
  return {
    digest,
    loaded: Promise.resolve(),
    size: records.length,
    indexOf: (client: string) =>
      records.findIndex((r) => clientOf(r) === client),
    lineAt: (i: number) => records[i],
    timeAt: (i: number) => timeOf(records[i]),
    lineHashAt: (i: number) => fnv1a(records[i], 1),
    recordsIn: (buckets: Set<number>, skip?: Uint8Array) =>
      records.filter((r, i) =>
        (skip === undefined || (i < skip.length && skip[i] !== 1)) &&
        buckets.has(bucketOf(clientOf(r)))
      ),
    holdingsIn: (buckets: Set<number>) =>
      records.filter((r) => buckets.has(bucketOf(clientOf(r)))).map((r) => ({
        client: clientOf(r),
        time: timeOf(r),
        hash: fnv1a(r, 1),
      })),
  };
}

/** A wire that keeps what is sent. */
function wire() {
  const sent: BusMessage[] = [];
  return {
    sent,
    closed: false,
    outboxBytes: 0,
    send(msg: BusMessage) {
      sent.push(msg);
      return true;
    },
    drained: () => Promise.resolve(),
  };
}

/**
 * A dialer over `store` that has sent its `SUM`, with the wire it writes to, the records it
 * pushes and its stats.
 */
function dialing(
  store: ReturnType<typeof storeOf>,
  bound = { entries: 100, bytes: 10_000 },
) {
  const w = wire();
  const pushed: string[] = [];
  const dialer = new CatchupDialer(
    store,
    w,
    (records) => (pushed.push(...records), true),
    bound,
    1024 * 1024,
  );
  const stats = newStats();
  dialer.sum();
  return { dialer, w, pushed, stats };
}

const at = (client: string, time: string) =>
  `AT Alford +0.000000000 ${client} +1+1 ${time}`;

Deno.test("catch-up dialer: sends only the records the acceptor lacks, holds older, or holds with other bytes", async () => {
  const mine = [
    at("same", "5"),
    at("newer", "9"),
    at("missing", "1"),
    at("tie", "3"),
  ];
  const theirs = [
    at("same", "5"),
    at("newer", "8"),
    `AT Ball +0.000000000 tie +1+1 3`,
    at("theirs-only", "2"),
  ];
  const { dialer, w, pushed, stats } = dialing(storeOf(mine));
  assert.equal(w.sent[0].kind, "sum");
  const buckets = storeOf(theirs).digest.encode();
  assert.equal(
    await dialer.handle({ kind: "buckets", digest: buckets }, stats, () => {}),
    null,
  );
  const diff = w.sent[1];
  assert.equal(diff.kind, "diff");
  const entries = theirs.map((r) => ({
    client: clientOf(r),
    time: r.split(" ")[5],
    hash: lineHash(r),
  }));
  assert.equal(
    await dialer.handle({ kind: "have", entries }, stats, () => {}),
    null,
  );
  let done: number | null = null;
  assert.equal(
    await dialer.handle({ kind: "have-end" }, stats, (n) => (done = n)),
    null,
  );
  assert.deepEqual(pushed.sort(), [
    at("missing", "1"),
    at("newer", "9"),
    at("tie", "3"),
  ]);
  assert.equal(done, 3);
  assert.deepEqual(w.sent.at(-1), { kind: "synced", count: 3 });
  assert.equal(dialer.syncing, false);
});

Deno.test("catch-up dialer: a client first seen during the comparison is left to the flood, not sent back", async () => {
  const mine = [at("missing", "1")];
  // A client in the same bucket, as one arriving from the peer itself while the lists cross.
  let late = "late0";
  for (let i = 1; bucketOf(late) !== bucketOf("missing"); i++) {
    late = `late${i}`;
  }
  const store = storeOf(mine);
  const { dialer, w, pushed, stats } = dialing(store);
  await dialer.handle(
    { kind: "buckets", digest: new Digest().encode() },
    stats,
    () => {},
  );
  assert.equal(w.sent[1].kind, "diff");
  mine.push(at(late, "1"));
  store.size = mine.length;
  await dialer.handle({ kind: "have", entries: [] }, stats, () => {});
  await dialer.handle({ kind: "have-end" }, stats, () => {});
  assert.deepEqual(pushed, [at("missing", "1")]);
  assert.deepEqual(w.sent.at(-1), { kind: "synced", count: 1 });
});

Deno.test("catch-up dialer: HAVE lists past their bound in entries or bytes, or out of turn, drop the link", async () => {
  const stats = newStats();
  const start = async (bound: { entries: number; bytes: number }) => {
    const d = new CatchupDialer(
      storeOf([at("kiwi", "1")]),
      wire(),
      () => true,
      bound,
      1024 * 1024,
    );
    d.sum();
    await d.handle(
      { kind: "buckets", digest: new Digest().encode() },
      stats,
      () => {},
    );
    return d;
  };
  const entry = (i: number, time = "1") => ({
    client: `c${i}`,
    time,
    hash: "01234567",
  });
  const byCount = await start({ entries: 3, bytes: 1_000_000 });
  assert.equal(
    await byCount.handle(
      { kind: "have", entries: [entry(1), entry(2)] },
      stats,
      () => {},
    ),
    null,
  );
  assert.equal(
    await byCount.handle(
      { kind: "have", entries: [entry(3), entry(4)] },
      stats,
      () => {},
    ),
    "HAVE lists over 3 entries",
  );
  const byBytes = await start({ entries: 1000, bytes: 1000 });
  assert.equal(
    await byBytes.handle(
      { kind: "have", entries: [entry(1, "9".repeat(2000))] },
      stats,
      () => {},
    ),
    "HAVE lists over 1000 bytes",
  );
  const early = new CatchupDialer(storeOf([]), wire(), () => true, {
    entries: 9,
    bytes: 9,
  }, 1024);
  assert.equal(
    await early.handle({ kind: "have", entries: [entry(1)] }, stats, () => {}),
    "HAVE without DIFF",
  );
  assert.equal(
    await early.handle({ kind: "have-end" }, stats, () => {}),
    "HAVE-END without DIFF",
  );
  assert.equal(
    await early.handle(
      { kind: "sum", root: "0123456789abcdef" },
      stats,
      () => {},
    ),
    "unexpected sum on an outbound link",
  );
});

Deno.test("catch-up dialer: one comparison at a time; a request to compare meanwhile starts the next one when it ends", async () => {
  const mine = [at("a", "1"), at("b", "2")];
  const w = wire();
  const dialer = new CatchupDialer(
    storeOf(mine),
    w,
    () => true,
    { entries: 100, bytes: 10_000 },
    1024 * 1024,
  );
  const stats = newStats();
  const kinds = () => w.sent.map((m) => m.kind);
  // The link's first comparison, and a neighbor's request to compare in the same moment.
  dialer.sum();
  dialer.sum();
  dialer.sum();
  assert.deepEqual(kinds(), ["sum"]);
  await dialer.handle(
    { kind: "buckets", digest: storeOf([]).digest.encode() },
    stats,
    () => {},
  );
  assert.deepEqual(kinds(), ["sum", "diff"]);
  assert.equal(
    await dialer.handle({ kind: "have", entries: [] }, stats, () => {}),
    null,
  );
  assert.equal(
    await dialer.handle({ kind: "have-end" }, stats, () => {}),
    null,
  );
  // The first ends (SYNCED), then the one asked for meanwhile starts: once, not twice.
  assert.deepEqual(kinds(), ["sum", "diff", "synced", "sum"]);
  assert.deepEqual(w.sent[2], { kind: "synced", count: 2 });
  assert.equal(dialer.syncing, true);
  await dialer.handle({ kind: "same" }, stats, () => {});
  assert.equal(dialer.syncing, false);
  assert.deepEqual(kinds(), ["sum", "diff", "synced", "sum"]);
  // Deferred the same way when the comparison ends with SAME, or with nothing to ask for.
  dialer.sum();
  dialer.sum();
  await dialer.handle({ kind: "same" }, stats, () => {});
  assert.deepEqual(kinds().slice(4), ["sum", "sum"]);
  await dialer.handle(
    { kind: "buckets", digest: storeOf(mine).digest.encode() },
    stats,
    () => {},
  );
  // Nothing differs: SYNCED 0, and nothing was asked for meanwhile.
  assert.deepEqual(kinds().slice(4), ["sum", "sum", "synced"]);
  assert.equal(dialer.syncing, false);
});

Deno.test("catch-up dialer: pushes exactly what the acceptor lacks, holds older, or holds at the same time with other bytes (property, against a plain oracle)", async () => {
  // Per client: absent on one side or both, and times/bytes that tie or differ.
  const side = fc.option(
    fc.record({
      time: fc.integer({ min: 1, max: 4 }),
      node: fc.constantFrom("Alford", "Ball"),
    }),
    { nil: undefined },
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(side, side), { minLength: 1, maxLength: 60 }),
      fc.integer({ min: 1, max: 7 }),
      async (clients, perHave) => {
        const mine: string[] = [];
        const theirs: string[] = [];
        clients.forEach(([m, t], k) => {
          const line = (s: { time: number; node: string }) =>
            `AT ${s.node} +0.000000000 c${k} +1+1 ${s.time}`;
          if (m) mine.push(line(m));
          if (t) theirs.push(line(t));
        });
        const { dialer, w, pushed, stats } = dialing(storeOf(mine), {
          entries: 1000,
          bytes: 100_000,
        });
        await dialer.handle(
          { kind: "buckets", digest: storeOf(theirs).digest.encode() },
          stats,
          () => {},
        );
        const diff = w.sent.find((m) => m.kind === "diff");
        const buckets = new Set(diff?.kind === "diff" ? diff.buckets : []);
        if (diff !== undefined) {
          // The acceptor lists what it holds in those buckets, perHave entries a frame.
          const listed = theirs.filter((r) =>
            buckets.has(bucketOf(clientOf(r)))
          )
            .map((r) => ({
              client: clientOf(r),
              time: r.split(" ")[5],
              hash: lineHash(r),
            }));
          for (let i = 0; i < listed.length; i += perHave) {
            const problem = await dialer.handle(
              { kind: "have", entries: listed.slice(i, i + perHave) },
              stats,
              () => {},
            );
            assert.equal(problem, null);
          }
          await dialer.handle({ kind: "have-end" }, stats, () => {});
        }
        // The oracle: every record of mine (in a differing bucket, or anywhere when the
        // digests differ only where I hold something) that theirs lacks or holds older,
        // or holds at the same time with other bytes.
        const theirsByClient = new Map(theirs.map((r) => [clientOf(r), r]));
        const want = mine.filter((r) => {
          if (!buckets.has(bucketOf(clientOf(r)))) return false;
          const t = theirsByClient.get(clientOf(r));
          if (t === undefined) return true;
          const a = Number(r.split(" ")[5]);
          const b = Number(t.split(" ")[5]);
          return a > b || (a === b && r !== t);
        });
        assert.deepEqual([...pushed].sort(), [...want].sort());
        // Nothing of mine that differs from theirs is left out of the buckets compared.
        for (const r of mine) {
          if (theirsByClient.get(clientOf(r)) !== r) {
            assert.ok(buckets.has(bucketOf(clientOf(r))), r);
          }
        }
        assert.equal(dialer.syncing, false);
      },
    ),
    { numRuns: 200, seed: 20261130 },
  );
});

Deno.test("lineHash is fnv1a(line, 1) as 8 lowercase hex digits (property)", () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 40 }), (line) => {
      assert.equal(
        lineHash(line),
        fnv1a(line, 1).toString(16).padStart(8, "0"),
      );
    }),
    { numRuns: 2000 },
  );
  // Lines found by search whose hash has a zero high byte, or a middle byte under 16: the
  // digits a missing pad would drop.
  let zeroTop = 0;
  let lowMiddle = 0;
  for (let i = 0; i < 100_000 && (zeroTop < 3 || lowMiddle < 3); i++) {
    const line = `probe-${i}`;
    const h = fnv1a(line, 1);
    const top = h >>> 24 === 0;
    const middle = ((h >>> 8) & 255) < 16;
    if (!top && !middle) continue;
    assert.equal(lineHash(line), h.toString(16).padStart(8, "0"));
    if (top) zeroTop++;
    if (middle) lowMiddle++;
  }
  assert.ok(zeroTop >= 3 && lowMiddle >= 3, `${zeroTop} / ${lowMiddle} found`);
});
