/**
 * The records: the latest AT line of every client, in memory for reads and in Deno KV for
 * restarts. An IAMAT is acknowledged only when its record is durable.
 *
 * Writes are group commits to a write-ahead log: every record accepted while no commit is in
 * flight goes to KV in the next atomic commit, as a few large byte values (lines joined by
 * `\n`, see `store/codec.ts`), and the next batch grows while that commit lands. Measured
 * here, one awaited `kv.set` per record manages ~1,600 writes/s while one atomic commit of
 * hundreds of records manages ~130,000/s, and byte values are the cheapest to write.
 *
 * The log is folded into a snapshot (~60 KB chunks of lines, with a description holding the
 * snapshot's digest) in the background once it has grown as large as the state, so a restart
 * reads a snapshot plus a short log. Nothing is ever overwritten in place: replay applies the
 * record order, so an older record can never replace a newer one. Every key is named in
 * `store/keys.ts`.
 *
 * A record that could not be written (longer than a value, or holding a `\n`) is refused by
 * `offer` before it reaches a commit, counted and logged: a commit that cannot succeed never
 * holds back other records' acks nor a stop. A commit that fails for another reason (the
 * disk) is retried a bounded number of times with backoff, then given up: its records are
 * never acknowledged, the failure is logged, and the next batch tries again.
 *
 * Loading runs in the background after the node listens; `loaded` says when it is done. It
 * never rejects: a load that fails is logged, and the store then never folds the log into a
 * snapshot, so what it could not read stays on disk.
 *
 * The lifecycle is one state: `loading` -> `ready` (or `partial` when the load failed) ->
 * `stopping` (from any of them, once a stop begins) -> `closed`.
 *
 * @example
 * ```ts
 * const kv = await Deno.openKv(":memory:");
 * const store = await Store.open(kv);
 * store.offer("AT A +0.000000000 kiwi +1+1 5"); // true: accepted
 * await store.durable()?.promise; // now in KV
 * await store.close();
 * kv.close();
 * ```
 * @module
 */

import type { Holding } from "./bus/types.ts";
import { bytesToString } from "./bytes.ts";
import {
  bucketOf,
  BUCKETS,
  clientHash,
  clientHashIn,
  Digest,
  fnv1aBytes,
} from "./digest.ts";
import { pause } from "./async.ts";
import { Gate } from "./gate.ts";
import type { NodeLog } from "./log.ts";
import { clientOf, compareRecordsIn } from "./record.ts";
import {
  decodeMeta,
  encodeMeta,
  fits,
  KV_VALUE_LIMIT,
  LinePacker,
  type Packed,
  type SnapMeta,
  storedBytes,
} from "./store/codec.ts";
import { storeKeys } from "./store/keys.ts";
import { lineEnd, RecordTable } from "./store/table.ts";

/** Whether `line` is the line held at `bytes[from, to)` (one char a byte). */
function sameLine(
  line: string,
  bytes: Uint8Array,
  from: number,
  to: number,
): boolean {
  if (to - from !== line.length) return false;
  for (let k = 0; k < line.length; k++) {
    if (line.charCodeAt(k) !== bytes[from + k]) return false;
  }
  return true;
}

/** Store tuning; the defaults fit KV's limits (1,000 mutations, 800 KB a commit, 64 KiB a value). */
export interface StoreOptions {
  log?: NodeLog;
  /** Largest value written, in bytes (at most 65,536); a longer record is refused. Default 60,000. */
  valueBytes?: number;
  /** Values a commit. Default 10 (600 KB). */
  valuesPerCommit?: number;
  /** Snapshot once the log holds this many records and at least as many as the state. Default 100,000. */
  snapshotMinRecords?: number;
  /**
   * A snapshot that is due waits until no commit has landed for this long, in ms, unless the
   * log has grown to twice its due size: a node folds after a burst, not during it.
   * Default 1,000; 0 folds as soon as it is due.
   */
  snapshotQuietMs?: number;
  /** Pending bytes beyond which writers are asked to wait. Default 32 MiB. */
  congestionBytes?: number;
  /** Attempts at one commit before it is given up. Default 6. */
  commitAttempts?: number;
  /** Wait before the second attempt, doubled for each next one. Default 100 ms. */
  retryBaseMs?: number;
  /** Longest wait between attempts. Default 2,000 ms. */
  retryMaxMs?: number;
  /** Shortest interval between two log lines about refused records. Default 10,000 ms. */
  refusedLogMs?: number;
  /**
   * How long a batch of lazy records only (see `offer`) waits before its commit, in ms;
   * a record someone waits for ends the wait. Default 250.
   */
  lazyCommitMs?: number;
  /** Called after each successful KV commit (log or snapshot) with its duration and records. */
  onCommit?: (seconds: number, records: number) => void;
  /**
   * Monotonic milliseconds (for rate limits, commit durations and a due snapshot's quiet
   * time). Default `performance.now`.
   */
  now?: () => number;
}

