/**
 * Specification of lib/bytes.ts: byte strings (one char per byte) and the UTF-8 boundary.
 */

import assert from "assert";
import fc from "fast-check";
import {
  bytesToString,
  decodeUtf8,
  stringToBytes,
  utf8ByteString,
  writeByteString,
} from "../lib/bytes.ts";

const RUNS = { numRuns: 300 };

Deno.test("bytesToString maps each byte to the char with that code", () => {
  assert.equal(bytesToString(new Uint8Array([])), "");
  assert.equal(bytesToString(new Uint8Array([0x41, 0xff])), "A\xff");
  assert.equal(
    bytesToString(new Uint8Array([0, 10, 13, 127, 128])),
    "\x00\n\r\x7f\x80",
  );
});

Deno.test("bytesToString and stringToBytes round-trip every byte value 0x00-0xFF", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const s = bytesToString(all);
  assert.equal(s.length, 256);
  for (let i = 0; i < 256; i++) assert.equal(s.charCodeAt(i), i);
  assert.deepEqual(stringToBytes(s), all);
});

Deno.test("bytesToString handles inputs longer than one internal chunk", () => {
  for (const n of [8191, 8192, 8193, 16384, 16385, 100_000]) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff);
    const s = bytesToString(bytes);
    assert.equal(s.length, n);
    assert.equal(s.charCodeAt(n - 1), bytes[n - 1]);
    assert.deepEqual(stringToBytes(s), bytes);
  }
});

Deno.test("bytesToString reads only a subarray's own bytes", () => {
  const buf = new Uint8Array([1, 2, 3, 4, 5]);
  assert.equal(bytesToString(buf.subarray(1, 3)), "\x02\x03");
});

Deno.test("bytes -> string -> bytes is the identity (property)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 20_000 }), (bytes) => {
      assert.deepEqual(stringToBytes(bytesToString(bytes)), bytes);
    }),
    { numRuns: 100 },
  );
});

Deno.test("string -> bytes -> string is the identity for byte strings (property)", () => {
  const byteString = fc
    .array(fc.integer({ min: 0, max: 255 }), { maxLength: 300 })
    .map((codes) => String.fromCharCode(...codes));
  fc.assert(
    fc.property(byteString, (s) => {
      assert.equal(bytesToString(stringToBytes(s)), s);
    }),
    RUNS,
  );
});

Deno.test("byte string comparison is byte comparison (property)", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 20 }),
      fc.uint8Array({ maxLength: 20 }),
      (a, b) => {
        const sa = bytesToString(a);
        const sb = bytesToString(b);
        let expected = 0;
        for (
          let i = 0;
          i < Math.min(a.length, b.length) && expected === 0;
          i++
        ) {
          expected = Math.sign(a[i] - b[i]);
        }
        if (expected === 0) expected = Math.sign(a.length - b.length);
        assert.equal(sa < sb ? -1 : sa > sb ? 1 : 0, expected);
      },
    ),
    RUNS,
  );
});

Deno.test("utf8ByteString leaves ASCII unchanged", () => {
  assert.equal(utf8ByteString(""), "");
  assert.equal(utf8ByteString('{"status": "OK"}\n'), '{"status": "OK"}\n');
  const ascii = String.fromCharCode(
    ...Array.from({ length: 128 }, (_, i) => i),
  );
  assert.equal(utf8ByteString(ascii), ascii);
});

Deno.test("utf8ByteString encodes non-ASCII as UTF-8 bytes, one char per byte", () => {
  assert.equal(utf8ByteString("café"), "caf\xc3\xa9");
  assert.equal(utf8ByteString("\xa0"), "\xc2\xa0");
  assert.equal(utf8ByteString("€"), "\xe2\x82\xac");
  assert.equal(utf8ByteString("😀"), "\xf0\x9f\x98\x80");
  assert.equal(
    utf8ByteString("Zürich 東京"),
    "Z\xc3\xbcrich \xe6\x9d\xb1\xe4\xba\xac",
  );
});

Deno.test("utf8ByteString output is a byte string equal to TextEncoder's bytes (property)", () => {
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 40 }), (text) => {
      const out = utf8ByteString(text);
      assert.ok([...out].every((c) => c.charCodeAt(0) <= 0xff));
      assert.deepEqual(stringToBytes(out), new TextEncoder().encode(text));
    }),
    RUNS,
  );
});

