/**
 * Specification of lib/lines.ts: bounded line framing over a byte stream, EOF included.
 */

import assert from "assert";
import fc from "fast-check";
import { type Framed, LineFramer } from "../lib/lines.ts";

const RUNS = { numRuns: 300 };
const KIB16 = 16 * 1024;

/** Bytes of a byte string (char codes 0..255). */
function b(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** What a whole stream yields: lines, then either an overflow or the final line at EOF. */
interface Outcome {
  lines: string[];
  overflow: string | null;
  final: string | null;
}

/** Feeds chunks in order, stopping at an overflow as the server does, then calls end(). */
function run(
  limit: number,
  chunks: Uint8Array[],
  check?: (f: LineFramer) => void,
): Outcome {
  const framer = new LineFramer(limit);
  const lines: string[] = [];
  for (const chunk of chunks) {
    const out: Framed = framer.push(chunk);
    lines.push(...out.lines);
    check?.(framer);
    if (out.overflow !== null) {
      return { lines, overflow: out.overflow, final: null };
    }
  }
  return { lines, overflow: null, final: framer.end() };
}

/** Splits bytes at the given cut points (any order, duplicates allowed). */
function chunked(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((
    x,
    y,
  ) => x - y);
  const out: Uint8Array[] = [];
  let at = 0;
  for (const p of [...points, bytes.length]) {
    if (p > at) out.push(bytes.slice(at, p));
    at = Math.max(at, p);
  }
  return out;
}

/** The reference model of PROTOCOL.md's framing with a limit, on the whole input at once. */
function model(limit: number, input: string): Outcome {
  const pieces = input.split("\n");
  const rest = pieces.pop()!;
  const lines: string[] = [];
  for (const raw of pieces) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.length > limit) {
      return { lines, overflow: raw.slice(0, limit), final: null };
    }
    lines.push(line);
  }
  const last = rest.endsWith("\r") ? rest.slice(0, -1) : rest;
  if (last.length > limit) {
    return { lines, overflow: rest.slice(0, limit), final: null };
  }
  return { lines, overflow: null, final: rest === "" ? null : last };
}

// ---- ordinary framing ------------------------------------------------------------------

Deno.test("LineFramer yields many lines from one chunk", () => {
  const f = new LineFramer(KIB16);
  assert.deepEqual(f.push(b("IAMAT a +1+1 1\nWHATSAT a 10 5\nHELLO\n")), {
    lines: ["IAMAT a +1+1 1", "WHATSAT a 10 5", "HELLO"],
    overflow: null,
  });
  assert.equal(f.buffered, 0);
  assert.equal(f.end(), null);
});

Deno.test("LineFramer holds an unfinished line until its newline arrives", () => {
  const f = new LineFramer(KIB16);
  assert.deepEqual(f.push(b("IAMAT a +1+1 1\nWHAT")), {
    lines: ["IAMAT a +1+1 1"],
    overflow: null,
  });
  assert.equal(f.buffered, 4);
  assert.deepEqual(f.push(b("SAT a 10 5\n")), {
    lines: ["WHATSAT a 10 5"],
    overflow: null,
  });
  assert.equal(f.buffered, 0);
});

Deno.test("LineFramer joins a line split into one-byte chunks", () => {
  const text =
    "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997\n";
  const f = new LineFramer(KIB16);
  const lines: string[] = [];
  for (const byte of b(text)) {
    const out = f.push(new Uint8Array([byte]));
    assert.equal(out.overflow, null);
    lines.push(...out.lines);
  }
  assert.deepEqual(lines, [text.slice(0, -1)]);
  assert.equal(f.end(), null);
});

Deno.test("LineFramer yields empty lines as empty strings", () => {
  const f = new LineFramer(16);
  assert.deepEqual(f.push(b("\n\n\r\na\n\n")).lines, ["", "", "", "a", ""]);
});

