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
 *   digests and the dialer sends the records of the buckets that differ. Since both sides
 *   dial, both directions converge without any client traffic.
 * - Reconnect: capped exponential backoff with full jitter; a peer that connects to us cuts
 *   our wait toward it short, so a restarted node is caught up at once.
 * - Authentication: see `peer_wire.ts`. Nothing a peer sends is accepted before `HERD OK`.
 *
 * @module
 */

import { LineFramer } from "./lines.ts";
import type { NodeLog } from "./log.ts";
import { PeerChannel, PeerTimeout } from "./peer_channel.ts";
import { importSecret, nonce, prove, verify } from "./peer_wire.ts";
import { parseAtLine } from "./record.ts";
import type { Store } from "./store.ts";
import type { ServerSpec } from "./topology.ts";

/** Flood options; durations in ms. */
export interface FloodOptions {
  name: string;
  neighbors: ServerSpec[];
  secret?: string;
  store: Store;
  log: NodeLog;
  /** Takes valid records received from `from`; the node offers them and relays. */
  receive: (lines: string[], from: string) => void;
  /** Allocates a connection id for the log. */
  connId: () => number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  handshakeTimeoutMs?: number;
  /** A link idle this long re-checks digests with its peer. Default 1000. */
  syncIntervalMs?: number;
  /** Bytes queued toward one peer before the link is dropped. Default 16 MiB. */
  maxOutboxBytes?: number;
  /** Longest peer line. Default 1 MiB. */
  maxLineBytes?: number;
}

/** Counters for operators. */
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

type Settings = Required<Omit<FloodOptions, "secret">> & { secret?: string };

/** The neighbor pool of one node. */
export class Flood {
  readonly #o: Settings;
  readonly #links = new Map<string, Link>();
  readonly #inbound = new Set<PeerChannel>();
  readonly #inboundDone = new Set<Promise<void>>();
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
    this.#o = {
      backoffBaseMs: 50,
      backoffMaxMs: 1000,
      handshakeTimeoutMs: 2000,
      syncIntervalMs: 1000,
      maxOutboxBytes: 16 * 1024 * 1024,
      maxLineBytes: 1024 * 1024,
      ...opts,
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
    const text = line + "\n";
    for (const link of this.#links.values()) {
      if (link.peer.name !== except) link.send(text, 1);
    }
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

