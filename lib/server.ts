/**
 * The client side of a node: accept connections, frame their bytes into lines, hand each
 * line to the node, and write the replies back in request order, each reply in one write.
 *
 * A reply may be ready at once (`?`), ready once a gate opens (an IAMAT waits until its
 * record is durable), or ready later (a WHATSAT waits for places). Replies that are ready in
 * order are written together, so a pipelining client gets many replies a write.
 *
 * Nothing a client sends grows the node without bound (docs/hardening.md has the figures):
 *
 * - Replies waiting on a connection are bounded in bytes at the moment they are queued: a
 *   reply still to come (WHATSAT) counts at its largest possible size until it resolves, and
 *   at most `maxLaterReplies` of them wait at once. Past a bound, reading from that
 *   connection pauses between two lines; nothing is buffered instead. A client that
 *   pipelined 20,000 WHATSATs without reading grew a node by 350 MB before this.
 * - An idle connection holds no 16 KiB read buffer: it reads into a small buffer of its own
 *   (`readBytes`), and a read that fills it makes the next read borrow a large buffer from a
 *   pool shared by all connections (`ReadPool`), returned as soon as the chunk is framed.
 *   The framer keeps only the unfinished line. 16 KiB per connection cost 21 KB per idle
 *   connection; see the docs for what it costs now.
 * - Client connections are capped (`maxConnections`): past it, a new connection is closed at
 *   once, counted, and logged (the log summarises a storm of them).
 *
 * The client port carries the line protocol only: neighbors talk on their own bus port, so
 * a `HERD ...` line here is an invalid line like any other.
 *
 * @module
 */

import { acceptEach } from "./accept.ts";
import { writeByteString } from "./bytes.ts";
import { withDefaults } from "./defaults.ts";
import { Gate } from "./gate.ts";
import { LineFramer } from "./lines.ts";
import type { NodeLog } from "./log.ts";
import { formatInvalid } from "./protocol.ts";
import { ReadPool } from "./read_pool.ts";
import { writeAll } from "./write_all.ts";

/** What the node does with client lines. */
export interface ConnectionHandler {
  /** Handles one client line; must call one of `session.reply*` exactly once. */
  line(line: string, session: Session): void;
}

/** The bounds of the client side, in one place. */
export const SERVER_DEFAULTS = {
  /** Longest line in bytes; a longer one is answered cut and closes its connection. */
  maxLineBytes: 16 * 1024,
  /** Replies queued on a connection before reading from it pauses. */
  maxPendingReplies: 4096,
  /** Bytes of replies queued on a connection (later replies at `maxReplyBytes`) before reading pauses. */
  maxPendingBytes: 4 * 1024 * 1024,
  /** Replies still to come (WHATSATs waiting on places) on a connection before reading pauses. */
  maxLaterReplies: 16,
  /** The largest reply the node sends; a later reply counts at this size until it resolves. */
  maxReplyBytes: 256 * 1024,
  /** Most bytes of ready replies joined into one write. */
  maxWriteBytes: 64 * 1024,
  /** Open client connections; past it a new connection is closed at once. */
  maxConnections: 20_000,
  /** Each connection's own read buffer, in bytes. */
  readBytes: 1024,
  /**
   * The size of a pooled read buffer, lent to a connection whose last read filled its own.
   * 16 KiB (about 300 lines) a read keeps a pipelining client from holding the node long.
   */
  poolBufferBytes: 16 * 1024,
  /** Pooled read buffers lent at once; past it a connection reads with its own buffer. */
  poolBuffers: 64,
  /** After an over-long line, how long to drain the rest before closing, in ms. */
  lingerMs: 2000,
};

/** Server options; the bounds default to `SERVER_DEFAULTS`. */
export interface ServerOptions extends Partial<typeof SERVER_DEFAULTS> {
  hostname: string;
  port: number;
  log: NodeLog;
  handler: ConnectionHandler;
}

/** Counters of the client side (for metrics and tests). */
export interface ServerStats {
  /** Open client connections. */
  connections: number;
  /** Connections closed at once because `maxConnections` were open. */
  refused: number;
  /** Times a connection's reading paused on a full reply queue. */
  paused: number;
  /** Reads that wanted a pooled buffer and found none free. */
  poolMisses: number;
  /** Pooled buffers lent now (at most `poolBuffers`). */
  poolLent: number;
  /** Connections accepted, in all. */
  accepted: number;
  /** Client lines handled, in all. */
  lines: number;
}

