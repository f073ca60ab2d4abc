/**
 * Specification of lib/record.ts: AT lines, their fields, client ids, and the total order
 * every node uses to pick the same winner.
 */

import assert from "assert";
import fc from "fast-check";
import {
  clientOf,
  compareRecords,
  compareRecordsIn,
  formatAt,
  isClientId,
  MAX_CLIENT_ID_BYTES,
  parseAtLine,
  timeOf,
} from "../lib/record.ts";
import { parseClientTime } from "../lib/clock.ts";
import { stringToBytes, utf8ByteString } from "../lib/bytes.ts";

const RUNS = { numRuns: 300 };

const EXAMPLE =
  "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";

// ---- arbitraries -----------------------------------------------------------------------

const nodeName = fc.constantFrom(
  "Alford",
  "Ball",
  "Hamilton",
  "Holiday",
  "Welsh",
);
const skewText = fc
  .tuple(
    fc.constantFrom("+", "-"),
    fc.nat({ max: 100 }),
    fc.nat({ max: 999_999_999 }),
  )
  .map(([s, i, f]) => `${s}${i}.${String(f).padStart(9, "0")}`);
const clientId = fc.stringMatching(/^[!-~]{1,12}$/);
const locationText = fc.constantFrom(
  "+34.068930-118.445127",
  "+34-118",
  "-90+180",
  "+0+0",
  "-0.5+0.5",
);
/** Times from a small pool of values, written in several ways, so ties are common. */
const timeText = fc
  .tuple(
    fc.constantFrom("", "0", "00"),
    fc.integer({ min: 9, max: 11 }),
    fc.constantFrom("", ".5", ".50", ".500000000", ".05", ".000000001"),
  )
  .map(([z, i, f]) => `${z}${i}${f}`);
const atLine = fc
  .tuple(nodeName, skewText, clientId, locationText, timeText)
  .map(([n, s, c, l, t]) => formatAt(n, s, c, l, t));

// ---- formatAt, timeOf, clientOf --------------------------------------------------------

Deno.test("formatAt joins the six fields with single spaces", () => {
  assert.equal(
    formatAt(
      "Alford",
      "+0.263873386",
      "kiwi.cs.ucla.edu",
      "+34.068930-118.445127",
      "1520023934.918963997",
    ),
    EXAMPLE,
  );
});

Deno.test("timeOf returns the last field, as written", () => {
  assert.equal(timeOf(EXAMPLE), "1520023934.918963997");
  assert.equal(timeOf("AT Ball +0.000000000 a +1+1 0010.50"), "0010.50");
});

Deno.test("clientOf returns the fourth field", () => {
  assert.equal(clientOf(EXAMPLE), "kiwi.cs.ucla.edu");
  assert.equal(clientOf("AT Ball -1.000000000 x +1+1 1"), "x");
  assert.equal(
    clientOf("AT Ball -1.000000000 caf\xc3\xa9 +1+1 1"),
    "caf\xc3\xa9",
  );
});

Deno.test("timeOf and clientOf read back what formatAt wrote (property)", () => {
  fc.assert(
    fc.property(
      nodeName,
      skewText,
      clientId,
      locationText,
      timeText,
      (n, s, c, l, t) => {
        const line = formatAt(n, s, c, l, t);
        assert.equal(clientOf(line), c);
        assert.equal(timeOf(line), t);
      },
    ),
    RUNS,
  );
});

// ---- compareRecords --------------------------------------------------------------------

Deno.test("compareRecords orders by client time first", () => {
  const older = "AT Welsh +9.000000000 kiwi +34-118 10";
  const newer = "AT Alford +0.000000000 kiwi +34-118 11";
  assert.ok(compareRecords(older, newer) < 0);
  assert.ok(compareRecords(newer, older) > 0);
  assert.ok(
    compareRecords(
      "AT A +0.000000000 k +1+1 9.999999999",
      "AT A +0.000000000 k +1+1 10",
    ) < 0,
  );
  assert.ok(
    compareRecords(
      "AT Z +0.000000000 k +1+1 9",
      "AT A +0.000000000 k +1+1 10",
    ) < 0,
  );
});

Deno.test("compareRecords breaks equal times by the line's bytes", () => {
  const a = "AT Alford +0.100000000 kiwi +34-118 10.5";
  const b = "AT Ball +0.100000000 kiwi +34-118 10.5";
  assert.ok(compareRecords(a, b) < 0);
  assert.ok(compareRecords(b, a) > 0);
  const c = "AT Alford +0.100000000 kiwi +34-118 10.5";
  const d = "AT Alford +0.200000000 kiwi +34-118 10.5";
  assert.ok(compareRecords(c, d) < 0);
});

