/**
 * One bus connection as messages in and messages out.
 *
 * - In: bytes are framed by a bounded `FrameDecoder` (the client line limit until the
 *   handshake is done, the peer bound after), and each frame is opened (after a secure
 *   handshake) and parsed only when the owner asks for the next message, so the switch from
 *   plain to sealed frames falls exactly between two messages. The channel reads only when
 *   the owner has consumed what it holds: a peer that sends faster than the node offers its
 *   records waits in TCP, not in memory.
 * - Out: a bounded outbox. Records that find the connection idle are encoded and handed to
 *   the kernel in the call, so a relay leaves before what its record sets off after it (the
 *   store's commit, the next read); what is queued while a write is in flight leaves
 *   together in the next one, records merged into `RECORDS` frames (up to `FLUSH_BYTES` a
 *   frame), each frame sealed in order. Against a flush once per microtask turn, measured on
 *   five-node herds: the same CPU per record under load, and propagation p50 over two hops
 *   at idle 3.02 -> 2.71 ms (three alternating runs of each on a busy machine). Control
 *   messages (handshake, digests, catch-up) still wait for the end of the turn: written in
 *   the call, they reordered catch-up's exchanges so that in `bench/catchup.ts` both
 *   directions listed their whole state at once (90 MB exchanged and 13.8 s, against 51 MB
 *   and 10.1-10.7 s). The bound counts every byte not yet handed to the kernel, the write
 *   in progress included, so a neighbor that stops reading costs at most `maxOutboxBytes`.
 *   Control messages may pass the bound: they are few and small, and refusing them would
 *   stall catch-up rather than save memory.
 * - Anything wrong on the way in (a frame over the bound, a frame that fails to open, a
 *   body that is not a bus message) closes the channel; `problem` says what it was.
 *
 * @module
 */

import { bytesToString, stringToBytes, writeByteString } from "../bytes.ts";
import { writeAll } from "../write_all.ts";
import { type BusMessage, formatMessage, parseMessage } from "./codec.ts";
import { FrameDecoder, HEADER_BYTES } from "./frames.ts";
import type { Opener, Sealer, Session } from "./handshake.ts";

/** Thrown by `next` when its deadline passes. */
export class PeerTimeout extends Error {
  override name = "PeerTimeout";
}

/** Byte counters shared by many channels (a node's flood stats). */
export interface ByteCounters {
  bytesIn: number;
  bytesOut: number;
}

/** Records are merged into frames of about this many bytes. */
const FLUSH_BYTES = 256 * 1024;
/** Read buffer before and after the handshake. */
const SMALL_READ = 4 * 1024;
const LARGE_READ = 64 * 1024;
/**
 * Writes up to this size go out of one buffer kept by the channel (after the handshake),
 * not a fresh one each: at idle, where every step of a hop runs cold, a one-record frame's
 * encode took 9.6 µs into a fresh buffer and 6.5 µs into the kept one (docs/benchmarks.md,
 * round nine).
 */
const SCRATCH_BYTES = 16 * 1024;

interface OutItem {
  /** A control message's body, or null for records. */
  body: string | null;
  records: string[];
  bytes: number;
  sealer: Sealer | null;
}

/** Bounds of a channel. */
export interface ChannelLimits {
  /** Largest frame accepted before `secure`/`trust`. */
  handshakeFrameBytes: number;
  /** Largest frame accepted after. */
  frameBytes: number;
  maxOutboxBytes: number;
}

