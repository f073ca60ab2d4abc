/**
 * The records: the latest AT line of every client, in memory for reads and in Deno KV for
 * restarts. An IAMAT is acknowledged only when its record is durable.
 *
 * Writes are group commits to a write-ahead log: every record accepted while no commit is in
 * flight goes to KV in the next atomic commit, as a few large byte values (`["wal", seq]`,
 * lines joined by `\n`), and the next batch grows while that commit lands. Measured here, one
 * awaited `kv.set` per record manages ~1,600 writes/s while one atomic commit of hundreds of
 * records manages ~130,000/s, and byte values are the cheapest to write.
 *
 * The log is folded into a snapshot (`["snap", gen, i]`, ~60 KB chunks of lines, described by
 * `["meta", "snap"]`) in the background once it has grown as large as the state, so a
 * restart reads a snapshot plus a short log. Nothing is ever overwritten in place: replay
 * applies the record order, so an older record can never replace a newer one.
 *
 * Loading runs in the background after the node listens; `loaded` says when it is done. It
 * never rejects: a load that fails is logged, and the store then never folds the log into a
 * snapshot, so what it could not read stays on disk.
 *
 * @example
 * ```ts
 * const kv = await Deno.openKv(":memory:");
 * const store = await Store.open(kv);
 * store.offer("AT A +0.000000000 kiwi +1+1 5"); // true: accepted
 * await store.durable()?.promise; // now in KV
 * await store.close();
 * ```
 * @module
 */

import { bytesToString, stringToBytes } from "./bytes.ts";
import { bucketOf, Digest } from "./digest.ts";
import { Gate } from "./gate.ts";
import type { NodeLog } from "./log.ts";
import { clientOf, compareRecords } from "./record.ts";

/** Store tuning; the defaults fit KV's limits (1,000 mutations, 800 KB a commit, 64 KiB a value). */
export interface StoreOptions {
  log?: NodeLog;
  /** Largest value written, in bytes. Default 60,000. */
  valueBytes?: number;
  /** Values a commit. Default 10 (600 KB). */
  valuesPerCommit?: number;
  /** Snapshot once the log holds this many records and at least as many as the state. Default 100,000. */
  snapshotMinRecords?: number;
  /** Pending bytes beyond which writers are asked to wait. Default 32 MiB. */
  congestionBytes?: number;
  /** Called after each successful KV commit with its duration and record count (metrics). */
  onCommit?: (seconds: number, records: number) => void;
}

interface SnapMeta {
  gen: number;
  chunks: number;
  walFrom: number;
}

const META_KEY = ["meta", "snap"];

/** Counters for operators. */
export interface StoreStats {
  clients: number;
  commits: number;
  walRecords: number;
  snapshots: number;
  commitErrors: number;
  pendingRecords: number;
}

/** In-memory records with durable group commit to Deno KV. */
export class Store {
  readonly #kv: Deno.Kv;
  readonly #log: NodeLog | undefined;
  readonly #map = new Map<string, string>();
  readonly digest = new Digest();
  readonly #valueBytes: number;
  readonly #valuesPerCommit: number;
  readonly #snapshotMin: number;
  readonly #congestionBytes: number;
  readonly #onCommit: StoreOptions["onCommit"];

  #pending: string[] = [];
  #pendingBytes = 0;
  #pendingGate: Gate | null = null;
  #inflightGate: Gate | null = null;
  #committing: Promise<void> | null = null;
  #congestion: Gate | null = null;
  #seq: number;
  #meta: SnapMeta;
  #walSinceSnap = 0;
  #snapshotting: Promise<void> | null = null;
  #closing = false;
  /** Set as soon as a stop begins: failing commits stop retrying forever. */
  #stopping = false;
  #loaded = false;
  /** Set when loading failed or was abandoned: the state in memory is partial. */
  #partial = false;
  #stopLoading = false;
  #stats = { commits: 0, snapshots: 0, commitErrors: 0 };

  /**
   * Resolves when loading ends: every stored record is in memory (`isLoaded`), or the load
   * failed or was abandoned by `close()` (both logged). Never rejects.
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
    this.#meta = meta;
    this.#seq = nextSeq;
    this.#valueBytes = opts.valueBytes ?? 60_000;
    this.#valuesPerCommit = opts.valuesPerCommit ?? 10;
    this.#snapshotMin = opts.snapshotMinRecords ?? 100_000;
    this.#congestionBytes = opts.congestionBytes ?? 32 * 1024 * 1024;
    this.#onCommit = opts.onCommit;
    this.loaded = this.#load().catch((e) => {
      this.#partial = true;
      this.#log?.warn("store_load_failed", { error: (e as Error).message });
    });
  }

  /**
   * Opens the store on `kv`: reads only the snapshot description and the log's last
   * sequence number (milliseconds), then loads the records in the background.
   */
  static async open(kv: Deno.Kv, opts: StoreOptions = {}): Promise<Store> {
    const meta = (await kv.get<SnapMeta>(META_KEY)).value ??
      { gen: 0, chunks: 0, walFrom: 0 };
    let nextSeq = meta.walFrom;
    for await (
      const e of kv.list({ prefix: ["wal"] }, { reverse: true, limit: 1 })
    ) {
      nextSeq = Math.max(nextSeq, (e.key[1] as number) + 1);
    }
    return new Store(kv, meta, nextSeq, opts);
  }

