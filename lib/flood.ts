/**
 * The neighbor pool of one node: which links exist, relay and publish, stop, and what
 * operators see of each neighbor (`peerStatus()`).
 *
 * Each node dials every neighbor's bus port and keeps that connection (its outbound link,
 * `bus/link.ts`) to push what it accepts; it receives from the neighbors' links to it
 * (`bus/inbound.ts`). So every pair of neighbors has two connections, each carrying one
 * direction of records, and catch-up (`bus/catchup.ts`) runs on both.
 *
 * - Relay: a record a node accepts is queued on every outbound link except the one toward
 *   the peer it came from; records queued together leave in one frame.
 * - Bounded: a link whose outbox passes its bound (a stalled neighbor) is dropped, counted
 *   and logged, and catch-up recovers what it held when it reconnects. Until a connection
 *   on the bus port has finished its handshake it may send frames of the client line limit
 *   only, has `handshakeTimeoutMs` to finish, and at most `maxHandshakes` such connections
 *   exist at once; more are closed at once, counted and logged within a budget.
 * - Authentication and encryption: `bus/handshake.ts`. Nothing a peer sends is accepted
 *   before `OK`; with a secret every later frame is sealed. The secret is never logged.
 * - A neighbor that authenticates again replaces its older inbound connection (it redials
 *   only after giving up on the old one), and wakes our link toward it.
 *
 * Log events: `peer_connected` / `peer_accepted` (with `authenticated`),
 * `peer_authenticated`, `peer_refused` (with a reason), `peer_unanswered` (a handshake
 * that timed out), `peer_dropped`, `peer_protocol_error`, `peer_record_invalid`,
 * `peer_handshakes_full`, `peer_outbox_overflow`, `peer_sync_sent` and `peer_caught_up`
 * (with counts).
 *
 * @module
 */

import { BusChannel } from "./bus/channel.ts";
import {
  acceptorHandshake,
  type BusKeys,
  importSecret,
} from "./bus/handshake.ts";
import { serveInbound } from "./bus/inbound.ts";
import { Link } from "./bus/link.ts";
import {
  busDefaults,
  type BusSettings,
  type FloodStats,
  LogBudget,
  newStats,
  type PeerCounters,
} from "./bus/types.ts";
import { withDefaults } from "./defaults.ts";
import type { NodeLog } from "./log.ts";
import type { Store } from "./store.ts";
import type { ServerSpec } from "./topology.ts";

export type { FloodStats } from "./bus/types.ts";

/** One neighbor link as operators see it. */
export interface PeerStatus {
  name: string;
  state: "up" | "down" | "catching-up";
  recordsSent: number;
  recordsReceived: number;
}

/** Flood options; durations in ms. Unset tuning takes `busDefaults`. */
export interface FloodOptions extends Partial<BusSettings> {
  name: string;
  neighbors: ServerSpec[];
  /** Every node name of the topology: a record must name one of them. */
  nodes: Iterable<string>;
  secret?: string;
  store: Store;
  log: NodeLog;
  /**
   * Takes valid records received from `from`; the node offers them and relays. Returns how
   * many it accepted (for the caught-up counts).
   */
  receive: (lines: string[], from: string) => number;
  /** Allocates a connection id for the log. */
  connId: () => number;
}

/** The neighbor pool of one node. */
export class Flood {
  readonly #o: FloodOptions;
  readonly #settings: BusSettings;
  readonly #links = new Map<string, Link>();
  readonly #counters = new Map<string, PeerCounters>();
  readonly #nodes: ReadonlySet<string>;
  readonly #open = new Set<BusChannel>();
  readonly #served = new Set<Promise<void>>();
  /** The authenticated inbound connection of each neighbor. */
  readonly #inboundOf = new Map<string, BusChannel>();
  /** Refusals in a row per neighbor name, to keep a retrying peer from flooding the log. */
  readonly #inboundRefusals = new Map<string, number>();
  readonly #invalidLog = new LogBudget();
  readonly #fullLog = new LogBudget();
  /** Refusals of connections that name no neighbor. */
  readonly #strangerLog = new LogBudget();
  readonly #keys: Promise<BusKeys | null>;
  #handshakes = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #stopped = false;
  #lastAccepted = 0;
  readonly stats: FloodStats = newStats();