/** Messages over one TCP connection to or from a peer. */
export class BusChannel {
  readonly conn: Deno.TcpConn;
  readonly #limits: ChannelLimits;
  readonly #counters: ByteCounters | null;
  readonly #decoder: FrameDecoder;
  /**
   * The read buffer. Frames whose body came whole in one read are views into it, not
   * copies (at idle a copy took 5.9 µs of a relay's hop, a view 1.6; docs/benchmarks.md,
   * round nine), so the channel reads again only once every frame it holds has been opened
   * or parsed, into bytes or a string of its own: `next` and `nextBatch` read only when
   * `#frames` is empty, and one of them at a time (`#enter`).
   */
  #buf: Uint8Array;
  #frames: Uint8Array[] = [];
  /** A `next` or `nextBatch` is in progress (`#enter`). */
  #reading = false;
  /** The buffer small writes are encoded into, from the handshake's end (`SCRATCH_BYTES`). */
  #scratch: Uint8Array | undefined;
  #eof = false;
  #opener: Opener | null = null;
  #sealer: Sealer | null = null;
  #out: OutItem[] = [];
  #outBytes = 0;
  #inflightBytes = 0;
  #writing = false;
  #closed = false;
  #waiters: { limit: number; resolve: () => void }[] = [];
  /** Why the channel closed itself, if it did. */
  problem: string | null = null;
  /** Bytes written and read on this connection. */
  bytesOut = 0;
  bytesIn = 0;

  constructor(
    conn: Deno.TcpConn,
    limits: ChannelLimits,
    counters: ByteCounters | null = null,
  ) {
    this.conn = conn;
    this.#limits = limits;
    this.#counters = counters;
    this.#decoder = new FrameDecoder(limits.handshakeFrameBytes, true);
    this.#buf = new Uint8Array(SMALL_READ);
  }

  /** True once closed by either side. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes accepted by `send` and not yet written to the socket. */
  get outboxBytes(): number {
    return this.#outBytes + this.#inflightBytes;
  }

  /**
   * The handshake is done: from the next message on, frames are sealed both ways under
   * `session` (or stay plain on an open bus, `session` null), and may be as large as the
   * peer bound.
   */
  trust(session: Session | null): void {
    this.#opener = session?.opener ?? null;
    this.#sealer = session?.sealer ?? null;
    this.#decoder.setMax(this.#limits.frameBytes + 16);
    this.#buf = new Uint8Array(LARGE_READ);
    this.#scratch = new Uint8Array(SCRATCH_BYTES);
  }

