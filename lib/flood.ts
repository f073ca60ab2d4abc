/**
 * Replication between neighbors. Each node dials every neighbor and keeps that connection
 * (its outbound link) to push what it accepts; it receives from the neighbors' links to it.
 * So every pair of neighbors has two connections, each carrying one direction of records.
 *
 * - Relay: a record a node accepts is queued on every outbound link except the one toward
 *   the peer it came from; queued records leave together in one write.
 * - Bounded: a link whose outbox passes its bound (a stalled neighbor) is dropped, counted
 *   and logged, and the records it held are recovered by catch-up when it reconnects.
 * - Catch-up: on every (re)connection, and whenever a link has been idle a while, the
 *   dialer sends its digest root; when the acceptor's differs, it answers with its bucket
 *   digests and the dialer sends the records of the buckets that differ, paced by the
 *   outbox so a large catch-up never overflows it. Since both sides dial, both directions
 *   converge without any client traffic; an acceptor that sees a difference also asks its
 *   own link toward that peer to compare at once, so a neighbor that was paused (SIGSTOP)
 *   is caught up as soon as it speaks again.
 * - Reconnect: capped exponential backoff with full jitter; a peer that connects to us cuts
 *   our wait toward it short, so a restarted node is caught up at once.
 * - Authentication: see `peer_wire.ts`. Nothing a peer sends is accepted before `HERD OK`.
 *   The secret is only ever an HMAC key here: it is never sent, logged or put in an error.
 *
 * Log events: `peer_connected` / `peer_accepted` (with `authenticated`),
 * `peer_authenticated`, `peer_refused` (with a reason), `peer_unanswered` (a handshake
 * that timed out), `peer_dropped`,
 * `peer_outbox_overflow`, `peer_sync_sent` and `peer_caught_up` (with counts).
 *
 * @module
 */

import { compareTimeText } from "./clock.ts";
import { BUCKETS, fnv1a } from "./digest.ts";
import { LineFramer } from "./lines.ts";
import type { NodeLog } from "./log.ts";
import { PeerChannel, PeerTimeout } from "./peer_channel.ts";
import { importSecret, nonce, prove, verify } from "./peer_wire.ts";
import { clientOf, parseAtLine, timeOf } from "./record.ts";
import type { Store } from "./store.ts";
import type { ServerSpec } from "./topology.ts";

/** Flood options; durations in ms. */
export interface FloodOptions {
  name: string;
  neighbors: ServerSpec[];
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
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Bounds connecting and each handshake step. Default 2000. */
  handshakeTimeoutMs?: number;
  /** A link idle this long re-checks digests with its peer. Default 1000. */
  syncIntervalMs?: number;
  /** Bytes queued toward one peer before the link is dropped. Default 16 MiB. */
  maxOutboxBytes?: number;
  /** Longest peer line. Default 1 MiB. */
  maxLineBytes?: number;
}

/** Counters for operators. Byte counts are live (open connections included). */
export interface FloodStats {
  linksUp: number;
  recordsSent: number;
  recordsReceived: number;
  recordsInvalid: number;
  droppedWhileDown: number;
  outboxOverflows: number;
  refused: number;
  syncs: number;
  syncRecordsSent: number;
  bytesOut: number;
  bytesIn: number;
}

/** One neighbor link as operators see it. */
export interface PeerStatus {
  name: string;
  state: "up" | "down" | "catching-up";
  recordsSent: number;
  recordsReceived: number;
}

type Settings = Required<Omit<FloodOptions, "secret">> & { secret?: string };

/** Longest piece of a peer's refusal reason that is logged. */
const MAX_REASON = 200;

/** Should the `n`th refusal in a row be logged? The first two, then every tenth. */
function worthLogging(n: number): boolean {
  return n <= 2 || n % 10 === 0;
}

/** Why a proof did not verify, without saying anything about the secret itself. */
function proofProblem(key: CryptoKey | null, proof: string): string {
  if (key === null) return "peer uses a secret and this node has none";
  if (proof === "-") return "peer has no secret and this node has one";
  return "wrong secret";
}

