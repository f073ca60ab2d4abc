/**
 * The in-memory index of a store: the latest AT line of every client, found by client id.
 *
 * An open-addressing hash table over typed arrays instead of a `Map<string, string>`, and
 * lazy lines: a record loaded from KV stays inside the bytes of the value it came in (entry =
 * those bytes and an offset) and becomes a string only when read. Profiled on a load of
 * 1,000,000 clients, the `Map` version spent 44% of its time in `Map` get/set, 18% in the
 * garbage collector (two fresh strings a record: the line and its client key) and 16% hashing
 * lines for the digest; decoding the values into strings then still cost the load's thread
 * ~0.9 s of its ~1 s (first touches of 80 MB of fresh memory; see docs/store.md). Here a load
 * scans the bytes KV handed over, hashes each client id once, in place (that hash is also its
 * digest bucket), probes an `Int32Array`, and allocates nothing per record.
 *
 * Memory per client: the line's bytes in its stored value (outside V8's heap), plus 12 bytes
 * of entry arrays and 16 to 32 of slots (load factor at most 1/2). A value stays alive while
 * any of its lines is current, as a parent string did for the `Map`'s sliced strings.
 *
 * A line added as a string (a client's or a neighbor's record) is copied into a chunk of
 * bytes the table fills in turn (`CHUNK_BYTES`), and the string is let go: one string a
 * record, each kept for as long as it was current, had every record copied through the young
 * generation and held in the old one. Measured on five-node herds after a 5 s load,
 * alternating with the version that held strings: bytes promoted at a relay 26-32 -> 12-15 MB,
 * the collectors' pauses over the five nodes 31-38% shorter (two pairs), the RSS after the
 * load lower in eleven pairs of eleven (docs/benchmarks.md, round ten). A chunk stays alive
 * while one of its lines is current; the store's snapshot moves every line into the
 * snapshot's values (`set`), which lets the older chunks go, so what chunks hold beyond the
 * current lines is bounded by what the log holds since the last snapshot, and by a chunk
 * (`CHUNK_BYTES`) a current record.
 *
 * Entries are never removed (a client's record is only ever replaced), so probing needs no
 * tombstones, and entries keep their insertion order for iteration.
 *
 * @example
 * ```ts
 * import { clientHash } from "../digest.ts";
 * import { RecordTable } from "./table.ts";
 * const t = new RecordTable();
 * const line = "AT A +0.000000000 kiwi +1+1 5";
 * const h = clientHash("kiwi", 0, 4);
 * const at = t.find(h, "kiwi", 0, 4); // negative: not there, and where it would go
 * t.add(h, line, -1, at);
 * t.lineAt(t.find(h, "kiwi", 0, 4)); // the line
 * ```
 * @module
 */

import { bytesToString, writeByteString } from "../bytes.ts";

/** Start of the client field of the AT line at `bytes[off..]` (after three spaces; 0 when it has none). */
export function clientStartIn(bytes: Uint8Array, off: number): number {
  let p = bytes.indexOf(32, off) + 1;
  if (p === 0) return 0;
  p = bytes.indexOf(32, p) + 1;
  if (p === 0) return 0;
  return bytes.indexOf(32, p) + 1;
}

/** Where the line starting at `bytes[off]` ends: its `\n`, or the end of the bytes. */
export function lineEnd(bytes: Uint8Array, off: number): number {
  const end = bytes.indexOf(10, off);
  return end < 0 ? bytes.length : end;
}

/** The line starting at `bytes[off]`, up to the next `\n` or the end, as a byte string. */
export function lineIn(bytes: Uint8Array, off: number): string {
  return bytesToString(bytes.subarray(off, lineEnd(bytes, off)));
}

const MIN_SLOTS = 1024;
const EMPTY = new Uint8Array(0);
/**
 * Bytes of a chunk that lines added as strings are copied into: about 45 lines. A chunk stays
 * alive while one of its lines is current, so until the next snapshot a record whose
 * chunk-mates were all replaced costs its whole chunk; small chunks keep that worst case small
 * and still make one object of about 45 records.
 */
const CHUNK_BYTES = 4 * 1024;

