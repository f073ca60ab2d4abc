/**
 * Specification of lib/idle_gc.ts: a quiet node whose heap grew collects once; a busy one,
 * or one whose heap did not grow, is left alone.
 */

import assert from "assert";
import { IdleGc } from "../lib/idle_gc.ts";
import { HerdNode } from "../lib/node.ts";
import {
  Client,
  makeTopology,
  measuredKv,
  StubPlaces,
  waitFor,
} from "./helpers.ts";

Deno.test("IdleGc collects only when the node was (nearly) quiet since the last look and its heap grew past the bound", () => {
  let work = 0;
  let heap = 100;
  let runs = 0;
  const idle = new IdleGc({
    activity: () => work,
    heapBytes: () => heap,
    gc: () => {
      runs++;
      heap = 105;
    },
    growthBytes: 50,
    quietBelow: 10,
  });
  idle.tick(); // first look: nothing to compare with
  heap = 200;
  work += 10;
  idle.tick(); // busy
  work += 9; // a trickle is quiet
  assert.equal(runs, 0);
  idle.tick(); // quiet enough, grown by 100
  assert.equal(runs, 1);
  assert.equal(idle.collections, 1);
  heap = 150; // grown by 45 since the collection: under the bound
  idle.tick();
  assert.equal(runs, 1);
  heap = 156;
  idle.tick();
  assert.equal(runs, 2);
});

Deno.test("IdleGc waits while the node is busy in the background, then collects at the next quiet look", () => {
  let busy = true;
  let runs = 0;
  let heap = 100;
  const idle = new IdleGc({
    activity: () => 0,
    busy: () => busy,
    heapBytes: () => heap,
    gc: () => runs++,
    growthBytes: 50,
  });
  idle.tick(); // first look: nothing to compare with
  heap = 200;
  idle.tick(); // quiet and grown, but folding
  idle.tick();
  assert.equal(runs, 0);
  busy = false;
  idle.tick();
  assert.equal(runs, 1);
});

Deno.test("IdleGc by default: a node handling 30 lines, connections or records a second is busy, one handling 20 is quiet", () => {
  let work = 0;
  let runs = 0;
  let heap = 0;
  const idle = new IdleGc({
    activity: () => work,
    heapBytes: () => heap,
    gc: () => runs++,
  });
  idle.tick();
  heap = 64 * 1024 * 1024;
  for (let s = 0; s < 5; s++) {
    work += 30;
    idle.tick();
  }
  assert.equal(runs, 0, "collected while a trickle of records flowed");
  work += 20; // a client connecting and sending a line every 100 ms
  idle.tick();
  assert.equal(runs, 1);
});

Deno.test("IdleGc finds V8's collector on this Deno (loaded when first due) and gives a grown heap back", async () => {
  const idle = new IdleGc({ activity: () => 0, growthBytes: 8 * 1024 * 1024 });
  let junk: unknown[] = [];
  for (let i = 0; i < 300_000; i++) junk.push({ i, s: `garbage ${i}` });
  const grown = Deno.memoryUsage().heapTotal;
  junk = [];
  idle.tick();
  idle.tick(); // due: the collector loads
  await waitFor(
    () => {
      idle.tick();
      return idle.collections > 0;
    },
    5000,
    "a collection",
  );
  assert.equal(idle.collections, 1, "collected once");
  assert.ok(
    Deno.memoryUsage().heapUsed < grown,
    "the heap shrank",
  );
  assert.equal(junk.length, 0);
});

Deno.test("a node's idle collector waits while its store folds, and collects once the fold is done", async () => {
  const held = Promise.withResolvers<void>();
  let heap = 0;
  let collections = 0;
  const node = new HerdNode({
    name: "A",
    topology: makeTopology(["A"], []),
    dataDir: null,
    places: new StubPlaces(),
    console: false,
    store: { snapshotMinRecords: 10, snapshotQuietMs: 0 },
    // The fold's chunk commits wait for `held`.
    openKv: async (path) => {
      const m = measuredKv(await Deno.openKv(path));
      m.setGate((first) =>
        first?.[0] === "snap" ? held.promise : Promise.resolve()
      );
      return m.kv;
    },
    // Always quiet, always grown: a look collects unless the node says it is busy.
    idleGc: {
      intervalMs: 10,
      growthBytes: 1,
      quietBelow: 1e9,
      heapBytes: () => ++heap,
      gc: () => collections++,
    },
  });
  try {
    await node.start();
    await waitFor(() => collections > 0, 5000, "a collection at a quiet look");
    using c = await Client.connect(node.port);
    for (let i = 0; i < 12; i++) {
      await c.send(`IAMAT c${i} +1+1 1700000000.5\n`);
    }
    await c.lines(12);
    await waitFor(() => node.store.folding, 5000, "the fold");
    const before = collections;
    await new Promise((r) => setTimeout(r, 150)); // fifteen looks
    assert.equal(collections, before, "collected during the fold");
    held.resolve();
    await waitFor(() => !node.store.folding, 5000, "the fold's end");
    await waitFor(() => collections > before, 5000, "a collection after it");
  } finally {
    held.resolve();
    await node.stop();
  }
});
