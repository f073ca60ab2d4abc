/**
 * Catch-up, both halves: how two neighbors find and send what one holds and the other
 * lacks, without any client traffic, after a restart, a partition or a dropped link.
 *
 * On every (re)connection, and when a link and the node have been quiet a while, the
 * dialer sends its digest root (`SUM`). The acceptor answers `SAME`, or its 1,024 bucket
 * digests (`BUCKETS`, ~11 KB). The dialer names the buckets that differ and where it holds
 * something (`DIFF`); the acceptor lists what it holds in them (`HAVE client time hash`,
 * many frames, paced by its outbox, then `HAVE-END`); the dialer sends only the records the
 * acceptor lacks or holds older (or at the same time with other bytes: the acceptor then
 * applies the tie-break), paced by its outbox, then `SYNCED <count>`. Two nodes that hold
 * the same records exchange a few dozen bytes; a node that missed one record gets one.
 * Since both sides dial, both directions converge.
 *
 * `CatchupDialer` is the dialer's state (one per outbound connection), `CatchupAcceptor`
 * the acceptor's (one per inbound connection); both see only a narrow view of the store and
 * of their connection.
 *
 * @module
 */

import { compareTimeText } from "../clock.ts";
import { fnv1a } from "../digest.ts";
import type { NodeLog } from "../log.ts";
import { isClientId } from "../record.ts";
import { type BusMessage, type HaveEntry, isClientTime } from "./codec.ts";
import type { CatchupStore, FloodStats } from "./types.ts";

/** A record line's hash as sent in `HAVE` (8 hex digits). */
export function lineHash(line: string): string {
  return hashText(fnv1a(line, 1));
}

/** Two lowercase hex digits for each byte value. */
const HEX_PAIRS = Array.from(
  { length: 256 },
  (_, b) => b.toString(16).padStart(2, "0"),
);

/**
 * `fnv1a(line, 1)` as `HAVE` writes it: 8 hex digits. By pairs from a table: catch-up
 * writes and compares one per record held (a million in `bench/catchup.ts`), and
 * `toString(16)` with `padStart` was an eighth of its CPU.
 */
function hashText(h: number): string {
  return HEX_PAIRS[h >>> 24] + HEX_PAIRS[(h >>> 16) & 255] +
    HEX_PAIRS[(h >>> 8) & 255] + HEX_PAIRS[h & 255];
}

/** What catch-up needs of a connection. */
export interface CatchupWire {
  send(msg: BusMessage): boolean;
  drained(limit?: number): Promise<void>;
  readonly closed: boolean;
  readonly outboxBytes: number;
}

/** The dialer's half, for one outbound connection. */
export class CatchupDialer {
  readonly #store: CatchupStore;
  readonly #wire: CatchupWire;
  readonly #maxHave: number;
  readonly #maxHaveBytes: number;
  readonly #piece: number;
  /** Sends records through the link (counted, bounded); false when the link dropped. */
  readonly #sendRecords: (records: string[]) => boolean;
  #diff: Set<number> | null = null;
  /** A comparison was asked for while one ran: start it when that one ends. */
  #again = false;
  /**
   * The positions (`CatchupStore.indexOf`) of our records that the peer's `HAVE` lists show
   * it holds as they are or newer: those are not sent. Marked as the lists arrive, so the
   * lists themselves are never kept: for a peer holding 1,000,000 clients, a map of its
   * entries was 1,000,000 objects and kept every `HAVE` frame's text alive, and the garbage
   * collector took 38 % of a catch-up's CPU (`bench/catchup.ts` under `--cpu-prof`).
   */
  #covered = new Uint8Array(0);
  #haveEntries = 0;
  #haveBytes = 0;
  /** Is a comparison in progress? */
  syncing = false;
  lastSum = 0;

