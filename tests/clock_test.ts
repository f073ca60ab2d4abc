/**
 * Specification of lib/clock.ts: client times as exact integer nanoseconds, the signed
 * 9-digit skew of the AT reply, and exact comparison of time texts.
 */

import assert from "assert";
import fc from "fast-check";
import {
  compareTimeText,
  formatSkew,
  isTimeText,
  parseClientTime,
  systemClock,
} from "../lib/clock.ts";

const NS = 1_000_000_000n;
const RUNS = { numRuns: 400 };

/** A valid client time text: digits (leading zeros allowed), optional 1-9 fraction digits. */
const timeText = fc
  .tuple(
    fc.stringMatching(/^[0-9]{1,25}$/),
    fc.option(fc.stringMatching(/^[0-9]{1,9}$/), { nil: undefined }),
  )
  .map(([int, frac]) => (frac === undefined ? int : `${int}.${frac}`));

/** Reference value of a valid time text, computed digit by digit. */
function referenceNs(text: string): bigint {
  const [int, frac = ""] = text.split(".");
  let ns = 0n;
  for (const d of int) ns = ns * 10n + BigInt(d);
  ns *= NS;
  let scale = NS / 10n;
  for (const d of frac) {
    ns += BigInt(d) * scale;
    scale /= 10n;
  }
  return ns;
}

/** Reads a skew text back into nanoseconds, independently of formatSkew. */
function skewToNs(skew: string): bigint {
  const m = /^([+-])(\d+)\.(\d{9})$/.exec(skew);
  assert.ok(m, `bad skew shape: ${skew}`);
  const abs = BigInt(m[2]) * NS + BigInt(m[3]);
  return m[1] === "-" ? -abs : abs;
}

Deno.test("parseClientTime reads whole seconds as nanoseconds", () => {
  assert.equal(parseClientTime("0"), 0n);
  assert.equal(parseClientTime("1"), NS);
  assert.equal(parseClientTime("1520023934"), 1520023934n * NS);
});

Deno.test("parseClientTime reads the example times of the protocol exactly", () => {
  assert.equal(parseClientTime("1520023934.918963997"), 1520023934918963997n);
  assert.equal(parseClientTime("1621464827.959498503"), 1621464827959498503n);
});

Deno.test("parseClientTime reads fractions of 1 to 9 digits, scaled to nanoseconds", () => {
  assert.equal(parseClientTime("1.5"), 1_500_000_000n);
  assert.equal(parseClientTime("1.05"), 1_050_000_000n);
  assert.equal(parseClientTime("1.123"), 1_123_000_000n);
  assert.equal(parseClientTime("1.000000001"), 1_000_000_001n);
  assert.equal(parseClientTime("0.000000001"), 1n);
  assert.equal(parseClientTime("0.999999999"), 999_999_999n);
  assert.equal(parseClientTime("2.10"), parseClientTime("2.1"));
  for (let n = 1; n <= 9; n++) {
    const text = `7.${"3".repeat(n)}`;
    assert.equal(
      parseClientTime(text),
      7n * NS + BigInt("3".repeat(n).padEnd(9, "0")),
      text,
    );
  }
});

Deno.test("parseClientTime rejects a fraction of 10 digits or more", () => {
  assert.equal(parseClientTime("1.0000000001"), null);
  assert.equal(parseClientTime("1.1234567890"), null);
  assert.equal(parseClientTime("1520023934.9189639970"), null);
  assert.equal(parseClientTime(`1.${"0".repeat(30)}`), null);
});

Deno.test("parseClientTime accepts leading zeros in the integer part", () => {
  assert.equal(parseClientTime("0001"), NS);
  assert.equal(parseClientTime("00.5"), 500_000_000n);
  assert.equal(parseClientTime("000000"), 0n);
  assert.equal(
    parseClientTime("01520023934.5"),
    parseClientTime("1520023934.5"),
  );
});

Deno.test("parseClientTime keeps huge integers exact, beyond float64 precision", () => {
  assert.equal(
    parseClientTime("123456789012345678901234567890.123456789"),
    123456789012345678901234567890123456789n,
  );
  assert.equal(parseClientTime("9007199254740993"), 9007199254740993n * NS);
  assert.notEqual(
    parseClientTime("1621464827.959498503"),
    parseClientTime("1621464827.959498504"),
  );
});

Deno.test("parseClientTime rejects a dangling or leading point", () => {
  assert.equal(parseClientTime("1."), null);
  assert.equal(parseClientTime(".5"), null);
  assert.equal(parseClientTime("."), null);
  assert.equal(parseClientTime("1..5"), null);
  assert.equal(parseClientTime("1.5.5"), null);
});