  /** Takes over an inbound connection whose first line is `HERD HELLO ...`. */
  adopt(conn: Deno.TcpConn, lines: string[], framer: LineFramer, id: number) {
    if (this.#stopped) {
      try {
        conn.close();
      } catch { /* closed */ }
      return;
    }
    const ch = new PeerChannel(conn, framer, lines, this.#o.maxOutboxBytes);
    this.#inbound.add(ch);
    const done: Promise<void> = this.#serveInbound(ch, id).catch((e) => {
      this.#o.log.warn("peer_inbound_failed", {
        conn: id,
        error: (e as Error).message,
      });
    }).finally(() => {
      ch.close();
      this.#inbound.delete(ch);
      this.#inboundDone.delete(done);
      this.stats.bytesIn += ch.bytesIn;
      this.stats.bytesOut += ch.bytesOut;
    });
    this.#inboundDone.add(done);
  }

  async #serveInbound(ch: PeerChannel, id: number): Promise<void> {
    const { log, name, store, handshakeTimeoutMs } = this.#o;
    const hello = await ch.nextLine(handshakeTimeoutMs).catch(() => null);
    const f = hello?.split(" ") ?? [];
    if (f.length !== 4 || f[0] !== "HERD" || f[1] !== "HELLO") {
      ch.send("HERD REFUSED expected HELLO\n");
      return;
    }
    const [, , peer, nonceD] = f;
    if (!this.isNeighbor(peer)) {
      this.stats.refused++;
      log.warn("peer_refused", { conn: id, peer, reason: "not a neighbor" });
      ch.send(`HERD REFUSED ${name} does not list ${peer} as a neighbor\n`);
      await ch.nextLine(50).catch(() => null);
      return;
    }
    const key = await this.#key;
    const nonceA = nonce();
    const proofA = await prove(key, "acceptor", peer, name, nonceD, nonceA);
    ch.send(`HERD WELCOME ${name} ${nonceA} ${proofA}\n`);
    const proofLine = await ch.nextLine(handshakeTimeoutMs).catch(() => null);
    const p = proofLine?.split(" ") ?? [];
    const ok = p.length === 3 && p[0] === "HERD" && p[1] === "PROOF" &&
      await verify(key, p[2], "dialer", peer, name, nonceD, nonceA);
    if (!ok) {
      this.stats.refused++;
      log.warn("peer_refused", {
        conn: id,
        peer,
        reason: proofLine === null ? "no proof" : "wrong secret",
      });
      ch.send("HERD REFUSED authentication failed\n");
      await ch.nextLine(50).catch(() => null);
      return;
    }
    ch.send("HERD OK\n");
    log.event("peer_accepted", { conn: id, peer, authenticated: key !== null });
    this.#links.get(peer)?.nudge();
    let syncReceived = 0;
    let syncAccepted = 0;
    let syncing = false;
    for (;;) {
      const lines = await ch.nextBatch();
      if (lines === null) break;
      const records: string[] = [];
      for (const line of lines) {
        if (line.startsWith("AT ")) {
          if (parseAtLine(line) === null) {
            this.stats.recordsInvalid++;
            log.warn("peer_record_invalid", { conn: id, peer, line });
          } else records.push(line);
        } else if (line.startsWith("HERD SUM ")) {
          await store.loaded;
          if (line.slice(9) === store.digest.root()) {
            ch.send("HERD SAME\n");
          } else {
            syncing = true;
            syncReceived = syncAccepted = 0;
            ch.send(`HERD BUCKETS ${store.digest.encode()}\n`);
          }
        } else if (line.startsWith("HERD SYNCED ")) {
          if (syncing) {
            log.event("peer_caught_up", {
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
      if (records.length > 0) {
        this.stats.recordsReceived += records.length;
        const acceptedBefore = this.#accepted;
        this.#o.receive(records, peer);
        if (syncing) {
          syncReceived += records.length;
          syncAccepted += this.#accepted - acceptedBefore;
        }
      }
      const wait = store.congested();
      if (wait) await wait.promise;
    }
    log.event("peer_inbound_closed", { conn: id, peer });
  }

  /** Records accepted from peers (the node reports it through `accepted`). */
  #accepted = 0;

  /** Called by the node for each record from a peer that it accepted. */
  accepted(n = 1): void {
    this.#accepted += n;
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
  #attempt = 0;
  #wake: (() => void) | null = null;
  #running: Promise<void> | null = null;
  #syncing = false;
  #lastSend = 0;

  constructor(flood: Flood, peer: ServerSpec) {
    this.#flood = flood;
    this.peer = peer;
  }

  start(): void {
    this.#running = this.#run();
  }

  /** Queues records; when down they are left to catch-up. */
  send(text: string, records: number): void {
    const stats = this.#flood.stats;
    if (!this.ready || this.#ch === null) {
      stats.droppedWhileDown += records;
      return;
    }
    if (!this.#ch.send(text)) {
      stats.outboxOverflows++;
      this.#flood.settings.log.warn("peer_outbox_overflow", {
        peer: this.peer.name,
        bytes: this.#ch.outboxBytes,
      });
      this.#ch.close();
      return;
    }
    stats.recordsSent += records;
    this.#lastSend = Date.now();
  }

  /** Reconnects now if waiting in backoff (the peer just showed it is alive). */
  nudge(): void {
    this.#attempt = 0;
    this.#wake?.();
  }

  /** Compares digests again if the link has been quiet for a sync interval. */
  idleSync(): void {
    const interval = this.#flood.settings.syncIntervalMs;
    if (
      !this.ready || this.#syncing || Date.now() - this.#lastSend < interval
    ) {
      return;
    }
    this.#sendSum();
  }

  #sendSum(): void {
    if (this.#ch === null) return;
    this.#syncing = true;
    this.#ch.send(`HERD SUM ${this.#flood.settings.store.digest.root()}\n`);
  }

  async #run(): Promise<void> {
    const { log, backoffBaseMs, backoffMaxMs } = this.#flood.settings;
    while (!this.#flood.stopped) {
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
          log.event("peer_dropped", { peer: this.peer.name });
        }
        this.#syncing = false;
        if (this.#ch) {
          this.#flood.stats.bytesIn += this.#ch.bytesIn;
          this.#flood.stats.bytesOut += this.#ch.bytesOut;
          this.#ch.close();
        }
        this.#ch = null;
      }
      if (this.#flood.stopped) break;
      const cap = Math.min(backoffMaxMs, backoffBaseMs * 2 ** this.#attempt);
      this.#attempt = Math.min(this.#attempt + 1, 20);
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

  async #connectOnce(): Promise<void> {
    const s = this.#flood.settings;
    const conn = await Deno.connect({
      hostname: this.peer.host,
      port: this.peer.port,
    });
    conn.setNoDelay(true);
    const id = s.connId();
    const ch = new PeerChannel(
      conn,
      new LineFramer(s.maxLineBytes),
      [],
      s.maxOutboxBytes,
    );
    this.#ch = ch;
    if (this.#flood.stopped) return;
    const key = await this.#flood.key();
    const nonceD = nonce();
    ch.send(`HERD HELLO ${s.name} ${nonceD}\n`);
    let welcome: string | null;
    try {
      welcome = await ch.nextLine(s.handshakeTimeoutMs);
    } catch (e) {
      if (e instanceof PeerTimeout) return; // stalled peer: retry with backoff
      throw e;
    }
    const w = welcome?.split(" ") ?? [];
    if (w[0] === "HERD" && w[1] === "REFUSED") {
      this.#refused(welcome!.slice(13));
      return;
    }
    if (
      w.length !== 5 || w[1] !== "WELCOME" || w[2] !== this.peer.name ||
      !(await verify(
        key,
        w[4],
        "acceptor",
        s.name,
        this.peer.name,
        nonceD,
        w[3],
      ))
    ) {
      this.#refused(
        welcome === null ? "closed" : "peer failed to prove the secret",
      );
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
    ch.send(`HERD PROOF ${proof}\n`);
    const ok = await ch.nextLine(s.handshakeTimeoutMs).catch(() => null);
    if (ok !== "HERD OK") {
      this.#refused(ok?.startsWith("HERD REFUSED ") ? ok.slice(13) : "no OK");
      return;
    }
    this.ready = true;
    this.#attempt = 0;
    this.#flood.stats.linksUp++;
    s.log.event("peer_connected", {
      conn: id,
      peer: this.peer.name,
      authenticated: key !== null,
    });
    await s.store.loaded;
    this.#sendSum();
    for (;;) {
      const lines = await ch.nextBatch();
      if (lines === null) return;
      for (const line of lines) {
        if (line === "HERD SAME") {
          this.#syncing = false;
        } else if (line.startsWith("HERD BUCKETS ")) {
          this.#pushDiff(line.slice(13));
        } else {
          s.log.warn("peer_line_unknown", { peer: this.peer.name, line });
        }
      }
    }
  }

  #pushDiff(encoded: string): void {
    const s = this.#flood.settings;
    const buckets = s.store.digest.differing(encoded);
    if (buckets === null) {
      s.log.warn("peer_digest_invalid", { peer: this.peer.name });
      this.#syncing = false;
      return;
    }
    const records = buckets.size > 0 ? s.store.recordsIn(buckets) : [];
    const stats = this.#flood.stats;
    stats.syncs++;
    stats.syncRecordsSent += records.length;
    for (let i = 0; i < records.length; i += 1000) {
      const part = records.slice(i, i + 1000);
      this.send(part.join("\n") + "\n", part.length);
    }
    this.#ch?.send(`HERD SYNCED ${records.length}\n`);
    s.log.event("peer_sync_sent", {
      peer: this.peer.name,
      buckets: buckets.size,
      records: records.length,
    });
    this.#syncing = false;
  }

  #refused(reason: string): void {
    this.#flood.stats.refused++;
    if (this.#attempt < 2 || this.#attempt % 10 === 0) {
      this.#flood.settings.log.warn("peer_refused", {
        peer: this.peer.name,
        reason,
      });
    }
  }

  async stop(): Promise<void> {
    this.#wake?.();
    this.#ch?.close();
    await this.#running;
  }
}
