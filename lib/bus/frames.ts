/**
 * Bus framing, pure: a frame is a 4-byte big-endian length, then that many bytes of body
 * (a message, or its AES-GCM ciphertext). `FrameDecoder` turns received chunks into whole
 * frame bodies and refuses a length over its bound before buffering a byte of it, so a
 * peer can make a node hold at most one bounded, partly received frame.
 *
 * @example
 * ```ts
 * const d = new FrameDecoder(1024);
 * d.push(encodeFrame(new Uint8Array([1, 2, 3]))); // { frames: [Uint8Array [1, 2, 3]], error: null }
 * ```
 * @module
 */

/** Bytes of the length prefix. */
export const HEADER_BYTES = 4;

/** One frame: the length prefix and `body`. */
export function encodeFrame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, HEADER_BYTES);
  return out;
}

/** What one `push` produced: whole frames, and an error once the stream is unusable. */
export interface Decoded {
  frames: Uint8Array[];
  error: string | null;
}

/** Reassembles frames from a byte stream, each at most `maxBytes` long. */
export class FrameDecoder {
  #max: number;
  #header = new Uint8Array(HEADER_BYTES);
  #headerFill = 0;
  /** Length of the frame being received; -1 while reading its header. */
  #need = -1;
  #parts: Uint8Array[] = [];
  #have = 0;
  #error: string | null = null;
  readonly #views: boolean;

  /**
   * With `views`, a frame whose body came whole in one chunk comes back as a view into that
   * chunk instead of a copy, for a caller done with every frame before it reuses the chunk
   * (`BusChannel`). A body split across chunks is always assembled into bytes of its own.
   */
  constructor(maxBytes: number, views = false) {
    this.#max = maxBytes;
    this.#views = views;
  }

  /** Changes the bound (after a handshake, a neighbor gets the peer bound). */
  setMax(maxBytes: number): void {
    this.#max = maxBytes;
  }

  /** Bytes held for an unfinished frame. */
  get pending(): number {
    return this.#headerFill + this.#have;
  }

  /**
   * Takes received bytes. `chunk` may be reused by the caller afterwards; with `views`, only
   * once the frames returned are done with.
   */
  push(chunk: Uint8Array): Decoded {
    const frames: Uint8Array[] = [];
    let at = 0;
    while (this.#error === null && at < chunk.length) {
      if (this.#need < 0) {
        let n: number;
        if (this.#headerFill === 0 && chunk.length - at >= HEADER_BYTES) {
          // The whole header in this chunk (nearly always): read it where it is.
          n = uint32At(chunk, at);
          at += HEADER_BYTES;
        } else {
          const take = Math.min(
            HEADER_BYTES - this.#headerFill,
            chunk.length - at,
          );
          this.#header.set(chunk.subarray(at, at + take), this.#headerFill);
          this.#headerFill += take;
          at += take;
          if (this.#headerFill < HEADER_BYTES) break;
          n = uint32At(this.#header, 0);
          this.#headerFill = 0;
        }
        if (n > this.#max) {
          this.#error = `frame of ${n} bytes over the bound of ${this.#max}`;
          break;
        }
        if (chunk.length - at >= n) {
          // The whole body in this chunk too: a view, or one copy, and no parts to join.
          frames.push(
            this.#views ? chunk.subarray(at, at + n) : chunk.slice(at, at + n),
          );
          at += n;
          continue;
        }
        this.#need = n;
        this.#parts = [];
        this.#have = 0;
      }
      const take = Math.min(this.#need - this.#have, chunk.length - at);
      if (take > 0) {
        this.#parts.push(chunk.slice(at, at + take));
        this.#have += take;
        at += take;
      }
      if (this.#have === this.#need) {
        frames.push(join(this.#parts, this.#need));
        this.#need = -1;
        this.#parts = [];
        this.#have = 0;
      }
    }
    return { frames, error: this.#error };
  }
}

/** The big-endian 32-bit length at `bytes[at]`. */
function uint32At(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) |
    bytes[at + 3]) >>> 0;
}

function join(parts: Uint8Array[], n: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
