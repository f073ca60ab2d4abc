/**
 * Specification of the bus format, pure: `codec.ts` (every message, parse and format),
 * `frames.ts` (length-prefixed frames), `record_check.ts` (a peer's record checked as
 * strictly as a client line) and `secret.ts` (the HERD_SECRET rule and new secrets).
 * Generators follow the grammar, so valid messages and near-valid ones are common.
 */

import assert from "assert";
import fc from "fast-check";
import {
  busLimits,
  type BusMessage,
  formatMessage,
  parseMessage,
} from "../lib/bus/codec.ts";
import { encodeFrame, FrameDecoder } from "../lib/bus/frames.ts";
import { fullCheck, recordProblem } from "../lib/bus/record_check.ts";
import { newSecret, secretBits, secretProblem } from "../lib/bus/secret.ts";
import { formatSkew, parseClientTime } from "../lib/clock.ts";
import { BUCKETS, Digest } from "../lib/digest.ts";

const RUNS = { numRuns: 300 };

// ---- generators from the grammar --------------------------------------------------------

const hex = (n: number) =>
  fc.array(fc.constantFrom(..."0123456789abcdef"), {
    minLength: n,
    maxLength: n,
  }).map((a) => a.join(""));
const nodeName = fc.tuple(
  fc.constantFrom(..."ABCxyz019"),
  fc.array(fc.constantFrom(..."abcXYZ09_.-"), { maxLength: 12 }),
).map(([a, b]) => a + b.join(""));
const nonce = hex(32);
const proof = fc.oneof(fc.constant("-"), hex(64));
const reason = fc.array(
  fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
  { minLength: 1, maxLength: 60 },
).map((a) => a.join("").trim()).filter((r) => r.length > 0);
const clientId = fc.oneof(
  fc.array(fc.integer({ min: 0x21, max: 0x7e }), {
    minLength: 1,
    maxLength: 40,
  }).map((a) => String.fromCharCode(...a)),
  fc.constant("kiwi.cs.ucla.edu"),
);
const digits = (min: number, max: number) =>
  fc.array(fc.constantFrom(..."0123456789"), {
    minLength: min,
    maxLength: max,
  }).map((a) => a.join(""));
const clientTime = fc.tuple(
  digits(1, 12),
  fc.option(digits(1, 9), { nil: undefined }),
).map(([i, f]) => (f === undefined ? i : `${i}.${f}`));
const degrees = (max: number) =>
  fc.tuple(
    fc.constantFrom("+", "-"),
    fc.integer({ min: 0, max: max - 1 }),
    fc.option(digits(1, 6), { nil: undefined }),
  ).map(([s, d, f]) => `${s}${d}${f === undefined ? "" : "." + f}`);
const location = fc.tuple(degrees(90), degrees(180)).map(([a, b]) => a + b);
const NOW = 1_800_000_000_000_000_000n;
const NODES = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];
/** A record a node of the herd could write. */
const record = fc.tuple(
  fc.constantFrom(...NODES),
  clientId,
  location,
  clientTime,
  fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }),
).map(([node, client, loc, time, jitter]) => {
  const skew = formatSkew(NOW + jitter - parseClientTime(time)!);
  return `AT ${node} ${skew} ${client} ${loc} ${time}`;
});
const bucketList = fc.uniqueArray(fc.integer({ min: 0, max: BUCKETS - 1 }), {
  minLength: 1,
  maxLength: 40,
}).map((a) => a.sort((x, y) => x - y));
const haveEntry = fc.record({
  client: clientId,
  time: clientTime,
  hash: hex(8),
});
const digestText = fc.array(record, { maxLength: 5 }).map((rs) => {
  const d = new Digest();
  for (const r of rs) d.replace(r.split(" ")[3], undefined, r);
  return d.encode();
});

