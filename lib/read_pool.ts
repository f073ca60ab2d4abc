/**
 * Large read buffers lent to connections that have much to read, so that no connection
 * keeps one while idle. Deno reads into the buffer handed to `conn.read()` when the data
 * arrives, so one buffer cannot be shared by reads pending at the same time: each pending
 * read needs its own. A connection therefore reads into a small buffer of its own and
 * borrows a large one only for the next read after one that filled its buffer (a client
 * sending fast), giving it back as soon as the chunk is framed.
 *
 * The pool is bounded twice: at most `lent` buffers are out at once (past it, `take()`
 * returns null, counted in `misses`, and the connection reads with its small buffer: slower,
 * never unbounded), and at most that many are kept for reuse.
 *
 * @example
 * ```ts
 * const pool = new ReadPool(64 * 1024, 64);
 * const buf = pool.take(); // a 64 KiB buffer, or null when 64 are out
 * if (buf) pool.give(buf);
 * ```
 * @module
 */

/** A bounded pool of equal read buffers. */
export class ReadPool {
  readonly #size: number;
  readonly #max: number;
  readonly #free: Uint8Array[] = [];
  #out = 0;
  /** Times `take()` found every buffer lent. */
  misses = 0;

  /**
   * @param size bytes of each buffer
   * @param max buffers lent at once
   */
  constructor(size: number, max: number) {
    this.#size = size;
    this.#max = max;
  }

  /** Buffers lent now. */
  get lent(): number {
    return this.#out;
  }

  /** Lends a buffer, or returns null when `max` are already lent. */
  take(): Uint8Array | null {
    if (this.#out >= this.#max) {
      this.misses++;
      return null;
    }
    this.#out++;
    return this.#free.pop() ?? new Uint8Array(this.#size);
  }

  /** Takes a lent buffer back. */
  give(buf: Uint8Array): void {
    this.#out--;
    if (this.#free.length < this.#max) this.#free.push(buf);
  }
}