/** Client id to latest line, over typed arrays. */
export class RecordTable {
  /** Per entry: the client's 32-bit hash (`clientHash`). */
  #hashes: Uint32Array;
  /** Per entry: where its line starts in the bytes `#texts[i]`. */
  #offs: Int32Array;
  /** Per entry: the stored value, snapshot value or chunk (bytes) holding its line. */
  #texts: Uint8Array[];
  /**
   * Open addressing, linear probing; slot `s` is `#slots[2s]` (the client hash, as int32) and
   * `#slots[2s + 1]` (entry index + 1, or 0 when free). The hash beside the entry number lets
   * a probe skip other clients without a second random read: measured, probes were half of
   * a load's main-thread time when the hash was only in `#hashes`.
   */
  #slots: Int32Array;
  /** Number of slots - 1 (a power of two minus one). */
  #mask: number;
  #size = 0;
  /** The chunk lines added as strings are copied into, and how much of it is used. */
  #chunk: Uint8Array = new Uint8Array(0);
  #chunkUsed = 0;
  /** What `prefetch` read (kept so the reads are not optimized away). */
  #touched = 0;

  /** A table with room for `expected` entries before it grows. */
  constructor(expected = 0) {
    const cap = Math.max(16, expected);
    this.#hashes = new Uint32Array(cap);
    this.#offs = new Int32Array(cap);
    // Filled up front: growing by `push` cost a load ~2x more than writing in place.
    this.#texts = new Array(cap).fill(EMPTY);
    const n = slotsFor(cap);
    this.#slots = new Int32Array(2 * n);
    this.#mask = n - 1;
  }

  /** Number of clients. */
  get size(): number {
    return this.#size;
  }

  /**
   * The entry of the client whose id is `key[from, to)` (a string, or bytes of a stored
   * value) and whose hash is `h`; when there is none, a negative number to pass to `add`
   * (where its entry would go).
   */
  find(h: number, key: string | Uint8Array, from: number, to: number): number {
    const slots = this.#slots;
    const mask = this.#mask;
    const h32 = h | 0;
    for (let s = h & mask;; s = (s + 1) & mask) {
      const e = slots[2 * s + 1];
      if (e === 0) return -1 - s;
      if (slots[2 * s] === h32 && this.#isClient(e - 1, key, from, to)) {
        return e - 1;
      }
    }
  }