/** Every message, valid by construction. */
const message: fc.Arbitrary<BusMessage> = fc.oneof(
  fc.record({ kind: fc.constant("hello" as const), node: nodeName, nonce }),
  fc.record({
    kind: fc.constant("welcome" as const),
    node: nodeName,
    nonce,
    proof,
  }),
  fc.record({ kind: fc.constant("proof" as const), proof }),
  fc.constant({ kind: "ok" as const }),
  fc.record({ kind: fc.constant("refused" as const), reason }),
  fc.record({
    kind: fc.constant("records" as const),
    records: fc.array(record, { minLength: 1, maxLength: 8 }),
  }),
  fc.record({ kind: fc.constant("sum" as const), root: hex(16) }),
  fc.constant({ kind: "same" as const }),
  fc.record({ kind: fc.constant("buckets" as const), digest: digestText }),
  fc.record({ kind: fc.constant("diff" as const), buckets: bucketList }),
  fc.record({
    kind: fc.constant("have" as const),
    entries: fc.array(haveEntry, { minLength: 1, maxLength: 6 }),
  }),
  fc.constant({ kind: "have-end" as const }),
  fc.record({
    kind: fc.constant("synced" as const),
    count: fc.integer({ min: 0, max: busLimits.maxCount }),
  }),
);

/** Small edits that keep a body close to valid: most of them make it invalid. */
const mutation = fc.oneof(
  fc.record({
    op: fc.constant("insert" as const),
    at: fc.nat(),
    c: fc.constantFrom(" ", "\n", "x", "0", ",", "-", "\x00", "\xff"),
  }),
  fc.record({ op: fc.constant("delete" as const), at: fc.nat() }),
  fc.record({
    op: fc.constant("replace" as const),
    at: fc.nat(),
    c: fc.constantFrom(" ", "\n", "X", "9", ",", "+", "\t"),
  }),
  fc.record({
    op: fc.constant("suffix" as const),
    c: fc.constantFrom(" ", "\n", " x", ",1", "\r"),
  }),
);

function mutate(
  body: string,
  m: { op: string; at?: number; c?: string },
): string {
  const at = (m.at ?? 0) % (body.length + 1);
  switch (m.op) {
    case "insert":
      return body.slice(0, at) + m.c + body.slice(at);
    case "delete":
      return body.slice(0, at) + body.slice(at + 1);
    case "replace":
      return body.slice(0, at) + m.c + body.slice(at + 1);
    default:
      return body + m.c;
  }
}

// ---- codec ------------------------------------------------------------------------------

Deno.test("codec: every message survives format then parse unchanged", () => {
  fc.assert(
    fc.property(message, (m) => {
      // fast-check builds records without a prototype; compare plain copies.
      assert.deepEqual(
        parseMessage(formatMessage(m)),
        JSON.parse(JSON.stringify(m)),
      );
    }),
    RUNS,
  );
});

