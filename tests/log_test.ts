/**
 * Specification of lib/log.ts's bounds: warnings rate-limited per event name and summarised
 * with a count, the file rotated at its size bound keeping a bounded number of old files,
 * and the buffer bounded with a dropped counter.
 */

import assert from "assert";
import { NodeLog } from "../lib/log.ts";
import { tempDir, waitFor } from "./helpers.ts";

/** A log whose operator lines are collected and whose clock the test moves. */
async function logWith(opts: {
  path?: string | null;
  now?: () => number;
  windowMs?: number;
  burst?: number;
  maxFileBytes?: number;
  keepFiles?: number;
  maxBufferBytes?: number;
  maxWriteBytes?: number;
  drainBytes?: number;
  flushMs?: number;
}) {
  const printed: string[] = [];
  const log = await NodeLog.open({
    node: "N",
    path: opts.path ?? null,
    print: (line) => printed.push(line),
    ...opts,
  });
  return { log, printed };
}

Deno.test("a warning repeated past the burst is counted, and one line gives the count when its window ends", async () => {
  let now = 1_000_000;
  const { log, printed } = await logWith({
    now: () => now,
    burst: 3,
    windowMs: 1000,
  });
  for (let i = 0; i < 100; i++) log.warn("line_too_long", { conn: i });
  assert.deepEqual(printed, [
    "N: line_too_long conn=0",
    "N: line_too_long conn=1",
    "N: line_too_long conn=2",
  ]);
  assert.equal(log.suppressed, 97);
  // Another event name has its own window.
  log.warn("connection_refused", { limit: 1 });
  assert.equal(printed.length, 4);
  now += 1000;
  log.warn("line_too_long", { conn: 100 });
  assert.deepEqual(printed.slice(4), [
    "N: log_suppressed event=line_too_long count=97",
    "N: line_too_long conn=100",
  ]);
  const entries = log.memory.map((l) => JSON.parse(l));
  assert.equal(entries.filter((e) => e.event === "line_too_long").length, 4);
  assert.deepEqual(
    entries.filter((e) => e.event === "log_suppressed").map((e) => [
      e.suppressed,
      e.count,
    ]),
    [["line_too_long", 97]],
  );
  await log.close();
});

Deno.test("the count of suppressed warnings comes out by itself once the window ends", async () => {
  const { log, printed } = await logWith({ burst: 1, windowMs: 50 });
  for (let i = 0; i < 10; i++) log.warn("line_too_long", { conn: i });
  assert.equal(printed.length, 1);
  await waitFor(
    () => printed.includes("N: log_suppressed event=line_too_long count=9"),
    2000,
    "the summary line",
  );
  await log.close();
});

Deno.test("closing the log gives the count of what is still suppressed", async () => {
  const { log, printed } = await logWith({ burst: 2, windowMs: 60_000 });
  for (let i = 0; i < 5; i++) log.event("peer_connected", { peer: "B" });
  await log.close();
  assert.deepEqual(printed, [
    "N: peer_connected peer=B",
    "N: peer_connected peer=B",
    "N: log_suppressed event=peer_connected count=3",
  ]);
});

Deno.test("the log file rotates at its size bound and keeps keepFiles old files", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/N.log`;
  const { log } = await logWith({ path, maxFileBytes: 4096, keepFiles: 2 });
  for (let round = 0; round < 10; round++) {
    for (let i = 0; i < 40; i++) {
      log.traffic(i, "in", `IAMAT r${round} +1+1 ${i}`);
    }
    await log.flush();
  }
  await log.close();
  const names = [...Deno.readDirSync(dir.path)].map((e) => e.name).sort();
  assert.deepEqual(names, ["N.log", "N.log.1", "N.log.2"]);
  assert.ok(log.rotations >= 3, `rotations ${log.rotations}`);
  for (const n of names) {
    const size = Deno.statSync(`${dir.path}/${n}`).size;
    // A file passes the bound by at most one write.
    assert.ok(size < 4096 + 40 * 100, `${n}: ${size} bytes`);
  }
  // Oldest to newest: .2, .1, then N.log; every line whole JSON, in the order logged, and
  // the last line logged is kept.
  const lines = [`${path}.2`, `${path}.1`, path].flatMap((f) =>
    Deno.readTextFileSync(f).split("\n").filter((l) => l !== "")
  ).map((l) => JSON.parse(l).line as string);
  const order = lines.map((l) =>
    Number(/r(\d+)/.exec(l)![1]) * 100 + Number(l.split(" ")[3])
  );
  assert.deepEqual(order, [...order].sort((x, y) => x - y));
  assert.equal(lines[lines.length - 1], "IAMAT r9 +1+1 39");
});

Deno.test("a log that cannot keep up drops entries, counts them, and says how many", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/N.log`;
  const { log } = await logWith({ path, maxBufferBytes: 2000 });
  for (let i = 0; i < 200; i++) log.traffic(1, "in", `line ${i}`);
  assert.ok(log.dropped > 100, `dropped ${log.dropped}`);
  const dropped = log.dropped;
  await log.close();
  const entries = Deno.readTextFileSync(path).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  assert.equal(entries.length, 200 - dropped + 1);
  assert.deepEqual(
    entries.filter((e) => e.event === "log_dropped").map((e) => e.count),
    [dropped],
  );
});

