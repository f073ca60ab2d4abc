/**
 * Digests of a node's records, for catch-up between neighbors: the records are spread over
 * a fixed number of buckets by a hash of the client id, and each bucket keeps the XOR of a
 * 64-bit hash of each record's AT line. XOR makes updates O(1) (remove the old line, add the
 * new) and the result independent of arrival order, so two nodes holding the same latest
 * records hold the same digests.
 *
 * @example
 * ```ts
 * const d = new Digest();
 * d.replace("kiwi", undefined, "AT A +0.000000000 kiwi +1+1 5");
 * d.root(); // a short string that changes with any record
 * ```
 * @module
 */

/** Number of buckets; a power of two. */
export const BUCKETS = 1024;

/** FNV-1a over a byte string's char codes, 32 bits, with a seed mixed into the basis. */
export function fnv1a(s: string, seed = 0): number {
  return fnv1aRange(s, 0, s.length, seed);
}

/**
 * `fnv1a` of the bytes `bytes[from, to)`: the same hash as `fnv1a` of the byte string that
 * holds them (one char per byte), for lines the store keeps as bytes.
 */
export function fnv1aBytes(
  bytes: Uint8Array,
  from: number,
  to: number,
  seed = 0,
): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = from; i < to; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return avalanche(h);
}

/** `fnv1a` of `s[from, to)`, without slicing it out. */
function fnv1aRange(s: string, from: number, to: number, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = from; i < to; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return avalanche(h);
}