Deno.test("compareRecords: 10.5 and 10.50 are equal times, so bytes decide", () => {
  const a = "AT Alford +0.1 kiwi +34-118 10.5";
  const b = "AT Ball +0.2 kiwi +34-118 10.50";
  assert.ok(compareRecords(a, b) < 0);
  assert.ok(compareRecords(b, a) > 0);
  // Same prefix: the shorter line is a prefix of the longer one, so it is smaller.
  const c = "AT Ball +0.000000000 kiwi +34-118 10.5";
  const d = "AT Ball +0.000000000 kiwi +34-118 10.50";
  assert.ok(compareRecords(c, d) < 0);
  assert.ok(compareRecords(d, c) > 0);
});

Deno.test("compareRecords: leading zeros of the time do not make it greater", () => {
  const a = "AT Ball +0.000000000 kiwi +34-118 0011";
  const b = "AT Ball +0.000000000 kiwi +34-118 9";
  assert.ok(compareRecords(a, b) > 0);
  assert.ok(compareRecords("AT Ball +0.000000000 kiwi +34-118 010", b) > 0);
});

Deno.test("compareRecords compares bytes, not UTF-16 or locale order", () => {
  const ascii = "AT Ball +0.000000000 kiwi +34-118 1";
  const high = "AT Ball +0.000000000 kiw\xc3\xa9 +34-118 1";
  assert.ok(compareRecords(ascii, high) < 0); // "i" 0x69 < 0xc3
  assert.ok(
    compareRecords(
      "AT Ball +0.000000000 Z +1+1 1",
      "AT Ball +0.000000000 a +1+1 1",
    ) < 0,
  );
});

/**
 * `compareRecordsIn` of two lines as a load meets them: `a` between two other lines of its
 * value, `b` first in one value (followed by another line) and last in another (no `\n`
 * after it); both placements must give the same answer.
 */
function compareIn(a: string, b: string): number {
  const va = stringToBytes(
    `AT X +0.000000000 before +1+1 99\n${a}\nAT X +0 after +1+1 1`,
  );
  const af = va.indexOf(10) + 1;
  const first = stringToBytes(`${b}\nAT X +0.000000000 after +1+1 0`);
  const last = stringToBytes(`AT X +0.000000000 before +1+1 0\n${b}`);
  const lf = last.indexOf(10) + 1;
  const x = Math.sign(
    compareRecordsIn(va, af, af + a.length, first, 0, b.length),
  );
  const y = Math.sign(
    compareRecordsIn(va, af, af + a.length, last, lf, last.length),
  );
  assert.equal(x, y, `${b} first or last in its value`);
  return x;
}