Deno.test("LineFramer drops the CR of a CRLF ending, and only one CR", () => {
  const f = new LineFramer(16);
  assert.deepEqual(f.push(b("a\r\nb\r\r\nc\rd\n\r\n")).lines, [
    "a",
    "b\r",
    "c\rd",
    "",
  ]);
});

Deno.test("LineFramer drops a CRLF split between chunks", () => {
  const f = new LineFramer(16);
  assert.deepEqual(f.push(b("abc\r")).lines, []);
  assert.deepEqual(f.push(b("\n")).lines, ["abc"]);
  assert.deepEqual(f.push(b("\r")).lines, []);
  assert.deepEqual(f.push(b("\n")).lines, [""]);
});

Deno.test("LineFramer.end() yields the final line that has no newline", () => {
  const f = new LineFramer(KIB16);
  assert.deepEqual(f.push(b("IAMAT a +1+1 1\nWHATSAT a 10 5")).lines, [
    "IAMAT a +1+1 1",
  ]);
  assert.equal(f.end(), "WHATSAT a 10 5");
  assert.equal(f.buffered, 0);
  assert.equal(f.end(), null);
});

Deno.test("LineFramer.end() yields the final line gathered from several chunks", () => {
  const f = new LineFramer(KIB16);
  f.push(b("WHAT"));
  f.push(b("SAT "));
  f.push(b("a 10 5"));
  assert.equal(f.end(), "WHATSAT a 10 5");
});

Deno.test("LineFramer.end() yields nothing when the input ends with a newline or is empty", () => {
  const f = new LineFramer(KIB16);
  f.push(b("HELLO\n"));
  assert.equal(f.end(), null);
  assert.equal(new LineFramer(KIB16).end(), null);
  const g = new LineFramer(KIB16);
  assert.deepEqual(g.push(new Uint8Array(0)), { lines: [], overflow: null });
  assert.equal(g.end(), null);
});

Deno.test("LineFramer.end() drops a trailing CR of the final line", () => {
  const f = new LineFramer(KIB16);
  f.push(b("HELLO\r"));
  assert.equal(f.end(), "HELLO");
  const g = new LineFramer(KIB16);
  g.push(b("\r"));
  assert.equal(g.end(), "");
});

Deno.test("LineFramer passes every byte 0x00-0xFF through as char codes", () => {
  const all = Array.from({ length: 256 }, (_, i) => i).filter((c) => c !== 10);
  const line = String.fromCharCode(...all);
  const f = new LineFramer(KIB16);
  const out = f.push(b(`${line}\n${line}`));
  assert.deepEqual(out.lines, [line]);
  assert.equal(f.end(), line);
});

Deno.test("LineFramer copies what it holds: the caller may reuse its chunk", () => {
  const f = new LineFramer(KIB16);
  const buf = b("abc");
  f.push(buf);
  buf.set(b("xyz"));
  assert.deepEqual(f.push(b("\n")).lines, ["abc"]);
});

