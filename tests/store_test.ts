/**
 * Durable state: the store's record order, its group commit to a KV write-ahead log within
 * KV's limits, snapshots, crash recovery, background loading, and a node that restarts with
 * its records (those it was told directly and those it learned by flood).
 *
 * @module
 */

import assert from "assert";
import { bytesToString, stringToBytes } from "../lib/bytes.ts";
import { BUCKETS, Digest, fnv1a, fnv1aBytes } from "../lib/digest.ts";
import { NodeLog } from "../lib/log.ts";
import { HerdNode } from "../lib/node.ts";
import { clientOf, timeOf } from "../lib/record.ts";
import { Store, STORE_DEFAULTS } from "../lib/store.ts";
import {
  decodeMeta,
  encodeMeta,
  fits,
  LinePacker,
  unpack,
} from "../lib/store/codec.ts";
import { lineEnd, lineIn, RecordTable } from "../lib/store/table.ts";
import { clientHash } from "../lib/digest.ts";
import fc from "fast-check";
import { storeKeys } from "../lib/store/keys.ts";
import {
  Client,
  exchange,
  fixedClock,
  makeTopology,
  measuredKv,
  StubPlaces,
  tempDir,
  TestHerd,
  waitFor,
} from "./helpers.ts";

/** An AT line for `client` at client time `time`. */
function at(
  client: string,
  time: string,
  node = "Alford",
  location = "+34.068930-118.445127",
): string {
  return `AT ${node} +0.263873386 ${client} ${location} ${time}`;
}

/** A temporary directory, removed at the end of the scope. */
/** A KV on `path`, closed at the end of the scope (or earlier by hand). */
async function openKv(path: string): Promise<Deno.Kv & Disposable> {
  const kv = await Deno.openKv(path);
  let closed = false;
  const close = kv.close.bind(kv);
  return Object.assign(kv, {
    close() {
      if (!closed) close();
      closed = true;
    },
    [Symbol.dispose]() {
      if (!closed) close();
      closed = true;
    },
  });
}

/** A store on `kv` whose `close()` runs at the end of the scope. */
async function openStore(
  kv: Deno.Kv,
  opts: Parameters<typeof Store.open>[1] = {},
): Promise<Store & AsyncDisposable> {
  const store = await Store.open(kv, opts);
  return Object.assign(store, {
    [Symbol.asyncDispose]: () => store.close(),
  });
}

/** Every `[key, value]` under `prefix`, values as byte strings when they are bytes. */
async function listAll(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
): Promise<[Deno.KvKey, unknown][]> {
  const out: [Deno.KvKey, unknown][] = [];
  for await (const e of kv.list({ prefix })) {
    out.push([
      e.key,
      e.value instanceof Uint8Array ? bytesToString(e.value) : e.value,
    ]);
  }
  return out;
}

/** The digest of the records in `text` (lines joined by `\n`), computed line by line. */
function digestOf(text: string): Digest {
  const d = new Digest();
  for (const line of text.split("\n")) {
    d.replace(clientOf(line), undefined, line);
  }
  return d;
}