/** The defaults of `StoreOptions`, in one place. */
export const STORE_DEFAULTS = {
  valueBytes: 60_000,
  valuesPerCommit: 10,
  snapshotMinRecords: 100_000,
  snapshotQuietMs: 1_000,
  congestionBytes: 32 * 1024 * 1024,
  commitAttempts: 6,
  retryBaseMs: 100,
  retryMaxMs: 2_000,
  refusedLogMs: 10_000,
  lazyCommitMs: 250,
  /** Values a load reads at once (~1 MB), the next read in flight while it applies them. */
  loadValues: 16,
} as const;

/** Lines a load finds before merging them (see `#mergeLines`). */
const LINES_AT_ONCE = 1024;

/** Where a store is in its life. */
export type StoreState =
  /** Open; stored records still being read in the background. */
  | "loading"
  /** Open; every stored record is in memory. */
  | "ready"
  /** Open; the load failed, so the state in memory is partial and never snapshotted. */
  | "partial"
  /** A stop has begun: a load is abandoned, no snapshot starts, failing commits stop waiting. */
  | "stopping"
  /** Stopped: everything accepted was committed or given up; offers are refused. */
  | "closed";

/** Counters for operators. */
export interface StoreStats {
  state: StoreState;
  clients: number;
  /** Successful KV commits (log and snapshot). */
  commits: number;
  /** Failed commit attempts. */
  commitErrors: number;
  /** Log commits given up after every attempt failed. */
  commitsAbandoned: number;
  /** Records in them: accepted in memory, never acknowledged. */
  recordsAbandoned: number;
  /** Records refused because they could not be stored. */
  refused: number;
  /** Group-commit batches written to the log, and the records in them. */
  batches: number;
  batchRecords: number;
  lastBatchRecords: number;
  largestBatchRecords: number;
  /** Records in the log since the snapshot. */
  walRecords: number;
  snapshots: number;
  pendingRecords: number;
}

/** One value to set in a commit, and the records it carries. */
interface Put {
  key: Deno.KvKey;
  value: unknown;
  records: number;
}

type Tuning = Required<Omit<StoreOptions, "log" | "onCommit">>;

/** The last field of the line `bytes[off, end)` (`timeOf`), searched within the line only. */
function timeIn(bytes: Uint8Array, off: number, end: number): string {
  const space = end > off ? bytes.lastIndexOf(32, end - 1) : -1;
  return bytesToString(bytes.subarray(space >= off ? space + 1 : off, end));
}

/** The first space in `bytes[from, to)`, or -1. */
function spaceIn(bytes: Uint8Array, from: number, to: number): number {
  const p = bytes.indexOf(32, from);
  return p >= 0 && p < to ? p : -1;
}

/** In-memory records with durable group commit to Deno KV. */
export class Store {
  readonly #kv: Deno.Kv;
  readonly #log: NodeLog | undefined;
  readonly #onCommit: StoreOptions["onCommit"];
  readonly #o: Tuning;
  readonly #table: RecordTable;
  /** Per-bucket digests of the records, for catch-up. */
  readonly digest: Digest = new Digest();

  #state: StoreState = "loading";
  /** How the load ended; null while it runs. */
  #loadEnd: "complete" | "failed" | "abandoned" | null = null;
  /** Aborted when a stop begins: wakes every wait between commit attempts. */
  readonly #halt = new AbortController();