  constructor(
    store: CatchupStore,
    wire: CatchupWire,
    sendRecords: (records: string[]) => boolean,
    maxHave: { entries: number; bytes: number },
    maxOutboxBytes: number,
  ) {
    this.#store = store;
    this.#wire = wire;
    this.#sendRecords = sendRecords;
    this.#maxHave = maxHave.entries;
    this.#maxHaveBytes = maxHave.bytes;
    // Pieces small enough that a drained outbox always has room for the next one.
    this.#piece = Math.max(
      1,
      Math.min(256 * 1024, Math.floor(maxOutboxBytes / 4)),
    );
  }

  /**
   * Starts a comparison: sends the digest root; while one is in progress, another starts
   * as soon as it ends. Two at once would each get their own `BUCKETS`, `DIFF` and `HAVE`
   * lists, and the first `HAVE-END` would end both: the other's lists would then come
   * "without DIFF" and drop the link (a neighbor's request to compare can land in the
   * moment between a link's handshake and its own first comparison). Deferred rather than
   * dropped: the request may come from a change the running comparison has not seen.
   */
  sum(): void {
    if (this.syncing) {
      this.#again = true;
      return;
    }
    this.syncing = true;
    this.lastSum = Date.now();
    this.#wire.send({ kind: "sum", root: this.#store.digest.root() });
  }

  /** The comparison in progress ended: start the one asked for meanwhile, if any. */
  #ended(): void {
    this.syncing = false;
    if (this.#again) {
      this.#again = false;
      this.sum();
    }
  }

  /**
   * Handles a catch-up message from the acceptor. Returns a problem (the link must be
   * dropped) or null; `pushed` reports the records sent when a catch-up completes.
   */
  async handle(
    msg: BusMessage,
    stats: FloodStats,
    pushed: (records: number, buckets: number) => void,
  ): Promise<string | null> {
    switch (msg.kind) {
      case "same":
        this.#ended();
        return null;
      case "buckets":
        return this.#askDiff(msg.digest);
      case "have":
        return this.#takeHave(msg.entries);
      case "have-end": {
        if (this.#diff === null) return "HAVE-END without DIFF";
        const buckets = this.#diff.size;
        const sent = await this.#pushDiff(stats);
        if (sent !== null) pushed(sent, buckets);
        return null;
      }
      default:
        return `unexpected ${msg.kind} on an outbound link`;
    }
  }

  #askDiff(encoded: string): string | null {
    const buckets = this.#store.digest.differing(encoded);
    if (buckets === null) return "invalid bucket digests";
    // Only buckets where this node holds something can have records the peer lacks.
    for (const b of buckets) {
      if (this.#store.digest.counts[b] === 0) buckets.delete(b);
    }
    if (buckets.size === 0) {
      this.#wire.send({ kind: "synced", count: 0 });
      this.#ended();
      return null;
    }
    this.#diff = buckets;
    // Clients first seen after this moment sit past its end and are not sent: the link is
    // up, so the flood sends them, unless they came from this peer, which then holds them
    // (sending them back made a reconnection send what the peer had just sent it).
    this.#covered = new Uint8Array(this.#store.size);
    this.#haveEntries = 0;
    this.#haveBytes = 0;
    this.#wire.send({
      kind: "diff",
      buckets: [...buckets].sort((a, b) => a - b),
    });
    return null;
  }

  #takeHave(entries: HaveEntry[]): string | null {
    if (this.#diff === null) return "HAVE without DIFF";
    this.#haveEntries += entries.length;
    if (this.#haveEntries > this.#maxHave) {
      return `HAVE lists over ${this.#maxHave} entries`;
    }
    const store = this.#store;
    const covered = this.#covered;
    for (const e of entries) {
      this.#haveBytes += e.client.length + e.time.length + e.hash.length;
      const i = store.indexOf(e.client);
      if (i < 0 || i >= covered.length) continue;
      // Not sent when the peer holds it at a later time, or at the same time with the
      // same bytes (at the same time with other bytes, the peer applies the tie-break).
      const byTime = compareTimeText(store.timeAt(i), e.time);
      if (
        byTime < 0 ||
        (byTime === 0 && hashText(store.lineHashAt(i)) === e.hash)
      ) {
        covered[i] = 1;
      }
    }
    if (this.#haveBytes > this.#maxHaveBytes) {
      return `HAVE lists over ${this.#maxHaveBytes} bytes`;
    }
    return null;
  }

  /**
   * Sends, from the buckets that differ, only the records the peer lacks or holds older,
   * in pieces that wait for the outbox to drain, then `SYNCED <count>`. Returns the count,
   * or null when the link went away.
   */
  async #pushDiff(stats: FloodStats): Promise<number | null> {
    const buckets = this.#diff ?? new Set<number>();
    const covered = this.#covered;
    this.#diff = null;
    this.#covered = new Uint8Array(0);
    this.#haveEntries = 0;
    this.#haveBytes = 0;
    // A record replaced since it was marked was replaced by a newer one, which the flood
    // sends on this link (unless it came from this peer, which then holds it).
    const records = this.#store.recordsIn(buckets, covered);
    stats.syncs++;
    const piece = this.#piece;
    let sent = 0;
    let i = 0;
    while (i < records.length) {
      await this.#wire.drained(piece);
      if (this.#wire.closed) return null;
      const part: string[] = [];
      let bytes = 0;
      while (
        i < records.length &&
        (part.length === 0 || bytes + records[i].length + 1 <= piece)
      ) {
        bytes += records[i].length + 1;
        part.push(records[i++]);
      }
      if (!this.#sendRecords(part)) return null;
      sent += part.length;
      stats.syncRecordsSent += part.length;
    }
    this.#wire.send({ kind: "synced", count: sent });
    this.#ended();
    return sent;
  }
}

