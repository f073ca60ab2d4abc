/**
 * The client side of a node: accept connections, frame their bytes into lines, hand each
 * line to the node, and write the replies back in request order, each reply in one write.
 *
 * A reply may be ready at once (`?`), ready once a gate opens (an IAMAT waits until its
 * record is durable), or ready later (a WHATSAT waits for places). Replies that are ready in
 * order are written together, so a pipelining client gets many replies a write. Reading
 * pauses while too many replies wait, so a client that sends without reading cannot grow
 * the node's memory without bound.
 *
 * A first line that the handler recognises as a neighbor's `HERD HELLO` makes the
 * connection a peer link: it is handed to the
 * flood module with the framer, and this module lets go of it.
 *
 * @module
 */

import { stringToBytes } from "./bytes.ts";
import { Gate } from "./gate.ts";
import { LineFramer } from "./lines.ts";
import type { NodeLog } from "./log.ts";
import { formatInvalid } from "./protocol.ts";
import { writeAll } from "./write_all.ts";

/** What the node does with client lines and peer hand-offs. */
export interface ConnectionHandler {
  /** Handles one client line; must call one of `session.reply*` exactly once. */
  line(line: string, session: Session): void;
  /** Is this first line a neighbor's handshake? Anything else is a client line. */
  isPeerHello(line: string): boolean;
  /** Takes over a connection whose first line passed `isPeerHello`. */
  peer(
    conn: Deno.TcpConn,
    lines: string[],
    framer: LineFramer,
    id: number,
  ): void;
}

/** Server options. */
export interface ServerOptions {
  hostname: string;
  port: number;
  log: NodeLog;
  handler: ConnectionHandler;
  /** Longest line in bytes. Default 16 KiB. */
  maxLineBytes?: number;
  /** Replies waiting on a connection before reading pauses. Default 4096. */
  maxPendingReplies?: number;
  /** After an over-long line, how long to drain the rest before closing, in ms. Default 2000. */
  lingerMs?: number;
}

/**
 * Reply bytes waiting on one connection before reading from it pauses (with the count limit,
 * this bounds a client that sends WHATSATs and never reads).
 */
const MAX_PENDING_BYTES = 4 * 1024 * 1024;

interface Item {
  text: string | null;
  gate: Gate | null;
}

/** One client connection: its reply queue and its writer. */
export class Session {
  readonly id: number;
  readonly #conn: Deno.TcpConn;
  readonly #log: NodeLog;
  readonly #maxPending: number;
  #items: Item[] = [];
  #head = 0;
  #writing = false;
  #waitingOn: Gate | null = null;
  #room: Gate | null = null;
  #idle: Gate | null = null;
  #broken = false;
  /** Bytes of replies known but not yet written. */
  #bytes = 0;

  constructor(
    id: number,
    conn: Deno.TcpConn,
    log: NodeLog,
    maxPending: number,
  ) {
    this.id = id;
    this.#conn = conn;
    this.#log = log;
    this.#maxPending = maxPending;
  }

  /** Replies waiting to be written. */
  get pending(): number {
    return this.#items.length - this.#head;
  }

  /** Queues a reply to write once `gate` (if any) opens, after every earlier reply. */
  reply(text: string, gate: Gate | null = null): void {
    this.#items.push({ text, gate: gate?.done ? null : gate });
    this.#bytes += text.length;
    this.#pump();
  }

  /** Queues a reply whose text comes later; it still goes out in request order. */
  replyLater(text: Promise<string>): void {
    const item: Item = { text: null, gate: null };
    this.#items.push(item);
    text.then((t) => {
      item.text = t;
      this.#bytes += t.length;
      this.#pump();
    }, () => {
      item.text = ""; // the node answers every line; this only keeps the order intact
      this.#pump();
    });
  }

  /** Resolves once there is room for more replies (backpressure on reading). */
  room(): Promise<void> | null {
    if (this.#broken) return null;
    if (this.pending < this.#maxPending && this.#bytes < MAX_PENDING_BYTES) {
      return null;
    }
    this.#room ??= new Gate();
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
    this.#signal();
  }

  #pump(): void {
    if (this.#writing || this.#broken) return;
    this.#writing = true;
    void this.#writeLoop();
  }

  /**
   * Writes every reply that is ready, in order, as one write per round. `#writing` is cleared
   * in the same synchronous step that finds nothing ready, so a reply that becomes ready at
   * any moment either is seen by this loop or starts a new one: none is left waiting.
   */
  async #writeLoop(): Promise<void> {
    for (;;) {
      let out = "";
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
        this.#log.traffic(this.id, "out", item.text.replace(/\n+$/, ""));
        out += item.text;
        this.#bytes -= item.text.length;
        this.#head++;
      }
      this.#compact();
      if (out.length === 0) {
        this.#writing = false;
        return;
      }
      try {
        await writeAll(this.#conn, stringToBytes(out));
      } catch {
        this.#writing = false;
        this.abort();
        return;
      }
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
    const roomy = this.pending < this.#maxPending / 2 &&
      this.#bytes < MAX_PENDING_BYTES / 2;
    if (this.#room && (roomy || this.#broken)) {
      this.#room.open();
      this.#room = null;
    }
    if (this.#idle && (this.pending === 0 || this.#broken)) {
      this.#idle.open();
      this.#idle = null;
    }
  }
}

/** Listens on one port and runs a session per client connection. */
export class Server {
  readonly #opts: Required<ServerOptions>;
  #listener: Deno.TcpListener | null = null;
  readonly #sessions = new Map<
    number,
    { conn: Deno.TcpConn; session: Session; done: Promise<void> }
  >();
  #nextId = 1;
  #accepting: Promise<void> | null = null;

