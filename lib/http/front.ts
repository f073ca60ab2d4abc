/**
 * The TCP front of a node's HTTP port: accepts on `httpPort`, bounds each connection, and
 * pipes it both ways to the node's own `Deno.serve` on a Unix socket that only it uses.
 *
 * Why (measured with Deno 2.9.6): `Deno.serve` has no header timeout, no idle timeout and
 * no connection cap. A TCP connection that sends nothing, or half a request head, was still
 * open after 70 s, at ~17 KB each, so a few thousand of them exhaust the descriptors.
 * `Deno.serveHttp` is a deprecated stub and `node:http` is built on `Deno.serve`, so the
 * bounds have to sit in front of it, on the raw bytes:
 *
 * - a connection cap: past `maxConnections` open ones, a new connection is accepted and
 *   closed at once;
 * - a header deadline: the first request's head (up to its empty line) must arrive within
 *   `headerTimeoutMs` of accept and be at most `maxHeaderBytes`, else a raw 408 or 431 and
 *   close. Only then is the Unix connection opened, so a stuck client costs the server
 *   nothing;
 * - an idle timeout: no byte in either direction for `idleTimeoutMs` closes both sides
 *   (the node's WebSockets ping after `wsIdleTimeoutS / 2` of silence, which keeps a live
 *   watcher busy: the face never sets the idle timeout below `wsIdleTimeoutS`).
 *
 * Each cut is counted by reason and logged (rate-limited by the log per event name). The
 * bytes are piped unchanged, so keep-alive, chunked bodies and WebSocket upgrades work as
 * before. One copy through user space per direction costs a little speed (docs/http.md).
 *
 * @module
 */

import type { NodeLog } from "../log.ts";
import { writeAll } from "../write_all.ts";

/** The front's bounds (defaults in `HTTP_DEFAULTS`, `lib/http/server.ts`). */
export interface FrontBounds {
  /** TCP connections open at once; past it a new one is closed at once. */
  maxConnections: number;
  /** The first request's head must arrive within this many ms of accept (else 408). */
  headerTimeoutMs: number;
  /** The first request's head may be at most this many bytes (else 431). */
  maxHeaderBytes: number;
  /** A connection with no byte either way for this many ms is closed. */
  idleTimeoutMs: number;
}

/** Front options. */
export interface FrontOptions extends FrontBounds {
  hostname: string;
  port: number;
  /** Opens a connection to the node's own `Deno.serve` behind the front. */
  inner: () => Promise<Deno.Conn>;
  log: NodeLog;
}

/** Why a connection was cut. */
export type CutReason = "cap" | "header" | "idle";

/** What `/metrics` shows of the front. */
export interface FrontStats {
  connections: number;
  cuts: Record<CutReason, number>;
}

/** Bytes read at once per direction. */
const CHUNK = 16 * 1024;

/** One piped connection. */
interface Piped {
  client: Deno.Conn;
  inner: Deno.Conn | null;
  /** `performance.now()` of the last byte either way. */
  last: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  closed: boolean;
  done: Promise<void>;
}