Deno.test("parseClientTime rejects a sign, an exponent, hex, NaN and Infinity", () => {
  for (
    const text of [
      "+1",
      "-1",
      "-0",
      "+1.5",
      "1e9",
      "1E9",
      "1.5e3",
      "0x10",
      "0X10",
      "0b1",
      "0o7",
      "NaN",
      "nan",
      "Infinity",
      "-Infinity",
      "inf",
      "1_000",
      "1,5",
    ]
  ) {
    assert.equal(parseClientTime(text), null, text);
  }
});

Deno.test("parseClientTime rejects white space, the empty string and non-ASCII digits", () => {
  for (
    const text of [
      "",
      " 1",
      "1 ",
      "1\n",
      "\t1",
      "1 .5",
      "1. 5",
      "\u0661", // ARABIC-INDIC DIGIT ONE
      "\uff11", // FULLWIDTH DIGIT ONE
      "1.\u0665",
      "\xb9", // SUPERSCRIPT ONE as a byte
      "abc",
      "1a",
    ]
  ) {
    assert.equal(parseClientTime(text), null, JSON.stringify(text));
  }
});

Deno.test("parseClientTime agrees with digit-by-digit decimal arithmetic (property)", () => {
  fc.assert(
    fc.property(timeText, (text) => {
      assert.equal(parseClientTime(text), referenceNs(text));
    }),
    RUNS,
  );
});

Deno.test("parseClientTime rejects any text with a character outside [0-9.] (property)", () => {
  fc.assert(
    fc.property(
      timeText,
      fc.nat(),
      fc.integer({ min: 0, max: 0x10ffff }).map((c) => String.fromCodePoint(c))
        .filter((c) => !/[0-9.]/.test(c)),
      (text, at, junk) => {
        const i = at % (text.length + 1);
        assert.equal(
          parseClientTime(text.slice(0, i) + junk + text.slice(i)),
          null,
        );
      },
    ),
    RUNS,
  );
});

Deno.test("formatSkew always carries a sign, + for zero and positive", () => {
  assert.equal(formatSkew(0n), "+0.000000000");
  assert.equal(formatSkew(1n), "+0.000000001");
  assert.equal(formatSkew(263873386n), "+0.263873386");
  assert.equal(formatSkew(NS), "+1.000000000");
});

Deno.test("formatSkew prints negatives with - and the same 9 digits", () => {
  assert.equal(formatSkew(-1n), "-0.000000001");
  assert.equal(formatSkew(-263873386n), "-0.263873386");
  assert.equal(formatSkew(-NS), "-1.000000000");
  assert.equal(formatSkew(-1_500_000_000n), "-1.500000000");
  assert.equal(formatSkew(-999_999_999n), "-0.999999999");
});

Deno.test("formatSkew prints exactly 9 fraction digits, padding with zeros", () => {
  assert.equal(formatSkew(1_000_000_010n), "+1.000000010");
  assert.equal(formatSkew(12_000_000_000n), "+12.000000000");
  assert.equal(formatSkew(100_000_000n), "+0.100000000");
});

Deno.test("formatSkew prints large skews exactly", () => {
  assert.equal(formatSkew(1520023934918963997n), "+1520023934.918963997");
  assert.equal(formatSkew(-1520023934918963997n), "-1520023934.918963997");
  assert.equal(
    formatSkew(123456789012345678901234567890123456789n),
    "+123456789012345678901234567890.123456789",
  );
});

Deno.test("formatSkew of the protocol's example: receive time minus client time", () => {
  const received = 1520023935182837383n;
  const client = parseClientTime("1520023934.918963997")!;
  assert.equal(formatSkew(received - client), "+0.263873386");
  assert.equal(formatSkew(client - received), "-0.263873386");
});

Deno.test("formatSkew output has the shape [+-]D+.DDDDDDDDD with no leading zeros (property)", () => {
  fc.assert(
    fc.property(fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }), (ns) => {
      const s = formatSkew(ns);
      assert.match(s, /^[+-](0|[1-9]\d*)\.\d{9}$/);
      assert.equal(s[0], ns < 0n ? "-" : "+");
      assert.equal(skewToNs(s), ns);
    }),
    RUNS,
  );
});

Deno.test("formatSkew(parse(a) - parse(b)) matches exact decimal arithmetic (property)", () => {
  fc.assert(
    fc.property(timeText, timeText, (a, b) => {
      const skew = formatSkew(parseClientTime(a)! - parseClientTime(b)!);
      assert.equal(skewToNs(skew), referenceNs(a) - referenceNs(b));
    }),
    RUNS,
  );
});

Deno.test("formatSkew and parseClientTime round-trip non-negative skews (property)", () => {
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: 10n ** 25n }), (ns) => {
      assert.equal(parseClientTime(formatSkew(ns).slice(1)), ns);
    }),
    RUNS,
  );
});