/** The neighbor pool of one node. */
export class Flood {
  readonly #o: Settings;
  readonly #links = new Map<string, Link>();
  readonly #inbound = new Set<PeerChannel>();
  readonly #inboundDone = new Set<Promise<void>>();
  /** The authenticated inbound connection of each neighbor. */
  readonly #inboundOf = new Map<string, PeerChannel>();
  /** Refusals in a row per neighbor name, to keep a retrying peer from flooding the log. */
  readonly #inboundRefusals = new Map<string, number>();
  #key: Promise<CryptoKey | null>;
  #timer: ReturnType<typeof setInterval> | undefined;
  #stopped = false;
  readonly stats: FloodStats = {
    linksUp: 0,
    recordsSent: 0,
    recordsReceived: 0,
    recordsInvalid: 0,
    droppedWhileDown: 0,
    outboxOverflows: 0,
    refused: 0,
    syncs: 0,
    syncRecordsSent: 0,
    bytesOut: 0,
    bytesIn: 0,
  };

  constructor(opts: FloodOptions) {
    // Defaults with `??`: an option passed as undefined still gets its default.
    this.#o = {
      ...opts,
      backoffBaseMs: opts.backoffBaseMs ?? 50,
      backoffMaxMs: opts.backoffMaxMs ?? 1000,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 2000,
      syncIntervalMs: opts.syncIntervalMs ?? 1000,
      maxOutboxBytes: opts.maxOutboxBytes ?? 16 * 1024 * 1024,
      maxLineBytes: opts.maxLineBytes ?? 1024 * 1024,
    };
    this.#key = importSecret(opts.secret);
    for (const n of opts.neighbors) this.#links.set(n.name, new Link(this, n));
  }

  /** @internal */
  get settings(): Settings {
    return this.#o;
  }

  /** @internal */
  key(): Promise<CryptoKey | null> {
    return this.#key;
  }

  /** @internal */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Starts dialing every neighbor and the idle digest checks. */
  start(): void {
    for (const link of this.#links.values()) link.start();
    this.#timer = setInterval(() => {
      for (const link of this.#links.values()) link.idleSync();
    }, this.#o.syncIntervalMs);
  }

  /** Queues an accepted record to every neighbor but `except` (where it came from). */
  publish(line: string, except?: string): void {
    this.#lastAccepted = Date.now();
    const text = line + "\n";
    for (const link of this.#links.values()) {
      if (link.peer.name !== except) link.send(text, 1);
    }
  }

  #lastAccepted = 0;

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

  /** Each neighbor's link state and record counts. */
  peerStatus(): PeerStatus[] {
    return [...this.#links.values()].map((l) => ({
      name: l.peer.name,
      state: l.ready ? "up" : "down",
      recordsSent: l.recordsSent,
      recordsReceived: l.recordsReceived,
    }));
  }

  /** Takes over an inbound connection whose first line is `HERD HELLO ...`. */
  adopt(conn: Deno.TcpConn, lines: string[], framer: LineFramer, id: number) {
    if (this.#stopped) {
      try {
        conn.close();
      } catch { /* closed */ }
      return;
    }
    // The framer comes from the client side with the client line limit; an AT line made
    // from a client line near that limit is longer than it, so peers get the peer limit.
    framer.setLimit(this.#o.maxLineBytes);
    const ch = new PeerChannel(
      conn,
      framer,
      lines,
      this.#o.maxOutboxBytes,
      this.stats,
    );
    this.#inbound.add(ch);
    let peer: string | null = null;
    const done: Promise<void> = this.#serveInbound(ch, id, (p) => (peer = p))
      .catch((e) => {
        this.#o.log.warn("peer_inbound_failed", {
          conn: id,
          error: (e as Error).message,
        });
      }).finally(() => {
        ch.close();
        this.#inbound.delete(ch);
        this.#inboundDone.delete(done);
        if (peer !== null && this.#inboundOf.get(peer) === ch) {
          this.#inboundOf.delete(peer);
        }
      });
    this.#inboundDone.add(done);
  }

  #inboundRefused(
    ch: PeerChannel,
    id: number,
    peer: string,
    reason: string,
  ): void {
    this.stats.refused++;
    const n = (this.#inboundRefusals.get(peer) ?? 0) + 1;
    if (this.isNeighbor(peer)) this.#inboundRefusals.set(peer, n);
    if (worthLogging(n)) {
      this.#o.log.warn("peer_refused", {
        conn: id,
        peer,
        side: "acceptor",
        reason,
        ...(n > 1 ? { times: n } : {}),
      });
    }
    ch.send(`HERD REFUSED ${reason}\n`, true);
  }

  async #serveInbound(
    ch: PeerChannel,
    id: number,
    authenticated: (peer: string) => void,
  ): Promise<void> {
    const { log, name, store, handshakeTimeoutMs } = this.#o;
    const hello = await ch.nextLine(handshakeTimeoutMs).catch(() => null);
    const f = hello?.split(" ") ?? [];
    if (f.length !== 4 || f[0] !== "HERD" || f[1] !== "HELLO") {
      ch.send("HERD REFUSED expected HELLO\n", true);
      await ch.drained();
      return;
    }
    const [, , peer, nonceD] = f;
    if (!this.isNeighbor(peer)) {
      this.#inboundRefused(
        ch,
        id,
        peer,
        `${name} does not list ${peer} as a neighbor`,
      );
      await ch.nextLine(50).catch(() => null);
      return;
    }
    const key = await this.#key;
    const nonceA = nonce();
    const proofA = await prove(key, "acceptor", peer, name, nonceD, nonceA);
    ch.send(`HERD WELCOME ${name} ${nonceA} ${proofA}\n`, true);
    const proofLine = await ch.nextLine(handshakeTimeoutMs).catch(() => null);
    const p = proofLine?.split(" ") ?? [];
    const ok = p.length === 3 && p[0] === "HERD" && p[1] === "PROOF" &&
      await verify(key, p[2], "dialer", peer, name, nonceD, nonceA);
    if (!ok) {
      let reason: string;
      if (proofLine === null) reason = "no proof";
      else if (proofLine.startsWith("HERD REFUSED ")) {
        reason = `peer refused us: ${proofLine.slice(13, 13 + MAX_REASON)}`;
      } else if (p.length === 3 && p[1] === "PROOF") {
        reason = proofProblem(key, p[2]);
      } else reason = "malformed proof";
      this.#inboundRefused(ch, id, peer, reason);
      await ch.nextLine(50).catch(() => null);
      return;
    }
    ch.send("HERD OK\n", true);
    this.#inboundRefusals.delete(peer);
    // One inbound connection per neighbor: an older one is a connection the peer has
    // already given up on (it redials only after closing), so it goes.
    const older = this.#inboundOf.get(peer);
    this.#inboundOf.set(peer, ch);
    authenticated(peer);
    older?.close();
    log.event("peer_accepted", { conn: id, peer, authenticated: key !== null });
    if (key !== null) {
      log.event("peer_authenticated", { conn: id, peer, side: "acceptor" });
    }
    this.#links.get(peer)?.nudge();
    let syncReceived = 0;
    let syncAccepted = 0;
    let syncing = false;
    let sums = 0;
    reading: for (;;) {
      const lines = await ch.nextBatch();
      if (lines === null) break;
      const records: string[] = [];
      for (const line of lines) {
        if (line.startsWith("AT ")) {
          if (parseAtLine(line) === null) {
            this.stats.recordsInvalid++;
            log.warn("peer_record_invalid", { conn: id, peer, line });
          } else records.push(line);
          continue;
        }
        // Records before this line are offered first, so the counts below are exact.
        this.#deliver(records, peer, syncing, (r, a) => {
          syncReceived += r;
          syncAccepted += a;
        });
        records.length = 0;
        if (line.startsWith("HERD SUM ")) {
          // A peer that asks for digests faster than it reads the answers is dropped: each
          // answer is ~11 KB and control lines are not held back by the outbox bound.
          if (ch.outboxBytes > 1024 * 1024) {
            log.warn("peer_dropped", { conn: id, peer, reason: "not reading" });
            break reading;
          }
          await store.loaded;
          sums++;
          if (line.slice(9) === store.digest.root()) {
            ch.send("HERD SAME\n", true);
            if (sums === 1) {
              log.event("peer_caught_up", {
                conn: id,
                peer,
                received: 0,
                accepted: 0,
                same: true,
              });
            }
          } else {
            syncing = true;
            syncReceived = syncAccepted = 0;
            ch.send(`HERD BUCKETS ${store.digest.encode()}\n`, true);
            // What we hold that the peer lacks travels on our own link toward it.
            this.#links.get(peer)?.syncSoon();
          }
        } else if (line.startsWith("HERD DIFF ")) {
          await this.#sendHave(ch, line.slice(10));
        } else if (line.startsWith("HERD SYNCED ")) {
          if (syncing) {
            log.event("peer_caught_up", {
              conn: id,
              peer,
              received: syncReceived,
              accepted: syncAccepted,
            });
          }
          syncing = false;
        } else {
          log.warn("peer_line_unknown", { conn: id, peer, line });
        }
      }
      this.#deliver(records, peer, syncing, (r, a) => {
        syncReceived += r;
        syncAccepted += a;
      });
      const wait = store.congested();
      if (wait) await wait.promise;
    }
    log.event("peer_inbound_closed", { conn: id, peer });
  }

  /**
   * Answers `HERD DIFF <buckets>`: for every record held in those buckets, its client, time
   * and line hash (`HERD HAVE c t h c t h ...`, paced by the outbox), then `HERD HAVE-END`.
   * The dialer then sends only what this node lacks or holds older.
   */
  async #sendHave(ch: PeerChannel, list: string): Promise<void> {
    const buckets = parseBucketList(list);
    if (buckets === null) {
      this.#o.log.warn("peer_diff_invalid", { list: list.slice(0, 80) });
      ch.send("HERD HAVE-END\n", true);
      return;
    }
    let part: string[] = [];
    let bytes = 0;
    for (const line of this.#o.store.recordsIn(buckets)) {
      const entry = `${clientOf(line)} ${timeOf(line)} ${lineHash(line)}`;
      // Lines stay far below the peer line limit whatever the ids and times look like.
      if (part.length === 500 || bytes + entry.length > 64 * 1024) {
        await ch.drained(256 * 1024);
        if (ch.closed) return;
        ch.send(`HERD HAVE ${part.join(" ")}\n`, true);
        part = [];
        bytes = 0;
      }
      part.push(entry);
      bytes += entry.length + 1;
    }
    if (part.length > 0) ch.send(`HERD HAVE ${part.join(" ")}\n`, true);
    ch.send("HERD HAVE-END\n", true);
  }

  #deliver(
    records: string[],
    peer: string,
    syncing: boolean,
    count: (received: number, accepted: number) => void,
  ): void {
    if (records.length === 0) return;
    this.stats.recordsReceived += records.length;
    const link = this.#links.get(peer);
    if (link) link.recordsReceived += records.length;
    const accepted = this.#o.receive(records.slice(), peer);
    if (syncing) count(records.length, accepted);
  }

  /** Stops dialing, closes every peer connection. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await Promise.all([...this.#links.values()].map((l) => l.stop()));
    for (const ch of this.#inbound) ch.close();
    await Promise.all([...this.#inboundDone]);
  }
}

/** The outbound link to one neighbor. */
class Link {
  readonly peer: ServerSpec;
  readonly #flood: Flood;
  #ch: PeerChannel | null = null;
  ready = false;
  recordsSent = 0;
  recordsReceived = 0;
  #attempt = 0;
  #refusals = 0;
  #wake: (() => void) | null = null;
  #abortConnect: (() => void) | null = null;
  #running: Promise<void> | null = null;
  #syncing = false;
  #lastSend = 0;
  #lastSum = 0;
  #dropReason = "closed";