/**
 * A reply whose end the node keeps encoded (a cached WHATSAT answer): `head`, its first line
 * with its "\n" as a byte string, then `tail`'s bytes (not empty, not starting with "\n"),
 * copied into the write as they are, never re-encoded. `length` is the whole reply's, in
 * bytes. It is logged as a string reply of the same bytes would be.
 */
export interface EncodedReply {
  readonly head: string;
  readonly tail: Uint8Array;
  readonly length: number;
}

/** A reply: a byte string, or a partly encoded one. */
export type ReplyText = string | EncodedReply;

interface Item {
  text: ReplyText | null;
  gate: Gate | null;
}

type SessionBounds = Pick<
  typeof SERVER_DEFAULTS,
  "maxPendingReplies" | "maxPendingBytes" | "maxLaterReplies" | "maxWriteBytes"
>;

/** One client connection: its reply queue and its writer. */
export class Session {
  readonly id: number;
  readonly #conn: Deno.TcpConn;
  readonly #log: NodeLog;
  readonly #b: SessionBounds;
  readonly #writePool: ReadPool | null;
  #items: Item[] = [];
  #head = 0;
  #writing = false;
  /** A `#pump()` is queued as a microtask (see `replyLater`). */
  #pumpScheduled = false;
  #waitingOn: Gate | null = null;
  #room: Gate | null = null;
  #idle: Gate | null = null;
  #broken = false;
  /** Bytes of replies queued and not yet written; a later reply counts at its reservation. */
  #bytes = 0;
  /** Later replies not yet resolved. */
  #later = 0;
  /** Times reading paused on this connection. */
  pauses = 0;

