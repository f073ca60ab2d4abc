/**
 * How records are packed into KV values, written once for the log, the snapshots and the
 * load: a value is AT lines (byte strings, one char a byte) joined by `\n`, at most
 * `valueBytes` bytes. A line that could not be packed alone (longer than a value, or holding
 * a `\n`) is refused by `fits` before it reaches a commit.
 *
 * Also the snapshot description stored under the meta key. Since format 2 it carries the
 * number of records and the snapshot's bucket digest, so a load presizes its index and skips
 * hashing every line; a description without them (format 1) still loads, hashing as before.
 *
 * A load does not decode values into text: it reads lines in the bytes KV hands over (see
 * `table.ts`). Nor does a commit encode text: the store holds its lines as bytes, and
 * `LinePacker` copies them into values.
 *
 * @example
 * ```ts
 * import { LinePacker, unpack } from "./codec.ts";
 * const line = new TextEncoder().encode("AT A +0.000000000 kiwi +1+1 5");
 * const p = new LinePacker(60_000);
 * p.add(line, 0, line.length);
 * const [value] = p.finish();
 * unpack(value.bytes); // "AT A +0.000000000 kiwi +1+1 5"
 * ```
 * @module
 */

import { bytesToString } from "../bytes.ts";
import { Digest } from "../digest.ts";

/** Deno KV's largest value, in bytes. */
export const KV_VALUE_LIMIT = 65_536;

/** Whether `line` can be stored: alone it fits a value, and it holds no separator. */
export function fits(line: string, valueBytes: number): boolean {
  return line.length <= valueBytes && line.indexOf("\n") < 0;
}

/** One packed value and how many records it holds. */
export interface Packed {
  bytes: Uint8Array;
  records: number;
}

/**
 * Packs lines held as bytes (each one that `fits`) into values of at most `valueBytes`
 * bytes, copying each into the value being filled. Each line is followed by a `\n` in that
 * buffer (the value itself ends before the last one), so a line can be read where it landed
 * (`buffer`, at the offset `add` returns) as a line of a stored value is: the store points
 * its index at a snapshot's lines this way, and the strings they came from are let go.
 */
export class LinePacker {
  readonly #valueBytes: number;
  /** Bytes still to come (each line and a `\n`), when known: buffers no larger than that. */
  #expected: number;
  #buf: Uint8Array | null = null;
  #used = 0;
  #records = 0;
  #done: Packed[] = [];

  /**
   * `expectedBytes`, when given, is what the lines to come take with a `\n` each: the
   * buffers are then no larger than needed. A commit of one record took a 60 KB buffer
   * without it; in a 50-node herd in one process that doubled the propagation time
   * (`bench/herd50.ts`).
   */
  constructor(valueBytes: number, expectedBytes = Infinity) {
    this.#valueBytes = valueBytes;
    this.#expected = expectedBytes;
  }

  /** Copies the line `bytes[from, to)`; returns where it starts in `buffer`. */
  add(bytes: Uint8Array, from: number, to: number): number {
    const n = to - from;
    if (
      this.#records > 0 &&
      (this.#used + n > this.#valueBytes || this.#used + n >= this.#buf!.length)
    ) {
      // Over the bound, or (only if `expectedBytes` was short) over the buffer: a new value.
      this.#close();
    }
    // A line longer than a value (loaded from values written under a larger bound) goes alone.
    this.#buf ??= new Uint8Array(
      Math.max(Math.min(this.#valueBytes + 1, this.#expected), n + 1),
    );
    this.#expected -= n + 1;
    const at = this.#used;
    this.#buf.set(bytes.subarray(from, to), at);
    this.#buf[at + n] = 10;
    this.#used = at + n + 1;
    this.#records++;
    return at;
  }

  /** The buffer the last `add` copied its line into. */
  get buffer(): Uint8Array {
    return this.#buf!;
  }

  /** Whether a value is complete (see `take`). */
  get ready(): boolean {
    return this.#done.length > 0;
  }

  /** Values completed so far (the one being filled stays). */
  take(): Packed[] {
    const out = this.#done;
    this.#done = [];
    return out;
  }

  /** Every value, the last partial one included. */
  finish(): Packed[] {
    if (this.#records > 0) this.#close();
    return this.take();
  }

  #close(): void {
    this.#done.push({
      bytes: this.#buf!.subarray(0, this.#used - 1),
      records: this.#records,
    });
    this.#buf = null;
    this.#used = 0;
    this.#records = 0;
  }
}

/** A stored value's bytes; throws when it is not bytes (not something the store wrote). */
export function storedBytes(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new Error("a stored value is not bytes");
  }
  return value;
}

/** The text of a packed value: its lines joined by `\n`, one char a byte. */
export function unpack(value: unknown): string {
  return bytesToString(storedBytes(value));
}

/** The snapshot description stored under `storeKeys.meta`. */
export interface SnapMeta {
  /** Generation of the current snapshot (0: none yet). */
  gen: number;
  /** Its chunks: `["snap", gen, 0 .. chunks - 1]`. */
  chunks: number;
  /** The first log value not folded into it. */
  walFrom: number;
  /** Records in the snapshot (format 2). */
  records?: number;
  /** The bucket digest of exactly the snapshot's lines (format 2). */
  digest?: Digest;
}

/** The description of an empty store. */
export const EMPTY_META: SnapMeta = Object.freeze({
  gen: 0,
  chunks: 0,
  walFrom: 0,
});

/** The value stored for `meta` (format 2 when it has records and a digest). */
export function encodeMeta(meta: SnapMeta): Record<string, unknown> {
  const { gen, chunks, walFrom, records, digest } = meta;
  return records === undefined || digest === undefined
    ? { gen, chunks, walFrom }
    : { gen, chunks, walFrom, records, digest: digest.toBytes() };
}

const isCount = (v: unknown): v is number =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/** Reads a stored description (either format); throws on one that is not. */
export function decodeMeta(value: unknown): SnapMeta {
  if (value === null || value === undefined) return EMPTY_META;
  const v = value as Record<string, unknown>;
  if (!isCount(v.gen) || !isCount(v.chunks) || !isCount(v.walFrom)) {
    throw new Error("the snapshot description is malformed");
  }
  const meta: SnapMeta = { gen: v.gen, chunks: v.chunks, walFrom: v.walFrom };
  const digest = Digest.fromBytes(v.digest);
  if (isCount(v.records) && digest !== null) {
    meta.records = v.records;
    meta.digest = digest;
  }
  return meta;
}