  constructor(opts: FloodOptions) {
    this.#o = opts;
    const s = withDefaults(busDefaults, opts);
    this.#settings = s;
    this.#nodes = new Set(opts.nodes);
    this.#keys = importSecret(opts.secret);
    for (const n of opts.neighbors) {
      const counters = { recordsSent: 0, recordsReceived: 0, catchingUp: 0 };
      this.#counters.set(n.name, counters);
      this.#links.set(
        n.name,
        new Link({
          self: opts.name,
          settings: s,
          keys: this.#keys,
          log: opts.log,
          stats: this.stats,
          counters,
          store: opts.store,
          connId: opts.connId,
          lastAccepted: () => this.#lastAccepted,
        }, n),
      );
    }
  }

  /** The bus settings in effect. */
  get settings(): Readonly<BusSettings> {
    return this.#settings;
  }

  /** Starts dialing every neighbor and the idle digest checks. */
  start(): void {
    for (const link of this.#links.values()) link.start();
    this.#timer = setInterval(() => {
      for (const link of this.#links.values()) link.idleSync();
    }, this.#settings.syncIntervalMs);
  }

  /**
   * Queues accepted records to every neighbor but `except` (where they came from): a
   * client's one record, or the records of a neighbor's frame that this node accepted, in
   * one call (one queueing per link, not one per record).
   */
  publish(lines: string[], except?: string): void {
    if (lines.length === 0) return;
    this.#lastAccepted = Date.now();
    for (const link of this.#links.values()) {
      if (link.peer.name !== except) link.send(lines);
    }
  }

  /**
   * When this node last accepted a record (from a client or a peer). Idle digest checks wait
   * for the whole node to be quiet: while records flow, digests differ only because of
   * records in flight, and comparing them would resend whole buckets for nothing.
   */
  get lastAccepted(): number {
    return this.#lastAccepted;
  }

  /** Is `name` one of this node's neighbors? */
  isNeighbor(name: string): boolean {
    return this.#links.has(name);
  }

  /** Names of neighbors whose outbound link is up. */
  connected(): string[] {
    return [...this.#links.values()].filter((l) => l.ready).map((l) =>
      l.peer.name
    );
  }

  /** Each neighbor: its link's state and the records sent to and received from it. */
  peerStatus(): PeerStatus[] {
    return [...this.#links.values()].map((link) => {
      const c = this.#counters.get(link.peer.name)!;
      const state = !link.ready
        ? "down"
        : link.catchingUp || c.catchingUp > 0
        ? "catching-up"
        : "up";
      return {
        name: link.peer.name,
        state,
        recordsSent: c.recordsSent,
        recordsReceived: c.recordsReceived,
      };
    });
  }

  /** Takes a connection accepted on the bus port. */
  adopt(conn: Deno.TcpConn): void {
    const close = () => {
      try {
        conn.close();
      } catch { /* closed */ }
    };
    if (this.#stopped) return close();
    if (this.#handshakes >= this.#settings.maxHandshakes) {
      close();
      this.stats.handshakesRejected++;
      const n = this.#fullLog.hit();
      if (n > 0) {
        this.#o.log.warn("peer_handshakes_full", {
          limit: this.#settings.maxHandshakes,
          rejected: n,
        });
      }
      return;
    }
    const s = this.#settings;
    const ch = new BusChannel(conn, {
      handshakeFrameBytes: s.handshakeFrameBytes,
      frameBytes: s.maxFrameBytes,
      maxOutboxBytes: s.maxOutboxBytes,
    }, this.stats);
    const id = this.#o.connId();
    this.#open.add(ch);
    let peer: string | null = null;
    const done: Promise<void> = this.#serve(ch, id, (p) => (peer = p))
      .catch((e) => {
        this.#o.log.warn("peer_inbound_failed", {
          conn: id,
          error: (e as Error).message,
        });
      }).finally(() => {
        ch.close();
        this.#open.delete(ch);
        this.#served.delete(done);
        if (peer !== null && this.#inboundOf.get(peer) === ch) {
          this.#inboundOf.delete(peer);
        }
      });
    this.#served.add(done);
  }

  async #serve(
    ch: BusChannel,
    id: number,
    authenticated: (peer: string) => void,
  ): Promise<void> {
    const { log, name } = this.#o;
    this.#handshakes++;
    let result;
    try {
      result = await acceptorHandshake(
        ch,
        await this.#keys,
        name,
        (p) => this.isNeighbor(p),
        this.#settings.handshakeTimeoutMs,
      );
    } finally {
      this.#handshakes--;
    }
    if (!result.ok) {
      if (result.kind === "refused") {
        this.#inboundRefused(id, result.peer, result.reason);
      }
      return;
    }
    const peer = result.peer;
    this.#inboundRefusals.delete(peer);
    // One inbound connection per neighbor: an older one is a connection the peer has
    // already given up on (it redials only after closing), so it goes.
    const older = this.#inboundOf.get(peer);
    this.#inboundOf.set(peer, ch);
    authenticated(peer);
    older?.close();
    log.event("peer_accepted", {
      conn: id,
      peer,
      authenticated: result.authenticated,
    });
    if (result.authenticated) {
      log.event("peer_authenticated", { conn: id, peer, side: "acceptor" });
    }
    const link = this.#links.get(peer)!;
    link.wake();
    await serveInbound(ch, id, peer, {
      settings: this.#settings,
      log,
      stats: this.stats,
      counters: this.#counters.get(peer)!,
      store: this.#o.store,
      nodes: this.#nodes,
      invalidLog: this.#invalidLog,
      receive: (records) => this.#o.receive(records, peer),
      differs: () => link.syncSoon(),
    });
  }

  /**
   * Logs a refusal within a budget: per neighbor, the first two in a row then every tenth;
   * for connections naming no neighbor, together, the first three then one in a hundred.
   */
  #inboundRefused(id: number, peer: string, reason: string): void {
    this.stats.refused++;
    let count: Record<string, number>;
    if (this.isNeighbor(peer)) {
      const n = (this.#inboundRefusals.get(peer) ?? 0) + 1;
      this.#inboundRefusals.set(peer, n);
      if (n > 2 && n % 10 !== 0) return;
      count = n > 1 ? { times: n } : {};
    } else {
      const n = this.#strangerLog.hit();
      if (n === 0) return;
      count = n > 1 ? { strangersRefused: n } : {};
    }
    this.#o.log.warn("peer_refused", {
      conn: id,
      peer,
      side: "acceptor",
      reason,
      ...count,
    });
  }

  /** Stops dialing, closes every peer connection. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await Promise.all([...this.#links.values()].map((l) => l.stop()));
    for (const ch of this.#open) ch.close();
    await Promise.all([...this.#served]);
  }
}