Deno.test("codec: a body parses only to the message that formats back to it (no second spelling)", () => {
  fc.assert(
    fc.property(message, mutation, (m, edit) => {
      const body = mutate(formatMessage(m), edit);
      const parsed = parseMessage(body);
      if (parsed !== null) assert.equal(formatMessage(parsed), body);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("codec: malformed bodies are refused, one example per rule", () => {
  const n = "0123456789abcdef0123456789abcdef";
  const bad = [
    "",
    "HELLO",
    "HELLO Ball",
    `HELLO Ball ${n} extra`,
    `HELLO  Ball ${n}`,
    `HELLO Ball ${n.toUpperCase()}`,
    `HELLO Ball ${n.slice(1)}`,
    `HELLO -Ball ${n}`,
    `HELLO ${"a".repeat(65)} ${n}`,
    `hello Ball ${n}`,
    `WELCOME Ball ${n} +`,
    `WELCOME Ball ${n} ${"a".repeat(63)}`,
    "PROOF",
    "PROOF - -",
    "OK ",
    "REFUSED",
    "REFUSED ",
    "REFUSED  padded",
    "REFUSED tab\there",
    `REFUSED ${"r".repeat(201)}`,
    "REFUSED caf\xe9",
    "RECORDS\n",
    "RECORDS\nAT Ball +0.000000000 c +1+1 1\n",
    "RECORDS\nIAMAT c +1+1 1",
    "SUM 0123",
    "SUM 0123456789ABCDEF",
    "SAME ",
    "BUCKETS abc",
    `BUCKETS ${"A".repeat(10923)}!`,
    "DIFF ",
    "DIFF 1,1",
    "DIFF 2,1",
    "DIFF 01",
    "DIFF 1024",
    "DIFF 1,,2",
    "DIFF -1",
    "HAVE",
    "HAVE c 1",
    "HAVE c 1 0123456",
    "HAVE c 1.0000000001 01234567",
    "HAVE c -1 01234567",
    "HAVE c\x00 1 01234567",
    "HAVE-END x",
    "SYNCED",
    "SYNCED -1",
    "SYNCED 01",
    "SYNCED 4294967296",
    "SYNCED 1e3",
    "NOPE",
  ];
  for (const body of bad) {
    assert.equal(parseMessage(body), null, JSON.stringify(body.slice(0, 80)));
  }
});

Deno.test("codec: lists are bounded: RECORDS, HAVE and DIFF past their limits are refused", () => {
  const rec = "AT Ball +0.000000000 c +1+1 1";
  const records = (n: number) => `RECORDS\n${Array(n).fill(rec).join("\n")}`;
  assert.notEqual(parseMessage(records(busLimits.recordsPerFrame)), null);
  assert.equal(parseMessage(records(busLimits.recordsPerFrame + 1)), null);
  const have = (n: number) => `HAVE ${Array(n).fill("c 1 01234567").join(" ")}`;
  assert.notEqual(parseMessage(have(busLimits.haveEntries)), null);
  assert.equal(parseMessage(have(busLimits.haveEntries + 1)), null);
  const all = Array.from({ length: BUCKETS }, (_, i) => i);
  assert.equal(parseMessage(`DIFF ${all.join(",")}`)?.kind, "diff");
  assert.equal(parseMessage(`DIFF ${all.join(",")},1024`), null);
  // A HAVE time as long as a client line allows, and no longer.
  const long = "1".repeat(busLimits.clientLineBytes);
  assert.notEqual(parseMessage(`HAVE c ${long} 01234567`), null);
  assert.equal(parseMessage(`HAVE c ${long}1 01234567`), null);
});

Deno.test("codec: formatting a control message that the parser would refuse throws", () => {
  assert.throws(() =>
    formatMessage({ kind: "hello", node: "a b", nonce: "x" })
  );
  assert.throws(() => formatMessage({ kind: "refused", reason: "" }));
  assert.throws(() => formatMessage({ kind: "diff", buckets: [2, 1] }));
});

Deno.test("codec: random bytes are refused or parse to a message that formats back to them", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const body = String.fromCharCode(...bytes);
      const m = parseMessage(body);
      if (m !== null) assert.equal(formatMessage(m), body);
    }),
    { numRuns: 2000 },
  );
});

// ---- frames -----------------------------------------------------------------------------

/** The frames of `bodies`, one after another, as a peer's stream. */
function frameStream(bodies: Uint8Array[]): Uint8Array {
  const frames = bodies.map(encodeFrame);
  const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let off = 0;
  for (const f of frames) {
    all.set(f, off);
    off += f.length;
  }
  return all;
}

Deno.test("frames: a stream of frames split anywhere decodes to the same bodies", () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 10 }),
      fc.array(fc.integer({ min: 1, max: 64 }), {
        minLength: 1,
        maxLength: 20,
      }),
      (bodies, cuts) => {
        const all = frameStream(bodies);
        const d = new FrameDecoder(300);
        const got: Uint8Array[] = [];
        let at = 0;
        for (let i = 0; at < all.length; i++) {
          const n = cuts[i % cuts.length];
          const r = d.push(all.subarray(at, at + n));
          assert.equal(r.error, null);
          got.push(...r.frames);
          at += n;
        }
        assert.deepEqual(got.map((b) => [...b]), bodies.map((b) => [...b]));
        assert.equal(d.pending, 0);
      },
    ),
    RUNS,
  );
});

Deno.test("frames: with views, a stream read into one reused buffer still decodes to the same bodies, and a whole frame is a view", () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 300 }), {
        minLength: 1,
        maxLength: 30,
      }),
      fc.array(fc.integer({ min: 1, max: 64 }), {
        minLength: 1,
        maxLength: 20,
      }),
      (bodies, cuts) => {
        const all = frameStream(bodies);
        // As BusChannel reads: every chunk into the same buffer, each frame done with (here
        // copied out) before the next read overwrites it.
        const buf = new Uint8Array(64);
        const d = new FrameDecoder(300, true);
        const got: number[][] = [];
        let at = 0;
        for (let i = 0; at < all.length; i++) {
          const piece = all.subarray(at, at + cuts[i % cuts.length]);
          buf.fill(0xee);
          buf.set(piece);
          const r = d.push(buf.subarray(0, piece.length));
          assert.equal(r.error, null);
          for (const f of r.frames) got.push([...f]);
          at += piece.length;
        }
        assert.deepEqual(got, bodies.map((b) => [...b]));
        assert.equal(d.pending, 0);
      },
    ),
    RUNS,
  );
  // A frame whole in its chunk: a view with views, a copy without.
  const chunk = encodeFrame(new Uint8Array([1, 2, 3]));
  const [view] = new FrameDecoder(16, true).push(chunk).frames;
  assert.equal(view.buffer, chunk.buffer);
  assert.deepEqual([...view], [1, 2, 3]);
  const [copy] = new FrameDecoder(16).push(chunk).frames;
  assert.notEqual(copy.buffer, chunk.buffer);
});

