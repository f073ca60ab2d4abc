/**
 * The herd bus's shared shapes, a leaf module: its settings and their defaults (one object),
 * the counters operators read, and the narrow view of the store that catch-up needs.
 *
 * @module
 */

/** Bus tuning; durations in ms, sizes in bytes. */
export interface BusSettings {
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Bounds connecting, and each whole handshake. */
  handshakeTimeoutMs: number;
  /** A link idle this long re-checks digests with its peer. */
  syncIntervalMs: number;
  /** Bytes queued toward one peer before the link is dropped. */
  maxOutboxBytes: number;
  /** Largest frame from an authenticated neighbor. */
  maxFrameBytes: number;
  /** Largest frame before the handshake is done: the client line limit. */
  handshakeFrameBytes: number;
  /** Handshakes in progress at once on the bus port; more connections are closed at once. */
  maxHandshakes: number;
  /** HAVE entries one catch-up may hold. */
  maxHaveEntries: number;
  /** Bytes of HAVE entries (client ids and times) one catch-up may hold. */
  maxHaveBytes: number;
  /** Refused records on one connection before it is dropped. */
  maxInvalidRecords: number;
  /** The longest client line: a record's client id, location and time came from one. */
  clientLineBytes: number;
}

/** The defaults of every bus setting. */
export const busDefaults: BusSettings = {
  backoffBaseMs: 50,
  backoffMaxMs: 1000,
  handshakeTimeoutMs: 2000,
  syncIntervalMs: 1000,
  maxOutboxBytes: 16 * 1024 * 1024,
  maxFrameBytes: 1024 * 1024,
  handshakeFrameBytes: 16 * 1024,
  maxHandshakes: 64,
  maxHaveEntries: 1024 * 1024,
  maxHaveBytes: 128 * 1024 * 1024,
  maxInvalidRecords: 16,
  clientLineBytes: 16 * 1024,
};

/** Counters for operators. Byte counts are live (open connections included). */
export interface FloodStats {
  linksUp: number;
  recordsSent: number;
  recordsReceived: number;
  /** Records a neighbor sent that failed the checks (never stored). */
  recordsInvalid: number;
  droppedWhileDown: number;
  outboxOverflows: number;
  refused: number;
  /** Bus connections closed at once because too many handshakes were in progress. */
  handshakesRejected: number;
  syncs: number;
  syncRecordsSent: number;
  bytesOut: number;
  bytesIn: number;
}

/** Fresh zeroed counters. */
export function newStats(): FloodStats {
  return {
    linksUp: 0,
    recordsSent: 0,
    recordsReceived: 0,
    recordsInvalid: 0,
    droppedWhileDown: 0,
    outboxOverflows: 0,
    refused: 0,
    handshakesRejected: 0,
    syncs: 0,
    syncRecordsSent: 0,
    bytesOut: 0,
    bytesIn: 0,
  };
}

/** One neighbor's counters and state, shared by its outbound link and its inbound side. */
export interface PeerCounters {
  recordsSent: number;
  recordsReceived: number;
  /** Catch-ups in progress on either connection. */
  catchingUp: number;
}

/** A record as `HAVE` lists it: its client, its time and `fnv1a(line, 1)`. */
export interface Holding {
  client: string;
  time: string;
  hash: number;
}

/** What catch-up reads of the store. */
export interface CatchupStore {
  readonly digest: {
    root(): string;
    encode(): string;
    differing(encoded: string): Set<number> | null;
    readonly counts: Uint32Array;
  };
  /** Records in `buckets`, but those at positions marked in `skip` or past its end. */
  recordsIn(buckets: Set<number>, skip?: Uint8Array): string[];
  /** What `HAVE` lists of the records in `buckets`, read as it is taken. */
  holdingsIn(buckets: Set<number>): Iterable<Holding>;
  /** Clients held; positions run from 0 to `size - 1`. */
  readonly size: number;
  /** A client's position, or -1. */
  indexOf(client: string): number;
  /** The record at a position. */
  lineAt(index: number): string;
  /** `timeOf(lineAt(index))`. */
  timeAt(index: number): string;
  /** `fnv1a(lineAt(index), 1)`. */
  lineHashAt(index: number): number;
  readonly loaded: Promise<void>;
}

/**
 * Decides which of a repeated warning are logged: the first `first`, then one in `every`
 * with the count so far, so that no peer can make a node write its log without bound.
 */
export class LogBudget {
  readonly #first: number;
  readonly #every: number;
  #count = 0;

  constructor(first = 3, every = 100) {
    this.#first = first;
    this.#every = every;
  }

  /** Counts one occurrence; returns the count when it should be logged, else 0. */
  hit(): number {
    const n = ++this.#count;
    return n <= this.#first || n % this.#every === 0 ? n : 0;
  }
}
