/**
 * Specification of lib/server.ts's bounds over real TCP, with a handler the test drives: a
 * reply queue bounded in bytes when replies are queued (a later reply at its reservation),
 * the cap on later replies, a never-reading client paused instead of buffered, the cap on
 * connections, and the bounded pool of read buffers.
 */

import assert from "assert";
import { NodeLog } from "../lib/log.ts";
import { ReadPool } from "../lib/read_pool.ts";
import {
  type ConnectionHandler,
  Server,
  type ServerOptions,
  type Session,
} from "../lib/server.ts";
import { Client, waitFor } from "./helpers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A server on a free port whose handler is `line`; stopped (with its log) on dispose. */
async function serve(
  line: (text: string, session: Session) => void,
  opts: Partial<ServerOptions> = {},
) {
  const log = await NodeLog.open({ node: "T", path: null, console: false });
  const handler: ConnectionHandler = { line };
  const server = new Server({
    hostname: "127.0.0.1",
    port: 0,
    log,
    handler,
    ...opts,
  });
  server.listen();
  return {
    server,
    log,
    async [Symbol.asyncDispose]() {
      await server.stop(1000);
      await log.close();
    },
  };
}

Deno.test("a later reply counts at its reservation: reading pauses once the reserved bytes reach the bound", async () => {
  const waiting: PromiseWithResolvers<string>[] = [];
  await using s = await serve((text, session) => {
    const p = Promise.withResolvers<string>();
    waiting.push(p);
    session.replyLater(p.promise.then(() => `${text} done\n`), 1000);
  }, { maxPendingBytes: 4000, maxLaterReplies: 100 });
  using c = await Client.connect(s.server.port);
  await c.send(Array.from({ length: 10 }, (_, i) => `w${i}\n`).join(""));
  await waitFor(() => waiting.length === 4, 2000, "4 lines handled");
  await sleep(200);
  // 4 x 1000 reserved bytes reach the bound: the other 6 lines are not taken in.
  assert.equal(waiting.length, 4);
  for (let i = 0; i < 10; i++) {
    await waitFor(() => waiting.length > i, 2000, `line ${i}`);
    waiting[i].resolve("");
  }
  const got = await c.lines(10);
  assert.equal(
    got,
    Array.from({ length: 10 }, (_, i) => `w${i} done\n`).join(""),
  );
});

Deno.test("at most maxLaterReplies replies wait on a connection, whatever their size", async () => {
  const waiting: PromiseWithResolvers<string>[] = [];
  await using s = await serve((text, session) => {
    const p = Promise.withResolvers<string>();
    waiting.push(p);
    session.replyLater(p.promise.then(() => `${text}\n`), 1);
  }, { maxLaterReplies: 3 });
  using c = await Client.connect(s.server.port);
  await c.send("a\nb\nc\nd\ne\n");
  await waitFor(() => waiting.length === 3, 2000, "3 lines handled");
  await sleep(200);
  assert.equal(waiting.length, 3);
  waiting[0].resolve("");
  await waitFor(
    () => waiting.length === 4,
    2000,
    "a 4th line once one resolved",
  );
  for (const w of waiting) w.resolve("");
  await waitFor(() => waiting.length === 5, 2000, "the 5th line");
  waiting[4].resolve("");
  assert.equal(await c.lines(5), "a\nb\nc\nd\ne\n");
});