Deno.test("utf8ByteString gives TextEncoder's bytes for any UTF-16, lone surrogates and long ASCII stretches included (property)", () => {
  // Mostly ASCII with a few runs of anything (lone surrogates become U+FFFD, as TextEncoder
  // makes them), the shape of a places answer with a few accented names.
  const unit = fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: 0, max: 0x7f }) },
    { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xffff }) },
    { weight: 1, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }) },
  ).map((code) => String.fromCharCode(code));
  const text = fc.oneof(
    fc.string({ unit, maxLength: 60 }),
    fc.string({ unit: "binary", maxLength: 30 }),
    fc.tuple(
      fc.string({ unit: "grapheme-ascii", minLength: 500, maxLength: 3_000 }),
      fc.string({ unit, maxLength: 10 }),
    ).map(([ascii, rest]) => ascii + rest + ascii),
  );
  fc.assert(
    fc.property(text, (text) => {
      assert.equal(
        utf8ByteString(text),
        bytesToString(new TextEncoder().encode(text)),
      );
    }),
    { numRuns: 1_000 },
  );
  assert.equal(utf8ByteString("a\ud800b\udc00"), "a\xef\xbf\xbdb\xef\xbf\xbd");
  assert.equal(
    utf8ByteString("\udbff\udfff\u07ff"),
    "\xf4\x8f\xbf\xbf\xdf\xbf",
  );
});

Deno.test("decodeUtf8 inverts utf8ByteString for any well-formed text (property)", () => {
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 40 }), (text) => {
      assert.equal(decodeUtf8(utf8ByteString(text)), text);
    }),
    RUNS,
  );
});

Deno.test("decodeUtf8 reads valid UTF-8 byte strings", () => {
  assert.equal(decodeUtf8(""), "");
  assert.equal(decodeUtf8("kiwi"), "kiwi");
  assert.equal(decodeUtf8("caf\xc3\xa9"), "café");
  assert.equal(decodeUtf8("\xf0\x9f\x98\x80"), "😀");
});

Deno.test("decodeUtf8 keeps a leading byte order mark as U+FEFF", () => {
  assert.equal(decodeUtf8("\xef\xbb\xbf"), "\ufeff");
  assert.equal(decodeUtf8("\xef\xbb\xbfkiwi"), "\ufeffkiwi");
  assert.equal(decodeUtf8("kiwi\xef\xbb\xbf"), "kiwi\ufeff");
});

Deno.test("decodeUtf8 returns null for invalid UTF-8", () => {
  for (
    const bad of [
      "\xff",
      "\xfe",
      "\x80", // lone continuation byte
      "caf\xe9", // Latin-1 é
      "\xc3", // truncated 2-byte sequence
      "\xe2\x82", // truncated 3-byte sequence
      "\xf0\x9f\x98", // truncated 4-byte sequence
      "\xc0\xaf", // overlong /
      "\xe0\x80\xaf", // overlong /
      "\xed\xa0\x80", // UTF-16 surrogate D800
      "\xf4\x90\x80\x80", // above U+10FFFF
      "\xf8\x88\x80\x80\x80", // 5-byte form
      "ok\xc3(",
    ]
  ) {
    assert.equal(decodeUtf8(bad), null, JSON.stringify(bad));
  }
});

Deno.test("decodeUtf8 is not confused by an earlier failure", () => {
  assert.equal(decodeUtf8("\xe2\x82"), null);
  assert.equal(decodeUtf8("\xac"), null);
  assert.equal(decodeUtf8("abc"), "abc");
});

Deno.test("stringToBytes and writeByteString: an ASCII string with one byte over 0x7f anywhere gives that byte, not its UTF-8, short or long", () => {
  const ascii =
    "AT Alford +0.000000001 kiwi +34.068930-118.445127 1621464827.9\n"
      .repeat(40);
  for (const at of [0, 63, 64, 65, 1000, ascii.length - 1]) {
    for (const code of [0x80, 0xc3, 0xff]) {
      const s = ascii.slice(0, at) + String.fromCharCode(code) +
        ascii.slice(at + 1);
      const bytes = stringToBytes(s);
      assert.equal(bytes.length, s.length);
      assert.equal(bytes[at], code);
      assert.equal(bytesToString(bytes), s);
    }
  }
  // Either side of the length where the native encoder takes over, with and without a high byte.
  for (const n of [1, 127, 128, 129, 200]) {
    for (const last of [0x41, 0xe9]) {
      const s = ascii.slice(0, n - 1) + String.fromCharCode(last);
      const out = new Uint8Array(n + 2);
      assert.equal(writeByteString(s, out, 1), n);
      assert.equal(out[n], last);
      assert.equal(out[0], 0, "nothing written before the offset");
      assert.equal(out[n + 1], 0, "nothing written past the string");
      assert.equal(bytesToString(out.subarray(1, n + 1)), s);
    }
  }
  // Pure ASCII, joined as frames are: the same bytes as UTF-8.
  const joined = ["RECORDS", ...Array(300).fill("AT A +0.5 c +1+1 5")].join(
    "\n",
  );
  assert.deepEqual(stringToBytes(joined), new TextEncoder().encode(joined));
});