  constructor(
    id: number,
    conn: Deno.TcpConn,
    log: NodeLog,
    bounds: Partial<SessionBounds> = {},
    writePool: ReadPool | null = null,
  ) {
    this.id = id;
    this.#conn = conn;
    this.#log = log;
    this.#writePool = writePool;
    this.#b = {
      maxPendingReplies: bounds.maxPendingReplies ??
        SERVER_DEFAULTS.maxPendingReplies,
      maxPendingBytes: bounds.maxPendingBytes ??
        SERVER_DEFAULTS.maxPendingBytes,
      maxLaterReplies: bounds.maxLaterReplies ??
        SERVER_DEFAULTS.maxLaterReplies,
      maxWriteBytes: bounds.maxWriteBytes ?? SERVER_DEFAULTS.maxWriteBytes,
    };
  }

  /** Replies waiting to be written. */
  get pending(): number {
    return this.#items.length - this.#head;
  }

  /** Bytes of the replies waiting, later replies counted at their reservation. */
  get pendingBytes(): number {
    return this.#bytes;
  }

  /** Later replies not yet resolved. */
  get later(): number {
    return this.#later;
  }

  /** True once writing failed or the session was aborted: nothing more is queued. */
  get broken(): boolean {
    return this.#broken;
  }

  /** Queues a reply to write once `gate` (if any) opens, after every earlier reply. */
  reply(text: string, gate: Gate | null = null): void {
    if (this.#broken) return;
    const g = gate?.done ? null : gate;
    this.#items.push({ text, gate: g });
    this.#bytes += text.length;
    // The writer already waits for this very gate (the IAMATs of one turn share it), and
    // its opening pumps: starting the writer again would only find it shut, once a reply.
    if (g !== null && g === this.#waitingOn) return;
    this.#pump();
  }

  /**
   * Queues a reply whose text comes later; it still goes out in request order. It counts as
   * `reserveBytes` (its largest possible size) until it resolves, then as its real size.
   *
   * A resolved reply starts the writer a microtask later, not at once: the replies to lines
   * read together resolve in the same turn, one microtask apart, and so go out in one write
   * instead of the first alone and the rest after it.
   */
  replyLater(text: Promise<ReplyText>, reserveBytes: number): void {
    if (this.#broken) {
      text.catch(() => {});
      return;
    }
    const item: Item = { text: null, gate: null };
    this.#items.push(item);
    this.#bytes += reserveBytes;
    this.#later++;
    const settle = (t: ReplyText) => {
      if (this.#broken) return;
      item.text = t;
      this.#bytes += t.length - reserveBytes;
      this.#later--;
      this.#pumpSoon();
      this.#signal();
    };
    // On failure the reply is empty: the node answers every line; this only keeps the order.
    text.then(settle, () => settle(""));
  }

  /** True while a bound is reached: the reader must wait on `room()` before the next line. */
  get full(): boolean {
    return this.pending >= this.#b.maxPendingReplies ||
      this.#bytes >= this.#b.maxPendingBytes ||
      this.#later >= this.#b.maxLaterReplies;
  }

  /** Resolves once there is room for more replies (backpressure on reading); null if there is room now. */
  room(): Promise<void> | null {
    if (this.#broken || !this.full) return null;
    if (this.#room === null) {
      this.#room = new Gate();
      if (this.pauses++ === 0) {
        this.#log.record("connection_paused", {
          conn: this.id,
          replies: this.pending,
          bytes: this.#bytes,
          later: this.#later,
        });
      }
    }
    return this.#room.promise;
  }

  /** Resolves once every queued reply is written (or the connection broke). */
  idle(): Promise<void> {
    if (this.pending === 0 || this.#broken) return Promise.resolve();
    this.#idle ??= new Gate();
    return this.#idle.promise;
  }

  /** Gives up on this connection: waiters on `idle()` and `room()` are released. */
  abort(): void {
    this.#broken = true;
    this.#items = [];
    this.#head = 0;
    this.#bytes = 0;
    this.#later = 0;
    this.#signal();
  }

  #pump(): void {
    if (this.#writing || this.#broken) return;
    this.#writing = true;
    void this.#writeLoop();
  }

  /** `#pump()` once the microtasks queued now have run. */
  #pumpSoon(): void {
    if (this.#writing || this.#pumpScheduled || this.#broken) return;
    this.#pumpScheduled = true;
    queueMicrotask(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  /**
   * Writes the replies that are ready, in order, up to `maxWriteBytes` a round (a longer
   * reply goes alone, in one write). `#writing` is cleared in the same synchronous step that
   * finds nothing ready, so a reply that becomes ready at any moment either is seen by this
   * loop or starts a new one: none is left waiting. Written bytes leave the count only once
   * the write is done: until then they are held.
   */
  async #writeLoop(): Promise<void> {
    for (;;) {
      const parts: ReplyText[] = [];
      let size = 0;
      while (this.#head < this.#items.length) {
        const item = this.#items[this.#head];
        if (item.text === null) break;
        if (item.gate !== null && !item.gate.done) {
          if (this.#waitingOn !== item.gate) {
            this.#waitingOn = item.gate;
            item.gate.promise.then(() => this.#pump());
          }
          break;
        }
        if (
          size > 0 &&
          size + item.text.length > this.#b.maxWriteBytes
        ) break;
        if (item.text.length > 0) {
          logReply(this.#log, this.id, item.text);
          parts.push(item.text);
          size += item.text.length;
        }
        this.#head++;
      }
      this.#compact();
      if (size === 0) {
        this.#writing = false;
        this.#signal();
        return;
      }
      // A write of at most `maxWriteBytes` borrows its buffer from the server's pool and
      // gives it back once written. A new buffer for each write was 300 MB/s of memory at
      // 50,000 cached WHATSATs a second (bench/whatsat.ts; one run each: the node rested at
      // 101.5 MB after the load with them, 96.4 MB with the pool).
      const lent = size <= this.#b.maxWriteBytes
        ? this.#writePool?.take() ?? null
        : null;
      try {
        await writeAll(this.#conn, joinReplies(parts, size, lent));
      } catch {
        if (lent) this.#writePool!.give(lent);
        this.#writing = false;
        this.abort();
        return;
      }
      if (lent) this.#writePool!.give(lent);
      if (this.#broken) {
        this.#writing = false;
        return;
      }
      this.#bytes -= size;
      this.#signal();
    }
  }

  #compact(): void {
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }

  #signal(): void {
    if (this.#room && (!this.full || this.#broken)) {
      this.#room.open();
      this.#room = null;
    }
    if (this.#idle && (this.pending === 0 || this.#broken)) {
      this.#idle.open();
      this.#idle = null;
    }
  }
}

/**
 * The bytes of replies written together, in one buffer: byte strings encoded (consecutive
 * ones joined first, so the encoder's fast path sees them at once), encoded tails copied.
 */
function joinReplies(
  parts: ReplyText[],
  size: number,
  into: Uint8Array | null,
): Uint8Array {
  const out = into === null ? new Uint8Array(size) : into.subarray(0, size);
  let offset = 0;
  let text = "";
  for (const part of parts) {
    if (typeof part === "string") {
      text += part;
      continue;
    }
    text += part.head;
    offset += writeByteString(text, out, offset);
    text = "";
    out.set(part.tail, offset);
    offset += part.tail.length;
  }
  if (text.length > 0) writeByteString(text, out, offset);
  return out;
}

/**
 * Logs a reply sent: a one-line reply whole, a longer one (WHATSAT) as its first line and
 * its size in bytes (`NodeLog.traffic`).
 */
function logReply(log: NodeLog, conn: number, reply: ReplyText): void {
  if (typeof reply !== "string") {
    return log.traffic(conn, "out", reply.head.slice(0, -1), reply.length);
  }
  const text = reply;
  const nl = text.indexOf("\n");
  if (nl < 0) return log.traffic(conn, "out", text);
  let end = nl + 1;
  while (end < text.length && text.charCodeAt(end) === 10) end++;
  if (end === text.length) log.traffic(conn, "out", text.slice(0, nl));
  else log.traffic(conn, "out", text.slice(0, nl), text.length);
}

/** Listens on one port and runs a session per client connection. */
export class Server {
  readonly #opts: Omit<ServerOptions, keyof typeof SERVER_DEFAULTS>;
  readonly #b: typeof SERVER_DEFAULTS;
  readonly #pool: ReadPool;
  /** Write buffers of `maxWriteBytes`, lent to a session for one write. */
  readonly #writePool: ReadPool;
  #listener: Deno.TcpListener | null = null;
  readonly #sessions = new Map<
    number,
    { conn: Deno.TcpConn; session: Session; done: Promise<void> }
  >();
  #nextId = 1;
  #accepting: Promise<void> | null = null;
  #refused = 0;
  #paused = 0;
  #accepted = 0;
  #lines = 0;

  constructor(opts: ServerOptions) {
    this.#opts = opts;
    const b = withDefaults(SERVER_DEFAULTS, opts);
    this.#b = b;
    this.#pool = new ReadPool(b.poolBufferBytes, b.poolBuffers);
    this.#writePool = new ReadPool(b.maxWriteBytes, b.poolBuffers);
  }

  /** Allocates a connection id (shared with outbound peer links, for the log). */
  nextId(): number {
    return this.#nextId++;
  }

  /** The bound port (useful with port 0). */
  get port(): number {
    return (this.#listener!.addr as Deno.NetAddr).port;
  }

  /** Counters of the client side. */
  get stats(): ServerStats {
    let paused = this.#paused;
    for (const s of this.#sessions.values()) paused += s.session.pauses;
    return {
      connections: this.#sessions.size,
      refused: this.#refused,
      paused,
      poolMisses: this.#pool.misses,
      poolLent: this.#pool.lent,
      accepted: this.#accepted,
      lines: this.#lines,
    };
  }

  /** A number that changes whenever a connection is accepted or a line handled (cheap). */
  get activity(): number {
    return this.#accepted + this.#lines;
  }

  /** Binds the port; throws Deno.errors.AddrInUse and friends for the caller to report. */
  listen(): void {
    this.#listener = Deno.listen({
      hostname: this.#opts.hostname,
      port: this.#opts.port,
      transport: "tcp",
    });
    this.#accepting = acceptEach(
      this.#listener,
      this.#opts.log,
      "accept_failed",
      (conn) => this.#take(conn),
    );
  }

  /** Takes one accepted connection: refused past the cap, else served. */
  #take(conn: Deno.TcpConn): void {
    if (this.#sessions.size >= this.#b.maxConnections) {
      this.#refused++;
      this.#opts.log.warn("connection_refused", {
        limit: this.#b.maxConnections,
        refused: this.#refused,
      });
      try {
        conn.close();
      } catch { /* gone */ }
      return;
    }
    const id = this.nextId();
    this.#accepted++;
    const session = new Session(
      id,
      conn,
      this.#opts.log,
      this.#b,
      this.#writePool,
    );
    const done = this.#serve(session, conn).catch((e) => {
      this.#opts.log.warn("connection_failed", {
        conn: id,
        error: (e as Error).message,
      });
    }).finally(() => {
      this.#paused += session.pauses;
      this.#sessions.delete(id);
    });
    this.#sessions.set(id, { conn, session, done });
  }

  async #serve(session: Session, conn: Deno.TcpConn): Promise<void> {
    const { log, handler } = this.#opts;
    const { maxLineBytes } = this.#b;
    const id = session.id;
    const framer = new LineFramer(maxLineBytes);
    const own = new Uint8Array(this.#b.readBytes);
    let filled = false;
    let overflow: string | null = null;
    /** Hands one line to the node (the caller checked for room). */
    const handle = (line: string) => {
      this.#lines++;
      log.traffic(id, "in", line);
      handler.line(line, session);
    };
    try {
      reading: for (;;) {
        // A read that filled the connection's own buffer means more is coming: borrow a
        // large one, and keep borrowing while reads bring at least that much.
        const lent: Uint8Array | null = filled ? this.#pool.take() : null;
        const buf: Uint8Array = lent ?? own;
        let n: number | null;
        try {
          n = await conn.read(buf);
        } catch {
          if (lent) this.#pool.give(lent);
          break; // reset by the client, or closed by stop()
        }
        if (n === null) {
          if (lent) this.#pool.give(lent);
          const last = framer.end();
          if (last !== null) {
            const wait = session.room();
            if (wait) await wait;
            if (!session.broken) handle(last);
          }
          break;
        }
        filled = n >= own.length;
        // The framer copies what it keeps: the buffer is free again once this returns.
        const framed = framer.push(buf.subarray(0, n));
        if (lent) this.#pool.give(lent);
        for (const line of framed.lines) {
          // Room is checked before each line: past a bound, reading pauses right here.
          const wait = session.room();
          if (wait) {
            await wait;
            if (session.broken) break reading;
          }
          handle(line);
        }
        if (framed.overflow !== null) {
          overflow = framed.overflow;
          break reading;
        }
      }
      if (overflow !== null) {
        log.traffic(id, "in", overflow);
        log.warn("line_too_long", { conn: id, limit: maxLineBytes });
        session.reply(formatInvalid(overflow));
      }
      await session.idle();
      if (overflow !== null && !session.broken) await this.#linger(conn, own);
    } finally {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }

  /**
   * After an over-long line: half-close so the client sees the reply and EOF, then read and
   * discard what it is still sending (bounded in time and bytes), so closing does not reset
   * the connection and destroy the reply in the client's buffer.
   */
  async #linger(conn: Deno.TcpConn, own: Uint8Array): Promise<void> {
    try {
      await conn.closeWrite();
    } catch {
      return;
    }
    const lent = this.#pool.take();
    const buf = lent ?? own;
    const { lingerMs } = this.#b;
    const deadline = Date.now() + lingerMs;
    let total = 0;
    const timer = setTimeout(() => {
      try {
        conn.close();
      } catch { /* closed */ }
    }, lingerMs);
    try {
      while (Date.now() < deadline && total < 64 * 1024 * 1024) {
        const n = await conn.read(buf);
        if (n === null) break;
        total += n;
      }
    } catch {
      /* closed by the timer or reset */
    } finally {
      clearTimeout(timer);
      if (lent) this.#pool.give(lent);
    }
  }

  /** Stops accepting. Connections already open keep being served. */
  stopAccepting(): void {
    try {
      this.#listener?.close();
    } catch { /* closed */ }
  }

  /**
   * Stops: no new connections; each open connection gets the replies to what it already
   * sent (bounded by `graceMs`) and is then closed.
   */
  async stop(graceMs = 5000): Promise<void> {
    this.stopAccepting();
    await this.#accepting;
    const all = [...this.#sessions.values()];
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(all.map((s) => s.session.idle())),
      new Promise((r) => (timer = setTimeout(r, graceMs))),
    ]);
    clearTimeout(timer);
    for (const s of all) {
      s.session.abort();
      try {
        s.conn.close();
      } catch { /* already closed */ }
    }
    await Promise.all(all.map((s) => s.done));
  }
}