/** `kv` whose range reads (`list` with a `start`: what a load reads) wait for `held`. */
function holdRangeReads(
  kv: Deno.Kv,
  held: { promise: Promise<void> },
): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "list") {
        return (sel: Deno.KvListSelector, opts?: Deno.KvListOptions) => {
          if (!("start" in sel)) return target.list(sel, opts);
          return (async function* () {
            await held.promise;
            yield* target.list(sel, opts);
          })();
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** Resolves after the current macrotask and its microtasks. */
function nextTurn(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

// ---------------------------------------------------------------------------------------
// Record order.

Deno.test("Store: a first record is accepted and read back byte for byte", async () => {
  using kv = await openKv(":memory:");
  await using store = await openStore(kv);
  await store.loaded;
  // A UTF-8 client id, as the byte string the wire gives.
  const client = bytesToString(new TextEncoder().encode("café.example"));
  const line = at(client, "1520023934.918963997");
  assert.equal(store.offer(line), true);
  assert.equal(store.get(client), line);
  assert.equal(store.size, 1);
  assert.equal(store.get("someone-else"), undefined);
});

Deno.test("Store: a newer record replaces the held one; an older or identical one never does", async () => {
  using kv = await openKv(":memory:");
  await using store = await openStore(kv);
  await store.loaded;
  const t5 = at("kiwi", "5");
  const t6 = at("kiwi", "5.000000001");
  assert.equal(store.offer(t5), true);
  assert.equal(store.offer(t6), true);
  assert.equal(store.get("kiwi"), t6);
  assert.equal(store.offer(t5), false, "older");
  assert.equal(store.offer(at("kiwi", "4.999999999")), false, "older");
  assert.equal(store.offer(t6), false, "identical");
  assert.equal(store.get("kiwi"), t6);
  // Equal client times: the greater line as bytes wins, on every node alike.
  const ball = at("kiwi", "5.000000001", "Ball");
  const welsh = at("kiwi", "5.000000001", "Welsh");
  assert.equal(store.offer(welsh), true);
  assert.equal(store.offer(ball), false);
  assert.equal(store.get("kiwi"), welsh);
  // Same instant written differently ("7.5" and "7.50") is still one time.
  assert.equal(store.offer(at("lime", "7.50", "Ball")), true);
  assert.equal(store.offer(at("lime", "7.5", "Alford")), false);
});

Deno.test("Store: an older record offered after a newer one never reaches KV, and the newer one is what a reopen finds", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/s.kv`;
  const newer = at("kiwi", "1700000000.2");
  const older = at("kiwi", "1700000000.1");
  {
    using kv = await openKv(path);
    await using store = await openStore(kv);
    await store.loaded;
    assert.equal(store.offer(newer), true);
    await store.durable()!.promise;
    assert.equal(store.offer(older), false);
    assert.equal(store.durable(), null, "nothing left to wait for");
    assert.deepEqual(await listAll(kv, ["wal"]), [[["wal", 0], newer]]);
  }
  using kv = await openKv(path);
  await using store = await openStore(kv);
  await store.loaded;
  assert.equal(store.get("kiwi"), newer);
});

Deno.test("Store: replaying KV never lets an older record overwrite a newer one, whatever order the log and snapshot hold them in", async (t) => {
  const newer = at("kiwi", "1700000000.000000002");
  const older = at("kiwi", "1700000000.000000001");
  const cases: [string, [Deno.KvKey, unknown][]][] = [
    ["newer then older in the log", [
      [["wal", 0], newer],
      [["wal", 1], older],
    ]],
    ["both in one log value, newer first", [[
      ["wal", 0],
      `${newer}\n${older}`,
    ]]],
    ["newer in the snapshot, older in the log after it", [
      [["meta", "snap"], { gen: 1, chunks: 1, walFrom: 0 }],
      [["snap", 1, 0], newer],
      [["wal", 0], older],
    ]],
    ["older in the snapshot, newer in the log after it", [
      [["meta", "snap"], { gen: 1, chunks: 1, walFrom: 0 }],
      [["snap", 1, 0], older],
      [["wal", 0], newer],
    ]],
  ];
  for (const [what, entries] of cases) {
    await t.step(what, async () => {
      using kv = await openKv(":memory:");
      for (const [k, v] of entries) {
        await kv.set(k, typeof v === "string" ? stringToBytes(v) : v);
      }
      await using store = await openStore(kv);
      await store.loaded;
      assert.equal(store.get("kiwi"), newer);
      assert.equal(store.size, 1);
    });
  }
});

// ---------------------------------------------------------------------------------------
// Group commit.

Deno.test("Store: a lazy record (a neighbor's) waits for its commit until a client's record or a reader needs it, and a close commits it", async () => {
  using kv = await openKv(":memory:");
  // A wait far longer than the test: only an urge or the close can end it.
  const store = await Store.open(kv, { lazyCommitMs: 600_000 });
  await store.loaded;
  assert.equal(store.offer(at("a", "1"), "a", true), true);
  for (let i = 0; i < 5; i++) await nextTurn();
  assert.equal(store.stats().commits, 0, "a lazy batch waits");
  assert.equal(store.stats().pendingRecords, 1);
  // A reader asks for durability: the batch is committed now.
  await store.durable()!.promise;
  assert.equal(store.stats().commits, 1);
  // A client's record ends the wait of lazy records queued before it.
  assert.equal(store.offer(at("b", "1"), "b", true), true);
  for (let i = 0; i < 5; i++) await nextTurn();
  assert.equal(store.stats().commits, 1);
  assert.equal(store.offer(at("c", "1"), "c"), true);
  for (let i = 0; i < 50 && store.stats().commits < 2; i++) await nextTurn();
  assert.equal(store.stats().commits, 2);
  assert.equal(store.stats().pendingRecords, 0);
  // A lazy record still waiting when the store closes is committed by the close.
  assert.equal(store.offer(at("d", "1"), "d", true), true);
  await store.close();
  assert.equal(store.stats().commits, 3);
  const again = await Store.open(kv);
  await again.loaded;
  assert.deepEqual(["a", "b", "c", "d"].map((c) => again.get(c)), [
    at("a", "1"),
    at("b", "1"),
    at("c", "1"),
    at("d", "1"),
  ]);
  await again.close();
});

Deno.test("Store: records offered in one turn go to KV in one atomic commit, and their gate opens only once it has landed", async () => {
  using raw = await openKv(":memory:");
  const m = measuredKv(raw);
  let release!: () => void;
  m.setGate(() => new Promise<void>((r) => (release = r)));
  await using store = await openStore(m.kv);
  await store.loaded;
  assert.equal(store.durable(), null);
  const lines = Array.from(
    { length: 500 },
    (_, i) => at(`client-${i}`, `1700000000.${i}`),
  );
  for (const l of lines) assert.equal(store.offer(l), true);
  const gate = store.durable()!;
  assert.notEqual(gate, null);
  await nextTurn();
  await nextTurn();
  // The commit has been asked for and is held: nothing is acknowledged, nothing is in KV.
  assert.equal(gate.done, false);
  assert.equal(store.stats().commits, 0);
  assert.deepEqual(await listAll(raw, ["wal"]), []);
  assert.equal(
    store.durable(),
    gate,
    "the batch in flight is what a reply waits for",
  );
  release();
  await gate.promise;
  assert.equal(store.stats().commits, 1);
  assert.deepEqual(m.commits.map((c) => c.mutations), [1]);
  assert.deepEqual(await listAll(raw, ["wal"]), [[
    ["wal", 0],
    lines.join("\n"),
  ]]);
  assert.equal(store.durable(), null);
});

Deno.test("Store: records offered while a commit is in flight wait for the next one; one commit is in flight at a time", async () => {
  using raw = await openKv(":memory:");
  const m = measuredKv(raw);
  const releases: (() => void)[] = [];
  m.setGate(() => new Promise<void>((r) => releases.push(r)));
  await using store = await openStore(m.kv);
  await store.loaded;
  store.offer(at("a", "1"));
  const first = store.durable()!;
  await nextTurn();
  assert.equal(releases.length, 1);
  store.offer(at("b", "2"));
  store.offer(at("c", "3"));
  const second = store.durable()!;
  assert.notEqual(second, first);
  await nextTurn();
  assert.equal(
    releases.length,
    1,
    "no second commit while the first is in flight",
  );
  releases[0]();
  await first.promise;
  assert.equal(second.done, false);
  await waitFor(() => releases.length === 2, 2000, "the second commit");
  assert.equal(second.done, false);
  releases[1]();
  await second.promise;
  assert.equal(store.stats().commits, 2);
  assert.deepEqual(await listAll(raw, ["wal"]), [
    [["wal", 0], at("a", "1")],
    [["wal", 1], `${at("b", "2")}\n${at("c", "3")}`],
  ]);
});

Deno.test("Store: a batch too big for one commit is split within KV's limits, with 256-byte client ids, and all of it reloads", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/s.kv`;
  // 256 bytes, some of them UTF-8 multibyte: the limits are in bytes, not characters.
  const id = (i: number) =>
    bytesToString(new TextEncoder().encode(`é-${i}-`)).padEnd(256, "x");
  const n = 20_000;
  const lines = Array.from(
    { length: n },
    (_, i) => at(id(i), `1700000000.${i}`),
  );
  {
    using raw = await openKv(path);
    const m = measuredKv(raw);
    await using store = await openStore(m.kv, {
      snapshotMinRecords: Number.MAX_SAFE_INTEGER,
    });
    await store.loaded;
    for (const l of lines) store.offer(l);
    await store.durable()!.promise;
    const walCommits = m.commits.length;
    // ~6.6 MB in one turn: several commits, each within KV's limits.
    assert.ok(walCommits >= 9, `${walCommits} commits`);
    await store.snapshot();
    assert.ok(m.commits.length > walCommits);
    for (const c of m.commits) {
      assert.ok(c.mutations <= 1000, `${c.mutations} mutations`);
      assert.ok(c.bytes <= 800 * 1000, `${c.bytes} bytes in one commit`);
      assert.ok(c.largestValue <= 65_536, `a ${c.largestValue}-byte value`);
    }
    assert.equal(store.stats().commitErrors, 0);
  }
  using kv = await openKv(path);
  await using store = await openStore(kv);
  await store.loaded;
  assert.equal(store.size, n);
  for (let i = 0; i < n; i += 997) assert.equal(store.get(id(i)), lines[i]);
  assert.equal(store.get(id(n - 1)), lines[n - 1]);
});

// ---------------------------------------------------------------------------------------
// Log, snapshots and crashes.

Deno.test("Store: a reopen replays the log: every record, the newest of each client", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/s.kv`;
  const want = new Map<string, string>();
  {
    using kv = await openKv(path);
    await using store = await openStore(kv);
    await store.loaded;
    for (let turn = 0; turn < 5; turn++) {
      for (let i = 0; i < 300; i++) {
        const l = at(
          `client-${(turn * 200 + i) % 700}`,
          `${1700000000 + turn}.${i}`,
        );
        store.offer(l);
        want.set(`client-${(turn * 200 + i) % 700}`, l);
      }
      await store.durable()!.promise;
    }
    assert.equal(store.stats().commits, 5);
  }
  using kv = await openKv(path);
  await using store = await openStore(kv);
  await store.loaded;
  assert.deepEqual(
    new Map([...store.records()].map((l) => [l.split(" ")[3], l])),
    want,
  );
  assert.equal(store.stats().walRecords, 1500);
  assert.equal(store.stats().snapshots, 0);
});

Deno.test("Store: once the log outgrows the state it is folded into a snapshot, the folded log is deleted, and a reopen reads both", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/s.kv`;
  const log = await NodeLog.open({ node: "A", path: null, console: false });
  const want = new Map<string, string>();
  const offer = (store: Store, client: string, time: string) => {
    const l = at(client, time);
    assert.equal(store.offer(l), true);
    want.set(client, l);
  };
  {
    using kv = await openKv(path);
    await using store = await openStore(kv, {
      log,
      snapshotMinRecords: 100,
      snapshotQuietMs: 0,
    });
    await store.loaded;
    for (let i = 0; i < 60; i++) offer(store, `c${i}`, "10");
    await store.durable()!.promise;
    assert.equal(store.stats().snapshots, 0, "60 records: below the minimum");
    for (let i = 0; i < 60; i++) offer(store, `c${i}`, "11");
    await store.durable()!.promise;
    await waitFor(() => store.stats().snapshots === 1, 5000, "a snapshot");
    for (let i = 50; i < 70; i++) offer(store, `c${i}`, "12");
    await store.durable()!.promise;
    const meta = (await kv.get<Record<string, unknown>>(["meta", "snap"]))
      .value!;
    assert.deepEqual(
      { gen: meta.gen, chunks: meta.chunks, walFrom: meta.walFrom },
      { gen: 1, chunks: 1, walFrom: 2 },
    );
    assert.equal(meta.records, 60);
    assert.deepEqual(
      meta.digest,
      digestOf((await listAll(kv, ["snap"]))[0][1] as string).toBytes(),
      "the snapshot's digest is that of exactly its lines",
    );
    assert.deepEqual((await listAll(kv, ["wal"])).map(([k]) => k), [[
      "wal",
      2,
    ]]);
    const snap = await listAll(kv, ["snap"]);
    assert.equal(snap.length, 1);
    assert.equal((snap[0][1] as string).split("\n").length, 60);
    assert.equal(store.stats().walRecords, 20);
  }
  assert.ok(log.memory.some((l) => JSON.parse(l).event === "snapshot"));
  using kv = await openKv(path);
  await using store = await openStore(kv, { log });
  await store.loaded;
  assert.deepEqual(
    new Map([...store.records()].map((l) => [l.split(" ")[3], l])),
    want,
  );
  assert.equal(store.size, 70);
});

/**
 * A store that folds at 100 records and after 20 ms of quiet by a clock the test moves
 * (`clock.ms`), logging to memory: `folds()` counts finished folds (logged after the folded
 * log is deleted), and `round()` updates the same 60 clients once more and waits for them.
 */
async function foldingStore(kv: Deno.Kv) {
  const log = await NodeLog.open({ node: "A", path: null, console: false });
  const clock = { ms: 0 };
  const store = await openStore(kv, {
    log,
    snapshotMinRecords: 100,
    snapshotQuietMs: 20,
    now: () => clock.ms,
  });
  await store.loaded;
  let time = 10;
  return {
    store,
    clock,
    folds: () =>
      log.memory.filter((l) => JSON.parse(l).event === "snapshot").length,
    round: async () => {
      time++;
      for (let i = 0; i < 60; i++) store.offer(at(`c${i}`, String(time)));
      await store.durable()!.promise;
    },
  };
}

Deno.test("Store: a fold that is due waits until commits have stopped for the quiet time, and starts anyway once the log is twice its due size", async () => {
  using kv = await Deno.openKv(":memory:");
  const { store, clock, folds, round } = await foldingStore(kv);
  await using _ = store;
  // 60 clients, one round of updates each: 120 records in the log, due at 100.
  await round();
  await round();
  // The clock stands still just after a commit: every quiet check (each 20 ms) finds the
  // node busy, so nothing is folded.
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(folds(), 0, "folded while busy");
  // Quiet for 20 ms by the clock: the next check folds.
  clock.ms += 20;
  await waitFor(() => folds() === 1, 5000, "a quiet fold");
  assert.equal(store.stats().walRecords, 0);
  // Busy again, the clock still: at 180 records the fold waits; at 240, over twice the
  // due 100, it starts.
  for (let n = 0; n < 3; n++) await round();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(folds(), 1, "folded under twice the due size");
  await round();
  await waitFor(() => folds() === 2, 5000, "a forced fold");
});

Deno.test("Store: records that land during a fold leave the log due again, and once quiet the next fold starts with no further commit", async () => {
  using raw = await Deno.openKv(":memory:");
  const m = measuredKv(raw);
  // The fold's chunk commit waits here while the test commits more records.
  const held = Promise.withResolvers<void>();
  let holding = false;
  let reached = false;
  m.setGate((first) => {
    if (!holding || first?.[0] !== "snap") return Promise.resolve();
    reached = true;
    return held.promise;
  });
  const { store, clock, folds, round } = await foldingStore(m.kv);
  await using _ = store;
  await round();
  await round();
  holding = true;
  assert.equal(store.folding, false);
  clock.ms += 20;
  await waitFor(() => reached, 5000, "the fold's chunk commit");
  assert.equal(store.folding, true, "folding while its commit is held");
  // 120 more records while the fold of the first 120 is held.
  const before = m.commits.length;
  await round();
  await round();
  assert.equal(
    m.commits.length,
    before + 2,
    "the log commits pass the held fold",
  );
  held.resolve();
  await waitFor(() => folds() === 1, 5000, "the first fold");
  await waitFor(() => !store.folding, 5000, "the fold's end");
  assert.equal(store.stats().walRecords, 120);
  // No commit comes now: the store itself looks again, and folds once quiet by the clock.
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(folds(), 1, "folded before the quiet time");
  clock.ms += 20;
  await waitFor(() => folds() === 2, 5000, "the fold after the fold");
});

Deno.test("Store: a crash after a snapshot was written but before the folded log was deleted loses nothing, and the next snapshot collects the leftovers", async () => {
  using kv = await openKv(":memory:");
  const put = (key: Deno.KvKey, lines: string[]) =>
    kv.set(key, stringToBytes(lines.join("\n")));
  // The folded log (wal 0..2), still there; the snapshot of it (gen 1, from wal 3); a
  // half-written next snapshot (gen 2 chunks, no meta for it) holding stale lines; and
  // the log since the snapshot.
  await put(["wal", 0], [at("a", "1"), at("b", "1")]);
  await put(["wal", 1], [at("a", "2")]);
  await put(["wal", 2], [at("c", "1")]);
  await kv.set(["meta", "snap"], { gen: 1, chunks: 2, walFrom: 3 });
  await put(["snap", 1, 0], [at("a", "2"), at("b", "1")]);
  await put(["snap", 1, 1], [at("c", "1")]);
  await put(["snap", 2, 0], [at("a", "0"), at("ghost", "9")]);
  await put(["wal", 3], [at("b", "3")]);
  await put(["wal", 4], [at("d", "1")]);
  await using store = await openStore(kv, {
    snapshotMinRecords: Number.MAX_SAFE_INTEGER,
  });
  await store.loaded;
  const want = [at("a", "2"), at("b", "3"), at("c", "1"), at("d", "1")];
  assert.deepEqual([...store.records()].sort(), want);
  assert.equal(
    store.get("ghost"),
    undefined,
    "a snapshot without its meta is ignored",
  );
  await store.snapshot();
  assert.deepEqual(
    await listAll(kv, ["wal"]),
    [],
    "every folded log value is gone",
  );
  assert.deepEqual(await listAll(kv, ["snap"]), [[
    ["snap", 2, 0],
    want.join("\n"),
  ]]);
  assert.deepEqual((await kv.get(["meta", "snap"])).value, {
    gen: 2,
    chunks: 1,
    walFrom: 5,
    records: 4,
    digest: digestOf(want.join("\n")).toBytes(),
  });
});

Deno.test("Store: a load that fails is logged, still settles `loaded`, and never folds the partial state into a snapshot", async () => {
  const log = await NodeLog.open({ node: "A", path: null, console: false });
  using kv = await openKv(":memory:");
  await kv.set(["wal", 0], stringToBytes(at("a", "1")));
  // The load's range reads fail (opening reads by prefix and still works).
  const broken = new Proxy(kv, {
    get(target, prop) {
      if (prop === "list") {
        return (sel: Deno.KvListSelector, opts?: Deno.KvListOptions) => {
          if (!("start" in sel)) return target.list(sel, opts);
          return {
            [Symbol.asyncIterator]: () => ({
              next: () => Promise.reject(new Error("disk on fire")),
            }),
          };
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const store = await Store.open(broken, { log, snapshotMinRecords: 1 });
  await store.loaded;
  assert.equal(store.isLoaded, false);
  const failed = log.memory.map((l) => JSON.parse(l)).find((e) =>
    e.event === "store_load_failed"
  );
  assert.equal(failed?.error, "disk on fire");
  await assert.rejects(store.snapshot(), /not fully loaded/);
  // Records still go to the log: nothing already on disk is folded away or lost.
  store.offer(at("b", "1"));
  await store.durable()!.promise;
  assert.equal(store.stats().snapshots, 0);
  await store.close();
  assert.deepEqual((await listAll(kv, ["wal"])).map(([k]) => k), [
    ["wal", 0],
    ["wal", 1],
  ]);
});

Deno.test("Store: close() abandons a load in progress instead of waiting for it", async () => {
  using kv = await openKv(":memory:");
  const chunk = Array.from({ length: 600 }, (_, i) => at(`c${i}`, "1")).join(
    "\n",
  );
  let op = kv.atomic();
  for (let i = 0; i < 200; i++) {
    op.set(["wal", i], stringToBytes(chunk));
    if (i % 10 === 9) {
      await op.commit();
      op = kv.atomic();
    }
  }
  const store = await Store.open(kv);
  await store.close();
  assert.equal(store.isLoaded, false);
  assert.ok(store.size < 600, `${store.size} loaded`);
});

Deno.test("Store.recordsIn: the records in the buckets asked for, less those marked in skip and those first seen after it was made", async () => {
  using kv = await openKv(":memory:");
  await using store = await openStore(kv);
  const line = (c: string) => `AT A +0.000000000 ${c} +1+1 1`;
  for (const c of ["a", "b", "c"]) assert.ok(store.offer(line(c)));
  const all = new Set(Array.from({ length: BUCKETS }, (_, i) => i));
  assert.deepEqual(store.recordsIn(all), [line("a"), line("b"), line("c")]);
  // A skip array made when two clients were held: "b" is marked, "c" came later.
  assert.deepEqual(store.recordsIn(all, new Uint8Array([0, 1])), [line("a")]);
  assert.deepEqual(store.recordsIn(all, new Uint8Array(3)), [
    line("a"),
    line("b"),
    line("c"),
  ]);
  assert.deepEqual(store.recordsIn(new Set()), []);
});

Deno.test("Store.holdingsIn, timeAt and lineHashAt: what catch-up reads of each record's bytes is what its line gives (property)", async () => {
  // Clients and times as byte strings (UTF-8 bytes one char each), some longer than a chunk
  // holds at its end; records held in chunks, in snapshot values and in loaded values.
  const client = fc.oneof(
    fc.stringMatching(/^[a-z0-9.-]{1,12}$/),
    fc.constantFrom("k\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "x".repeat(300)),
  );
  const time = fc.stringMatching(/^[0-9]{1,12}(\.[0-9]{1,9})?$/);
  const expected = (lines: string[]) =>
    lines.map((l) => ({
      client: clientOf(l),
      time: timeOf(l),
      hash: fnv1a(l, 1),
    }));
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(client, time), { minLength: 1, maxLength: 60 }),
      fc.array(fc.nat(BUCKETS - 1), { maxLength: 40 }),
      async (records, picked) => {
        using kv = await openKv(":memory:");
        const buckets = new Set(picked);
        const all = new Set(Array.from({ length: BUCKETS }, (_, i) => i));
        const half = Math.ceil(records.length / 2);
        {
          await using store = await openStore(kv);
          for (const [c, t] of records.slice(0, half)) store.offer(at(c, t));
          await store.durable()?.promise;
          await store.snapshot(); // held in the snapshot's values
          for (const [c, t] of records.slice(half)) store.offer(at(c, t)); // in chunks
          for (let i = 0; i < store.size; i++) {
            const line = store.lineAt(i);
            assert.equal(store.timeAt(i), timeOf(line));
            assert.equal(store.lineHashAt(i), fnv1a(line, 1));
          }
          for (const b of [buckets, all]) {
            assert.deepEqual(
              [...store.holdingsIn(b)],
              expected(store.recordsIn(b)),
            );
          }
          await store.durable()?.promise;
        }
        await using loaded = await openStore(kv); // in the values a load read
        await loaded.loaded;
        assert.deepEqual(
          [...loaded.holdingsIn(all)],
          expected(loaded.recordsIn(all)),
        );
        assert.equal([...loaded.holdingsIn(all)].length, loaded.size);
        for (let i = 0; i < loaded.size; i++) {
          const line = loaded.lineAt(i);
          assert.equal(loaded.timeAt(i), timeOf(line));
          assert.equal(loaded.lineHashAt(i), fnv1a(line, 1));
        }
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("Store.holdingsIn, timeAt and lineHashAt agree with the string path on lines the node never offers", async () => {
  using kv = await openKv(":memory:");
  await using store = await openStore(kv);
  // Odd lines after a valid one in the same chunk, each under a client of its own: the
  // string path's answer is the reference (a time search must not reach the line before).
  const lines = [
    at("kiwi", "5"),
    "nospaces",
    "",
    "a b",
    "a b c d",
    "AT A +1 c\xc3\xa9 +1+1 7",
  ];
  lines.forEach((line, k) => assert.ok(store.offer(line, `c${k}`)));
  const all = new Set(Array.from({ length: BUCKETS }, (_, i) => i));
  assert.deepEqual(
    [...store.holdingsIn(all)],
    store.recordsIn(all).map((l) => ({
      client: clientOf(l),
      time: timeOf(l),
      hash: fnv1a(l, 1),
    })),
  );
  assert.equal(store.size, lines.length);
  for (let i = 0; i < store.size; i++) {
    const line = store.lineAt(i);
    assert.equal(store.timeAt(i), timeOf(line), JSON.stringify(line));
    assert.equal(store.lineHashAt(i), fnv1a(line, 1));
  }
});

Deno.test("Store.holdingsIn reads each record as it is taken: one replaced meanwhile is listed as it is then, one first seen meanwhile is listed too", async () => {
  using kv = await openKv(":memory:");
  await using store = await openStore(kv);
  for (const c of ["a", "b"]) assert.ok(store.offer(at(c, "1")));
  const all = new Set(Array.from({ length: BUCKETS }, (_, i) => i));
  const listing = store.holdingsIn(all);
  assert.equal(listing.next().value?.client, "a");
  assert.ok(store.offer(at("b", "2"))); // replaced before it is taken
  assert.ok(store.offer(at("c", "1"))); // first seen after the listing began
  assert.deepEqual([...listing].map((h) => [h.client, h.time]), [["b", "2"], [
    "c",
    "1",
  ]]);
});

Deno.test("fnv1aBytes of bytes is fnv1a of the byte string holding them (property)", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 80 }),
      fc.nat(),
      fc.nat(),
      fc.integer({ min: 0, max: 3 }),
      (bytes, a, b, seed) => {
        const from = a % (bytes.length + 1);
        const to = from + (b % (bytes.length - from + 1));
        assert.equal(
          fnv1aBytes(bytes, from, to, seed),
          fnv1a(bytesToString(bytes.subarray(from, to)), seed),
        );
      },
    ),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------------------------------
// A node on its store.

const STUB_JSON = (bound: number) =>
  JSON.stringify(
    {
      html_attributions: [],
      results: Array.from(
        { length: bound },
        (_, i) => ({ name: `place ${i}` }),
      ),
      status: "OK",
    },
    null,
    2,
  );

Deno.test("HerdNode: listens before its 200,000 stored records are loaded, and a WHATSAT sent meanwhile waits for the load instead of answering ?", async () => {
  await using dir = await tempDir();
  const n = 200_000;
  const line = (i: number) => at(`client-${i}`, `${1700000000 + i}.5`);
  const late = at("late-client", "1800000000.5", "Ball");
  {
    using kv = await openKv(`${dir.path}/A.kv`);
    await using store = await openStore(kv, {
      snapshotMinRecords: Number.MAX_SAFE_INTEGER,
    });
    await store.loaded;
    for (let i = 0; i < n; i++) store.offer(line(i));
    await store.durable()!.promise;
    await store.snapshot();
    store.offer(late); // in the log after the snapshot: the last record loaded
    await store.durable()!.promise;
  }
  // The load's range reads wait until the test has sent its WHATSAT: however fast the
  // load, the WHATSAT is sent while it runs.
  const held = Promise.withResolvers<void>();
  const node = new HerdNode({
    name: "A",
    topology: makeTopology(["A"], []),
    dataDir: dir.path,
    places: new StubPlaces(),
    console: false,
    clock: fixedClock(1700000000_000000000n),
    openKv: async (path) => holdRangeReads(await Deno.openKv(path), held),
  });
  try {
    await node.start();
    assert.equal(
      node.store.isLoaded,
      false,
      "start() returned before the load",
    );
    using c = await Client.connect(node.port);
    // An IAMAT older than what is stored, during the load: acknowledged with its own line,
    // and the stored newer record still wins once loaded.
    await c.send("IAMAT client-7 +1+1 1600000000.5\n");
    assert.equal(
      await c.lines(1),
      "AT A +99999999.500000000 client-7 +1+1 1600000000.5\n",
    );
    await c.send("WHATSAT late-client 10 2\n");
    await nextTurn();
    assert.equal(
      node.store.isLoaded,
      false,
      "the WHATSAT was sent during the load",
    );
    held.resolve();
    assert.equal(
      await c.readUntil("\n\n", 1, 10_000),
      `${late}\n${STUB_JSON(2)}\n\n`,
    );
    assert.equal(node.store.isLoaded, true);
    assert.equal(node.store.get("client-7"), line(7));
    await c.send("WHATSAT nobody 10 2\n");
    assert.equal(await c.lines(1), "? WHATSAT nobody 10 2\n");
    assert.equal(node.store.size, n + 1);
  } finally {
    held.resolve();
    await node.stop();
  }
});

Deno.test("HerdNode: a restarted node finds its records, those it was told and those it learned by flood, newest first", async () => {
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
    await herd.startAll();
    const kiwiNew = "AT A +1.000000000 kiwi +34-118 1700000000\n";
    const kiwiOld = "AT A +2.000000000 kiwi +34-118 1699999999\n";
    const lime = "AT B +0.500000000 lime -33.9+151.2 1700000000.5\n";
    assert.equal(
      await exchange(herd.port("A"), "IAMAT kiwi +34-118 1700000000\n"),
      kiwiNew,
    );
    assert.equal(
      await exchange(herd.port("A"), "IAMAT kiwi +34-118 1699999999\n"),
      kiwiOld,
    );
    assert.equal(
      await exchange(herd.port("B"), "IAMAT lime -33.9+151.2 1700000000.5\n"),
      lime,
    );
    await waitFor(
      () =>
        [...herd.nodes.values()].every((n) =>
          n.store.get("kiwi") === kiwiNew.trimEnd() &&
          n.store.get("lime") === lime.trimEnd()
        ),
      5000,
      "both records on both nodes",
    );
    await herd.stopAll();
    // Both nodes share the data directory, each with its own files.
    const files = (await Array.fromAsync(Deno.readDir(dir.path)))
      .map((e) => e.name).filter((f) => !/-(shm|wal)$/.test(f)).sort();
    assert.deepEqual(files, [
      "A.kv",
      "A.lock",
      "A.log",
      "B.kv",
      "B.lock",
      "B.log",
    ]);
    // Each node alone (its neighbor down, so nothing comes back by catch-up).
    for (const name of ["A", "B"]) {
      const node = await herd.start(name);
      await node.store.loaded;
      assert.equal(node.store.get("kiwi"), kiwiNew.trimEnd(), name);
      assert.equal(node.store.get("lime"), lime.trimEnd(), name);
      assert.equal(
        await exchange(node.port, "WHATSAT kiwi 10 1\n"),
        `${kiwiNew}${STUB_JSON(1)}\n\n`,
      );
      assert.equal(
        await exchange(node.port, "WHATSAT lime 10 1\n"),
        `${lime}${STUB_JSON(1)}\n\n`,
      );
      await herd.stop(name);
    }
  } finally {
    await herd.stopAll();
  }
});

// ---------------------------------------------------------------------------------------
// The log, flushed when a node stops.

Deno.test("NodeLog: close() writes every entry logged before it returns, leaves no timer behind, and ignores later entries", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/A.log`;
  const log = await NodeLog.open({ node: "A", path, console: false });
  log.event("first");
  const closing = log.close();
  log.event("during"); // while the final flush is writing
  await closing;
  log.event("after");
  const events = (await Deno.readTextFile(path)).trimEnd().split("\n").map((
    l,
  ) => JSON.parse(l).event);
  assert.deepEqual(events, ["first", "during"]);
});

// ---------------------------------------------------------------------------------------
// The key schema and the packing.

/** Rejects when `promise` has not settled within `ms` (a hang is a failure, not a wait). */
async function within<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: still pending after ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("storeKeys: each key and range is the documented one, and a store writes no key outside the schema", async () => {
  assert.deepEqual(storeKeys.meta, ["meta", "snap"]);
  assert.deepEqual(storeKeys.wal(7), ["wal", 7]);
  assert.deepEqual(storeKeys.snapChunk(2, 5), ["snap", 2, 5]);
  assert.deepEqual(storeKeys.walRange(0, 3, 9), {
    start: ["wal", 3],
    end: ["wal", 9],
  });
  assert.deepEqual(storeKeys.walBefore(4), {
    start: ["wal", 0],
    end: ["wal", 4],
  });
  assert.deepEqual(storeKeys.snapChunks(2, 0, 3), {
    start: ["snap", 2, 0],
    end: ["snap", 2, 3],
  });
  assert.deepEqual(storeKeys.snapBefore(2), {
    start: ["snap", 0],
    end: ["snap", 2],
  });
  assert.deepEqual(storeKeys.snapFrom(2, 3), {
    start: ["snap", 2, 3],
    end: ["snap", 3],
  });
  using kv = await openKv(":memory:");
  await using store = await openStore(kv, {
    snapshotMinRecords: Number.MAX_SAFE_INTEGER,
    valueBytes: 200,
  });
  await store.loaded;
  for (let i = 0; i < 20; i++) store.offer(at(`c${i}`, "1"));
  await store.durable()!.promise;
  await store.snapshot();
  for (let i = 0; i < 5; i++) store.offer(at(`c${i}`, "2"));
  await store.durable()!.promise;
  const keys = (await listAll(kv, [])).map(([k]) => k);
  const chunks = keys.filter((k) => k[0] === "snap").length;
  assert.ok(chunks > 1, `${chunks} snapshot chunks`);
  const walFrom = decodeMeta((await kv.get(storeKeys.meta)).value).walFrom;
  const wal = keys.filter((k) => k[0] === "wal").map((k) => k[1] as number);
  assert.ok(wal.length > 1 && wal[0] === walFrom, `${wal} from ${walFrom}`);
  assert.deepEqual(keys, [
    storeKeys.meta,
    ...Array.from({ length: chunks }, (_, i) => storeKeys.snapChunk(1, i)),
    ...wal.map((_, i) => storeKeys.wal(walFrom + i)),
  ]);
});

Deno.test("LinePacker: packs lines in order into values of at most valueBytes, and unpack gives them back byte for byte", () => {
  const lines = [
    at("ascii", "1"),
    // Bytes above 0x7f, and the bytes of U+FFFD itself: not ASCII, still one char a byte.
    at(bytesToString(new Uint8Array([0xc3, 0xa9, 0xff])), "2"),
    at(bytesToString(new Uint8Array([0xef, 0xbf, 0xbd])), "3"),
    ...Array.from({ length: 30 }, (_, i) => at(`c${i}`, `${i}`)),
  ];
  const packer = new LinePacker(300);
  for (const l of lines) {
    const bytes = stringToBytes(l);
    packer.add(bytes, 0, bytes.length);
  }
  const values = packer.finish();
  assert.ok(values.length > 5, `${values.length} values`);
  for (const v of values) assert.ok(v.bytes.length <= 300, `${v.bytes.length}`);
  assert.deepEqual(
    values.map((v) => v.records).reduce((a, b) => a + b),
    lines.length,
  );
  assert.deepEqual(
    values.flatMap((v) => unpack(v.bytes).split("\n")),
    lines,
  );
  assert.throws(() => unpack("text"), /not bytes/);
  assert.equal(fits("x".repeat(300), 300), true);
  assert.equal(fits("x".repeat(301), 300), false);
  assert.equal(fits("two\nlines", 300), false);
});

Deno.test("decodeMeta: reads an empty store, a format-1 description (no digest) and a format-2 one; refuses a malformed one", () => {
  assert.deepEqual(decodeMeta(null), { gen: 0, chunks: 0, walFrom: 0 });
  assert.deepEqual(decodeMeta({ gen: 3, chunks: 2, walFrom: 9 }), {
    gen: 3,
    chunks: 2,
    walFrom: 9,
  });
  const d = digestOf(`${at("a", "1")}\n${at("b", "2")}`);
  const meta = decodeMeta(
    encodeMeta({ gen: 3, chunks: 2, walFrom: 9, records: 2, digest: d }),
  );
  assert.equal(meta.records, 2);
  assert.equal(meta.digest!.encode(), d.encode());
  assert.deepEqual([...meta.digest!.counts].reduce((a, b) => a + b), 2);
  assert.throws(
    () => decodeMeta({ gen: "3", chunks: 2, walFrom: 9 }),
    /malformed/,
  );
  assert.throws(
    () => decodeMeta({ gen: 1, chunks: -1, walFrom: 0 }),
    /malformed/,
  );
});

// ---------------------------------------------------------------------------------------
// The digest a load rebuilds.

Deno.test("Store: after a load, the digest is that of the records held, from a format-2 snapshot (digest stored) or a format-1 one (lines hashed), records offered during the load included", async (t) => {
  const stored = Array.from({ length: 300 }, (_, i) => at(`c${i}`, `10.${i}`));
  for (const format of [1, 2]) {
    await t.step(`format ${format}`, async () => {
      using kv = await openKv(":memory:");
      {
        await using store = await openStore(kv, {
          snapshotMinRecords: Number.MAX_SAFE_INTEGER,
          valueBytes: 2000,
        });
        await store.loaded;
        for (const l of stored) store.offer(l);
        await store.durable()!.promise;
        await store.snapshot();
        store.offer(at("c0", "11")); // in the log, newer than the snapshot's
        await store.durable()!.promise;
      }
      if (format === 1) {
        const m = (await kv.get<Record<string, unknown>>(storeKeys.meta))
          .value!;
        await kv.set(storeKeys.meta, {
          gen: m.gen,
          chunks: m.chunks,
          walFrom: m.walFrom,
        });
      }
      const held = Promise.withResolvers<void>();
      await using store = await openStore(holdRangeReads(kv, held));
      // While the load is held: one record newer and one older than the stored ones, and
      // a new client.
      assert.equal(store.offer(at("c1", "12")), true);
      assert.equal(store.offer(at("c2", "9")), true);
      assert.equal(store.offer(at("fresh", "1")), true);
      held.resolve();
      await store.loaded;
      assert.equal(store.state, "ready");
      assert.equal(store.size, 301);
      assert.equal(store.get("c0"), at("c0", "11"));
      assert.equal(store.get("c1"), at("c1", "12"));
      assert.equal(store.get("c2"), stored[2]);
      const want = digestOf([...store.records()].join("\n"));
      assert.equal(store.digest.encode(), want.encode());
      assert.deepEqual([...store.digest.counts], [...want.counts]);
      assert.equal(store.digest.root(), want.root());
    });
  }
});

// ---------------------------------------------------------------------------------------
// The lifecycle.

Deno.test("Store: its state goes loading -> ready -> stopping -> closed, and a closed store refuses offers", async () => {
  using kv = await openKv(":memory:");
  await kv.set(storeKeys.wal(0), stringToBytes(at("a", "1")));
  const held = Promise.withResolvers<void>();
  const store = await Store.open(holdRangeReads(kv, held));
  assert.equal(store.state, "loading");
  assert.equal(store.isLoaded, false);
  held.resolve();
  await store.loaded;
  assert.equal(store.state, "ready");
  assert.equal(store.isLoaded, true);
  assert.equal(store.offer(at("b", "1")), true);
  const gate = store.durable()!;
  store.stopLoading();
  assert.equal(store.state, "stopping");
  // Still accepted while stopping: a record in flight from a neighbor is committed.
  assert.equal(store.offer(at("c", "1")), true);
  await store.close();
  assert.equal(store.state, "closed");
  assert.equal(gate.done, true, "close() waited for the commit");
  assert.equal(store.isLoaded, true, "the load had completed");
  assert.equal(store.offer(at("d", "1")), false);
  assert.equal(store.stats().refused, 1);
  assert.equal(store.get("d"), undefined);
  assert.deepEqual((await listAll(kv, ["wal"])).map(([, v]) => v), [
    at("a", "1"),
    `${at("b", "1")}\n${at("c", "1")}`,
  ]);
  await store.close(); // idempotent
  assert.equal(store.state, "closed");
});

Deno.test("Store: a load that fails leaves the store partial; one abandoned by a stop leaves it stopping, then closed", async () => {
  using kv = await openKv(":memory:");
  await kv.set(storeKeys.wal(0), stringToBytes(at("a", "1")));
  // A value that is not bytes cannot be unpacked: the load fails.
  await kv.set(storeKeys.wal(1), { not: "bytes" });
  const log = await NodeLog.open({ node: "A", path: null, console: false });
  {
    await using store = await openStore(kv, { log });
    await store.loaded;
    assert.equal(store.state, "partial");
    assert.equal(store.isLoaded, false);
    assert.ok(
      log.memory.some((l) => JSON.parse(l).event === "store_load_failed"),
    );
  }
  await kv.delete(storeKeys.wal(1));
  const held = Promise.withResolvers<void>();
  const store = await Store.open(holdRangeReads(kv, held), { log });
  store.stopLoading();
  assert.equal(store.state, "stopping");
  held.resolve();
  await store.loaded;
  assert.equal(store.isLoaded, false);
  assert.equal(store.state, "stopping");
  await store.close();
  assert.equal(store.state, "closed");
  assert.ok(
    log.memory.some((l) => JSON.parse(l).event === "store_load_abandoned"),
  );
});

// ---------------------------------------------------------------------------------------
// Records that cannot be stored, and a disk that fails.

Deno.test("Store: a record whose value cannot be written (a 70,000-digit field) is refused before any commit and never holds back later acks nor a stop", async () => {
  using raw = await openKv(":memory:");
  const m = measuredKv(raw);
  const log = await NodeLog.open({ node: "A", path: null, console: false });
  let now = 0;
  const store = await Store.open(m.kv, { log, now: () => now });
  await store.loaded;
  const huge = at("huge", `1.${"9".repeat(70_000)}`);
  assert.equal(store.offer(huge), false);
  assert.equal(store.get("huge"), undefined, "not in memory either");
  const ok = at("kiwi", "1");
  assert.equal(store.offer(ok), true);
  await within(store.durable()!.promise, 10_000, "the ack after the refusal");
  assert.equal(store.stats().refused, 1);
  const refusedLines = () =>
    log.memory.map((l) => JSON.parse(l)).filter((e) =>
      e.event === "store_record_refused"
    );
  assert.deepEqual(
    refusedLines().map(({ bytes, limit, refused }) => ({
      bytes,
      limit,
      refused,
    })),
    [{ bytes: huge.length, limit: 60_000, refused: 1 }],
  );
  // The limit is the value's: 60,000 bytes alone fit, one more does not; a `\n` never.
  const edge = (n: number) => {
    const l = at("edge", "2");
    return l.slice(0, 3) + "N".repeat(n - l.length) + l.slice(3);
  };
  assert.equal(store.offer(edge(60_001)), false);
  assert.equal(store.offer(`${at("nl", "1")}\n${at("nl", "2")}`), false);
  assert.equal(store.offer(edge(60_000)), true);
  assert.equal(store.stats().refused, 3);
  assert.equal(
    refusedLines().length,
    1,
    "refusals are logged at most every 10 s",
  );
  now = 10_001;
  store.offer(huge);
  assert.deepEqual(refusedLines().map((e) => e.refused), [1, 3]);
  await within(store.close(), 10_000, "close()");
  assert.ok(m.commits.every((c) => c.largestValue <= 65_536));
  assert.equal(store.stats().commitErrors, 0);
  assert.deepEqual((await listAll(raw, ["wal"])).map(([, v]) => v), [
    ok,
    edge(60_000),
  ]);
});

/** `kv` whose commits fail (as a full or broken disk would) while `state.broken`. */
function breakableKv(kv: Deno.Kv): { kv: Deno.Kv; state: { broken: boolean } } {
  const state = { broken: false };
  const proxy = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          return new Proxy(op, {
            get(o, p) {
              if (p === "commit") {
                return () =>
                  state.broken
                    ? Promise.reject(new Error("disk I/O error"))
                    : o.commit();
              }
              const v = Reflect.get(o, p, o);
              return typeof v === "function" ? v.bind(o) : v;
            },
          });
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { kv: proxy, state };
}

Deno.test("Store: a commit the disk keeps refusing is given up after its attempts (never acknowledged, logged), and the next batch is acknowledged once the disk heals", async () => {
  using raw = await openKv(":memory:");
  const { kv, state } = breakableKv(raw);
  const log = await NodeLog.open({ node: "A", path: null, console: false });
  await using store = await openStore(kv, {
    log,
    commitAttempts: 3,
    retryBaseMs: 1,
  });
  await store.loaded;
  state.broken = true;
  store.offer(at("lost", "1"));
  const lost = store.durable()!;
  await waitFor(
    () => store.stats().commitsAbandoned === 1,
    10_000,
    "giving up",
  );
  assert.equal(store.stats().commitErrors, 3);
  assert.equal(store.stats().recordsAbandoned, 1);
  assert.equal(lost.done, false, "never acknowledged");
  assert.equal(store.durable(), null, "nothing else is waiting");
  const gaveUp = log.memory.map((l) => JSON.parse(l)).find((e) =>
    e.event === "kv_commit_gave_up"
  );
  assert.deepEqual(
    {
      records: gaveUp?.records,
      attempts: gaveUp?.attempts,
      error: gaveUp?.error,
    },
    { records: 1, attempts: 3, error: "disk I/O error" },
  );
  state.broken = false;
  store.offer(at("kept", "1"));
  await within(
    store.durable()!.promise,
    10_000,
    "the ack once the disk healed",
  );
  assert.equal(lost.done, false);
  assert.deepEqual((await listAll(raw, ["wal"])).map(([, v]) => v), [
    at("kept", "1"),
  ]);
});

Deno.test("Store: close() on a failing disk does not wait out the backoff between attempts", async () => {
  using raw = await openKv(":memory:");
  const { kv, state } = breakableKv(raw);
  const log = await NodeLog.open({ node: "A", path: null, console: false });
  const store = await Store.open(kv, { log, retryBaseMs: 60_000 });
  await store.loaded;
  state.broken = true;
  store.offer(at("a", "1"));
  await waitFor(() => store.stats().commitErrors === 1, 10_000, "a failure");
  // The next attempt is a minute away; a stop wakes it, and the rest run at once.
  await within(store.close(), 10_000, "close()");
  assert.equal(store.state, "closed");
  assert.equal(store.stats().commitErrors, STORE_DEFAULTS.commitAttempts);
  assert.equal(store.stats().commitsAbandoned, 1);
});

Deno.test("Store: onCommit hears every successful commit with its duration and records, and stats() counts the batches", async () => {
  using raw = await openKv(":memory:");
  const m = measuredKv(raw);
  let release!: () => void;
  m.setGate(() => new Promise<void>((r) => (release = r)));
  const heard: [number, number][] = [];
  await using store = await openStore(m.kv, {
    onCommit: (seconds, records) => heard.push([seconds, records]),
    snapshotMinRecords: Number.MAX_SAFE_INTEGER,
  });
  await store.loaded;
  store.offer(at("a", "1"));
  await nextTurn();
  store.offer(at("b", "1"));
  store.offer(at("c", "1"));
  assert.equal(heard.length, 0);
  release();
  await waitFor(() => heard.length === 1, 5000, "the first commit");
  release();
  await store.durable()!.promise;
  assert.deepEqual(heard.map(([, r]) => r), [1, 2]);
  for (const [s] of heard) assert.ok(Number.isFinite(s) && s >= 0, `${s}`);
  m.setGate(() => Promise.resolve());
  await store.snapshot();
  assert.deepEqual(
    heard.map(([, r]) => r),
    [1, 2, 3],
    "the snapshot's commit too",
  );
  const s = store.stats();
  assert.deepEqual(
    {
      commits: s.commits,
      batches: s.batches,
      batchRecords: s.batchRecords,
      lastBatchRecords: s.lastBatchRecords,
      largestBatchRecords: s.largestBatchRecords,
      refused: s.refused,
      state: s.state,
    },
    {
      commits: 3,
      batches: 2,
      batchRecords: 3,
      lastBatchRecords: 2,
      largestBatchRecords: 2,
      refused: 0,
      state: "ready",
    },
  );
});

Deno.test("Store: a load skips and counts stored lines that are not AT lines, keeps every valid one around them, and reads each back byte for byte", async () => {
  using kv = await openKv(":memory:");
  const odd = bytesToString(new Uint8Array([0xc3, 0xa9, 0xff, 0x41]));
  const valid = [at("first", "1"), at(odd, "2"), at("x", "3"), at("last", "4")];
  const junk = [
    "garbage",
    "AT A +0.1",
    "AT A +0.1 ",
    "AT A +0.1  +1+1 5", // an empty client id
    "AT A +0.1 noloc",
  ];
  await kv.set(
    storeKeys.wal(0),
    stringToBytes(
      [valid[0], ...junk, valid[1], "", valid[2], junk[1]].join("\n"),
    ),
  );
  // A value that ends inside a malformed line, and one that is a single valid line.
  await kv.set(storeKeys.wal(1), stringToBytes(`AT A +0.1 ${"y".repeat(20)}`));
  await kv.set(storeKeys.wal(2), stringToBytes(valid[3]));
  const log = await NodeLog.open({ node: "A", path: null, console: false });
  await using store = await openStore(kv, { log });
  await store.loaded;
  assert.deepEqual([...store.records()], valid);
  assert.equal(store.get(odd), valid[1]);
  assert.equal(store.get("x"), valid[2]);
  const loaded = log.memory.map((l) => JSON.parse(l)).find((e) =>
    e.event === "store_loaded"
  );
  assert.deepEqual(
    { records: loaded.records, malformed: loaded.malformed },
    { records: 4, malformed: junk.length + 2 },
  );
  assert.equal(
    store.digest.encode(),
    digestOf(valid.join("\n")).encode(),
  );
});

Deno.test("LinePacker: values are the lines joined by \\n, packed greedily within valueBytes, and each line reads back where it landed", () => {
  const line = fc.string({
    unit: fc.integer({ min: 0x20, max: 0xff }).map((c) =>
      String.fromCharCode(c === 0x0a ? 0x20 : c)
    ),
    minLength: 1,
    maxLength: 120,
  });
  fc.assert(
    fc.property(
      fc.array(line, { minLength: 0, maxLength: 60 }),
      fc.integer({ min: 120, max: 400 }),
      (lines, valueBytes) => {
        const packer = new LinePacker(valueBytes);
        const values = [];
        const landed: [Uint8Array, number][] = [];
        for (const l of lines) {
          const bytes = stringToBytes(`x${l}`);
          // A line in the middle of other bytes: only [from, to) is copied.
          const framed = new Uint8Array(bytes.length + 2);
          framed.set(bytes, 1);
          const at = packer.add(framed, 1, 1 + bytes.length);
          landed.push([packer.buffer, at]);
          if (packer.ready) values.push(...packer.take());
        }
        values.push(...packer.finish());
        // The reference: greedy, a value closes when the next line would pass valueBytes.
        const expected: string[] = [];
        let part: string[] = [];
        let size = 0;
        for (const l of lines.map((l) => `x${l}`)) {
          const more = l.length + (part.length > 0 ? 1 : 0);
          if (part.length > 0 && size + more > valueBytes) {
            expected.push(part.join("\n"));
            part = [];
            size = 0;
          }
          size += l.length + (part.length > 0 ? 1 : 0);
          part.push(l);
        }
        if (part.length > 0) expected.push(part.join("\n"));
        assert.deepEqual(values.map((v) => unpack(v.bytes)), expected);
        assert.deepEqual(
          values.map((v) => v.records),
          expected.map((e) => e.split("\n").length),
        );
        assert.deepEqual(
          landed.map(([b, at]) => lineIn(b, at)),
          lines.map((l) => `x${l}`),
        );
        assert.equal(packer.ready, false);
      },
    ),
    { numRuns: 200 },
  );
  // With the bytes to come known, a value's buffer is no larger than its lines: a commit of
  // one record does not take a buffer of valueBytes.
  const sized = new LinePacker(60_000, 11);
  const ten = stringToBytes("x".repeat(10));
  sized.add(ten, 0, 10);
  const [one] = sized.finish();
  assert.equal(unpack(one.bytes), "x".repeat(10));
  assert.equal(one.bytes.buffer.byteLength, 11);
  // Told too few bytes, it starts a new value rather than overrun its buffer.
  const short = new LinePacker(60_000, 11);
  short.add(ten, 0, 10);
  short.add(ten, 0, 10);
  assert.deepEqual(short.finish().map((v) => unpack(v.bytes)), [
    "x".repeat(10),
    "x".repeat(10),
  ]);
  // At the bound exactly: 9 + 1 + 10 bytes fill a value of 20; one byte more starts the next.
  const exact = new LinePacker(20);
  for (
    const l of ["a".repeat(9), "b".repeat(10), "c".repeat(9), "d".repeat(11)]
  ) {
    const bytes = stringToBytes(l);
    exact.add(bytes, 0, bytes.length);
  }
  assert.deepEqual(exact.finish().map((v) => unpack(v.bytes)), [
    `${"a".repeat(9)}\n${"b".repeat(10)}`,
    "c".repeat(9),
    "d".repeat(11),
  ]);
  // A line longer than a value (stored under a larger bound) goes alone, whole.
  const packer = new LinePacker(10);
  const long = stringToBytes("y".repeat(25));
  packer.add(stringToBytes("short"), 0, 5);
  const at = packer.add(long, 0, long.length);
  assert.equal(lineIn(packer.buffer, at), "y".repeat(25));
  assert.deepEqual(packer.finish().map((v) => unpack(v.bytes)), [
    "short",
    "y".repeat(25),
  ]);
});

Deno.test("RecordTable: a line added or set as a string is held as bytes and reads back byte for byte, chunk after chunk", () => {
  const t = new RecordTable();
  const lines: string[] = [];
  for (let i = 0; i < 3000; i++) {
    // Bytes above 0x7f are one char a byte, as lines are.
    const client = i % 7 === 0
      ? bytesToString(new Uint8Array([0x63, 0xc3, 0xa9, 48 + (i % 10)])) + i
      : `c${i}`;
    const line = at(client, `1700000000.${i}`) + " ".repeat(i % 50);
    const h = clientHash(client, 0, client.length);
    const found = t.find(h, client, 0, client.length);
    assert.ok(found < 0);
    const e = t.add(h, line, -1, found);
    assert.equal(e, i);
    lines.push(line);
  }
  // Replacing lines copies them too; a line longer than a chunk gets a chunk of its own.
  const long = at("c5", "1800000000." + "1".repeat(9)) + "z".repeat(70_000);
  t.set(5, long);
  lines[5] = long;
  t.set(6, at("c6", "1800000000.6"));
  lines[6] = at("c6", "1800000000.6");
  for (let i = 0; i < lines.length; i++) {
    assert.equal(t.lineAt(i), lines[i]);
    const text = t.storedValue(i);
    assert.ok(text instanceof Uint8Array);
    assert.equal(
      lineEnd(text, t.storedOffset(i)) - t.storedOffset(i),
      lines[i].length,
    );
  }
  assert.ok(
    t.storedValue(5) !== t.storedValue(4),
    "a long line has a chunk of its own",
  );
  assert.ok(t.storedValue(0) === t.storedValue(1), "short lines share a chunk");
  const client = `c${2999}`;
  assert.equal(
    t.find(clientHash(client, 0, client.length), client, 0, client.length),
    2999,
  );
});

Deno.test("Store: a snapshot moves every current line into its values, letting go of the chunks that held the replaced ones", async () => {
  using kv = await openKv(":memory:");
  await using store = await openStore(kv, {
    snapshotMinRecords: Number.MAX_SAFE_INTEGER,
  });
  await store.loaded;
  const clients = 2000;
  const rounds = 10;
  // Client c is updated in rounds 0 to c % rounds: its current line is in the chunk of that
  // round, so the current lines are spread over every round's chunks.
  const current = new Map<string, string>();
  for (let r = 0; r < rounds; r++) {
    for (let c = 0; c < clients; c++) {
      if (c % rounds < r) continue;
      const line = at(`client-${c}`, `${1700000000 + r}.5`);
      assert.equal(store.offer(line), true);
      current.set(`client-${c}`, line);
    }
  }
  let lineBytes = 0;
  for (const line of current.values()) lineBytes += line.length;
  await store.durable()!.promise;
  const before = store.heldBytes();
  assert.ok(
    before >= lineBytes * 3,
    `${before} bytes held for ${lineBytes} of lines`,
  );
  await store.snapshot();
  const after = store.heldBytes();
  assert.ok(after >= lineBytes, `${after} >= ${lineBytes}`);
  assert.ok(
    after <= lineBytes + 2 * 60_001,
    `${after} bytes held after the snapshot`,
  );
  for (const [client, line] of current) assert.equal(store.get(client), line);
  assert.equal(store.has("client-0"), true, "the first client");
  assert.equal(store.has("client-1999"), true);
  assert.equal(store.has("client-2000"), false);
  // And the next record of a client still replaces the snapshot's line.
  assert.equal(store.offer(at("client-3", "1800000000.5")), true);
  assert.equal(store.get("client-3"), at("client-3", "1800000000.5"));
});

Deno.test("Store: an older record is compared where it would be kept and left out, and the lines around it stay whole", async () => {
  using kv = await openKv(":memory:");
  await using store = await openStore(kv);
  await store.loaded;
  const lines = Array.from(
    { length: 10 },
    (_, i) => at(`c${i}`, `1700000000.${i}`),
  );
  for (const l of lines) assert.equal(store.offer(l), true);
  // Older and equal records of c5 are refused; their room in the chunk is given back.
  assert.equal(store.offer(at("c5", "1600000000.5")), false);
  assert.equal(store.offer(lines[5]), false);
  // A newer record whose line begins with the held one is not the same record.
  const longer = at("c7", "1700000000.75");
  assert.ok(longer.startsWith(lines[7]));
  assert.equal(store.offer(longer), true);
  lines[7] = longer;
  const next = at("c10", "1700000000.10");
  assert.equal(store.offer(next), true);
  const newer = at("c3", "1800000000.3");
  assert.equal(store.offer(newer), true);
  for (let i = 0; i < 10; i++) {
    assert.equal(store.get(`c${i}`), i === 3 ? newer : lines[i]);
  }
  assert.equal(store.get("c10"), next);
  await store.durable()?.promise;
  assert.equal(store.stats().clients, 11);
});
