/**
 * Bounded line framing over a byte stream. Lines end in `\n` (a `\r` before it is dropped
 * too); the bytes after the last `\n` form a final line at EOF. A line longer than the
 * limit is never buffered whole: the framer reports it, cut, as soon as it passes the limit.
 *
 * @example
 * ```ts
 * const framer = new LineFramer(16 * 1024);
 * framer.push(new TextEncoder().encode("IAMAT a +1+1 1\nWHAT"));
 * // => { lines: ["IAMAT a +1+1 1"], overflow: null }
 * framer.end(); // "WHAT"
 * ```
 * @module
 */

import { bytesToString } from "./bytes.ts";

/** What one chunk of input yields. */
export interface Framed {
  /** Complete lines, as byte strings, without their line endings. */
  lines: string[];
  /** Set when a line passed the limit: its first `limit` bytes. Nothing follows it. */
  overflow: string | null;
}

const LF = 10;
const CR = 13;

/**
 * Splits chunks into lines, holding at most `limit` bytes of an unfinished line (plus one
 * trailing CR, which may be the start of its CRLF ending).
 *
 * The unfinished line lives in one array grown by doubling (up to the limit) and dropped as
 * soon as the line is complete, so a framer between lines holds no buffer at all, and a line
 * dribbled one byte per read costs a few arrays, not one object per byte.
 */
export class LineFramer {
  #held: Uint8Array | null = null;
  #heldLen = 0;
  #limit: number;

  /** @param limit the longest line accepted, in bytes (without its line ending). */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /**
   * Changes the limit for lines still to come: a connection that turns out to be a peer link
   * carries AT lines, which are longer than the client lines they were made from.
   */
  setLimit(limit: number): void {
    this.#limit = limit;
  }

  /** Bytes held of an unfinished line. */
  get buffered(): number {
    return this.#heldLen;
  }

  /** Bytes allocated to hold the unfinished line (0 between lines). */
  get capacity(): number {
    return this.#held?.length ?? 0;
  }

  /** Frames one chunk. The chunk may be reused by the caller afterwards. */
  push(chunk: Uint8Array): Framed {
    const lines: string[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(LF, start);
      if (nl < 0) {
        const held = this.#heldLen + chunk.length - start;
        // One byte more is held only when it is a CR that may begin this line's CRLF.
        if (
          held > this.#limit &&
          !(held === this.#limit + 1 && chunk[chunk.length - 1] === CR)
        ) {
          return { lines, overflow: this.#cut(chunk.subarray(start)) };
        }
        this.#hold(chunk.subarray(start));
        break;
      }
      if (this.#heldLen + nl - start > this.#limit + 1) {
        return { lines, overflow: this.#cut(chunk.subarray(start, nl)) };
      }
      const line = this.#take(chunk.subarray(start, nl));
      if (line.length > this.#limit) {
        return { lines, overflow: line.slice(0, this.#limit) };
      }
      lines.push(line);
      start = nl + 1;
    }
    return { lines, overflow: null };
  }

  /** The final line at EOF, or null when nothing is left. Never longer than the limit. */
  end(): string | null {
    if (this.#heldLen === 0) return null;
    return this.#take(new Uint8Array(0)).slice(0, this.#limit);
  }

  /** Appends `bytes` to the unfinished line (the caller checked the limit). */
  #hold(bytes: Uint8Array): void {
    const need = this.#heldLen + bytes.length;
    if (this.#held === null || need > this.#held.length) {
      let size = Math.max(64, (this.#held?.length ?? 0) * 2);
      while (size < need) size *= 2;
      const grown = new Uint8Array(
        Math.min(size, Math.max(need, this.#limit + 1)),
      );
      if (this.#held !== null) grown.set(this.#held.subarray(0, this.#heldLen));
      this.#held = grown;
    }
    this.#held.set(bytes, this.#heldLen);
    this.#heldLen = need;
  }

  /** The unfinished line followed by `tail`, as one line without its trailing CR; lets go of the held bytes. */
  #take(tail: Uint8Array): string {
    let bytes = tail;
    if (this.#heldLen > 0) {
      this.#hold(tail);
      bytes = this.#held!.subarray(0, this.#heldLen);
    }
    const n = bytes.length;
    const end = n > 0 && bytes[n - 1] === CR ? n - 1 : n;
    const line = bytesToString(bytes.subarray(0, end));
    this.#held = null;
    this.#heldLen = 0;
    return line;
  }

  #cut(tail: Uint8Array): string {
    const cut = new Uint8Array(
      Math.min(this.#limit, this.#heldLen + tail.length),
    );
    const keep = Math.min(this.#heldLen, cut.length);
    if (this.#held !== null) cut.set(this.#held.subarray(0, keep));
    if (keep < cut.length) cut.set(tail.subarray(0, cut.length - keep), keep);
    this.#held = null;
    this.#heldLen = 0;
    return bytesToString(cut);
  }
}