/** The acceptor's half, for one inbound connection. */
export class CatchupAcceptor {
  readonly #store: CatchupStore;
  readonly #wire: CatchupWire;
  readonly #log: NodeLog;
  readonly #fields: Record<string, unknown>;
  #sums = 0;
  /** Is the dialer sending what we lack? (Its records are then counted for the log.) */
  syncing = false;
  received = 0;
  accepted = 0;

  constructor(
    store: CatchupStore,
    wire: CatchupWire,
    log: NodeLog,
    fields: Record<string, unknown>,
  ) {
    this.#store = store;
    this.#wire = wire;
    this.#log = log;
    this.#fields = fields;
  }

  /** Counts records received while a catch-up is in progress. */
  count(received: number, accepted: number): void {
    if (!this.syncing) return;
    this.received += received;
    this.accepted += accepted;
  }

  /**
   * Handles a catch-up message from the dialer. Returns a problem (the link must be
   * dropped) or null; `differs` is called when our states differ, so that our own link
   * toward the peer compares too.
   */
  async handle(msg: BusMessage, differs: () => void): Promise<string | null> {
    switch (msg.kind) {
      case "sum": {
        // A peer that asks for digests faster than it reads the answers is dropped: each
        // answer is ~11 KB and control messages pass the outbox bound.
        if (this.#wire.outboxBytes > 1024 * 1024) return "not reading";
        await this.#store.loaded;
        this.#sums++;
        if (msg.root === this.#store.digest.root()) {
          this.#wire.send({ kind: "same" });
          if (this.#sums === 1) {
            this.#log.event("peer_caught_up", {
              ...this.#fields,
              received: 0,
              accepted: 0,
              same: true,
            });
          }
        } else {
          this.syncing = true;
          this.received = this.accepted = 0;
          this.#wire.send({
            kind: "buckets",
            digest: this.#store.digest.encode(),
          });
          differs();
        }
        return null;
      }
      case "diff":
        await this.#sendHave(new Set(msg.buckets));
        return null;
      case "synced":
        if (this.syncing) {
          this.#log.event("peer_caught_up", {
            ...this.#fields,
            received: this.received,
            accepted: this.accepted,
          });
        }
        this.syncing = false;
        return null;
      default:
        return `unexpected ${msg.kind} on an inbound link`;
    }
  }

  /** Lists what this node holds in `buckets`, paced by the outbox, then `HAVE-END`. */
  async #sendHave(buckets: Set<number>): Promise<void> {
    let part: HaveEntry[] = [];
    let bytes = 0;
    for (const held of this.#store.holdingsIn(buckets)) {
      const entry = {
        client: held.client,
        time: held.time,
        hash: hashText(held.hash),
      };
      // A record stored before the bus checked records may not fit the format: skip it.
      if (!isClientId(entry.client) || !isClientTime(entry.time)) continue;
      const size = entry.client.length + entry.time.length + 11;
      if (part.length === 500 || bytes + size > 64 * 1024) {
        await this.#wire.drained(256 * 1024);
        if (this.#wire.closed) return;
        this.#wire.send({ kind: "have", entries: part });
        part = [];
        bytes = 0;
      }
      part.push(entry);
      bytes += size;
    }
    if (part.length > 0) this.#wire.send({ kind: "have", entries: part });
    this.#wire.send({ kind: "have-end" });
  }
}