  /** True once every stored record is in memory. */
  get isLoaded(): boolean {
    return this.#loaded;
  }

  /** Number of clients known. */
  get size(): number {
    return this.#map.size;
  }

  /** The latest AT line of `client`, if known. */
  get(client: string): string | undefined {
    return this.#map.get(client);
  }

  /**
   * Offers a record (a valid AT line). It replaces the held record only if it is newer; an
   * accepted record is queued for the next group commit. Returns whether it was accepted.
   */
  offer(line: string, client: string = clientOf(line)): boolean {
    if (!this.#merge(client, line)) return false;
    this.#pending.push(line);
    this.#pendingBytes += line.length + 1;
    if (this.#pendingGate === null) this.#pendingGate = new Gate();
    if (this.#committing === null && !this.#closing) {
      this.#committing = Promise.resolve().then(() => this.#commitLoop());
    }
    return true;
  }

  /** Applies the record order; true when `line` became the client's record. */
  #merge(client: string, line: string): boolean {
    const held = this.#map.get(client);
    if (held !== undefined && compareRecords(line, held) <= 0) return false;
    this.#map.set(client, line);
    this.digest.replace(client, held, line);
    return true;
  }

  /**
   * A gate that opens when everything accepted so far is durable, or null when it already
   * is. IAMAT replies wait on it.
   */
  durable(): Gate | null {
    return this.#pendingGate ?? this.#inflightGate;
  }

  /** A gate to wait on before accepting more, when too much is waiting for the disk. */
  congested(): Gate | null {
    if (this.#pendingBytes < this.#congestionBytes) return null;
    this.#congestion ??= new Gate();
    return this.#congestion;
  }

  /** Every record whose client falls in one of `buckets`. */
  recordsIn(buckets: Set<number>): string[] {
    const out: string[] = [];
    for (const [client, line] of this.#map) {
      if (buckets.has(bucketOf(client))) out.push(line);
    }
    return out;
  }

  /** All records (a snapshot of the iteration; used by tests and tools). */
  *records(): IterableIterator<string> {
    yield* this.#map.values();
  }

  /** Counters for operators. */
  stats(): StoreStats {
    return {
      clients: this.#map.size,
      commits: this.#stats.commits,
      walRecords: this.#walSinceSnap,
      snapshots: this.#stats.snapshots,
      commitErrors: this.#stats.commitErrors,
      pendingRecords: this.#pending.length,
    };
  }

  async #commitLoop(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const lines = this.#pending;
        const gate = this.#pendingGate!;
        this.#pending = [];
        this.#pendingBytes = 0;
        this.#pendingGate = null;
        this.#inflightGate = gate;
        this.#congestion?.open();
        this.#congestion = null;
        const t0 = performance.now();
        try {
          await this.#writeWal(lines);
          this.#onCommit?.((performance.now() - t0) / 1000, lines.length);
        } catch (e) {
          // Only while stopping: the disk refused three times and the clients waiting on
          // these records are gone. They were never acknowledged; nothing is reported lost.
          this.#log?.warn("kv_commit_abandoned", {
            records: lines.length + this.#pending.length,
            error: (e as Error).message,
          });
          this.#pending = [];
          this.#pendingBytes = 0;
          return;
        }
        this.#inflightGate = null;
        gate.open();
        this.#walSinceSnap += lines.length;
        this.#maybeSnapshot();
      }
    } finally {
      this.#committing = null;
    }
  }

  /** Writes lines to the log in as few atomic commits as KV's limits allow, retrying failures. */
  async #writeWal(lines: string[]): Promise<void> {
    const values: Uint8Array[] = [];
    let part: string[] = [];
    let partBytes = 0;
    for (const line of lines) {
      if (partBytes + line.length + 1 > this.#valueBytes && part.length > 0) {
        values.push(stringToBytes(part.join("\n")));
        part = [];
        partBytes = 0;
      }
      part.push(line);
      partBytes += line.length + 1;
    }
    if (part.length > 0) values.push(stringToBytes(part.join("\n")));
    for (let i = 0; i < values.length; i += this.#valuesPerCommit) {
      const batch = values.slice(i, i + this.#valuesPerCommit);
      const first = this.#seq;
      this.#seq += batch.length;
      await this.#commitWithRetry(() => {
        const op = this.#kv.atomic();
        batch.forEach((v, j) => op.set(["wal", first + j], v));
        return op;
      });
    }
  }

  async #commitWithRetry(build: () => Deno.AtomicOperation): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        const res = await build().commit();
        if (res.ok) {
          this.#stats.commits++;
          return;
        }
        throw new Error("atomic commit was not ok");
      } catch (e) {
        this.#stats.commitErrors++;
        if (this.#stopping && attempt >= 3) throw e;
        this.#log?.warn("kv_commit_failed", {
          attempt,
          error: (e as Error).message,
        });
        await new Promise((r) => setTimeout(r, Math.min(2000, 50 * attempt)));
      }
    }
  }

  #maybeSnapshot(): void {
    if (!this.#loaded || this.#partial) return;
    if (this.#snapshotting || this.#closing) return;
    if (this.#walSinceSnap < Math.max(this.#snapshotMin, this.#map.size)) {
      return;
    }
    this.#snapshotting = this.snapshot().catch((e) => {
      this.#log?.warn("snapshot_failed", { error: (e as Error).message });
    }).finally(() => (this.#snapshotting = null));
  }

  /**
   * Folds the log into a new snapshot of the in-memory state, then deletes the old snapshot
   * and the folded log. Records accepted meanwhile are in the log past `walFrom`, so a crash
   * at any point leaves a loadable state.
   */
  async snapshot(): Promise<void> {
    if (!this.#loaded || this.#partial) {
      throw new Error("cannot snapshot a store that is not fully loaded");
    }
    const walFrom = this.#seq;
    const foldedRecords = this.#walSinceSnap;
    const gen = this.#meta.gen + 1;
    let chunk = 0;
    let batch: [Deno.KvKey, unknown][] = [];
    const commitBatch = () =>
      this.#commitWithRetry(() => {
        const op = this.#kv.atomic();
        for (const [k, v] of batch) op.set(k, v);
        return op;
      });
    let part: string[] = [];
    let partBytes = 0;
    const flushPart = async () => {
      batch.push([["snap", gen, chunk++], stringToBytes(part.join("\n"))]);
      part = [];
      partBytes = 0;
      if (batch.length >= this.#valuesPerCommit) {
        await commitBatch();
        batch = [];
      }
    };
    for (const line of this.#map.values()) {
      if (this.#closing) return;
      if (partBytes + line.length + 1 > this.#valueBytes && part.length > 0) {
        await flushPart();
      }
      part.push(line);
      partBytes += line.length + 1;
    }
    if (part.length > 0) await flushPart();
    batch.push([META_KEY, { gen, chunks: chunk, walFrom }]);
    await commitBatch();
    this.#meta = { gen, chunks: chunk, walFrom };
    this.#walSinceSnap -= foldedRecords;
    this.#stats.snapshots++;
    // From the very start of the log, not from the previous snapshot's walFrom: a crash
    // between an earlier snapshot's meta commit and its log deletion leaves folded values
    // below that point, and this is the only place they are ever collected.
    await this.#deleteRange({ start: ["wal", 0], end: ["wal", walFrom] });
    await this.#deleteRange({ start: ["snap", 0], end: ["snap", gen] });
    await this.#deleteRange({
      start: ["snap", gen, chunk],
      end: ["snap", gen + 1],
    });
    this.#log?.event("snapshot", { clients: this.#map.size, chunks: chunk });
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

  async #load(): Promise<void> {
    const t0 = performance.now();
    let records = 0;
    const apply = (value: unknown) => {
      const text = bytesToString(value as Uint8Array);
      for (const line of text.split("\n")) {
        if (line.length === 0) continue;
        this.#merge(clientOf(line), line);
        records++;
      }
    };
    const { gen, chunks, walFrom } = this.#meta;
    if (chunks > 0) {
      const sel = { start: ["snap", gen, 0], end: ["snap", gen, chunks] };
      for await (const e of this.#kv.list(sel, { batchSize: 100 })) {
        if (this.#stopLoading) return this.#abandonLoad();
        apply(e.value);
      }
    }
    let walValues = 0;
    const wal = {
      start: ["wal", walFrom],
      end: ["wal", Number.MAX_SAFE_INTEGER],
    };
    for await (const e of this.#kv.list(wal, { batchSize: 100 })) {
      if (this.#stopLoading) return this.#abandonLoad();
      const before = records;
      apply(e.value);
      this.#walSinceSnap += records - before;
      walValues++;
    }
    this.#loaded = true;
    this.#log?.event("store_loaded", {
      clients: this.#map.size,
      records,
      walValues,
      ms: Math.round(performance.now() - t0),
    });
    this.#maybeSnapshot();
  }

  #abandonLoad(): void {
    this.#partial = true;
    this.#log?.event("store_load_abandoned", { clients: this.#map.size });
  }

  /**
   * Waits until everything accepted is durable, stops background work (an unfinished load
   * is abandoned: nothing is left to answer, and a big store would hold up a clean stop).
   * Does not close KV.
   */
  /** Abandons an unfinished load now (a stop has begun); `loaded` then resolves soon. */
  stopLoading(): void {
    this.#stopLoading = true;
    this.#stopping = true;
  }

  async close(): Promise<void> {
    this.#stopping = true;
    this.#stopLoading = true;
    await this.loaded;
    while (this.#committing) await this.#committing;
    this.#closing = true;
    await this.#snapshotting;
  }
}