function rawAnswer(status: string, error: string): Uint8Array {
  const body = JSON.stringify({ error });
  return new TextEncoder().encode(
    `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\n` +
      `content-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/**
 * Where a request head ends in `buf` (the index just past its empty line), searching from
 * `from`; -1 if not yet. Accepts LF as well as CRLF line ends, as the server behind does.
 */
export function headEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = Math.max(from, 1); i < to; i++) {
    if (buf[i] !== 10) continue;
    if (buf[i - 1] === 10) return i + 1;
    if (buf[i - 1] === 13 && i >= 2 && buf[i - 2] === 10) return i + 1;
  }
  return -1;
}

/** Accepts on the HTTP port, bounds each connection and pipes it to the Unix socket. */
export class HttpFront {
  readonly #o: FrontOptions;
  #listener: Deno.TcpListener | null = null;
  #accepting: Promise<void> = Promise.resolve();
  readonly #conns = new Set<Piped>();
  readonly cuts: Record<CutReason, number> = { cap: 0, header: 0, idle: 0 };
  readonly #answer408: Uint8Array;
  readonly #answer431: Uint8Array;

  constructor(opts: FrontOptions) {
    this.#o = opts;
    this.#answer408 = rawAnswer(
      "408 Request Timeout",
      `the request head did not arrive within ${opts.headerTimeoutMs} ms`,
    );
    this.#answer431 = rawAnswer(
      "431 Request Header Fields Too Large",
      `the request head is larger than ${opts.maxHeaderBytes} bytes`,
    );
  }

  /** TCP connections open now. */
  get connections(): number {
    return this.#conns.size;
  }

  /** The bound port. */
  get port(): number {
    return (this.#listener!.addr as Deno.NetAddr).port;
  }

  /** The figures `/metrics` shows. */
  get stats(): FrontStats {
    return { connections: this.#conns.size, cuts: { ...this.cuts } };
  }

  /** Binds the TCP port; throws `Deno.errors.AddrInUse` and friends for the caller. */
  listen(): void {
    this.#listener = Deno.listen({
      hostname: this.#o.hostname,
      port: this.#o.port,
    });
  }

  /** Starts accepting (after the server behind listens). */
  serve(): void {
    this.#accepting = this.#accept(this.#listener!);
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const conn of listener) {
        if (this.#conns.size >= this.#o.maxConnections) {
          try {
            conn.close();
          } catch { /* closed */ }
          this.#cut("cap", { limit: this.#o.maxConnections });
          continue;
        }
        this.#pipe(conn);
      }
    } catch { /* the listener closed */ }
  }

  #cut(reason: CutReason, fields: Record<string, unknown> = {}): void {
    this.cuts[reason]++;
    const line = { reason, cut: this.cuts[reason], ...fields };
    // Over the cap is the operator's business; a browser's unused preconnect (header) and
    // an idle keep-alive connection are ordinary, kept in the file only.
    if (reason === "cap") this.#o.log.warn("http_cut", line);
    else this.#o.log.record(`http_cut_${reason}`, line);
  }

  #pipe(client: Deno.Conn): void {
    const p: Piped = {
      client,
      inner: null,
      last: performance.now(),
      timer: undefined,
      closed: false,
      done: Promise.resolve(),
    };
    this.#conns.add(p);
    p.done = this.#run(p).finally(() => {
      this.#close(p);
      this.#conns.delete(p);
    });
  }

  async #run(p: Piped): Promise<void> {
    const first = await this.#head(p);
    if (first === null || p.closed) return;
    let inner: Deno.Conn;
    try {
      inner = await this.#o.inner();
    } catch (e) {
      this.#o.log.warn("http_front_failed", { error: (e as Error).message });
      return;
    }
    if (p.closed) {
      inner.close(); // stopped while connecting
      return;
    }
    p.inner = inner;
    p.last = performance.now();
    this.#armIdle(p, this.#o.idleTimeoutMs);
    try {
      await writeAll(inner, first);
    } catch {
      return;
    }
    await Promise.all([
      this.#pump(p.client, inner, p, false),
      this.#pump(inner, p.client, p, true),
    ]);
  }

  /** Reads the first request's head within the deadline and size; null when cut or gone. */
  async #head(p: Piped): Promise<Uint8Array | null> {
    const max = this.#o.maxHeaderBytes;
    // One byte over the limit tells a head that is too large from one that fits exactly.
    const buf = new Uint8Array(max + 1);
    let len = 0;
    let timedOut = false;
    p.timer = setTimeout(() => {
      timedOut = true;
      this.#cut("header", { why: "timeout", bytes: len });
      this.#refuse(p, this.#answer408);
    }, this.#o.headerTimeoutMs);
    try {
      for (;;) {
        const n = await p.client.read(buf.subarray(len));
        if (n === null || timedOut) return null;
        const from = Math.max(0, len - 2);
        len += n;
        const end = headEnd(buf, from, len);
        if (end >= 0 && end <= max) return buf.slice(0, len);
        if (len > max) {
          this.#cut("header", { why: "size", bytes: len });
          await this.#refuse(p, this.#answer431);
          return null;
        }
      }
    } catch {
      return null;
    } finally {
      clearTimeout(p.timer);
      p.timer = undefined;
    }
  }

  /** Writes a raw answer (a few bytes into an empty socket buffer) and closes. */
  async #refuse(p: Piped, answer: Uint8Array): Promise<void> {
    try {
      await writeAll(p.client, answer);
    } catch { /* gone */ }
    this.#close(p);
  }

  /** Copies `from` to `to`; the server's end closes both, the client's half-closes. */
  async #pump(
    from: Deno.Conn,
    to: Deno.Conn,
    p: Piped,
    fromServer: boolean,
  ): Promise<void> {
    const buf = new Uint8Array(CHUNK);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        p.last = performance.now();
        // Mostly one write takes it all: the loop only for the rest.
        const w = await to.write(buf.subarray(0, n));
        if (w < n) await writeAll(to, buf.subarray(w, n));
        p.last = performance.now();
      }
      if (fromServer) this.#close(p);
      else await to.closeWrite();
    } catch {
      this.#close(p);
    }
  }

  /** The idle timer: fires once per period and re-arms for what is left of it. */
  #armIdle(p: Piped, ms: number): void {
    p.timer = setTimeout(() => {
      const idle = performance.now() - p.last;
      if (idle >= this.#o.idleTimeoutMs) {
        this.#cut("idle", { idleMs: Math.round(idle) });
        this.#close(p);
      } else this.#armIdle(p, this.#o.idleTimeoutMs - idle);
    }, Math.max(1, Math.ceil(ms)));
  }

  #close(p: Piped): void {
    if (p.closed) return;
    p.closed = true;
    clearTimeout(p.timer);
    p.timer = undefined;
    for (const c of [p.client, p.inner]) {
      try {
        c?.close();
      } catch { /* closed */ }
    }
  }

  /**
   * Stops accepting and closes the connections whose head has not arrived (they never
   * reached the server); the others go on.
   */
  async stopAccepting(): Promise<void> {
    try {
      this.#listener?.close();
    } catch { /* closed */ }
    await this.#accepting;
    for (const p of this.#conns) if (p.inner === null) this.#close(p);
  }

  /** Resolves once every open connection has ended. */
  async drained(): Promise<void> {
    while (this.#conns.size > 0) {
      await Promise.all([...this.#conns].map((p) => p.done));
    }
  }

  /** Closes every open connection and waits until each has let go. */
  async closeAll(): Promise<void> {
    const all = [...this.#conns];
    for (const p of all) this.#close(p);
    await Promise.all(all.map((p) => p.done));
  }
}
