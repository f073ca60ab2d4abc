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
 */
export class LineFramer {
  #parts: Uint8Array[] = [];
  #partLen = 0;
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
    return this.#partLen;
  }

  /** Frames one chunk. The chunk may be reused by the caller afterwards. */
  push(chunk: Uint8Array): Framed {
    const lines: string[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(LF, start);
      if (nl < 0) {
        const held = this.#partLen + chunk.length - start;
        // One byte more is held only when it is a CR that may begin this line's CRLF.
        if (
          held > this.#limit &&
          !(held === this.#limit + 1 && chunk[chunk.length - 1] === CR)
        ) {
          return { lines, overflow: this.#cut(chunk.subarray(start)) };
        }
        this.#parts.push(chunk.slice(start));
        this.#partLen += chunk.length - start;
        break;
      }
      if (this.#partLen + nl - start > this.#limit + 1) {
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
    if (this.#partLen === 0) return null;
    return this.#take(new Uint8Array(0)).slice(0, this.#limit);
  }

  /** Joins held parts with `tail` into one line, dropping one trailing CR. */
  #take(tail: Uint8Array): string {
    let bytes = tail;
    if (this.#partLen > 0) {
      bytes = new Uint8Array(this.#partLen + tail.length);
      let at = 0;
      for (const p of this.#parts) {
        bytes.set(p, at);
        at += p.length;
      }
      bytes.set(tail, at);
      this.#parts = [];
      this.#partLen = 0;
    }
    const n = bytes.length;
    const end = n > 0 && bytes[n - 1] === CR ? n - 1 : n;
    return bytesToString(bytes.subarray(0, end));
  }

  #cut(tail: Uint8Array): string {
    const held = new Uint8Array(
      Math.min(this.#limit, this.#partLen + tail.length),
    );
    let at = 0;
    for (const p of this.#parts) {
      if (at >= held.length) break;
      const n = Math.min(p.length, held.length - at);
      held.set(p.subarray(0, n), at);
      at += n;
    }
    if (at < held.length) held.set(tail.subarray(0, held.length - at), at);
    this.#parts = [];
    this.#partLen = 0;
    return bytesToString(held);
  }
}
