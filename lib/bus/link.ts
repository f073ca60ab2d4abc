/**
 * One outbound link: this node dials one neighbor's bus port, proves who it is, and pushes
 * the records it accepts on that connection; it reconnects with capped exponential backoff
 * and full jitter when the connection goes away, and runs the dialer's half of catch-up on
 * every (re)connection and when idle.
 *
 * A link sees the rest of the node only through `LinkContext` (no back-reference to the
 * pool). It has one `AbortController` for its life: `stop()` aborts it, which cancels a
 * dial, a backoff wait and the connection at once; `wake()` cuts a backoff wait short (a
 * peer that just connected to us is alive again).
 *
 * @module
 */

import { pause } from "../async.ts";
import type { NodeLog } from "../log.ts";
import type { ServerSpec } from "../topology.ts";
import { BusChannel, PeerTimeout } from "./channel.ts";
import { CatchupDialer } from "./catchup.ts";
import { type BusKeys, dialerHandshake } from "./handshake.ts";
import type {
  BusSettings,
  CatchupStore,
  FloodStats,
  PeerCounters,
} from "./types.ts";

/** What a link needs from the node around it. */
export interface LinkContext {
  /** This node's name. */
  self: string;
  settings: BusSettings;
  keys: Promise<BusKeys | null>;
  log: NodeLog;
  stats: FloodStats;
  /** This neighbor's counters (shared with its inbound side). */
  counters: PeerCounters;
  store: CatchupStore;
  /** Allocates a connection id for the log. */
  connId(): number;
  /** When this node last accepted a record (idle checks wait for a quiet node). */
  lastAccepted(): number;
}

/** The outbound link to one neighbor. */
export class Link {
  readonly peer: ServerSpec;
  readonly #ctx: LinkContext;
  readonly #life = new AbortController();
  #wake = new AbortController();
  #ch: BusChannel | null = null;
  #catchup: CatchupDialer | null = null;
  /** Authenticated and ready to carry records. */
  ready = false;
  #attempt = 0;
  #refusedInARow = 0;
  #running: Promise<void> | null = null;
  #lastSend = 0;
  #dropReason = "closed";

  constructor(ctx: LinkContext, peer: ServerSpec) {
    this.#ctx = ctx;
    this.peer = peer;
  }