  /**
   * Adds an entry for a client not in the table (`at` from `find`): its line is `text`
   * (`off` -1, copied into a chunk), or starts at `text[off]` in a stored value and ends at
   * the next `\n`.
   */
  add(h: number, text: string | Uint8Array, off: number, at: number): number {
    if (typeof text === "string") {
      off = this.#copy(text);
      text = this.#chunk;
    }
    const i = this.#size;
    if (i === this.#hashes.length) {
      this.#growEntries(Math.ceil(i * 1.5) + 16);
    }
    if ((i + 1) * 2 > this.#mask + 1) {
      this.#rehash(2 * (this.#mask + 1));
      at = this.#freeSlot(h);
    }
    this.#hashes[i] = h;
    this.#offs[i] = off;
    if (i < this.#texts.length) this.#texts[i] = text;
    else this.#texts.push(text);
    const s = -1 - at;
    this.#slots[2 * s] = h | 0;
    this.#slots[2 * s + 1] = i + 1;
    this.#size = i + 1;
    return i;
  }

  /**
   * Reads the first slot of each of the first `k` hashes, so that finding them next hits
   * the cache: these reads do not depend on each other, and the CPU overlaps their misses.
   */
  prefetch(hashes: Uint32Array, k: number): void {
    const slots = this.#slots;
    const mask = this.#mask;
    let x = 0;
    for (let j = 0; j < k; j++) x |= slots[2 * (hashes[j] & mask) + 1];
    this.#touched = x;
  }

  /** Entry `i` now holds `line` (copied into a chunk), or the line at `text[off]`. */
  set(i: number, line: string): void;
  set(i: number, text: Uint8Array, off: number): void;
  set(i: number, text: string | Uint8Array, off = -1): void {
    if (typeof text === "string") {
      off = this.#copy(text);
      text = this.#chunk;
    }
    this.#texts[i] = text;
    this.#offs[i] = off;
  }

  /** The line of entry `i`. */
  lineAt(i: number): string {
    return lineIn(this.#texts[i], this.#offs[i]);
  }

  /** The offset of entry `i`'s line in the bytes that hold it (`storedValue`). */
  storedOffset(i: number): number {
    return this.#offs[i];
  }

  /** The bytes entry `i`'s line is in: a stored value, a snapshot's value or a chunk. */
  storedValue(i: number): Uint8Array {
    return this.#texts[i];
  }

  /**
   * Bytes of the buffers that hold the lines (stored values, snapshot values, chunks), each
   * counted once: what the index keeps alive beyond the lines themselves. Walks every entry.
   */
  heldBytes(): number {
    const seen = new Set<Uint8Array>();
    let bytes = 0;
    for (let i = 0; i < this.#size; i++) {
      const text = this.#texts[i];
      if (seen.has(text)) continue;
      seen.add(text);
      bytes += text.byteLength;
    }
    return bytes;
  }

  /** The client hash of entry `i`. */
  hashAt(i: number): number {
    return this.#hashes[i];
  }

  /** Whether entry `i`'s client id is `key[from, to)`, compared in place. */
  #isClient(
    i: number,
    key: string | Uint8Array,
    from: number,
    to: number,
  ): boolean {
    const n = to - from;
    const off = this.#offs[i];
    const bytes = this.#texts[i];
    const p = clientStartIn(bytes, off);
    if (p === 0 || bytes[p + n] !== 32) return false;
    if (typeof key === "string") {
      for (let j = 0; j < n; j++) {
        if (bytes[p + j] !== key.charCodeAt(from + j)) return false;
      }
    } else {
      for (let j = 0; j < n; j++) {
        if (bytes[p + j] !== key[from + j]) return false;
      }
    }
    return true;
  }

  /**
   * Copies `line` into the current chunk, to be compared where it lands before it is kept
   * (`set(i, chunk, at)`) or let go (`unstage(at)`); returns its offset in `chunk`.
   */
  stage(line: string): number {
    return this.#copy(line);
  }

  /** The chunk the last `stage` copied into. */
  get chunk(): Uint8Array {
    return this.#chunk;
  }

  /** Gives back the room of a line staged at `at` that was not kept. */
  unstage(at: number): void {
    this.#chunkUsed = at;
  }

  /** Copies `line` and a `\n` into the current chunk (a new one when full); returns its offset. */
  #copy(line: string): number {
    const need = line.length + 1;
    if (this.#chunkUsed + need > this.#chunk.length) {
      this.#chunk = new Uint8Array(Math.max(CHUNK_BYTES, need));
      this.#chunkUsed = 0;
    }
    const off = this.#chunkUsed;
    writeByteString(line, this.#chunk, off);
    this.#chunk[off + line.length] = 10;
    this.#chunkUsed = off + need;
    return off;
  }

  #freeSlot(h: number): number {
    for (let s = h & this.#mask;; s = (s + 1) & this.#mask) {
      if (this.#slots[2 * s + 1] === 0) return -1 - s;
    }
  }

  #growEntries(cap: number): void {
    const hashes = new Uint32Array(cap);
    hashes.set(this.#hashes.subarray(0, this.#size));
    const offs = new Int32Array(cap);
    offs.set(this.#offs.subarray(0, this.#size));
    this.#hashes = hashes;
    this.#offs = offs;
  }

  #rehash(n: number): void {
    const slots = new Int32Array(2 * n);
    const mask = n - 1;
    for (let i = 0; i < this.#size; i++) {
      const h = this.#hashes[i];
      let s = h & mask;
      while (slots[2 * s + 1] !== 0) s = (s + 1) & mask;
      slots[2 * s] = h | 0;
      slots[2 * s + 1] = i + 1;
    }
    this.#slots = slots;
    this.#mask = mask;
  }
}

/** Slots for `n` entries: a power of two at least twice `n`. */
function slotsFor(n: number): number {
  let s = MIN_SLOTS;
  while (s < n * 2) s *= 2;
  return s;
}