Deno.test("frames: a length over the bound is refused before any of its body is held", () => {
  const d = new FrameDecoder(16 * 1024);
  // "HERD" read as a length: 1.2 GB.
  const r = d.push(new TextEncoder().encode("HERD HELLO Ball 00\n"));
  assert.deepEqual(r.frames, []);
  assert.match(r.error!, /over the bound of 16384/);
  assert.equal(d.pending, 0);
  // A frame exactly at the bound passes.
  const ok = new FrameDecoder(8);
  assert.equal(ok.push(encodeFrame(new Uint8Array(8))).frames.length, 1);
  assert.match(ok.push(encodeFrame(new Uint8Array(9))).error!, /9 bytes/);
});

// ---- records checked like client lines --------------------------------------------------

const nodes = new Set(NODES);
const LIMIT = 16 * 1024;

Deno.test("record check: every record a node could write passes", () => {
  fc.assert(
    fc.property(record, (r) => {
      assert.equal(recordProblem(r, nodes, LIMIT), null, r);
    }),
    RUNS,
  );
});

Deno.test("record check: each field past its IAMAT limit, and each malformed field, is refused with its reason", () => {
  const ok =
    "AT Alford +0.263873386 kiwi +34.068930-118.445127 1520023934.918963997";
  assert.equal(recordProblem(ok, nodes, LIMIT), null);
  const cases: [string, string][] = [
    ["AT Mallory +0.263873386 kiwi +34-118 1", "unknown node"],
    [`AT Alford +0.263873386 ${"c".repeat(257)} +34-118 1`, "bad client id"],
    [`AT Alford +0.263873386 ${"c".repeat(256)} +34-118 1`, "ok"],
    [
      `AT Alford +0.263873386 kiwi +34.${"0".repeat(LIMIT)}-118 1`,
      "longer than a client line",
    ],
    [
      `AT Alford -${"9".repeat(70000)}.000000000 kiwi +34-118 ${
        "9".repeat(70000)
      }`,
      "longer than a client line",
    ],
    [`AT Alford +0.263873386 kiwi +34-118 1.${"0".repeat(10)}`, "bad time"],
    ["AT Alford +0.263873386 kiwi +91-118 1", "bad location"],
    ["AT Alford +0.263873386 kiwi 34-118 1", "bad location"],
    ["AT Alford +0.263873386 kiwi +34-118 -1", "bad time"],
    ["AT Alford +0.26387338 kiwi +34-118 1", "bad skew"],
    ["AT Alford 0.263873386 kiwi +34-118 1", "bad skew"],
    ["AT Alford +00.263873386 kiwi +34-118 1", "bad skew"],
    ["AT Alford -0.000000000 kiwi +34-118 1", "bad skew"],
    [`AT Alford +${"1".repeat(22)}.000000000 kiwi +34-118 1`, "bad skew"],
    [
      `AT Alford -${"1".repeat(31)}.000000000 kiwi +34-118 ${"1".repeat(30)}`,
      "ok",
    ],
    ["AT Alford +0.263873386 kiwi +34-118", "malformed"],
    ["AT  Alford +0.263873386 kiwi +34-118 1", "malformed"],
    ["AT Alford +0.263873386 kiwi +34-118 1 extra", "malformed"],
    ["IAMAT kiwi +34-118 1 x y", "malformed"],
    ["AT Alford +0.263873386 ki\x00wi +34-118 1", "bad client id"],
  ];
  for (const [line, want] of cases) {
    assert.equal(
      recordProblem(line, nodes, LIMIT) ?? "ok",
      want,
      line.slice(0, 60),
    );
  }
});