Deno.test("LineFramer: any chunking of a byte sequence yields the same lines (property)", () => {
  const byte = fc.oneof(
    fc.constantFrom(10, 13, 32, 0, 255),
    fc.integer({ min: 0, max: 255 }),
  );
  fc.assert(
    fc.property(
      fc.array(byte, { maxLength: 200 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      (codes, cuts) => {
        const bytes = Uint8Array.from(codes);
        const whole = run(KIB16, [bytes]);
        const pieces = run(KIB16, chunked(bytes, cuts));
        const ones = run(KIB16, [...bytes].map((x) => new Uint8Array([x])));
        assert.deepEqual(pieces, whole);
        assert.deepEqual(ones, whole);
        assert.deepEqual(whole, model(KIB16, String.fromCharCode(...codes)));
      },
    ),
    RUNS,
  );
});

// ---- the limit -------------------------------------------------------------------------

Deno.test("LineFramer accepts a line of exactly the limit", () => {
  const line = "x".repeat(KIB16);
  assert.deepEqual(run(KIB16, [b(`${line}\n`)]), {
    lines: [line],
    overflow: null,
    final: null,
  });
  assert.deepEqual(run(KIB16, [b(line)]), {
    lines: [],
    overflow: null,
    final: line,
  });
});

Deno.test("LineFramer accepts a line of exactly the limit followed by CRLF", () => {
  const line = "x".repeat(KIB16);
  const expected = { lines: [line], overflow: null, final: null };
  assert.deepEqual(run(KIB16, [b(`${line}\r\n`)]), expected);
  assert.deepEqual(run(KIB16, [b(line), b("\r\n")]), expected);
  assert.deepEqual(run(KIB16, [b(line), b("\r"), b("\n")]), expected);
  assert.deepEqual(run(KIB16, [b(`${line}\r`), b("\n")]), expected);
  assert.deepEqual(run(KIB16, [b(line.slice(1)), b("x\r"), b("\nnext\n")]), {
    lines: [line, "next"],
    overflow: null,
    final: null,
  });
});

Deno.test("LineFramer accepts a final line of exactly the limit followed by CR at EOF", () => {
  const line = "x".repeat(8);
  assert.deepEqual(run(8, [b(`${line}\r`)]), {
    lines: [],
    overflow: null,
    final: line,
  });
  assert.deepEqual(run(8, [b(line), b("\r")]), {
    lines: [],
    overflow: null,
    final: line,
  });
});

Deno.test("LineFramer reports a line one byte over the limit as overflow, cut to the limit", () => {
  const line = "y".repeat(KIB16 + 1);
  assert.deepEqual(run(KIB16, [b(`${line}\n`)]), {
    lines: [],
    overflow: line.slice(0, KIB16),
    final: null,
  });
  assert.deepEqual(run(KIB16, [b(line)]), {
    lines: [],
    overflow: line.slice(0, KIB16),
    final: null,
  });
});

Deno.test("LineFramer reports the limit plus CR plus more as overflow", () => {
  const line = "z".repeat(8);
  for (
    const chunks of [
      [`${line}\rq\n`],
      [`${line}\r`, "q\n"],
      [`${line}\r`, "\r\n"],
      [`${line}\r\r\n`],
      [`${line}\r`, "q"],
    ]
  ) {
    assert.deepEqual(
      run(8, chunks.map(b)),
      { lines: [], overflow: line, final: null },
      JSON.stringify(chunks),
    );
  }
});

Deno.test("LineFramer returns the lines before an overflowing one in the same chunk", () => {
  const long = "L".repeat(20);
  const out = new LineFramer(10).push(b(`ok\n\nalso ok\n${long}\nlost\n`));
  assert.deepEqual(out, {
    lines: ["ok", "", "also ok"],
    overflow: "L".repeat(10),
  });
});

Deno.test("LineFramer reports an overflowing line that arrives in one chunk with its newline", () => {
  const long = `IAMAT ${"k".repeat(100_000)} +1+1 1`;
  const f = new LineFramer(KIB16);
  const out = f.push(b(`${long}\n`));
  assert.deepEqual(out.lines, []);
  assert.equal(out.overflow, long.slice(0, KIB16));
  assert.equal(f.buffered, 0);
});

Deno.test("LineFramer reports a line without newline as soon as it passes the limit, holding at most the limit", () => {
  const f = new LineFramer(KIB16);
  const piece = b("p".repeat(1000));
  let pushed = 0;
  let overflow: string | null = null;
  while (overflow === null) {
    assert.ok(pushed <= KIB16, "kept buffering past the limit");
    overflow = f.push(piece).overflow;
    pushed += piece.length;
    assert.ok(f.buffered <= KIB16);
  }
  assert.equal(pushed, 17_000); // the first push that passes 16384 bytes
  assert.equal(overflow, "p".repeat(KIB16));
  assert.equal(f.buffered, 0);
});

Deno.test("LineFramer reports a line sent one byte at a time at byte limit + 1", () => {
  const f = new LineFramer(64);
  for (let i = 1; i <= 64; i++) {
    assert.equal(f.push(b(String.fromCharCode(48 + (i % 10)))).overflow, null);
    assert.equal(f.buffered, i);
  }
  const out = f.push(b("!"));
  assert.equal(out.overflow?.length, 64);
  assert.equal(
    out.overflow,
    Array.from({ length: 64 }, (_, i) => String((i + 1) % 10)).join(""),
  );
});

Deno.test("LineFramer cuts an overflow held across many chunks to exactly its first limit bytes", () => {
  const text = Array.from(
    { length: 50 },
    (_, i) => String.fromCharCode(65 + (i % 26)),
  ).join("");
  const chunks = text.match(/.{1,7}/g)!.map(b);
  const out = run(30, chunks);
  assert.deepEqual(out, {
    lines: [],
    overflow: text.slice(0, 30),
    final: null,
  });
});

Deno.test("LineFramer overflow matches the reference model for any input and chunking (property)", () => {
  const byte = fc.constantFrom(10, 13, 97, 98, 0, 255);
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.array(byte, { maxLength: 60 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (limit, codes, cuts) => {
        const bytes = Uint8Array.from(codes);
        const expected = model(limit, String.fromCharCode(...codes));
        const check = (f: LineFramer) => assert.ok(f.buffered <= limit + 1);
        assert.deepEqual(run(limit, [bytes], check), expected);
        assert.deepEqual(run(limit, chunked(bytes, cuts), check), expected);
        assert.deepEqual(
          run(limit, [...bytes].map((x) => new Uint8Array([x])), check),
          expected,
        );
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("LineFramer holds more than the limit only for a CR that may start the line ending (property)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.array(fc.constantFrom(13, 97, 10), { maxLength: 40 }),
      (limit, codes) => {
        const f = new LineFramer(limit);
        const held: number[] = [];
        for (const c of codes) {
          if (f.push(new Uint8Array([c])).overflow !== null) return;
          if (c === 10) held.length = 0;
          else held.push(c);
          assert.equal(f.buffered, held.length);
          assert.ok(
            held.length <= limit || (held.length === limit + 1 && c === 13),
          );
        }
      },
    ),
    RUNS,
  );
});

Deno.test("LineFramer holds no buffer between lines: an idle connection costs no line buffer", () => {
  const framer = new LineFramer(KIB16);
  assert.equal(framer.capacity, 0);
  framer.push(b("IAMAT a +1+1 1\nWHAT"));
  assert.ok(framer.capacity > 0);
  assert.deepEqual(framer.push(b("SAT a 1 1\n")).lines, ["WHATSAT a 1 1"]);
  assert.equal(framer.capacity, 0);
  assert.equal(framer.buffered, 0);
});

Deno.test("LineFramer grows the held line by doubling: a line dribbled one byte a read holds at most twice its size", () => {
  const framer = new LineFramer(KIB16);
  const line = "x".repeat(5000);
  for (const c of line) {
    framer.push(b(c));
    assert.ok(
      framer.capacity <= Math.max(64, 2 * framer.buffered),
      `capacity ${framer.capacity} for ${framer.buffered} bytes`,
    );
  }
  assert.deepEqual(framer.push(b("\n")).lines, [line]);
  assert.equal(framer.capacity, 0);
});

Deno.test("LineFramer never allocates past the limit plus one byte for a line", () => {
  const framer = new LineFramer(1000);
  for (let i = 0; i < 999; i++) framer.push(b("z"));
  framer.push(b("\r"));
  assert.ok(framer.capacity <= 1001, `capacity ${framer.capacity}`);
  assert.deepEqual(framer.push(b("\n")).lines, ["z".repeat(999)]);
});
