/**
 * Durable state: the store's record order, its group commit to a KV write-ahead log within
 * KV's limits, snapshots, crash recovery, background loading, and a node that restarts with
 * its records (those it was told directly and those it learned by flood).
 *
 * @module
 */

import assert from "assert";
import { bytesToString, stringToBytes } from "../lib/bytes.ts";
import { Digest } from "../lib/digest.ts";
import { NodeLog } from "../lib/log.ts";
import { HerdNode } from "../lib/node.ts";
import { clientOf } from "../lib/record.ts";
import { Store } from "../lib/store.ts";
import {
  Client,
  exchange,
  fixedClock,
  makeTopology,
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

/** What one atomic commit carried. */
interface CommitShape {
  mutations: number;
  /** Keys and values, bytes (values that are not bytes counted as their JSON). */
  bytes: number;
  largestValue: number;
}

/**
 * Wraps a KV so every atomic commit is measured, and so a test can hold commits: each commit
 * first awaits `gate()` (default: at once).
 */
function measuredKv(kv: Deno.Kv): {
  kv: Deno.Kv;
  commits: CommitShape[];
  gate: () => Promise<void>;
  setGate(g: () => Promise<void>): void;
} {
  const state = {
    kv: kv,
    commits: [] as CommitShape[],
    gate: () => Promise.resolve(),
    setGate(g: () => Promise<void>) {
      state.gate = g;
    },
  };
  // A value that is not bytes (the snapshot description) as its JSON, its byte arrays
  // counted by length.
  const size = (v: unknown) =>
    v instanceof Uint8Array ? v.byteLength : JSON.stringify(
      v,
      (_, x) => x instanceof Uint8Array ? "#".repeat(x.byteLength) : x,
    ).length;
  const atomic = () => {
    const op = kv.atomic();
    const shape: CommitShape = { mutations: 0, bytes: 0, largestValue: 0 };
    const wrapper = {
      set(key: Deno.KvKey, value: unknown) {
        shape.mutations++;
        shape.bytes += size(key) + size(value);
        shape.largestValue = Math.max(shape.largestValue, size(value));
        op.set(key, value);
        return wrapper;
      },
      delete(key: Deno.KvKey) {
        shape.mutations++;
        shape.bytes += size(key);
        op.delete(key);
        return wrapper;
      },
      async commit() {
        await state.gate();
        const res = await op.commit();
        state.commits.push(shape);
        return res;
      },
    };
    return wrapper;
  };
  state.kv = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") return atomic;
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return state;
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
    await using store = await openStore(kv, { log, snapshotMinRecords: 100 });
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