Deno.test("compareTimeText orders by value: earlier is negative, later positive", () => {
  assert.ok(compareTimeText("1", "2") < 0);
  assert.ok(compareTimeText("2", "1") > 0);
  assert.ok(compareTimeText("9", "10") < 0);
  assert.ok(compareTimeText("1.5", "1.6") < 0);
  assert.ok(compareTimeText("1.09", "1.1") < 0);
  assert.ok(compareTimeText("1.999999999", "2") < 0);
  assert.ok(
    compareTimeText("1520023934.918963997", "1520023934.918963998") < 0,
  );
});

Deno.test("compareTimeText treats trailing fraction zeros as equal: 1.5 equals 1.50", () => {
  assert.equal(compareTimeText("1.5", "1.50"), 0);
  assert.equal(compareTimeText("1.50", "1.5"), 0);
  assert.equal(compareTimeText("1", "1.0"), 0);
  assert.equal(compareTimeText("1", "1.000000000"), 0);
  assert.equal(compareTimeText("10.5", "10.500000000"), 0);
});

Deno.test("compareTimeText ignores leading zeros of the integer part", () => {
  assert.equal(compareTimeText("0001", "1"), 0);
  assert.equal(compareTimeText("00.5", "0.5"), 0);
  assert.equal(compareTimeText("0", "000"), 0);
  assert.ok(compareTimeText("0009", "10") < 0);
  assert.ok(compareTimeText("010", "9") > 0);
});

Deno.test("compareTimeText agrees with comparing parseClientTime values (property)", () => {
  fc.assert(
    fc.property(timeText, timeText, (a, b) => {
      const expected = Math.sign(
        Number(parseClientTime(a)! - parseClientTime(b)!),
      );
      assert.equal(Math.sign(compareTimeText(a, b)), expected);
    }),
    RUNS,
  );
});

Deno.test("compareTimeText agrees with parsed values on close times (property)", () => {
  // Times that share most digits, so the comparison has to look at the last ones.
  const close = fc
    .tuple(
      fc.constantFrom("", "0", "00"),
      fc.constantFrom("1520023933", "1520023934"),
      fc.stringMatching(/^[0-2]{0,3}$/),
      fc.constantFrom("", "0", "00", "000000"),
    )
    .map(([zeros, int, frac, pad]) =>
      frac === "" && pad === "" ? zeros + int : `${zeros}${int}.${frac}${pad}`
    );
  fc.assert(
    fc.property(close, close, (a, b) => {
      const expected = Math.sign(
        Number(parseClientTime(a)! - parseClientTime(b)!),
      );
      assert.equal(Math.sign(compareTimeText(a, b)), expected);
    }),
    RUNS,
  );
});

Deno.test("compareTimeText is antisymmetric and reflexive (property)", () => {
  fc.assert(
    fc.property(timeText, timeText, (a, b) => {
      assert.equal(compareTimeText(a, a), 0);
      // A sum, not a negation: -Math.sign(0) is -0, which strict equality tells from 0.
      assert.equal(
        Math.sign(compareTimeText(a, b)) + Math.sign(compareTimeText(b, a)),
        0,
      );
    }),
    RUNS,
  );
});

Deno.test("systemClock gives the current POSIX time in whole microseconds", () => {
  const before = BigInt(Date.now()) * 1_000_000n;
  const now = systemClock();
  const after = BigInt(Date.now()) * 1_000_000n;
  assert.equal(typeof now, "bigint");
  assert.equal(now % 1000n, 0n);
  assert.ok(now >= before - 2_000_000n && now <= after + 2_000_000n);
});

Deno.test("isTimeText accepts exactly what parseClientTime reads (property)", () => {
  // Valid times, near misses made from them, and short strings over the characters a time
  // is made of, so that most texts are close to valid.
  const nearMiss = fc.tuple(
    timeText,
    fc.nat(),
    fc.constantFrom(".", "-", "+", " ", "e", ""),
  )
    .map(([t, at, c]) => {
      const i = at % (t.length + 1);
      return t.slice(0, i) + c + t.slice(i + (c === "" ? 1 : 0));
    });
  const digitsAndDots = fc.stringMatching(/^[0-9.]{0,14}$/);
  fc.assert(
    fc.property(
      fc.oneof(timeText, nearMiss, digitsAndDots, fc.string()),
      (text) => {
        assert.equal(
          isTimeText(text),
          parseClientTime(text) !== null,
          JSON.stringify(text),
        );
      },
    ),
    { numRuns: 2000 },
  );
  for (
    const text of [
      "",
      ".",
      "1.",
      ".5",
      "1.1234567890",
      "١٢",
      "1.5\n",
      "0",
      "0.000000001",
    ]
  ) {
    assert.equal(
      isTimeText(text),
      parseClientTime(text) !== null,
      JSON.stringify(text),
    );
  }
});