  /** Is a catch-up toward the peer in progress? */
  get catchingUp(): boolean {
    return this.ready && (this.#catchup?.syncing ?? false);
  }

  start(): void {
    this.#running = this.#run();
  }

  /**
   * Queues records; when the link is down they are left to catch-up. Returns false when
   * they were not queued.
   */
  send(records: string[]): boolean {
    const { stats, counters, log, settings } = this.#ctx;
    const ch = this.#ch;
    if (!this.ready || ch === null || ch.closed) {
      stats.droppedWhileDown += records.length;
      return false;
    }
    if (!ch.sendRecords(records)) {
      stats.outboxOverflows++;
      stats.droppedWhileDown += records.length;
      this.#dropReason = "outbox overflow";
      log.warn("peer_outbox_overflow", {
        peer: this.peer.name,
        bytes: ch.outboxBytes,
        limit: settings.maxOutboxBytes,
      });
      ch.close();
      return false;
    }
    stats.recordsSent += records.length;
    counters.recordsSent += records.length;
    this.#lastSend = Date.now();
    return true;
  }

  /** Reconnects now if waiting in backoff (the peer just showed it is alive). */
  wake(): void {
    this.#attempt = 0;
    this.#wake.abort();
  }

  /**
   * The peer found our states differ: compare digests on this link now (at most once every
   * half sync interval), or reconnect now if the link is waiting in backoff.
   */
  syncSoon(): void {
    const c = this.#catchup;
    if (!this.ready || c === null) {
      this.wake();
      return;
    }
    const half = this.#ctx.settings.syncIntervalMs / 2;
    if (c.syncing || Date.now() - c.lastSum < half) return;
    c.sum();
  }

  /**
   * Compares digests again once the link and the node have been quiet for a sync interval
   * (a safety net: every (re)connection already compares).
   */
  idleSync(): void {
    const interval = this.#ctx.settings.syncIntervalMs;
    const now = Date.now();
    const c = this.#catchup;
    if (
      !this.ready || c === null || c.syncing ||
      now - this.#lastSend < interval ||
      now - this.#ctx.lastAccepted() < interval
    ) {
      return;
    }
    c.sum();
  }

  async #run(): Promise<void> {
    const { log, settings, stats } = this.#ctx;
    const stop = this.#life.signal;
    while (!stop.aborted) {
      this.#dropReason = "closed";
      try {
        await this.#connectOnce();
      } catch (e) {
        if (
          !(e instanceof Deno.errors.ConnectionRefused) && this.#attempt < 2 &&
          !stop.aborted
        ) {
          log.warn("peer_link_failed", {
            peer: this.peer.name,
            error: (e as Error).message,
          });
        }
      } finally {
        if (this.ready) {
          this.ready = false;
          stats.linksUp--;
          log.event("peer_dropped", {
            peer: this.peer.name,
            reason: stop.aborted ? "stopping" : this.#dropReason,
          });
        }
        this.#ch?.close();
        this.#ch = null;
        this.#catchup = null;
      }
      if (stop.aborted) break;
      const cap = Math.min(
        settings.backoffMaxMs,
        settings.backoffBaseMs * 2 ** this.#attempt,
      );
      this.#attempt = Math.min(this.#attempt + 1, 30);
      if (this.#wake.signal.aborted) this.#wake = new AbortController();
      await pause(
        Math.random() * cap,
        AbortSignal.any([stop, this.#wake.signal]),
      );
      if (this.#wake.signal.aborted) this.#wake = new AbortController();
    }
  }

  /** Connects within the handshake timeout; null when it took too long or we stopped. */
  async #connect(): Promise<Deno.TcpConn | null> {
    const { settings } = this.#ctx;
    // Its own controller, not the link's: Deno closes a connection when the signal given
    // to `connect` aborts, even long after it connected.
    const attempt = new AbortController();
    const give = () => attempt.abort();
    const timer = setTimeout(give, settings.handshakeTimeoutMs);
    this.#life.signal.addEventListener("abort", give, { once: true });
    try {
      return await Deno.connect({
        hostname: this.peer.host,
        port: this.peer.peerPort,
        signal: attempt.signal,
      });
    } catch (e) {
      if (attempt.signal.aborted) return null;
      throw e;
    } finally {
      clearTimeout(timer);
      this.#life.signal.removeEventListener("abort", give);
    }
  }

  async #connectOnce(): Promise<void> {
    const { settings, stats, log, store, self } = this.#ctx;
    const conn = await this.#connect();
    if (conn === null) return;
    try {
      conn.setNoDelay(true);
    } catch { /* gone already */ }
    const id = this.#ctx.connId();
    const ch = new BusChannel(conn, {
      handshakeFrameBytes: settings.handshakeFrameBytes,
      frameBytes: settings.maxFrameBytes,
      maxOutboxBytes: settings.maxOutboxBytes,
    }, stats);
    this.#ch = ch;
    if (this.#life.signal.aborted) return;
    const keys = await this.#ctx.keys;
    const result = await dialerHandshake(
      ch,
      keys,
      self,
      this.peer.name,
      settings.handshakeTimeoutMs,
    );
    if (!result.ok) {
      this.#refused(id, result.kind, result.reason);
      return;
    }
    this.ready = true;
    this.#attempt = 0;
    this.#refusedInARow = 0;
    stats.linksUp++;
    log.event("peer_connected", {
      conn: id,
      peer: this.peer.name,
      authenticated: result.authenticated,
    });
    if (result.authenticated) {
      log.event("peer_authenticated", {
        conn: id,
        peer: this.peer.name,
        side: "dialer",
      });
    }
    const catchup = new CatchupDialer(
      store,
      ch,
      (records) => this.send(records),
      { entries: settings.maxHaveEntries, bytes: settings.maxHaveBytes },
      settings.maxOutboxBytes,
    );
    // Comparisons start once the store is loaded: a digest of a half-loaded store would
    // leave out what is not loaded yet (and `syncSoon`/`idleSync` wait for `#catchup`).
    await store.loaded;
    this.#catchup = catchup;
    catchup.sum();
    for (;;) {
      let msg;
      try {
        msg = await ch.next();
      } catch (e) {
        if (e instanceof PeerTimeout) return;
        throw e;
      }
      if (msg === null) {
        if (ch.problem !== null) this.#protocolProblem(id, ch.problem);
        return;
      }
      const problem = await catchup.handle(
        msg,
        stats,
        (records, buckets) =>
          log.event("peer_sync_sent", {
            peer: this.peer.name,
            buckets,
            records,
          }),
      );
      if (problem !== null) {
        this.#protocolProblem(id, problem);
        return;
      }
    }
  }

  #protocolProblem(id: number, problem: string): void {
    this.#dropReason = problem;
    this.#ctx.log.warn("peer_protocol_error", {
      conn: id,
      peer: this.peer.name,
      side: "dialer",
      problem,
    });
  }

  #refused(id: number, kind: "refused" | "unanswered", reason: string): void {
    if (kind === "refused") this.#ctx.stats.refused++;
    this.#refusedInARow++;
    const n = this.#refusedInARow;
    if (n <= 2 || n % 10 === 0) {
      this.#ctx.log.warn(
        kind === "refused" ? "peer_refused" : "peer_unanswered",
        {
          conn: id,
          peer: this.peer.name,
          ...(kind === "refused" ? { side: "dialer" } : {}),
          reason,
          ...(n > 1 ? { times: n } : {}),
        },
      );
    }
  }

  /** Stops the link: cancels a dial or a wait, closes the connection. */
  async stop(): Promise<void> {
    this.#life.abort();
    this.#ch?.close();
    await this.#running;
  }
}