Deno.test("a buffer that reaches drainBytes is written at once, without waiting for the flush period", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/N.log`;
  const { log } = await logWith({ path, drainBytes: 600, flushMs: 60_000 });
  try {
    log.traffic(1, "in", "first");
    // Below drainBytes, the line waits for the flush period (a minute here).
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(Deno.readTextFileSync(path), "");
    for (let i = 0; i < 10; i++) log.traffic(1, "in", `line ${i}`);
    await waitFor(
      () => Deno.readTextFileSync(path).split("\n").length > 11,
      5000,
      "the drain past drainBytes",
    );
    const lines = Deno.readTextFileSync(path).trim().split("\n").map((l) =>
      JSON.parse(l).line
    );
    assert.deepEqual(lines, [
      "first",
      ...Array.from({ length: 10 }, (_, i) => `line ${i}`),
    ]);
  } finally {
    await log.close();
  }
});

Deno.test("a traffic line formatted at the drain keeps the time it was logged at and its place among events", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/N.log`;
  let now = Date.UTC(2026, 10, 30, 12, 0, 0, 5);
  const { log } = await logWith({ path, now: () => now, flushMs: 60_000 });
  log.traffic(3, "in", "IAMAT kiwi +34-118 1.5");
  now += 1000;
  log.event("peer_connected", { peer: "B" });
  now += 1000;
  log.traffic(3, "out", "AT N +0.1 kiwi +34-118 1.5", 40);
  // The drain runs a minute of the test's clock later.
  now += 60_000;
  await log.close();
  const entries = Deno.readTextFileSync(path).trim().split("\n");
  assert.deepEqual(entries, [
    '{"ts":"2026-11-30T12:00:00.005Z","node":"N","conn":3,"dir":"in","line":"IAMAT kiwi +34-118 1.5"}',
    '{"ts":"2026-11-30T12:00:01.005Z","node":"N","event":"peer_connected","peer":"B"}',
    '{"ts":"2026-11-30T12:00:02.005Z","node":"N","conn":3,"dir":"out","line":"AT N +0.1 kiwi +34-118 1.5","bytes":40}',
  ]);
});

Deno.test("record() writes to the log only, never the terminal, and is rate-limited too", async () => {
  const { log, printed } = await logWith({ burst: 2, windowMs: 60_000 });
  for (let i = 0; i < 5; i++) log.record("connection_paused", { conn: i });
  await log.close();
  assert.deepEqual(printed, []);
  const entries = log.memory.map((l) => JSON.parse(l));
  assert.deepEqual(entries.map((e) => [e.event, e.conn ?? e.count]), [
    ["connection_paused", 0],
    ["connection_paused", 1],
    ["log_suppressed", 3],
  ]);
});

Deno.test("traffic lines reach the file as UTF-8 text, whatever the drain's size: client text readable, other bytes kept as char codes", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/N.log`;
  // Writes of up to 2 MiB of text (6 MiB of UTF-8 at most: past the largest scratch buffer
  // a drain keeps, 4 MiB, so such a write is encoded on its own).
  const { log } = await logWith({ path, maxWriteBytes: 2 * 1024 * 1024 });
  // Byte strings as the server holds them: "café" as its UTF-8 bytes, and a byte that is
  // not UTF-8 at all.
  const cafe = "IAMAT caf\xc3\xa9 +1+1 1";
  const raw = "IAMAT \xff +1+1 1";
  // One small drain (into the scratch buffer), then 24,000 lines, ~3.4 M chars: one write
  // of 2 MiB (encoded on its own), then the rest, ~1.3 M chars (into the scratch buffer).
  log.traffic(1, "in", cafe);
  await log.flush();
  const many = 24_000;
  for (let i = 0; i < many; i++) {
    log.traffic(i, "in", i % 2 === 0 ? cafe : `${raw} ${"x".repeat(100)}`);
  }
  log.traffic(2, "out", raw);
  await log.close();
  const lines = Deno.readTextFileSync(path).split("\n").filter((l) => l !== "")
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, many + 2);
  assert.equal(lines[0].line, "IAMAT café +1+1 1");
  assert.equal(lines[1].line, "IAMAT café +1+1 1");
  assert.equal(lines[2].line, `IAMAT \xff +1+1 1 ${"x".repeat(100)}`);
  assert.deepEqual(lines.at(-1), {
    ts: lines.at(-1).ts,
    node: "N",
    conn: 2,
    dir: "out",
    line: "IAMAT \xff +1+1 1",
  });
});
