/**
 * A peer connection as lines in and lines out: reads frame into a queue that the owner
 * pulls from (one line with a deadline during the handshake, whole batches afterwards), and
 * writes go through a bounded outbox flushed once per microtask turn, so records published
 * together leave in one write.
 *
 * The bound counts every byte not yet handed to the kernel, the write in progress included,
 * so a neighbor that stops reading costs at most `maxOutboxBytes` of memory. Control lines
 * (handshake, digests) may pass the bound: they are few and small, and refusing them would
 * stall catch-up rather than save memory.
 *
 * @module
 */

import { stringToBytes } from "./bytes.ts";
import type { LineFramer } from "./lines.ts";
import { writeAll } from "./write_all.ts";

/** Thrown by `nextLine` when its deadline passes. */
export class PeerTimeout extends Error {
  override name = "PeerTimeout";
}

/** Byte counters shared by many channels (a node's flood stats). */
export interface ByteCounters {
  bytesIn: number;
  bytesOut: number;
}

/** Lines over one TCP connection to or from a peer. */
export class PeerChannel {
  readonly conn: Deno.TcpConn;
  readonly #framer: LineFramer;
  readonly #maxOutboxBytes: number;
  readonly #counters: ByteCounters | null;
  #queue: string[];
  #eof = false;
  #out: string[] = [];
  #outBytes = 0;
  #inflightBytes = 0;
  #writing = false;
  #closed = false;
  #buf = new Uint8Array(64 * 1024);
  #waiters: { limit: number; resolve: () => void }[] = [];
  /** Unterminated lines discarded at EOF (a connection dropped mid-line). */
  truncated = 0;
  /** Bytes written and read on this connection, for operators and benchmarks. */
  bytesOut = 0;
  bytesIn = 0;

  /**
   * @param counters if given, also counts this channel's bytes there as they move, so a
   * node's totals are live rather than updated when a connection ends.
   */
  constructor(
    conn: Deno.TcpConn,
    framer: LineFramer,
    initial: string[],
    maxOutboxBytes: number,
    counters: ByteCounters | null = null,
  ) {
    this.conn = conn;
    this.#framer = framer;
    this.#queue = initial;
    this.#maxOutboxBytes = maxOutboxBytes;
    this.#counters = counters;
  }

  /** True once closed by either side. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes accepted by `send` and not yet written to the socket. */
  get outboxBytes(): number {
    return this.#outBytes + this.#inflightBytes;
  }

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    let n: number | null;
    try {
      n = await this.conn.read(this.#buf);
    } catch {
      n = null;
    }
    if (n === null) {
      this.#eof = true;
      // Peers end every line with "\n": bytes after the last one are a line cut short by a
      // dropped connection. Even when they happen to parse (a time cut inside its digits),
      // they are not a record anyone produced, so they are discarded, never delivered.
      if (this.#framer.end() !== null) this.truncated++;
      return this.#queue.length > 0;
    }
    this.bytesIn += n;
    if (this.#counters) this.#counters.bytesIn += n;
    const framed = this.#framer.push(this.#buf.subarray(0, n));
    for (const l of framed.lines) this.#queue.push(l);
    if (framed.overflow !== null) this.#eof = true;
    return true;
  }

  /** The next line, or null at EOF; throws PeerTimeout after `timeoutMs`. */
  async nextLine(timeoutMs: number): Promise<string | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let timedOut = false;
    if (this.#queue.length === 0) {
      timer = setTimeout(() => {
        timedOut = true;
        this.close();
      }, timeoutMs);
    }
    try {
      while (this.#queue.length === 0) {
        if (!(await this.#fill())) break;
      }
    } finally {
      clearTimeout(timer);
    }
    if (timedOut) throw new PeerTimeout(`no answer within ${timeoutMs} ms`);
    return this.#queue.shift() ?? null;
  }

  /** Every line available now (waiting for at least one), or null at EOF. */
  async nextBatch(): Promise<string[] | null> {
    while (this.#queue.length === 0) {
      if (!(await this.#fill())) return null;
    }
    const lines = this.#queue;
    this.#queue = [];
    return lines;
  }

  /**
   * Queues text (whole lines, each ending in `\n`). Returns false, queuing nothing, when the
   * channel is closed or (unless `control`) when the outbox would pass its bound: the owner
   * then drops the link and relies on catch-up.
   */
  send(text: string, control = false): boolean {
    if (this.#closed) return false;
    if (
      !control && this.outboxBytes + text.length > this.#maxOutboxBytes
    ) {
      return false;
    }
    this.#out.push(text);
    this.#outBytes += text.length;
    if (!this.#writing) {
      this.#writing = true;
      queueMicrotask(() => this.#writeLoop());
    }
    return true;
  }

  /** Resolves once at most `limit` bytes wait to be written, or the channel is closed. */
  drained(limit = 0): Promise<void> {
    if (this.#closed || this.outboxBytes <= limit) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ limit, resolve });
    return promise;
  }

  #notify(): void {
    if (this.#waiters.length === 0) return;
    const pending = this.outboxBytes;
    const keep = [];
    for (const w of this.#waiters) {
      if (this.#closed || pending <= w.limit) w.resolve();
      else keep.push(w);
    }
    this.#waiters = keep;
  }

  async #writeLoop(): Promise<void> {
    try {
      while (this.#out.length > 0 && !this.#closed) {
        const text = this.#out.length === 1 ? this.#out[0] : this.#out.join("");
        this.#out = [];
        this.#inflightBytes = this.#outBytes;
        this.#outBytes = 0;
        const bytes = stringToBytes(text);
        await writeAll(this.conn, bytes);
        this.bytesOut += bytes.length;
        if (this.#counters) this.#counters.bytesOut += bytes.length;
        this.#inflightBytes = 0;
        this.#notify();
      }
    } catch {
      this.close();
    } finally {
      this.#writing = false;
      this.#inflightBytes = 0;
      this.#notify();
    }
  }

  /** Closes the connection (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#out = [];
    this.#outBytes = 0;
    try {
      this.conn.close();
    } catch { /* already closed */ }
    this.#notify();
  }
}