Deno.test("a client that never reads is paused, not buffered, and other clients are still answered", async () => {
  const big = "x".repeat(64 * 1024 - 1) + "\n";
  let handled = 0;
  let worst = 0;
  const bound = 256 * 1024;
  await using s = await serve((text, session) => {
    handled++;
    session.reply(text === "ping" ? "pong\n" : big);
    worst = Math.max(worst, session.pendingBytes);
  }, { maxPendingBytes: bound });
  using hog = await Client.connect(s.server.port);
  // 20,000 lines = 1.3 GB of replies if the node took them all in.
  await hog.send("go\n".repeat(20_000));
  let last = -1;
  await waitFor(
    async () => {
      const now = handled;
      await sleep(200);
      const stable = now === handled && now === last;
      last = handled;
      return stable;
    },
    10_000,
    "the node to stop taking lines in",
  );
  // Stopped far short: what waits is the kernel's socket buffers plus the bound.
  assert.ok(handled < 1000, `handled ${handled} lines`);
  assert.ok(worst <= bound + big.length, `queued ${worst} bytes`);
  assert.ok(s.server.stats.paused >= 1);
  assert.ok(
    s.log.memory.some((l) => l.includes('"connection_paused"')),
    "the pause is logged",
  );
  using other = await Client.connect(s.server.port);
  await other.send("ping\n");
  assert.equal(await other.lines(1, 2000), "pong\n");
  assert.equal(handled, last + 1);
});

Deno.test("past maxConnections a new connection is closed at once, counted and logged", async () => {
  await using s = await serve((text, session) => session.reply(`${text}\n`), {
    maxConnections: 3,
  });
  const open = await Promise.all([1, 2, 3].map(async (i) => {
    const c = await Client.connect(s.server.port);
    await c.send(`c${i}\n`);
    assert.equal(await c.lines(1), `c${i}\n`);
    return c;
  }));
  using refused = await Client.connect(s.server.port);
  await refused.send("hello\n").catch(() => {});
  assert.equal(await refused.readAll(2000), "");
  assert.equal(s.server.stats.refused, 1);
  assert.equal(s.server.stats.connections, 3);
  assert.ok(s.log.memory.some((l) => l.includes('"connection_refused"')));
  open[0].close();
  await waitFor(() => s.server.stats.connections === 2, 2000, "a slot");
  using again = await Client.connect(s.server.port);
  await again.send("again\n");
  assert.equal(await again.lines(1), "again\n");
  for (const c of open) c.close();
});

Deno.test("connections that send fast borrow at most poolBuffers read buffers at once, and give them back", async () => {
  let handled = 0;
  await using s = await serve((text, session) => {
    handled++;
    session.reply(`${text.length}\n`);
  }, { poolBuffers: 2, poolBufferBytes: 4096, readBytes: 64 });
  const line = "y".repeat(1000) + "\n";
  const clients = await Promise.all(
    Array.from({ length: 8 }, () => Client.connect(s.server.port)),
  );
  let most = 0;
  const watch = setInterval(
    () => most = Math.max(most, s.server.stats.poolLent),
    1,
  );
  try {
    await Promise.all(clients.map(async (c) => {
      await c.send(line.repeat(200));
      const got = await c.lines(200, 10_000);
      assert.equal(got, "1000\n".repeat(200));
    }));
  } finally {
    clearInterval(watch);
  }
  assert.equal(handled, 1600);
  assert.ok(most <= 2, `lent ${most}`);
  for (const c of clients) c.close();
  await waitFor(() => s.server.stats.poolLent === 0, 2000, "buffers back");
});

Deno.test("ReadPool lends at most max buffers, counts misses, and reuses what it gets back", () => {
  const pool = new ReadPool(16, 2);
  const a = pool.take()!;
  const b = pool.take()!;
  assert.equal(a.length, 16);
  assert.equal(pool.take(), null);
  assert.equal(pool.misses, 1);
  assert.equal(pool.lent, 2);
  pool.give(a);
  assert.equal(pool.take(), a);
  pool.give(a);
  pool.give(b);
  assert.equal(pool.lent, 0);
});

Deno.test("a broken connection takes no more replies", async () => {
  let session: Session | null = null;
  await using s = await serve((_text, se) => {
    session = se;
    se.reply("ok\n");
  });
  const c = await Client.connect(s.server.port);
  await c.send("a\n");
  assert.equal(await c.lines(1), "ok\n");
  await waitFor(() => session !== null, 1000);
  c.close();
  session!.abort();
  session!.reply("late\n");
  session!.replyLater(Promise.resolve("later\n"), 100);
  assert.equal(session!.pending, 0);
  assert.equal(session!.pendingBytes, 0);
});