Deno.test("record check: the one-pass fast path agrees with the full check on valid records and near misses", () => {
  // Pieces at the edges of what the fast path takes (90 and 180 degrees, 20 and 21 skew
  // digits, -0 skews, 256 and 257 byte ids, non-ASCII ids, doubled spaces, missing fields).
  const piece = (xs: string[]) => fc.constantFrom(...xs);
  const line = fc.tuple(
    piece(["AT", "AT", "at", "IAMAT"]),
    piece(["Alford", "Ball", "Mallory", "", "Alford\t"]),
    piece([
      "+0.263873386",
      "-0.000000000",
      "+0.000000000",
      "-12.000000001",
      "+00.263873386",
      "+0.26387338",
      `+${"9".repeat(20)}.000000000`,
      `-${"9".repeat(21)}.000000000`,
      "0.263873386",
    ]),
    piece([
      "kiwi",
      "c".repeat(256),
      "c".repeat(257),
      "k\u00e9",
      "\xc3\xa9",
      "ki\x7fwi",
      "~!",
    ]),
    piece([
      "+34-118",
      "+34.068930-118.445127",
      "+89.999+179.999",
      "+90-180",
      "+90.0-180.000",
      "+90.0001-1",
      "-1-180.0001",
      "+090+0180",
      "+9+18",
      "+100+1",
      "+1+1000",
      "+1.-1",
      "34-118",
      "+34",
    ]),
    piece([
      "1",
      "1520023934.918963997",
      "1.0000000000",
      "01",
      "-1",
      "1.",
      `${"9".repeat(25)}`,
    ]),
    piece([" ", " ", "  "]),
  ).map(([at, node, skew, client, loc, time, sep]) =>
    [at, node, skew, client, loc, time].join(sep)
  );
  fc.assert(
    fc.property(line, fc.integer({ min: -1, max: 1 }), (l, off) => {
      // The client line these fields need, give or take a byte: the bound's edge.
      const f = l.split(" ");
      const need = f.length === 6
        ? f[3].length + f[4].length + f[5].length + 8
        : 40;
      for (const limit of [LIMIT, need + off]) {
        assert.equal(
          recordProblem(l, nodes, limit),
          fullCheck(l, nodes, limit),
          `${l} within ${limit}`,
        );
      }
    }),
    { numRuns: 3000 },
  );
  fc.assert(
    fc.property(record, (r) => {
      assert.equal(recordProblem(r, nodes, LIMIT), fullCheck(r, nodes, LIMIT));
    }),
    RUNS,
  );
});

// ---- the secret -------------------------------------------------------------------------

Deno.test("secret rule: 128 bits by its form (hex 32 digits, base64 22 characters, else 16 bytes)", () => {
  const cases: [string, number, boolean][] = [
    ["0123456789abcdef0123456789abcde", 124, false],
    ["0123456789abcdef0123456789abcdef", 128, true],
    ["ABCDEFGHIJKLMNOPQRSTU", 126, false],
    ["ABCDEFGHIJKLMNOPQRSTUV", 132, true],
    ["abc_def-ghi_jkl-mnop==", 120, false],
    ["pass phrase 15b", 120, false],
    ["pass phrase, 16b", 128, true],
    ["\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9 x!", 136, true],
  ];
  for (const [secret, bits, ok] of cases) {
    assert.equal(secretBits(secret), bits, secret);
    assert.equal(secretProblem(secret) === null, ok, secret);
  }
  const problem = secretProblem("short-secret")!;
  assert.ok(!problem.includes("short-secret"), "the refusal never quotes it");
  assert.doesNotMatch(problem, /\n/);
});

Deno.test("newSecret: 43 base64url characters (256 bits), accepted by the rule, never twice the same", () => {
  const seen = new Set<string>();
  const counts = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const s = newSecret();
    assert.match(s, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(secretProblem(s), null);
    assert.ok(!seen.has(s));
    seen.add(s);
    for (const c of s.slice(0, 42)) counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  // 8,400 characters over a 64-letter alphabet: each letter about 131 times. A generator
  // that is not random (a constant, a counter) fails this by far.
  assert.ok(counts.size >= 60, `alphabet used: ${counts.size}`);
  for (const [c, n] of counts) assert.ok(n < 260, `${c} appears ${n} times`);
});