  /**
   * The batch to commit next: where each of its lines is held (the table's chunk or stored
   * value, and the offset), so the batch keeps no string of its own alive until its commit.
   */
  #pendingTexts: Uint8Array[] = [];
  #pendingOffs: number[] = [];
  #pendingBytes = 0;
  #pendingGate: Gate | null = null;
  /** The pending batch holds a record someone waits for (see `offer`'s `lazy`). */
  #urgent = false;
  /** Ends a lazy wait early. */
  #hurry: (() => void) | null = null;
  #inflightGate: Gate | null = null;
  #committing: Promise<void> | null = null;
  #congestion: Gate | null = null;
  #seq: number;
  #meta: SnapMeta;
  #walSinceSnap = 0;
  #snapshotting: Promise<void> | null = null;
  /** When the last log commit landed (`now()`), and the check waiting for quiet. */
  #lastCommitAt = -Infinity;
  #quietCheck: ReturnType<typeof setTimeout> | undefined;
  /** A load's lines found and not yet merged: offset, end, client start and end, and hash. */
  readonly #lines = new Int32Array(4 * LINES_AT_ONCE);
  readonly #lineHashes = new Uint32Array(LINES_AT_ONCE);
  #refusedLoggedAt = -Infinity;
  #refusedUnlogged = 0;
  #stats = {
    commits: 0,
    commitErrors: 0,
    commitsAbandoned: 0,
    recordsAbandoned: 0,
    refused: 0,
    batches: 0,
    batchRecords: 0,
    lastBatchRecords: 0,
    largestBatchRecords: 0,
    snapshots: 0,
  };

  /**
   * Resolves when loading ends: every stored record is in memory (`isLoaded`), or the load
   * failed or was abandoned by a stop (both logged). Never rejects.
   */
  readonly loaded: Promise<void>;

  private constructor(
    kv: Deno.Kv,
    meta: SnapMeta,
    nextSeq: number,
    opts: StoreOptions,
  ) {
    this.#kv = kv;
    this.#log = opts.log;
    this.#onCommit = opts.onCommit;
    const d = STORE_DEFAULTS;
    this.#o = {
      valueBytes: Math.min(opts.valueBytes ?? d.valueBytes, KV_VALUE_LIMIT),
      valuesPerCommit: opts.valuesPerCommit ?? d.valuesPerCommit,
      snapshotMinRecords: opts.snapshotMinRecords ?? d.snapshotMinRecords,
      snapshotQuietMs: opts.snapshotQuietMs ?? d.snapshotQuietMs,
      congestionBytes: opts.congestionBytes ?? d.congestionBytes,
      commitAttempts: Math.max(1, opts.commitAttempts ?? d.commitAttempts),
      retryBaseMs: opts.retryBaseMs ?? d.retryBaseMs,
      retryMaxMs: opts.retryMaxMs ?? d.retryMaxMs,
      refusedLogMs: opts.refusedLogMs ?? d.refusedLogMs,
      lazyCommitMs: opts.lazyCommitMs ?? d.lazyCommitMs,
      now: opts.now ?? (() => performance.now()),
    };
    this.#meta = meta;
    this.#seq = nextSeq;
    this.#table = new RecordTable(meta.records ?? 0);
    this.loaded = this.#load().catch((e) => {
      this.#loadEnded("failed");
      this.#rebuildDigest();
      this.#log?.warn("store_load_failed", { error: (e as Error).message });
    });
  }

  /**
   * Opens the store on `kv`: reads only the snapshot description and the log's last
   * sequence number (milliseconds), then loads the records in the background.
   */
  static async open(kv: Deno.Kv, opts: StoreOptions = {}): Promise<Store> {
    const meta = decodeMeta((await kv.get(storeKeys.meta)).value);
    let nextSeq = meta.walFrom;
    for await (
      const e of kv.list(storeKeys.walAll, { reverse: true, limit: 1 })
    ) {
      nextSeq = Math.max(nextSeq, (e.key[1] as number) + 1);
    }
    return new Store(kv, meta, nextSeq, opts);
  }

  /** Where the store is in its life. */
  get state(): StoreState {
    return this.#state;
  }

  /** True once every stored record is in memory. */
  get isLoaded(): boolean {
    return this.#loadEnd === "complete";
  }

  /** True while the log is being folded into a snapshot. */
  get folding(): boolean {
    return this.#snapshotting !== null;
  }

  /** Number of clients known. */
  get size(): number {
    return this.#table.size;
  }

  /** Whether `client` is known (`get` without making the line a string). */
  has(client: string): boolean {
    return this.indexOf(client) >= 0;
  }

  /** The latest AT line of `client`, if known. */
  get(client: string): string | undefined {
    const i = this.indexOf(client);
    return i < 0 ? undefined : this.#table.lineAt(i);
  }

  /**
   * Where `client`'s record sits, or -1: a position from 0 to `size - 1`, never reused or
   * moved (clients are never removed), so callers may mark positions (catch-up does).
   */
  indexOf(client: string): number {
    const i = this.#table.find(
      clientHash(client, 0, client.length),
      client,
      0,
      client.length,
    );
    return i < 0 ? -1 : i;
  }

  /** The latest AT line at position `index` (`indexOf`). */
  lineAt(index: number): string {
    return this.#table.lineAt(index);
  }

  /**
   * The time field of the line at `index`: `timeOf(lineAt(index))`, read from its bytes
   * without a string of the whole line (catch-up compares a million of them).
   */
  timeAt(index: number): string {
    const t = this.#table;
    const text = t.storedValue(index);
    const off = t.storedOffset(index);
    return timeIn(text, off, lineEnd(text, off));
  }

  /** `fnv1a(lineAt(index), 1)`, over the line's bytes. */
  lineHashAt(index: number): number {
    const t = this.#table;
    const text = t.storedValue(index);
    const off = t.storedOffset(index);
    return fnv1aBytes(text, off, lineEnd(text, off), 1);
  }

  /**
   * Offers a record (a valid AT line). It replaces the held record only if it is newer; an
   * accepted record is queued for the next group commit. Returns whether it was accepted:
   * false for an older record, one that could not be stored (refused, counted and logged),
   * and any record once the store is closed.
   *
   * A `lazy` record (a neighbor's: no client waits for its ack) may wait `lazyCommitMs`
   * for its commit, so that a relaying node commits a few times a second instead of as
   * often as KV can: each commit costs ~0.5 ms of CPU (JS, KV's writer thread and the
   * kernel's fsync), and on a herd sharing two cores that CPU is taken from the relay itself.
   * At 250 ms rather than 20, a relay's CPU per record at idle halved (1.1 -> 0.6 ms, every
   * thread, 5.4 -> 2.1 context switches; docs/benchmarks.md, round seven). A client's
   * record, or anyone asking `durable()` (a WHATSAT about to read), ends the wait at once,
   * and nothing is acknowledged, nor served by WHATSAT or `GET /v1/clients/ID`, before it
   * is durable (the live watch feeds show records as they are accepted).
   */
  offer(
    line: string,
    client: string = clientOf(line),
    lazy = false,
  ): boolean {
    if (!fits(line, this.#o.valueBytes) || this.#state === "closed") {
      this.#refuse(line);
      return false;
    }
    const e = this.#merge(client, line);
    if (e < 0) return false;
    this.#pendingTexts.push(this.#table.storedValue(e));
    this.#pendingOffs.push(this.#table.storedOffset(e));
    this.#pendingBytes += line.length + 1;
    if (this.#pendingGate === null) this.#pendingGate = new Gate();
    if (!lazy) this.#urge();
    if (this.#committing === null) {
      // In a microtask, so that the records accepted in this turn commit together. Their
      // relays are already on their way: `BusChannel` writes to an idle link in the call.
      this.#committing = Promise.resolve().then(() => this.#commitLoop());
    }
    return true;
  }

  /**
   * Applies the record order; the client's entry when `line` became its record, else -1.
   * The table copies the line into its chunk (`RecordTable.add`).
   */
  #merge(client: string, line: string): number {
    const t = this.#table;
    const h = clientHash(client, 0, client.length);
    const b = h & (BUCKETS - 1);
    let i = t.find(h, client, 0, client.length);
    if (i < 0) {
      i = t.add(h, line, -1, i);
      this.digest.counts[b]++;
    } else {
      // Compared where both are held, without making the held line a string: the new line
      // is staged in the table's chunk and kept there, or the room is given back.
      const held = t.storedValue(i);
      const heldFrom = t.storedOffset(i);
      const heldTo = lineEnd(held, heldFrom);
      // The same record again (a relay's copy by another path) is the common refusal.
      if (sameLine(line, held, heldFrom, heldTo)) return -1;
      const at = t.stage(line);
      const chunk = t.chunk;
      if (
        compareRecordsIn(chunk, at, at + line.length, held, heldFrom, heldTo) <=
          0
      ) {
        t.unstage(at);
        return -1;
      }
      t.set(i, chunk, at);
      this.digest.toggleIn(b, held, heldFrom, heldTo);
    }
    this.digest.toggle(b, line, 0, line.length);
    return i;
  }

  #refuse(line: string): void {
    this.#stats.refused++;
    this.#refusedUnlogged++;
    const now = this.#o.now();
    if (now - this.#refusedLoggedAt < this.#o.refusedLogMs) return;
    this.#log?.warn("store_record_refused", {
      reason: this.#state === "closed" ? "closed" : "unstorable",
      bytes: line.length,
      limit: this.#o.valueBytes,
      refused: this.#refusedUnlogged,
    });
    this.#refusedLoggedAt = now;
    this.#refusedUnlogged = 0;
  }

  /**
   * A gate that opens when everything accepted so far is durable, or null when it already
   * is. IAMAT replies wait on it. A batch whose commit was given up never opens its gate.
   */
  durable(): Gate | null {
    // Someone waits for it: a lazy batch is committed now.
    if (this.#pendingGate !== null) this.#urge();
    return this.#pendingGate ?? this.#inflightGate;
  }

  /** The pending batch has a record someone waits for: no lazy wait before its commit. */
  #urge(): void {
    this.#urgent = true;
    this.#hurry?.();
  }

  /** Resolves after `lazyCommitMs`, or sooner on `#urge` or a stop. */
  #lazyWait(): Promise<void> {
    const signal = this.#halt.signal;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#hurry = null;
        resolve();
      };
      const timer = setTimeout(done, this.#o.lazyCommitMs);
      signal.addEventListener("abort", done);
      this.#hurry = done;
    });
  }

  /** A gate to wait on before accepting more, when too much is waiting for the disk. */
  congested(): Gate | null {
    if (this.#pendingBytes < this.#o.congestionBytes) return null;
    this.#urge();
    this.#congestion ??= new Gate();
    return this.#congestion;
  }

  /**
   * Every record whose client falls in one of `buckets`, but those at a position marked in
   * `skip` (`skip[indexOf(client)] === 1`). With `skip`, only positions within its length:
   * clients first seen after it was made are left out.
   */
  recordsIn(buckets: Set<number>, skip?: Uint8Array): string[] {
    const t = this.#table;
    const out: string[] = [];
    const end = skip === undefined ? t.size : Math.min(t.size, skip.length);
    for (let i = 0; i < end; i++) {
      if (skip !== undefined && skip[i] === 1) continue;
      if (buckets.has(t.hashAt(i) & (BUCKETS - 1))) out.push(t.lineAt(i));
    }
    return out;
  }

  /**
   * What catch-up lists of the records in `buckets` (`HAVE`): each one's client, time and
   * `fnv1a(line, 1)`, read from the bytes that hold the line (no string of the whole line: a
   * catch-up in a herd of a million clients lists them all). The same as `clientOf`,
   * `timeOf` and `fnv1a` of each line `recordsIn(buckets)` gives. Lazy: an entry is read when
   * it is taken, so a record replaced meanwhile is listed as it is then, and a client first
   * seen meanwhile is listed too.
   */
  *holdingsIn(buckets: Set<number>): IterableIterator<Holding> {
    const t = this.#table;
    for (let i = 0; i < t.size; i++) {
      if (!buckets.has(t.hashAt(i) & (BUCKETS - 1))) continue;
      const text = t.storedValue(i);
      const off = t.storedOffset(i);
      const end = lineEnd(text, off);
      // The client is the fourth field, found by its spaces. A line with fewer than four
      // (none the node offers: it offers valid AT lines) takes `clientOf`'s answer.
      let s = off;
      for (let n = 0; n < 3 && s >= 0; n++) {
        const p = spaceIn(text, s, end);
        s = p < 0 ? -1 : p + 1;
      }
      const clientEnd = s < 0 ? -1 : spaceIn(text, s, end);
      yield {
        client: clientEnd < 0
          ? clientOf(t.lineAt(i))
          : bytesToString(text.subarray(s, clientEnd)),
        time: timeIn(text, off, end),
        hash: fnv1aBytes(text, off, end, 1),
      };
    }
  }

  /**
   * Bytes of the buffers holding the current records (`RecordTable.heldBytes`): the
   * current lines, plus at most what was written since the last snapshot and a chunk (4 KiB)
   * a current record (docs/store.md, "Memory"). Walks every record.
   */
  heldBytes(): number {
    return this.#table.heldBytes();
  }

  /** All records, in the order their clients were first seen (tests and tools). */
  *records(): IterableIterator<string> {
    const t = this.#table;
    for (let i = 0; i < t.size; i++) yield t.lineAt(i);
  }

  /** Counters for operators. */
  stats(): StoreStats {
    return {
      state: this.#state,
      clients: this.#table.size,
      ...this.#stats,
      walRecords: this.#walSinceSnap,
      pendingRecords: this.#pendingTexts.length,
    };
  }

  // -------------------------------------------------------------------------------------
  // Group commit.

  async #commitLoop(): Promise<void> {
    try {
      while (this.#pendingTexts.length > 0) {
        if (
          !this.#urgent && this.#o.lazyCommitMs > 0 &&
          !this.#halt.signal.aborted
        ) {
          await this.#lazyWait();
        }
        this.#urgent = false;
        const texts = this.#pendingTexts;
        const offs = this.#pendingOffs;
        const n = texts.length;
        const bytes = this.#pendingBytes;
        const gate = this.#pendingGate!;
        this.#pendingTexts = [];
        this.#pendingOffs = [];
        this.#pendingBytes = 0;
        this.#pendingGate = null;
        this.#inflightGate = gate;
        this.#congestion?.open();
        this.#congestion = null;
        const s = this.#stats;
        s.batches++;
        s.batchRecords += n;
        s.lastBatchRecords = n;
        s.largestBatchRecords = Math.max(s.largestBatchRecords, n);
        try {
          await this.#writeWal(texts, offs, bytes);
        } catch (e) {
          // Every attempt failed: these records are never acknowledged (their gate stays
          // shut), and the next batch starts with fresh attempts.
          s.commitsAbandoned++;
          s.recordsAbandoned += n;
          this.#inflightGate = null;
          this.#log?.warn("kv_commit_gave_up", {
            records: n,
            attempts: this.#o.commitAttempts,
            error: (e as Error).message,
          });
          continue;
        }
        this.#inflightGate = null;
        gate.open();
        this.#walSinceSnap += n;
        this.#lastCommitAt = this.#o.now();
        this.#maybeSnapshot();
      }
    } finally {
      this.#committing = null;
    }
  }

  /**
   * Writes lines (the one at `texts[k]` from `offs[k]`, each; `bytes` in all, with a `\n`
   * each) to the log in as few atomic commits as KV's limits allow.
   */
  async #writeWal(
    texts: Uint8Array[],
    offs: number[],
    bytes: number,
  ): Promise<void> {
    const packer = new LinePacker(this.#o.valueBytes, bytes);
    for (let k = 0; k < texts.length; k++) {
      packer.add(texts[k], offs[k], lineEnd(texts[k], offs[k]));
    }
    const values = packer.finish();
    for (let i = 0; i < values.length; i += this.#o.valuesPerCommit) {
      const batch = values.slice(i, i + this.#o.valuesPerCommit);
      const first = this.#seq;
      this.#seq += batch.length;
      await this.#commit(batch.map((v, j) => ({
        key: storeKeys.wal(first + j),
        value: v.bytes,
        records: v.records,
      })));
    }
  }

  /**
   * Commits `entries` atomically, retrying a failure up to `commitAttempts` times with
   * doubling waits (none once a stop has begun). Throws the last error when every attempt
   * failed.
   */
  async #commit(puts: readonly Put[]): Promise<void> {
    let records = 0;
    for (const p of puts) records += p.records;
    const o = this.#o;
    for (let attempt = 1;; attempt++) {
      try {
        const op = this.#kv.atomic();
        for (const p of puts) op.set(p.key, p.value);
        const t0 = o.now();
        const res = await op.commit();
        if (!res.ok) throw new Error("atomic commit was not ok");
        this.#stats.commits++;
        this.#onCommit?.((o.now() - t0) / 1000, records);
        return;
      } catch (e) {
        this.#stats.commitErrors++;
        this.#log?.warn("kv_commit_failed", {
          attempt,
          error: (e as Error).message,
        });
        if (attempt >= o.commitAttempts) throw e;
        await this.#pause(
          Math.min(o.retryMaxMs, o.retryBaseMs * 2 ** (attempt - 1)),
        );
      }
    }
  }

  /** Waits `ms`, or less once a stop begins. */
  #pause(ms: number): Promise<void> {
    return pause(ms, this.#halt.signal);
  }

  // -------------------------------------------------------------------------------------
  // Snapshots.

  /**
   * Starts folding the log once it is due: as many records as the state (at least
   * `snapshotMinRecords`). While commits keep landing it waits for `snapshotQuietMs`
   * without one, unless the log reaches twice that: a fold reads and writes as much as
   * the state, and five nodes folding at once in the middle of a flood cost the herd a
   * sixth of its throughput (docs/benchmarks.md, round five). So the log a restart reads
   * after the snapshot stays under twice `max(snapshotMinRecords, clients)`, plus the batch
   * that crossed it and what lands while a fold runs (docs/store.md).
   */
  #maybeSnapshot(): void {
    if (this.#state !== "ready" || this.#snapshotting) return;
    const need = Math.max(this.#o.snapshotMinRecords, this.#table.size);
    if (this.#walSinceSnap < need) return;
    const quietFor = this.#o.now() - this.#lastCommitAt;
    const wait = Math.min(
      this.#o.snapshotQuietMs - quietFor,
      this.#o.snapshotQuietMs,
    );
    if (wait > 0 && this.#walSinceSnap < 2 * need) {
      this.#quietCheck ??= setTimeout(() => {
        this.#quietCheck = undefined;
        this.#maybeSnapshot();
      }, wait);
      return;
    }
    clearTimeout(this.#quietCheck);
    this.#quietCheck = undefined;
    this.#snapshotting = this.snapshot().then(() => {
      // Records accepted during the fold may have made the log due again, and with the
      // burst over no commit may come to notice it.
      this.#snapshotting = null;
      this.#maybeSnapshot();
    }, (e) => {
      this.#snapshotting = null;
      this.#log?.warn("snapshot_failed", { error: (e as Error).message });
    });
  }

  /**
   * Folds the log into a new snapshot of the in-memory state, then deletes the old snapshot
   * and the folded log. Records accepted meanwhile are in the log past `walFrom`, so a crash
   * at any point leaves a loadable state. The description written last names the snapshot
   * and holds the digest of exactly its lines.
   */
  async snapshot(): Promise<void> {
    if (this.#loadEnd !== "complete") {
      throw new Error("cannot snapshot a store that is not fully loaded");
    }
    const walFrom = this.#seq;
    const foldedRecords = this.#walSinceSnap;
    const gen = this.#meta.gen + 1;
    const digest = new Digest();
    const packer = new LinePacker(this.#o.valueBytes);
    const t = this.#table;
    let chunk = 0;
    let records = 0;
    let batch: Put[] = [];
    const queue = async (values: Packed[]) => {
      for (const v of values) {
        batch.push({
          key: storeKeys.snapChunk(gen, chunk++),
          value: v.bytes,
          records: v.records,
        });
      }
      if (batch.length >= this.#o.valuesPerCommit) {
        await this.#commit(batch);
        batch = [];
      }
    };
    // Entries added meanwhile are visited too (`t.size` is read each time); a replaced
    // entry gives its newest line. Either way the log past `walFrom` has what is missed.
    // Each entry then holds its line where the packer copied it: the snapshot's values
    // become what the index reads, as after a load, and the chunks and values it held
    // before are let go once no current line is in them (this bounds what they keep).
    for (let i = 0; i < t.size; i++) {
      if (this.#state !== "ready") return;
      const text = t.storedValue(i);
      const from = t.storedOffset(i);
      const to = lineEnd(text, from);
      const at = packer.add(text, from, to);
      const held = packer.buffer;
      t.set(i, held, at);
      const b = t.hashAt(i) & (BUCKETS - 1);
      digest.counts[b]++;
      digest.toggleIn(b, held, at, at + to - from);
      records++;
      if (packer.ready) await queue(packer.take());
    }
    await queue(packer.finish());
    const meta: SnapMeta = { gen, chunks: chunk, walFrom, records, digest };
    batch.push({ key: storeKeys.meta, value: encodeMeta(meta), records: 0 });
    await this.#commit(batch);
    this.#meta = meta;
    this.#walSinceSnap -= foldedRecords;
    this.#stats.snapshots++;
    // From the very start of the log, not from the previous snapshot's walFrom: a crash
    // between an earlier snapshot's meta commit and its log deletion leaves folded values
    // below that point, and this is the only place they are ever collected.
    await this.#deleteRange(storeKeys.walBefore(walFrom));
    await this.#deleteRange(storeKeys.snapBefore(gen));
    await this.#deleteRange(storeKeys.snapFrom(gen, chunk));
    this.#log?.event("snapshot", { clients: t.size, chunks: chunk });
  }

  async #deleteRange(sel: Deno.KvListSelector): Promise<void> {
    let op = this.#kv.atomic();
    let n = 0;
    for await (const e of this.#kv.list(sel, { batchSize: 1000 })) {
      op.delete(e.key);
      if (++n === 900) {
        await op.commit();
        op = this.#kv.atomic();
        n = 0;
      }
    }
    if (n > 0) await op.commit();
  }

  // -------------------------------------------------------------------------------------
  // Load.

  async #load(): Promise<void> {
    const t0 = performance.now();
    const { gen, chunks, walFrom, digest } = this.#meta;
    const walTo = this.#seq; // values from here on are this process's own
    let records = 0;
    let malformed = 0;
    let walValues = 0;
    let applyMs = 0; // of the load's time, what merging took (the rest is waiting for KV)
    const apply = (values: unknown[], counted: boolean) => {
      const a0 = performance.now();
      for (const v of values) {
        const [n, bad] = this.#apply(storedBytes(v), counted);
        records += n;
        malformed += bad;
      }
      applyMs += performance.now() - a0;
    };
    // A format-2 snapshot brings the digest of its lines: add it once instead of hashing
    // every line (a conflict with a record already held then takes the loser back out).
    if (digest !== undefined) this.digest.absorb(digest);
    for await (
      const values of this.#values(storeKeys.snapChunks, gen, 0, chunks)
    ) {
      if (this.#state !== "loading") return this.#abandonLoad();
      apply(values, digest !== undefined);
    }
    const before = records;
    for await (
      const values of this.#values(storeKeys.walRange, 0, walFrom, walTo)
    ) {
      if (this.#state !== "loading") return this.#abandonLoad();
      apply(values, false);
      walValues += values.length;
    }
    this.#walSinceSnap += records - before;
    this.#loadEnded("complete");
    this.#log?.event("store_loaded", {
      clients: this.#table.size,
      records,
      walValues,
      ...(malformed > 0 ? { malformed } : {}),
      ms: Math.round(performance.now() - t0),
      applyMs: Math.round(applyMs),
    });
    this.#maybeSnapshot();
  }

  /**
   * The values of keys `first` up to `last` (`range(scope, from, to)` selects them),
   * `loadValues` keys a read, the next read in flight while the caller applies one (KV
   * reads from its own thread).
   */
  async *#values(
    range: (scope: number, from: number, to: number) => Deno.KvListSelector,
    scope: number,
    first: number,
    last: number,
  ): AsyncGenerator<unknown[]> {
    const step = STORE_DEFAULTS.loadValues;
    const read = (from: number) =>
      Array.fromAsync(
        this.#kv.list(range(scope, from, Math.min(last, from + step)), {
          batchSize: step,
        }),
        (e) => e.value,
      );
    let next = first < last ? read(first) : null;
    try {
      for (let from = first; next !== null; from += step) {
        const values = await next;
        next = from + step < last ? read(from + step) : null;
        if (values.length > 0) yield values;
      }
    } finally {
      await next?.catch(() => {});
    }
  }

  /**
   * Merges every line of a stored value, in place: a new client's entry points into `bytes`.
   * With `counted`, the digest already holds these lines (a format-2 snapshot), so only a
   * conflict touches it. Returns [records, malformed lines skipped].
   */
  #apply(bytes: Uint8Array, counted: boolean): [number, number] {
    const n = bytes.length;
    const lines = this.#lines;
    const hashes = this.#lineHashes;
    let records = 0;
    let done = 0; // records merged so far; the others wait in `lines`
    let malformed = 0;
    for (let off = 0; off < n;) {
      // The client id follows the third space. Plain loops over the bytes measured twice as
      // fast here as five `indexOf` calls a line.
      let p = off;
      let c = 0;
      for (let spaces = 0; p < n; p++) {
        c = bytes[p];
        if (c === 10 || (c === 32 && ++spaces === 3)) break;
      }
      if (p < n && c === 32) {
        const cs = p + 1;
        let ce = cs;
        while (ce < n && (c = bytes[ce]) !== 32 && c !== 10) ce++;
        if (ce < n && c === 32 && ce > cs) {
          let end = bytes.indexOf(10, ce);
          if (end < 0) end = n;
          const k = records++ - done;
          lines[4 * k] = off;
          lines[4 * k + 1] = end;
          lines[4 * k + 2] = cs;
          lines[4 * k + 3] = ce;
          hashes[k] = clientHashIn(bytes, cs, ce);
          if (k + 1 === LINES_AT_ONCE) {
            this.#mergeLines(bytes, k + 1, counted);
            done = records;
          }
          off = end + 1;
          continue;
        }
        p = ce;
      }
      // Not an AT line (or an empty one): skip to its end.
      let end = p < n && bytes[p] === 10 ? p : bytes.indexOf(10, p);
      if (end < 0) end = n;
      if (end > off) malformed++;
      off = end + 1;
    }
    if (records > done) this.#mergeLines(bytes, records - done, counted);
    return [records, malformed];
  }

  /**
   * Merges the first `k` lines found by `#apply`. The table first reads the slot of each (a
   * loop of independent reads, which the CPU overlaps), so the merges find them in cache:
   * interleaved with the scan, each probe's cache miss stood alone (measured: probing was a
   * third of the load's main-thread time; see docs/store.md).
   */
  #mergeLines(bytes: Uint8Array, k: number, counted: boolean): void {
    const lines = this.#lines;
    const hashes = this.#lineHashes;
    this.#table.prefetch(hashes, k);
    for (let j = 0; j < k; j++) {
      this.#mergeStored(
        bytes,
        lines[4 * j],
        lines[4 * j + 1],
        lines[4 * j + 2],
        lines[4 * j + 3],
        hashes[j],
        counted,
      );
    }
  }

  /**
   * Merges the stored line `bytes[off, end)` whose client id is `bytes[cs, ce)`. With
   * `counted`, the digest already holds the line (a format-2 snapshot).
   */
  #mergeStored(
    bytes: Uint8Array,
    off: number,
    end: number,
    cs: number,
    ce: number,
    h: number,
    counted: boolean,
  ): void {
    const t = this.#table;
    const digest = this.digest;
    const b = h & (BUCKETS - 1);
    const i = t.find(h, bytes, cs, ce);
    if (i < 0) {
      t.add(h, bytes, off, i);
      if (!counted) {
        digest.counts[b]++;
        digest.toggleIn(b, bytes, off, end);
      }
      return;
    }
    // The held line is compared and hashed where it is (the table holds every line as bytes).
    const held = t.storedValue(i);
    const heldFrom = t.storedOffset(i);
    const heldTo = lineEnd(held, heldFrom);
    const newer = compareRecordsIn(bytes, off, end, held, heldFrom, heldTo) > 0;
    if (newer) t.set(i, bytes, off);
    if (counted) {
      // Two records of one client were counted: keep the winner's.
      digest.counts[b]--;
      if (!newer) {
        digest.toggleIn(b, bytes, off, end);
        return;
      }
    } else if (!newer) {
      return;
    }
    // The held line leaves the digest (and the new one, when not yet counted, joins it).
    digest.toggleIn(b, held, heldFrom, heldTo);
    if (!counted) digest.toggleIn(b, bytes, off, end);
  }

  #abandonLoad(): void {
    this.#loadEnded("abandoned");
    this.#log?.event("store_load_abandoned", { clients: this.#table.size });
  }

  #loadEnded(how: "complete" | "failed" | "abandoned"): void {
    this.#loadEnd = how;
    if (this.#state === "loading") {
      this.#state = how === "complete" ? "ready" : "partial";
    }
  }

  /** Recomputes the digest from the records held (after a load that failed midway). */
  #rebuildDigest(): void {
    const d = this.digest;
    d.lo.fill(0);
    d.hi.fill(0);
    d.counts.fill(0);
    for (const line of this.records()) {
      const b = bucketOf(clientOf(line));
      d.counts[b]++;
      d.toggle(b, line, 0, line.length);
    }
  }

  // -------------------------------------------------------------------------------------
  // Stop.

  /** Abandons an unfinished load now (a stop has begun); `loaded` then resolves soon. */
  stopLoading(): void {
    if (this.#state === "closed") return;
    this.#state = "stopping";
    this.#halt.abort();
    clearTimeout(this.#quietCheck);
    this.#quietCheck = undefined;
  }

  /**
   * Waits until everything accepted is committed (or given up: a stop never waits between
   * attempts), abandons an unfinished load and any snapshot in progress (what they covered
   * stays on disk), and leaves the store closed. Does not close KV.
   */
  async close(): Promise<void> {
    this.stopLoading();
    await this.loaded;
    while (this.#committing) await this.#committing;
    this.#state = "closed";
    await this.#snapshotting;
  }
}
