/**
 * Byte strings: the node handles wire data as strings whose char codes are the bytes
 * (ISO-8859-1), so that any input, binary garbage included, echoes back byte for byte and
 * string comparison is byte comparison. Only the places JSON is real Unicode; it is turned
 * into a byte string (UTF-8) before it meets the wire.
 *
 * @example
 * ```ts
 * const s = bytesToString(new Uint8Array([0x41, 0xff]));
 * stringToBytes(s); // Uint8Array [0x41, 0xff]
 * ```
 * @module
 */

const CHUNK = 8192;

const encoder = new TextEncoder();

const asciiDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Decodes bytes into a byte string (one char per byte, 0..255). */
export function bytesToString(bytes: Uint8Array): string {
  if (bytes.length > 1024) {
    // Large inputs (stored records) are nearly always ASCII, which the native decoder turns
    // into a string twice as fast: valid UTF-8 that decodes to as many chars as it has
    // bytes is pure ASCII, and then UTF-8 and byte strings agree.
    try {
      const text = asciiDecoder.decode(bytes);
      if (text.length === bytes.length) return text;
    } catch { /* not UTF-8: decode byte by byte */ }
  }
  if (bytes.length <= CHUNK) {
    return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }
  let out = "";
  for (let i = 0; i < bytes.length; i += CHUNK) {
    out += String.fromCharCode.apply(
      null,
      bytes.subarray(i, i + CHUNK) as unknown as number[],
    );
  }
  return out;
}

/** Encodes a byte string back into its bytes. Chars above 255 are a caller's bug. */
export function stringToBytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  writeByteString(s, out, 0);
  return out;
}

/**
 * Writes the bytes of byte string `s` into `out` at `offset` (room for `s.length` bytes is
 * the caller's to ensure); returns `s.length`.
 */
export function writeByteString(
  s: string,
  out: Uint8Array,
  offset: number,
): number {
  // Replies and bus frames are nearly always ASCII, where the native encoder gives the
  // same bytes several times faster than the loop below. UTF-8 and byte strings agree
  // exactly when every char was read and each took one byte. `encodeInto` a buffer of the
  // right size, not `encode`: a frame or a reply is a joined string, which `encode`
  // flattens and copies through a buffer of its own (2-4x slower for 200-2,000 records).
  // Up to 128 chars (a one-record frame, one ack) the loop: at idle, where every step runs
  // cold, a relay's encode of its one-record frame took 23 µs through `encodeInto` and 17
  // through the loop (stamped, three alternating runs; docs/benchmarks.md, round eight),
  // and in a hot loop the two cost the same at 100 chars (0.2 µs).
  if (s.length > 128) {
    const { read, written } = encoder.encodeInto(
      s,
      out.subarray(offset, offset + s.length),
    );
    if (read === s.length && written === s.length) return s.length;
  }
  for (let i = 0; i < s.length; i++) out[offset + i] = s.charCodeAt(i);
  return s.length;
}

/** Each run of non-ASCII characters in a text. */
const NON_ASCII_RUNS = /[\u0080-\uffff]+/g;

/**
 * Turns a Unicode string (such as JSON with place names) into a UTF-8 byte string: the bytes
 * `TextEncoder` gives, lone surrogates as U+FFFD included.
 *
 * Only the runs of non-ASCII characters are re-encoded, in place: an offline WHATSAT's
 * answer is about 2.5 KB of ASCII JSON with a few accented names, and encoding it whole
 * (`TextEncoder.encode`, then `String.fromCharCode.apply` over every byte) took 10 to 14 us
 * of CPU against 2.3 to 3.9 us this way, measured over the 200 answers of `bench/whatsat.ts`
 * in one process.
 */
export function utf8ByteString(text: string): string {
  // Pure ASCII comes back as it is, after one scan (a test first would scan twice).
  return text.replace(NON_ASCII_RUNS, utf8Run);
}

/** One run of non-ASCII UTF-16 as a UTF-8 byte string. */
function utf8Run(run: string): string {
  let out = "";
  for (let i = 0; i < run.length; i++) {
    let c = run.charCodeAt(i);
    if (c < 0x800) {
      out += String.fromCharCode(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const low = i + 1 < run.length ? run.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
        i++;
        out += String.fromCharCode(
          0xf0 | (c >> 18),
          0x80 | ((c >> 12) & 0x3f),
          0x80 | ((c >> 6) & 0x3f),
          0x80 | (c & 0x3f),
        );
        continue;
      }
      c = 0xfffd; // a lone surrogate, as TextEncoder replaces it
    }
    out += String.fromCharCode(
      0xe0 | (c >> 12),
      0x80 | ((c >> 6) & 0x3f),
      0x80 | (c & 0x3f),
    );
  }
  return out;
}

// `ignoreBOM: true` keeps a leading U+FEFF in the text instead of silently dropping it, so
// callers that vet the characters (client ids) see every one of them.
const strictDecoder = new TextDecoder("utf-8", {
  fatal: true,
  ignoreBOM: true,
});

/** Reads a byte string as UTF-8, every character kept; null when the bytes are not valid UTF-8. */
export function decodeUtf8(byteString: string): string | null {
  try {
    return strictDecoder.decode(stringToBytes(byteString));
  } catch {
    return null;
  }
}
