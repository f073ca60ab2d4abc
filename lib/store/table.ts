/**
 * The in-memory index of a store: the latest AT line of every client, found by client id.
 *
 * An open-addressing hash table over typed arrays instead of a `Map<string, string>`, and
 * lazy lines: a record loaded from KV stays inside the text of the value it came in (entry =
 * that text and an offset) and is cut out only when read. Profiled on a load of 1,000,000
 * clients, the `Map` version spent 44% of its time in `Map` get/set, 18% in the garbage
 * collector (two fresh strings a record: the line and its client key) and 16% hashing lines
 * for the digest (see docs/store.md). Here a load hashes each client id once, in place (that
 * hash is also its digest bucket), probes an `Int32Array`, and allocates nothing per record.
 *
 * Memory per client: the line's bytes in its value's text, plus 12 bytes of entry arrays and
 * 8 to 16 of slots (load factor at most 1/2). Keeping a value's text alive while any of its
 * lines is current costs what the `Map` of sliced strings cost before: a substring of 13
 * chars or more holds its parent in V8 too.
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

/** Start of the client field of the AT line at `text[off..]` (after three spaces). */
export function clientStart(text: string, off: number): number {
  let p = text.indexOf(" ", off) + 1;
  p = text.indexOf(" ", p) + 1;
  return text.indexOf(" ", p) + 1;
}

const MIN_SLOTS = 1024;

/** Client id to latest line, over typed arrays. */
export class RecordTable {
  /** Per entry: the client's 32-bit hash (`clientHash`). */
  #hashes: Uint32Array;
  /** Per entry: where its line starts in `#texts[i]`, or -1 when `#texts[i]` is the line. */
  #offs: Int32Array;
  /** Per entry: the line, or the value text holding it. */
  #texts: string[] = [];
  /** Open addressing, linear probing: entry index + 1, or 0 when free. */
  #slots: Int32Array;
  #mask: number;
  #size = 0;

  /** A table with room for `expected` entries before it grows. */
  constructor(expected = 0) {
    const cap = Math.max(16, expected);
    this.#hashes = new Uint32Array(cap);
    this.#offs = new Int32Array(cap);
    this.#slots = new Int32Array(slotsFor(cap));
    this.#mask = this.#slots.length - 1;
  }

  /** Number of clients. */
  get size(): number {
    return this.#size;
  }

  /**
   * The entry of the client whose id is `key[from, to)` and whose hash is `h`; when there is
   * none, a negative number to pass to `add` (where its entry would go).
   */
  find(h: number, key: string, from: number, to: number): number {
    const slots = this.#slots;
    const mask = this.#mask;
    const hashes = this.#hashes;
    for (let s = h & mask;; s = (s + 1) & mask) {
      const e = slots[s];
      if (e === 0) return -1 - s;
      if (hashes[e - 1] === h && this.#isClient(e - 1, key, from, to)) {
        return e - 1;
      }
    }
  }

  /**
   * Adds an entry for a client not in the table (`at` from `find`), its line being `text`
   * (`off` -1) or the line starting at `text[off]` and ending at the next `\n` or the end.
   */
  add(h: number, text: string, off: number, at: number): number {
    const i = this.#size;
    if (i === this.#hashes.length) {
      this.#growEntries(Math.ceil(i * 1.5) + 16);
    }
    if ((i + 1) * 2 > this.#slots.length) {
      this.#rehash(this.#slots.length * 2);
      at = this.#freeSlot(h);
    }
    this.#hashes[i] = h;
    this.#offs[i] = off;
    this.#texts.push(text);
    this.#slots[-1 - at] = i + 1;
    this.#size = i + 1;
    return i;
  }

  /** Entry `i` now holds `line` (or the line at `text[off]`, as in `add`). */
  set(i: number, text: string, off = -1): void {
    this.#texts[i] = text;
    this.#offs[i] = off;
  }

  /** The line of entry `i`. */
  lineAt(i: number): string {
    const text = this.#texts[i];
    const off = this.#offs[i];
    if (off < 0) return text;
    const end = text.indexOf("\n", off);
    return text.slice(off, end < 0 ? text.length : end);
  }

  /** The client hash of entry `i`. */
  hashAt(i: number): number {
    return this.#hashes[i];
  }

  /** Whether entry `i`'s client id is `key[from, to)`, compared in place. */
  #isClient(i: number, key: string, from: number, to: number): boolean {
    const text = this.#texts[i];
    const off = this.#offs[i];
    const p = clientStart(text, off < 0 ? 0 : off);
    const n = to - from;
    if (text.charCodeAt(p + n) !== 32) return false;
    for (let j = 0; j < n; j++) {
      if (text.charCodeAt(p + j) !== key.charCodeAt(from + j)) return false;
    }
    return true;
  }

  #freeSlot(h: number): number {
    for (let s = h & this.#mask;; s = (s + 1) & this.#mask) {
      if (this.#slots[s] === 0) return -1 - s;
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
    const slots = new Int32Array(n);
    const mask = n - 1;
    for (let i = 0; i < this.#size; i++) {
      let s = this.#hashes[i] & mask;
      while (slots[s] !== 0) s = (s + 1) & mask;
      slots[s] = i + 1;
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