  constructor(flood: Flood, peer: ServerSpec) {
    this.#flood = flood;
    this.peer = peer;
  }

  start(): void {
    this.#running = this.#run();
  }

  /**
   * Queues records; when the link is down they are left to catch-up. Returns false when
   * they were not queued.
   */
  send(text: string, records: number): boolean {
    const stats = this.#flood.stats;
    const ch = this.#ch;
    if (!this.ready || ch === null || ch.closed) {
      stats.droppedWhileDown += records;
      return false;
    }
    if (!ch.send(text)) {
      stats.outboxOverflows++;
      stats.droppedWhileDown += records;
      this.#dropReason = "outbox overflow";
      this.#flood.settings.log.warn("peer_outbox_overflow", {
        peer: this.peer.name,
        bytes: ch.outboxBytes,
        limit: this.#flood.settings.maxOutboxBytes,
      });
      ch.close();
      return false;
    }
    stats.recordsSent += records;
    this.recordsSent += records;
    this.#lastSend = Date.now();
    return true;
  }

  /** Reconnects now if waiting in backoff (the peer just showed it is alive). */
  nudge(): void {
    this.#attempt = 0;
    this.#wake?.();
  }

  /**
   * The peer found our states differ: compare digests on this link now (at most once every
   * half sync interval), or reconnect now if the link is waiting in backoff.
   */
  syncSoon(): void {
    if (!this.ready) {
      this.nudge();
      return;
    }
    const half = this.#flood.settings.syncIntervalMs / 2;
    if (this.#syncing || Date.now() - this.#lastSum < half) return;
    this.#sendSum();
  }

  /**
   * Compares digests again once the link and the node have been quiet for a sync interval
   * (a safety net: every (re)connection already compares).
   */
  idleSync(): void {
    const interval = this.#flood.settings.syncIntervalMs;
    const now = Date.now();
    if (
      !this.ready || this.#syncing || now - this.#lastSend < interval ||
      now - this.#flood.lastAccepted < interval
    ) {
      return;
    }
    this.#sendSum();
  }

  #sendSum(): void {
    if (this.#ch === null) return;
    this.#syncing = true;
    this.#lastSum = Date.now();
    this.#ch.send(
      `HERD SUM ${this.#flood.settings.store.digest.root()}\n`,
      true,
    );
  }

  async #run(): Promise<void> {
    const { log, backoffBaseMs, backoffMaxMs } = this.#flood.settings;
    while (!this.#flood.stopped) {
      this.#dropReason = "closed";
      try {
        await this.#connectOnce();
      } catch (e) {
        if (
          !(e instanceof Deno.errors.ConnectionRefused) && this.#attempt < 2
        ) {
          log.warn("peer_link_failed", {
            peer: this.peer.name,
            error: (e as Error).message,
          });
        }
      } finally {
        if (this.ready) {
          this.ready = false;
          this.#flood.stats.linksUp--;
          log.event("peer_dropped", {
            peer: this.peer.name,
            reason: this.#flood.stopped ? "stopping" : this.#dropReason,
          });
        }
        this.#syncing = false;
        this.#ch?.close();
        this.#ch = null;
      }
      if (this.#flood.stopped) break;
      const cap = Math.min(backoffMaxMs, backoffBaseMs * 2 ** this.#attempt);
      this.#attempt = Math.min(this.#attempt + 1, 30);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.random() * cap);
        function done() {
          clearTimeout(t);
          resolve();
        }
        this.#wake = done;
      });
      this.#wake = null;
    }
  }

  /** Connects within the handshake timeout; null when it took too long or we stopped. */
  async #connect(): Promise<Deno.TcpConn | null> {
    const s = this.#flood.settings;
    const attempt = Deno.connect({
      hostname: this.peer.host,
      port: this.peer.port,
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const gaveUp = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), s.handshakeTimeoutMs);
      this.#abortConnect = () => resolve(null);
    });
    let conn: Deno.TcpConn | null;
    try {
      conn = await Promise.race([attempt, gaveUp]);
    } finally {
      clearTimeout(timer);
      this.#abortConnect = null;
    }
    if (conn === null) {
      // Close it if it still lands; give it a moment so a stop leaves nothing pending.
      const closed = attempt.then((c) => c.close(), () => {});
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        closed,
        new Promise((r) => (t = setTimeout(r, 100))),
      ]);
      clearTimeout(t);
    }
    return conn;
  }

  async #connectOnce(): Promise<void> {
    const s = this.#flood.settings;
    const conn = await this.#connect();
    if (conn === null) return;
    conn.setNoDelay(true);
    const id = s.connId();
    const ch = new PeerChannel(
      conn,
      new LineFramer(s.maxLineBytes),
      [],
      s.maxOutboxBytes,
      this.#flood.stats,
    );
    this.#ch = ch;
    if (this.#flood.stopped) return;
    const key = await this.#flood.key();
    const nonceD = nonce();
    ch.send(`HERD HELLO ${s.name} ${nonceD}\n`, true);
    let welcome: string | null;
    try {
      welcome = await ch.nextLine(s.handshakeTimeoutMs);
    } catch (e) {
      if (e instanceof PeerTimeout) {
        this.#unanswered(id, "no answer to HELLO");
        return; // stalled peer: retry with backoff
      }
      throw e;
    }
    const w = welcome?.split(" ") ?? [];
    if (w[0] === "HERD" && w[1] === "REFUSED") {
      this.#refused(id, welcome!.slice(13, 13 + MAX_REASON));
      return;
    }
    if (welcome === null) {
      this.#unanswered(id, "closed during the handshake");
      return;
    }
    if (w.length !== 5 || w[0] !== "HERD" || w[1] !== "WELCOME") {
      this.#refused(id, "not a herd node");
      return;
    }
    if (w[2] !== this.peer.name) {
      this.#refused(id, "answered under another name");
      ch.send(`HERD REFUSED expected ${this.peer.name}\n`, true);
      await ch.drained();
      return;
    }
    const proven = await verify(
      key,
      w[4],
      "acceptor",
      s.name,
      this.peer.name,
      nonceD,
      w[3],
    );
    if (!proven) {
      const reason = proofProblem(key, w[4]);
      this.#refused(id, reason);
      // Tell the acceptor why, so both logs say the same; no proof of ours is sent.
      ch.send(`HERD REFUSED ${reason}\n`, true);
      await ch.drained();
      return;
    }
    const proof = await prove(
      key,
      "dialer",
      s.name,
      this.peer.name,
      nonceD,
      w[3],
    );
    ch.send(`HERD PROOF ${proof}\n`, true);
    const ok = await ch.nextLine(s.handshakeTimeoutMs).catch(() => null);
    if (ok !== "HERD OK") {
      this.#refused(
        id,
        ok?.startsWith("HERD REFUSED ")
          ? ok.slice(13, 13 + MAX_REASON)
          : "no OK",
      );
      return;
    }
    this.ready = true;
    this.#attempt = 0;
    this.#refusals = 0;
    this.#flood.stats.linksUp++;
    s.log.event("peer_connected", {
      conn: id,
      peer: this.peer.name,
      authenticated: key !== null,
    });
    if (key !== null) {
      s.log.event("peer_authenticated", {
        conn: id,
        peer: this.peer.name,
        side: "dialer",
      });
    }
    await s.store.loaded;
    this.#sendSum();
    for (;;) {
      const lines = await ch.nextBatch();
      if (lines === null) return;
      for (const line of lines) {
        if (line === "HERD SAME") {
          this.#syncing = false;
        } else if (line.startsWith("HERD BUCKETS ")) {
          this.#askDiff(ch, line.slice(13));
        } else if (line.startsWith("HERD HAVE ")) {
          this.#takeHave(line);
        } else if (line === "HERD HAVE-END") {
          await this.#pushDiff(ch);
        } else {
          s.log.warn("peer_line_unknown", { peer: this.peer.name, line });
        }
      }
    }
  }

  #diff: Set<number> | null = null;
  #have = new Map<string, { time: string; hash: string }>();

  /** On the acceptor's bucket digests: names the buckets that differ (`HERD DIFF`). */
  #askDiff(ch: PeerChannel, encoded: string): void {
    const s = this.#flood.settings;
    const buckets = s.store.digest.differing(encoded);
    if (buckets === null) {
      s.log.warn("peer_digest_invalid", { peer: this.peer.name });
      this.#syncing = false;
      return;
    }
    // Only buckets where this node holds something can have records the peer lacks.
    for (const b of buckets) {
      if (s.store.digest.counts[b] === 0) buckets.delete(b);
    }
    if (buckets.size === 0) {
      ch.send("HERD SYNCED 0\n", true);
      this.#syncing = false;
      return;
    }
    this.#diff = buckets;
    this.#have = new Map();
    ch.send(`HERD DIFF ${[...buckets].join(",")}\n`, true);
  }

  /** Collects the acceptor's `client time hash` triples for the differing buckets. */
  #takeHave(line: string): void {
    const f = line.split(" ");
    for (let i = 2; i + 2 < f.length; i += 3) {
      this.#have.set(f[i], { time: f[i + 1], hash: f[i + 2] });
    }
  }

  /**
   * Sends, from the buckets that differ, only the records the peer lacks or holds older
   * (or holds at the same time with other bytes: the peer then applies the tie-break), in
   * pieces that wait for the outbox to drain, then `HERD SYNCED <count>`.
   */
  async #pushDiff(ch: PeerChannel): Promise<void> {
    const s = this.#flood.settings;
    const buckets = this.#diff ?? new Set<number>();
    const have = this.#have;
    this.#diff = null;
    this.#have = new Map();
    const records = buckets.size === 0 ? [] : s.store.recordsIn(buckets).filter(
      (line) => {
        const theirs = have.get(clientOf(line));
        if (theirs === undefined) return true;
        const byTime = compareTimeText(timeOf(line), theirs.time);
        return byTime > 0 || (byTime === 0 && lineHash(line) !== theirs.hash);
      },
    );
    const stats = this.#flood.stats;
    stats.syncs++;
    const piece = Math.max(
      1,
      Math.min(256 * 1024, Math.floor(s.maxOutboxBytes / 4)),
    );
    let sent = 0;
    let i = 0;
    while (i < records.length) {
      await ch.drained(piece);
      if (ch.closed || this.#ch !== ch) return;
      const part: string[] = [];
      let bytes = 0;
      while (
        i < records.length &&
        (part.length === 0 || bytes + records[i].length + 1 <= piece)
      ) {
        bytes += records[i].length + 1;
        part.push(records[i++]);
      }
      if (!this.send(part.join("\n") + "\n", part.length)) return;
      sent += part.length;
      stats.syncRecordsSent += part.length;
    }
    ch.send(`HERD SYNCED ${sent}\n`, true);
    s.log.event("peer_sync_sent", {
      peer: this.peer.name,
      buckets: buckets.size,
      records: sent,
    });
    this.#syncing = false;
  }

  #refused(id: number, reason: string): void {
    this.#flood.stats.refused++;
    this.#refusals++;
    if (worthLogging(this.#refusals)) {
      this.#flood.settings.log.warn("peer_refused", {
        conn: id,
        peer: this.peer.name,
        side: "dialer",
        reason,
        ...(this.#refusals > 1 ? { times: this.#refusals } : {}),
      });
    }
  }

  /** A handshake that got no answer (a paused or dying peer): not a refusal. */
  #unanswered(id: number, reason: string): void {
    this.#refusals++;
    if (worthLogging(this.#refusals)) {
      this.#flood.settings.log.warn("peer_unanswered", {
        conn: id,
        peer: this.peer.name,
        reason,
        ...(this.#refusals > 1 ? { times: this.#refusals } : {}),
      });
    }
  }

  async stop(): Promise<void> {
    this.#wake?.();
    this.#abortConnect?.();
    this.#ch?.close();
    await this.#running;
  }
}

/** A record line's hash as sent in `HERD HAVE` (8 hex digits). */
function lineHash(line: string): string {
  return fnv1a(line, 1).toString(16).padStart(8, "0");
}

/** `3,17,1023` into bucket numbers; null when malformed. */
function parseBucketList(list: string): Set<number> | null {
  const out = new Set<number>();
  for (const part of list.split(",")) {
    if (!/^\d{1,4}$/.test(part)) return null;
    const b = Number(part);
    if (b >= BUCKETS) return null;
    out.add(b);
  }
  return out;
}