Deno.test("compareRecordsIn orders lines held as bytes exactly as compareRecords orders their strings", () => {
  const pairs: [string, string][] = [
    [
      "AT Welsh +9.000000000 kiwi +34-118 10",
      "AT Alford +0.000000000 kiwi +34-118 11",
    ],
    ["AT A +0.000000000 k +1+1 9.999999999", "AT A +0.000000000 k +1+1 10"],
    ["AT Alford +0.1 kiwi +34-118 10.5", "AT Ball +0.2 kiwi +34-118 10.50"],
    [
      "AT Ball +0.000000000 kiwi +34-118 10.5",
      "AT Ball +0.000000000 kiwi +34-118 10.50",
    ],
    [
      "AT Ball +0.000000000 kiwi +34-118 0011",
      "AT Ball +0.000000000 kiwi +34-118 9",
    ],
    [
      "AT Ball +0.000000000 kiwi +34-118 1",
      "AT Ball +0.000000000 kiw\xc3\xa9 +34-118 1",
    ],
    [
      "AT Ball +0.000000000 k +1+1 0",
      "AT Ball +0.000000000 k +1+1 000.000000000",
    ],
    ["AT Ball +0.000000000 k +1+1 1.1", "AT Ball +0.000000000 k +1+1 1.09"],
    ["AT A +0.000000000 k +1+1 1.0000000000", "AT B +0.000000000 k +1+1 1"],
    [
      "AT A +0.000000000 k +1+1 1520023934.918963997",
      "AT A +0.000000000 k +1+1 999999999.9",
    ],
    ["AT B +0.000000000 k +1+1 000", "AT A +0.000000000 k +1+1 0.000000000"],
    ["AT B +0.000000000 k +1+1 1.", "AT A +0.000000000 k +1+1 1"],
  ];
  for (const [a, b] of pairs) {
    assert.equal(
      compareIn(a, b),
      Math.sign(compareRecords(a, b)),
      `${a} / ${b}`,
    );
    assert.equal(
      compareIn(b, a),
      Math.sign(compareRecords(b, a)),
      `${b} / ${a}`,
    );
    assert.equal(compareIn(a, a), 0);
  }
  fc.assert(
    fc.property(atLine, atLine, (a, b) => {
      assert.equal(compareIn(a, b), Math.sign(compareRecords(a, b)));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("compareRecords is zero only for identical lines", () => {
  assert.equal(compareRecords(EXAMPLE, EXAMPLE), 0);
  const rebuilt = formatAt(
    "Alford",
    "+0.263873386",
    "kiwi.cs.ucla.edu",
    "+34.068930-118.445127",
    "1520023934.918963997",
  );
  assert.equal(compareRecords(EXAMPLE, rebuilt), 0);
  assert.notEqual(
    compareRecords(EXAMPLE, EXAMPLE.replace("Alford", "Ball")),
    0,
  );
});

Deno.test("compareRecords is a total order: reflexive, antisymmetric, zero iff equal (property)", () => {
  fc.assert(
    fc.property(atLine, atLine, (a, b) => {
      assert.equal(compareRecords(a, a), 0);
      // A sum, not a negation: -Math.sign(0) is -0, which strict equality tells from 0.
      assert.equal(
        Math.sign(compareRecords(a, b)) + Math.sign(compareRecords(b, a)),
        0,
      );
      assert.equal(compareRecords(a, b) === 0, a === b);
    }),
    RUNS,
  );
});

Deno.test("compareRecords is transitive (property)", () => {
  fc.assert(
    fc.property(atLine, atLine, atLine, (a, b, c) => {
      if (compareRecords(a, b) <= 0 && compareRecords(b, c) <= 0) {
        assert.ok(compareRecords(a, c) <= 0);
      }
      if (compareRecords(a, b) < 0 && compareRecords(b, c) < 0) {
        assert.ok(compareRecords(a, c) < 0);
      }
    }),
    RUNS,
  );
});

Deno.test("compareRecords is by time first, then bytes (property)", () => {
  fc.assert(
    fc.property(atLine, atLine, (a, b) => {
      const ta = parseClientTime(timeOf(a))!;
      const tb = parseClientTime(timeOf(b))!;
      const expected = ta !== tb
        ? (ta < tb ? -1 : 1)
        : a === b
        ? 0
        : a < b
        ? -1
        : 1;
      assert.equal(Math.sign(compareRecords(a, b)), expected);
    }),
    RUNS,
  );
});

Deno.test("sorting with compareRecords gives the same winner whatever the arrival order (property)", () => {
  fc.assert(
    fc.property(
      fc.array(atLine, { minLength: 1, maxLength: 12 }),
      fc.nat(),
      (lines, seed) => {
        const shuffled = [...lines];
        let s = seed;
        for (let i = shuffled.length - 1; i > 0; i--) {
          s = (s * 1103515245 + 12345) % 2147483648;
          const j = s % (i + 1);
          [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
        }
        const winner = (xs: string[]) =>
          xs.reduce((w, x) => (compareRecords(x, w) > 0 ? x : w));
        assert.equal(winner(shuffled), winner(lines));
        assert.deepEqual(
          [...shuffled].sort(compareRecords),
          [...lines].sort(compareRecords),
        );
      },
    ),
    RUNS,
  );
});

// ---- isClientId ------------------------------------------------------------------------

Deno.test("isClientId accepts printable ASCII without blanks", () => {
  for (
    const id of [
      "kiwi.cs.ucla.edu",
      "a",
      "!",
      "~",
      "A-b_c.d/e:f@g",
      "\"'`{}[]()<>#$%^&*",
    ]
  ) {
    assert.ok(isClientId(id), id);
  }
  const everyPrintable = String.fromCharCode(
    ...Array.from({ length: 94 }, (_, i) => 0x21 + i),
  );
  assert.ok(isClientId(everyPrintable));
});

Deno.test("isClientId accepts 256 bytes and rejects 257", () => {
  assert.equal(MAX_CLIENT_ID_BYTES, 256);
  assert.ok(isClientId("x".repeat(256)));
  assert.ok(!isClientId("x".repeat(257)));
  assert.ok(!isClientId("x".repeat(10_000)));
});

Deno.test("isClientId counts bytes, not characters, for UTF-8 ids", () => {
  const e = "\xc3\xa9"; // é: two bytes
  assert.ok(isClientId(e.repeat(128))); // 256 bytes
  assert.ok(!isClientId(e.repeat(128) + "x")); // 257 bytes
  assert.ok(!isClientId("x" + e.repeat(128)));
});

Deno.test("isClientId rejects the empty string", () => {
  assert.ok(!isClientId(""));
});

Deno.test("isClientId rejects white space, controls and DEL", () => {
  for (let c = 0; c <= 0x20; c++) {
    const ch = String.fromCharCode(c);
    assert.ok(!isClientId(ch), `0x${c.toString(16)}`);
    assert.ok(!isClientId(`ki${ch}wi`), `0x${c.toString(16)} inside`);
  }
  assert.ok(!isClientId("\x7f"));
  assert.ok(!isClientId("kiwi\x7f"));
  assert.ok(!isClientId("ki wi"));
  assert.ok(!isClientId("ki\twi"));
  assert.ok(!isClientId("kiwi\x00"));
});

Deno.test("isClientId accepts valid UTF-8 of printable characters, as a byte string", () => {
  for (
    const text of ["café", "Zürich", "東京", "😀", "naïve-ü.example", "ÅÄÖ"]
  ) {
    assert.ok(isClientId(utf8ByteString(text)), text);
  }
  assert.ok(isClientId("caf\xc3\xa9"));
});

Deno.test("isClientId rejects bytes that are not valid UTF-8", () => {
  for (
    const id of [
      "caf\xe9", // Latin-1 é
      "\xff",
      "\x80",
      "kiwi\xc3",
      "\xc0\xaf",
      "\xed\xa0\x80",
      "\xf4\x90\x80\x80",
    ]
  ) {
    assert.ok(!isClientId(id), JSON.stringify(id));
  }
});

Deno.test("isClientId rejects non-ASCII blanks, controls and format characters in UTF-8", () => {
  for (
    const ch of [
      "\u00a0", // NO-BREAK SPACE
      "\u0085", // NEXT LINE (C1 control)
      "\u0080", // C1 control
      "\u009f", // C1 control
      "\u2000", // EN QUAD
      "\u2028", // LINE SEPARATOR
      "\u2029", // PARAGRAPH SEPARATOR
      "\u3000", // IDEOGRAPHIC SPACE
      "\u200b", // ZERO WIDTH SPACE (format)
      "\u200e", // LEFT-TO-RIGHT MARK
      "\ufeff", // ZERO WIDTH NO-BREAK SPACE / byte order mark
      "\u00ad", // SOFT HYPHEN (format)
      "\ue000", // private use
    ]
  ) {
    const bytes = utf8ByteString(ch);
    const hex = ch.charCodeAt(0).toString(16);
    assert.ok(!isClientId(bytes), `U+${hex} alone`);
    assert.ok(!isClientId(`kiwi${bytes}`), `U+${hex} at the end`);
    assert.ok(!isClientId(`${bytes}kiwi`), `U+${hex} at the start`);
  }
  assert.ok(!isClientId("\xc2\xa0"));
});

Deno.test("isClientId never accepts an id with a protocol blank or a byte above the limit (property)", () => {
  const byteString = fc
    .array(fc.integer({ min: 0, max: 255 }), { minLength: 0, maxLength: 300 })
    .map((codes) => String.fromCharCode(...codes));
  fc.assert(
    fc.property(byteString, (id) => {
      if (isClientId(id)) {
        assert.ok(id.length >= 1 && id.length <= 256);
        assert.ok([...id].every((c) => c.charCodeAt(0) > 0x20 && c !== "\x7f"));
      }
    }),
    RUNS,
  );
});

Deno.test("isClientId accepts any 1-256 printable ASCII characters (property)", () => {
  fc.assert(
    fc.property(fc.stringMatching(/^[!-~]{1,256}$/), (id) => {
      assert.ok(isClientId(id));
    }),
    RUNS,
  );
});

// ---- parseAtLine -----------------------------------------------------------------------

Deno.test("parseAtLine returns the fields of the protocol's example", () => {
  assert.deepEqual(parseAtLine(EXAMPLE), {
    node: "Alford",
    skew: "+0.263873386",
    client: "kiwi.cs.ucla.edu",
    location: "+34.068930-118.445127",
    time: "1520023934.918963997",
  });
});

Deno.test("parseAtLine accepts what formatAt makes (property)", () => {
  fc.assert(
    fc.property(
      nodeName,
      skewText,
      clientId,
      locationText,
      timeText,
      (n, s, c, l, t) => {
        assert.deepEqual(parseAtLine(formatAt(n, s, c, l, t)), {
          node: n,
          skew: s,
          client: c,
          location: l,
          time: t,
        });
      },
    ),
    RUNS,
  );
});

Deno.test("parseAtLine accepts a UTF-8 client id", () => {
  const line = formatAt("Ball", "-0.000000001", "caf\xc3\xa9", "+34-118", "1");
  assert.equal(parseAtLine(line)?.client, "caf\xc3\xa9");
});

Deno.test("parseAtLine rejects a wrong field count", () => {
  for (
    const bad of [
      "",
      "AT",
      "AT Alford",
      "AT Alford +0.263873386 kiwi +34-118",
      "AT Alford +0.263873386 kiwi +34-118 1 extra",
      "AT Alford +0.263873386 +34-118 1",
    ]
  ) {
    assert.equal(parseAtLine(bad), null, bad);
  }
});

Deno.test("parseAtLine rejects anything but single spaces between fields", () => {
  for (
    const bad of [
      "AT  Alford +0.263873386 kiwi +34-118 1",
      "AT Alford  +0.263873386 kiwi +34-118 1",
      "AT Alford +0.263873386 kiwi +34-118  1",
      " AT Alford +0.263873386 kiwi +34-118 1",
      "AT Alford +0.263873386 kiwi +34-118 1 ",
      "AT\tAlford +0.263873386 kiwi +34-118 1",
      "AT Alford +0.263873386 kiwi +34-118 1\n",
      "AT Alford +0.263873386 kiwi +34-118 1\r",
    ]
  ) {
    assert.equal(parseAtLine(bad), null, JSON.stringify(bad));
  }
});

Deno.test("parseAtLine rejects a first field other than AT", () => {
  for (const head of ["at", "At", "IAMAT", "ATT", "?", "WHATSAT"]) {
    assert.equal(
      parseAtLine(`${head} Alford +0.263873386 kiwi +34-118 1`),
      null,
      head,
    );
  }
});

Deno.test("parseAtLine rejects a bad skew", () => {
  for (
    const skew of [
      "0.263873386", // no sign
      "+0.26387338", // 8 digits
      "+0.2638733860", // 10 digits
      "+0", // no fraction
      "+.263873386",
      "++0.263873386",
      "+0.263873386x",
      "+1e1.000000000",
      "-NaN",
      "",
    ]
  ) {
    assert.equal(parseAtLine(`AT Alford ${skew} kiwi +34-118 1`), null, skew);
  }
});

Deno.test("parseAtLine rejects a bad location", () => {
  for (
    const loc of [
      "34-118",
      "+91+0",
      "+0+180.1",
      "+34",
      "+34-118x",
      "+34..0-118",
    ]
  ) {
    assert.equal(
      parseAtLine(`AT Alford +0.000000000 kiwi ${loc} 1`),
      null,
      loc,
    );
  }
});

Deno.test("parseAtLine rejects a bad time", () => {
  for (
    const time of ["-1", "+1", "1e9", "1.", ".5", "1.0000000001", "NaN", "0x10"]
  ) {
    assert.equal(
      parseAtLine(`AT Alford +0.000000000 kiwi +34-118 ${time}`),
      null,
      time,
    );
  }
});

Deno.test("parseAtLine rejects a bad node name or client id", () => {
  assert.equal(parseAtLine("AT Alf\x00rd +0.000000000 kiwi +34-118 1"), null);
  assert.equal(parseAtLine("AT Alford +0.000000000 ki\x7fwi +34-118 1"), null);
  assert.equal(parseAtLine("AT Alford +0.000000000 caf\xe9 +34-118 1"), null);
  assert.equal(
    parseAtLine(`AT Alford +0.000000000 ${"x".repeat(257)} +34-118 1`),
    null,
  );
  assert.ok(
    parseAtLine(`AT Alford +0.000000000 ${"x".repeat(256)} +34-118 1`) !== null,
  );
});