/** Final avalanche so nearby inputs spread over all bits. */
function avalanche(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

/** The seed of client hashes (so they differ from other uses of `fnv1a`). */
const CLIENT_SEED = 0x9e3779b9;

/**
 * The 32-bit hash of a client id found at `text[from, to)`, without slicing it out: equal to
 * `fnv1a(text.slice(from, to), 0x9e3779b9)`. Its low bits are the client's bucket; the store's
 * index keys on all of it, so a load hashes each client once for both.
 */
export function clientHash(text: string, from: number, to: number): number {
  return fnv1aRange(text, from, to, CLIENT_SEED);
}

/** `clientHash` of a client id held as bytes (`bytes[from, to)`, one byte a char). */
export function clientHashIn(
  bytes: Uint8Array,
  from: number,
  to: number,
): number {
  return fnv1aBytes(bytes, from, to, CLIENT_SEED);
}

/** The bucket a client's record lives in. */
export function bucketOf(client: string): number {
  return clientHash(client, 0, client.length) & (BUCKETS - 1);
}

/** Bytes of `Digest.toBytes()`: each bucket's two hash words and its count. */
export const DIGEST_BYTES = BUCKETS * 12;

/** Per-bucket XOR of 64-bit line hashes. */
export class Digest {
  readonly lo: Uint32Array = new Uint32Array(BUCKETS);
  readonly hi: Uint32Array = new Uint32Array(BUCKETS);
  /** Records a bucket holds (a dialer only asks about buckets where it has something). */
  readonly counts: Uint32Array = new Uint32Array(BUCKETS);

  /** Accounts for `client`'s record changing from `before` (if any) to `after`. */
  replace(client: string, before: string | undefined, after: string): void {
    const b = bucketOf(client);
    if (before === undefined) this.counts[b]++;
    else this.toggle(b, before, 0, before.length);
    this.toggle(b, after, 0, after.length);
  }

  /**
   * Adds the line at `text[from, to)` to bucket `b`'s hash, or removes it if it is there
   * (XOR). Counts are the caller's: a replaced record toggles two lines and counts none.
   */
  toggle(b: number, text: string, from: number, to: number): void {
    // Two independent 32-bit hashes of the line in one pass.
    let h1 = 0x811c9dc5;
    let h2 = 0x2b992ddf;
    for (let i = from; i < to; i++) {
      const c = text.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    }
    this.lo[b] ^= finish1(h1);
    this.hi[b] ^= finish2(h2);
  }

  /** `toggle` for a line held as bytes (`bytes[from, to)`, one byte a char). */
  toggleIn(b: number, bytes: Uint8Array, from: number, to: number): void {
    let h1 = 0x811c9dc5;
    let h2 = 0x2b992ddf;
    for (let i = from; i < to; i++) {
      const c = bytes[i];
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    }
    this.lo[b] ^= finish1(h1);
    this.hi[b] ^= finish2(h2);
  }

  /** Adds every bucket of `other` (hashes and counts) to this digest. */
  absorb(other: Digest): void {
    for (let i = 0; i < BUCKETS; i++) {
      this.lo[i] ^= other.lo[i];
      this.hi[i] ^= other.hi[i];
      this.counts[i] += other.counts[i];
    }
  }

  /** The whole digest as `DIGEST_BYTES` bytes (little-endian words), to store beside a snapshot. */
  toBytes(): Uint8Array {
    const out = new Uint8Array(DIGEST_BYTES);
    const view = new DataView(out.buffer);
    for (let i = 0; i < BUCKETS; i++) {
      view.setUint32(i * 4, this.lo[i], true);
      view.setUint32((BUCKETS + i) * 4, this.hi[i], true);
      view.setUint32((2 * BUCKETS + i) * 4, this.counts[i], true);
    }
    return out;
  }

  /** The digest `toBytes()` wrote; null when `bytes` is not one. */
  static fromBytes(bytes: unknown): Digest | null {
    if (!(bytes instanceof Uint8Array) || bytes.length !== DIGEST_BYTES) {
      return null;
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const d = new Digest();
    for (let i = 0; i < BUCKETS; i++) {
      d.lo[i] = view.getUint32(i * 4, true);
      d.hi[i] = view.getUint32((BUCKETS + i) * 4, true);
      d.counts[i] = view.getUint32((2 * BUCKETS + i) * 4, true);
    }
    return d;
  }

  /** A short summary of all buckets: equal roots mean (with high probability) equal records. */
  root(): string {
    let a = 0x12345678;
    let b = 0x9abcdef0;
    for (let i = 0; i < BUCKETS; i++) {
      a = Math.imul(a ^ this.lo[i], 0x01000193) ^ (a >>> 15);
      b = Math.imul(b ^ this.hi[i], 0x5bd1e995) ^ (b >>> 13);
    }
    return ((a >>> 0).toString(16).padStart(8, "0") +
      (b >>> 0).toString(16).padStart(8, "0"));
  }

  /** All bucket digests as base64 (8 bytes a bucket). */
  encode(): string {
    const bytes = new Uint8Array(BUCKETS * 8);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < BUCKETS; i++) {
      view.setUint32(i * 8, this.lo[i]);
      view.setUint32(i * 8 + 4, this.hi[i]);
    }
    let s = "";
    for (let i = 0; i < bytes.length; i += 4096) {
      s += String.fromCharCode(...bytes.subarray(i, i + 4096));
    }
    return btoa(s);
  }

  /** The buckets in which `encoded` (another node's `encode()`) differs; null if malformed. */
  differing(encoded: string): Set<number> | null {
    let raw: string;
    try {
      raw = atob(encoded);
    } catch {
      return null;
    }
    if (raw.length !== BUCKETS * 8) return null;
    const out = new Set<number>();
    for (let i = 0; i < BUCKETS; i++) {
      const lo = word(raw, i * 8);
      const hi = word(raw, i * 8 + 4);
      if (lo !== this.lo[i] || hi !== this.hi[i]) out.add(i);
    }
    return out;
  }
}

/** The final mixing of a line's first hash. */
function finish1(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

/** The final mixing of a line's second hash. */
function finish2(h: number): number {
  h ^= h >>> 15;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function word(raw: string, at: number): number {
  return ((raw.charCodeAt(at) << 24) | (raw.charCodeAt(at + 1) << 16) |
    (raw.charCodeAt(at + 2) << 8) | raw.charCodeAt(at + 3)) >>> 0;
}