  constructor(opts: ServerOptions) {
    // `??`, not a spread of defaults: a caller passing `maxLineBytes: undefined` must get
    // the default, not an unlimited line.
    this.#opts = {
      ...opts,
      maxLineBytes: opts.maxLineBytes ?? 16 * 1024,
      maxPendingReplies: opts.maxPendingReplies ?? 4096,
      lingerMs: opts.lingerMs ?? 2000,
    };
  }

  /** Allocates a connection id (shared with outbound peer links, for the log). */
  nextId(): number {
    return this.#nextId++;
  }

  /** The bound port (useful with port 0). */
  get port(): number {
    return (this.#listener!.addr as Deno.NetAddr).port;
  }

  /** Binds the port; throws Deno.errors.AddrInUse and friends for the caller to report. */
  listen(): void {
    this.#listener = Deno.listen({
      hostname: this.#opts.hostname,
      port: this.#opts.port,
      transport: "tcp",
    });
    this.#accepting = this.#acceptLoop(this.#listener);
  }

  async #acceptLoop(listener: Deno.TcpListener): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (e instanceof Deno.errors.BadResource) return;
        if (e instanceof Deno.errors.Interrupted) return;
        this.#opts.log.warn("accept_failed", { error: (e as Error).message });
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      const id = this.nextId();
      try {
        conn.setNoDelay(true);
      } catch { /* the peer may already be gone */ }
      const session = new Session(
        id,
        conn,
        this.#opts.log,
        this.#opts.maxPendingReplies,
      );
      const done = this.#serve(session, conn).catch((e) => {
        this.#opts.log.warn("connection_failed", {
          conn: id,
          error: (e as Error).message,
        });
      }).finally(() => this.#sessions.delete(id));
      this.#sessions.set(id, { conn, session, done });
    }
  }

  async #serve(session: Session, conn: Deno.TcpConn): Promise<void> {
    const { log, handler, maxLineBytes } = this.#opts;
    const id = session.id;
    const framer = new LineFramer(maxLineBytes);
    // 16 KiB a connection: plenty for pipelining, modest for many idle connections.
    const buf = new Uint8Array(16 * 1024);
    let first = true;
    let overflow: string | null = null;
    let handedOff = false;
    const handle = (line: string) => {
      log.traffic(id, "in", line);
      handler.line(line, session);
    };
    try {
      reading: for (;;) {
        const wait = session.room();
        if (wait) await wait;
        let n: number | null;
        try {
          n = await conn.read(buf);
        } catch {
          break; // reset by the client, or closed by stop()
        }
        if (n === null) {
          const last = framer.end();
          if (last !== null) {
            if (first && handler.isPeerHello(last)) {
              handedOff = true;
              handler.peer(conn, [last], framer, id);
              return;
            }
            handle(last);
          }
          break;
        }
        const framed = framer.push(buf.subarray(0, n));
        for (let i = 0; i < framed.lines.length; i++) {
          const line = framed.lines[i];
          if (first) {
            first = false;
            if (handler.isPeerHello(line)) {
              handedOff = true;
              handler.peer(conn, framed.lines.slice(i), framer, id);
              return;
            }
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
      if (overflow !== null) await this.#linger(conn);
    } finally {
      if (!handedOff) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    }
  }

  /**
   * After an over-long line: half-close so the client sees the reply and EOF, then read and
   * discard what it is still sending (bounded in time and bytes), so closing does not reset
   * the connection and destroy the reply in the client's buffer.
   */
  async #linger(conn: Deno.TcpConn): Promise<void> {
    try {
      await conn.closeWrite();
    } catch {
      return;
    }
    const buf = new Uint8Array(64 * 1024);
    const deadline = Date.now() + this.#opts.lingerMs;
    let total = 0;
    const timer = setTimeout(() => {
      try {
        conn.close();
      } catch { /* closed */ }
    }, this.#opts.lingerMs);
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