  #fail(problem: string): void {
    this.problem ??= problem;
    this.close();
  }

  /**
   * One read, framed (`next`'s path). `nextBatch` makes the same read inline, without this
   * function's promise; what comes before and after it is shared (`#beforeRead`, `#took`),
   * and a change to the read itself (a deadline) belongs in both.
   */
  async #fill(): Promise<boolean> {
    if (this.#eof || this.#closed) return false;
    const buf = this.#beforeRead();
    let n: number | null;
    try {
      n = await this.conn.read(buf);
    } catch {
      n = null;
    }
    return this.#took(n, buf);
  }

  /**
   * What comes before each read (`#fill`'s and `nextBatch`'s): the last frames are handled,
   * their relays gone, so the next frame's decipher is made now. Returns the buffer to read
   * into, which `#took` then frames.
   */
  #beforeRead(): Uint8Array {
    this.#opener?.prepare();
    return this.#buf;
  }

  /** Frames the `n` bytes a read brought into `buf` (null: EOF); false when nothing more will come. */
  #took(n: number | null, buf: Uint8Array): boolean {
    if (n === null) {
      this.#eof = true;
      return false;
    }
    this.bytesIn += n;
    if (this.#counters) this.#counters.bytesIn += n;
    const got = this.#decoder.push(buf.subarray(0, n));
    for (const f of got.frames) this.#frames.push(f);
    if (got.error !== null) {
      this.#eof = true;
      this.problem ??= got.error;
    }
    return true;
  }

  /**
   * Opens and parses one received frame; null (channel closed) when it is not valid. In the
   * call unless the frame is too large to open in the call (`Opener.open`).
   */
  #decode(frame: Uint8Array): BusMessage | null | Promise<BusMessage | null> {
    if (this.#opener === null) return this.#parse(frame);
    const plain = this.#opener.open(frame as Uint8Array<ArrayBuffer>);
    return plain instanceof Promise
      ? plain.then((p) => this.#parse(p))
      : this.#parse(plain);
  }

  #parse(body: Uint8Array | null): BusMessage | null {
    if (body === null) {
      this.#fail("a frame failed authentication");
      return null;
    }
    const msg = parseMessage(bytesToString(body));
    if (msg === null) {
      this.#fail("not a bus message");
      return null;
    }
    return msg;
  }

  /** The next message, or null at EOF or on a bad frame; throws PeerTimeout after `timeoutMs`. */
  async next(timeoutMs?: number): Promise<BusMessage | null> {
    this.#enter();
    try {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let timedOut = false;
      if (this.#frames.length === 0 && timeoutMs !== undefined) {
        timer = setTimeout(() => {
          timedOut = true;
          this.close();
        }, timeoutMs);
      }
      try {
        while (this.#frames.length === 0) {
          if (!(await this.#fill())) break;
        }
      } finally {
        clearTimeout(timer);
      }
      if (timedOut) throw new PeerTimeout(`no answer within ${timeoutMs} ms`);
      const frame = this.#frames.shift();
      if (frame === undefined) {
        if (this.problem !== null) this.close();
        return null;
      }
      return await this.#decode(frame);
    } finally {
      this.#reading = false;
    }
  }

  /**
   * One reader at a time (`next`, `nextBatch`): frames are views into the read buffer
   * (`#buf`), which a second reader's read would overwrite under the first.
   */
  #enter(): void {
    if (this.#reading) {
      throw new Error("a bus channel is read by one reader at a time");
    }
    this.#reading = true;
  }

  /**
   * Every message received so far (waiting for at least one), or null at EOF or on a bad
   * frame. A relay's path: the read is awaited here (the same read as `#fill`, inline) and
   * frames are opened and parsed in the call, so a record reaches the node one promise after
   * its bytes. At idle each step of a record's path runs cold: through `next`, `#fill` and
   * `#decode`, the read took 58 µs on average to reach the node at a relay, 46 µs this way
   * (docs/benchmarks.md, round eight).
   */
  async nextBatch(): Promise<BusMessage[] | null> {
    this.#enter();
    try {
      while (this.#frames.length === 0) {
        if (this.#eof || this.#closed) {
          if (this.problem !== null) this.close();
          return null;
        }
        const buf = this.#beforeRead();
        let n: number | null;
        try {
          n = await this.conn.read(buf);
        } catch {
          n = null;
        }
        this.#took(n, buf);
      }
      const frames = this.#frames;
      this.#frames = [];
      const out: BusMessage[] = [];
      for (const frame of frames) {
        const decoded = this.#decode(frame);
        const msg = decoded instanceof Promise ? await decoded : decoded;
        if (msg === null) return null;
        out.push(msg);
      }
      return out;
    } finally {
      this.#reading = false;
    }
  }

  /**
   * Queues a control message. Returns false when the channel is closed, or (unless
   * `control`) when the outbox would pass its bound.
   */
  send(msg: BusMessage, control = true): boolean {
    const body = formatMessage(msg);
    return this.#queue({
      body,
      records: [],
      bytes: body.length + 4,
      sealer: this.#sealer,
    }, control);
  }

  /**
   * Queues records (AT lines). Returns false, queuing nothing, when the channel is closed
   * or the outbox would pass its bound: the owner then drops the link and relies on
   * catch-up.
   */
  sendRecords(records: string[], bytes?: number): boolean {
    let n = bytes ?? 0;
    if (bytes === undefined) { for (const r of records) n += r.length + 1; }
    const last = this.#out.at(-1);
    if (
      last !== undefined && last.body === null && last.sealer === this.#sealer
    ) {
      if (this.#closed || this.outboxBytes + n > this.#limits.maxOutboxBytes) {
        return false;
      }
      for (const r of records) last.records.push(r);
      last.bytes += n;
      this.#outBytes += n;
      return true;
    }
    return this.#queue(
      { body: null, records: records.slice(), bytes: n, sealer: this.#sealer },
      false,
    );
  }

  #queue(item: OutItem, control: boolean): boolean {
    if (this.#closed) return false;
    if (
      !control && this.outboxBytes + item.bytes > this.#limits.maxOutboxBytes
    ) {
      return false;
    }
    this.#out.push(item);
    this.#outBytes += item.bytes;
    if (!this.#writing) {
      this.#writing = true;
      // Records are a relay's latency; control messages wait for the end of the turn.
      if (control) queueMicrotask(() => this.#writeLoop());
      else void this.#writeLoop();
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

  /** The frame bodies of the queued items, records merged into frames of about FLUSH_BYTES. */
  static bodies(item: OutItem): string[] {
    if (item.body !== null) return [item.body];
    const out: string[] = [];
    let part: string[] = [];
    let bytes = 0;
    for (const r of item.records) {
      if (
        part.length > 0 &&
        (bytes + r.length > FLUSH_BYTES || part.length >= 4096)
      ) {
        out.push(formatMessage({ kind: "records", records: part }));
        part = [];
        bytes = 0;
      }
      part.push(r);
      bytes += r.length + 1;
    }
    if (part.length > 0) {
      out.push(formatMessage({ kind: "records", records: part }));
    }
    return out;
  }

  /**
   * The frames of `items`, length-prefixed, in one buffer: a plain body is written straight
   * into it (no buffer of its own, no second copy), a sealed one as its ciphertext. In the
   * call (no promise) unless a frame is too large to seal in the call (`Sealer.sealNow`).
   * The buffer is a view into `scratch` when they fit in it: the caller must be done with
   * those bytes (written) before it encodes into `scratch` again.
   */
  static encode(
    items: OutItem[],
    scratch?: Uint8Array,
  ): Uint8Array | Promise<Uint8Array> {
    const parts: (string | Uint8Array | Promise<Uint8Array>)[] = [];
    let later = false;
    for (const item of items) {
      for (const body of BusChannel.bodies(item)) {
        if (item.sealer === null) {
          parts.push(body);
          continue;
        }
        // Sequence numbers are taken in call order, so frames sealed later keep their place.
        const plain = stringToBytes(body) as Uint8Array<ArrayBuffer>;
        const now = item.sealer.sealNow(plain);
        if (now === null) later = true;
        parts.push(now ?? item.sealer.seal(plain));
      }
    }
    if (!later) {
      return BusChannel.#join(parts as (string | Uint8Array)[], scratch);
    }
    return Promise.all(parts).then((done) => BusChannel.#join(done, scratch));
  }

  static #join(
    parts: (string | Uint8Array)[],
    scratch: Uint8Array | undefined,
  ): Uint8Array {
    let size = 0;
    for (const part of parts) size += HEADER_BYTES + part.length;
    const out = scratch !== undefined && size <= scratch.length
      ? scratch.subarray(0, size)
      : new Uint8Array(size);
    let off = 0;
    for (const part of parts) {
      const n = part.length;
      out[off] = n >>> 24;
      out[off + 1] = (n >>> 16) & 0xff;
      out[off + 2] = (n >>> 8) & 0xff;
      out[off + 3] = n & 0xff;
      off += HEADER_BYTES;
      if (typeof part === "string") off += writeByteString(part, out, off);
      else {
        out.set(part, off);
        off += part.length;
      }
    }
    return out;
  }

  async #writeLoop(): Promise<void> {
    try {
      while (this.#out.length > 0 && !this.#closed) {
        const items = this.#out;
        this.#out = [];
        this.#inflightBytes = this.#outBytes;
        this.#outBytes = 0;
        // Encoded and handed to the kernel in this turn when nothing needs Web Crypto: a
        // relay leaves before the commit the same record started (`Store.offer`). Into the
        // scratch buffer when it fits: this loop is its one user, and the write is awaited
        // before the next encode.
        const encoded = BusChannel.encode(items, this.#scratch);
        const all = encoded instanceof Uint8Array ? encoded : await encoded;
        await writeAll(this.conn, all);
        this.bytesOut += all.length;
        if (this.#counters) this.#counters.bytesOut += all.length;
        this.#inflightBytes = 0;
        this.#notify();
      }
      // Idle again, its writes gone: make the next frame's cipher now, not on its way.
      if (!this.#closed) this.#sealer?.prepare();
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
    this.#sealer?.release();
    this.#opener?.release();
    try {
      this.conn.close();
    } catch { /* already closed */ }
    this.#notify();
  }
}
