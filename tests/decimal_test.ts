/**
 * Specification of lib/decimal.ts: exact comparison and scaling of unsigned decimal strings,
 * checked against BigInt arithmetic on the same digits.
 */

import assert from "assert";
import fc from "fast-check";
import {
  compareDecimal,
  isZeroDecimal,
  shiftDecimal,
  UNSIGNED_DECIMAL,
} from "../lib/decimal.ts";

const RUNS = { numRuns: 400 };

/** An unsigned decimal text, leading and trailing zeros included. */
const decimalText = fc
  .tuple(
    fc.stringMatching(/^[0-9]{1,22}$/),
    fc.option(fc.stringMatching(/^[0-9]{1,22}$/), { nil: undefined }),
  )
  .map(([int, frac]) => (frac === undefined ? int : `${int}.${frac}`));

/** Small decimals with few distinct digits, so equal values come up often. */
const smallDecimal = fc
  .tuple(
    fc.stringMatching(/^0{0,2}[0-2]{1,2}$/),
    fc.option(fc.stringMatching(/^[0-1]{1,3}0{0,2}$/), { nil: undefined }),
  )
  .map(([int, frac]) => (frac === undefined ? int : `${int}.${frac}`));

/** The value of a decimal text as a scaled BigInt: [value * 10^scale, scale]. */
function scaled(text: string, scale: number): bigint {
  const [int, frac = ""] = text.split(".");
  assert.ok(frac.length <= scale);
  return BigInt(int + frac.padEnd(scale, "0"));
}

function referenceCompare(a: string, b: string): number {
  const scale = Math.max(a.length, b.length);
  const d = scaled(a, scale) - scaled(b, scale);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

Deno.test("UNSIGNED_DECIMAL accepts digits with an optional point and more digits", () => {
  for (const ok of ["0", "12", "0.5", "050.250", "50", "1.2345"]) {
    assert.ok(UNSIGNED_DECIMAL.test(ok), ok);
  }
});

Deno.test("UNSIGNED_DECIMAL rejects signs, exponents, bare points and non-ASCII digits", () => {
  for (
    const bad of [
      "",
      ".",
      ".5",
      "5.",
      "+5",
      "-5",
      "1e1",
      "0x10",
      "NaN",
      "Infinity",
      "1.2.3",
      " 1",
      "1 ",
      "1\n",
      "\u0661",
      "\uff15",
    ]
  ) {
    assert.ok(!UNSIGNED_DECIMAL.test(bad), JSON.stringify(bad));
  }
});

Deno.test("compareDecimal orders by value", () => {
  assert.ok(compareDecimal("1", "2") < 0);
  assert.ok(compareDecimal("2", "1") > 0);
  assert.ok(compareDecimal("9", "10") < 0);
  assert.ok(compareDecimal("9.99", "10") < 0);
  assert.ok(compareDecimal("0.09", "0.1") < 0);
  assert.ok(compareDecimal("50.0001", "50") > 0);
  assert.ok(compareDecimal("49.9999", "50") < 0);
});

Deno.test("compareDecimal ignores leading and trailing zeros", () => {
  assert.equal(compareDecimal("050", "50"), 0);
  assert.equal(compareDecimal("50.000", "50"), 0);
  assert.equal(compareDecimal("0", "000.000"), 0);
  assert.equal(compareDecimal("0.50", "00.5"), 0);
  assert.equal(compareDecimal("90.0", "90"), 0);
});

Deno.test("compareDecimal is exact beyond float precision", () => {
  assert.ok(compareDecimal("90.0000000000000000001", "90") > 0);
  assert.ok(compareDecimal("179.99999999999999999999", "180") < 0);
  assert.ok(compareDecimal("9007199254740993", "9007199254740992") > 0);
  assert.equal(Number("90.0000000000000000001"), 90); // what a float would wrongly say
});

Deno.test("compareDecimal agrees with BigInt-scaled comparison (property)", () => {
  fc.assert(
    fc.property(decimalText, decimalText, (a, b) => {
      assert.equal(Math.sign(compareDecimal(a, b)), referenceCompare(a, b));
    }),
    RUNS,
  );
});

Deno.test("compareDecimal agrees with BigInt-scaled comparison on near-equal values (property)", () => {
  fc.assert(
    fc.property(smallDecimal, smallDecimal, (a, b) => {
      assert.equal(Math.sign(compareDecimal(a, b)), referenceCompare(a, b));
    }),
    RUNS,
  );
});

Deno.test("compareDecimal is reflexive and antisymmetric (property)", () => {
  fc.assert(
    fc.property(decimalText, decimalText, (a, b) => {
      assert.equal(compareDecimal(a, a), 0);
      // A sum, not a negation: -Math.sign(0) is -0, which strict equality tells from 0.
      assert.equal(
        Math.sign(compareDecimal(a, b)) + Math.sign(compareDecimal(b, a)),
        0,
      );
    }),
    RUNS,
  );
});

Deno.test("isZeroDecimal is true exactly for zero values", () => {
  for (const z of ["0", "00", "0.0", "000.000", "0.000000000000000000000"]) {
    assert.ok(isZeroDecimal(z), z);
  }
  for (
    const nz of [
      "1",
      "0.1",
      "0.0000000000000000000001",
      "10",
      "100.00",
      "00.01",
    ]
  ) {
    assert.ok(!isZeroDecimal(nz), nz);
  }
});

Deno.test("isZeroDecimal agrees with the BigInt value of any decimal (property)", () => {
  fc.assert(
    fc.property(decimalText, (d) => {
      assert.equal(isZeroDecimal(d), scaled(d, d.length) === 0n);
    }),
    RUNS,
  );
});

Deno.test("shiftDecimal multiplies by a power of ten into canonical form", () => {
  assert.equal(shiftDecimal("10", 3), "10000");
  assert.equal(shiftDecimal("0.5", 3), "500");
  assert.equal(shiftDecimal("1.2345", 3), "1234.5");
  assert.equal(shiftDecimal("50", 3), "50000");
  assert.equal(shiftDecimal("050", 3), "50000");
  assert.equal(shiftDecimal("50.000", 3), "50000");
  assert.equal(shiftDecimal("0.0001", 3), "0.1");
  assert.equal(shiftDecimal("0.00012300", 3), "0.123");
  assert.equal(shiftDecimal("000.001", 3), "1");
  assert.equal(shiftDecimal("1.50", 0), "1.5");
  assert.equal(shiftDecimal("0", 3), "0");
  assert.equal(shiftDecimal("0.000", 3), "0");
});

Deno.test("shiftDecimal is exact: its result times 10^-places equals the input (property)", () => {
  fc.assert(
    fc.property(decimalText, fc.integer({ min: 0, max: 12 }), (d, places) => {
      const out = shiftDecimal(d, places);
      assert.match(out, /^(0|[1-9]\d*)(\.\d*[1-9])?$/, `canonical: ${out}`);
      // value(out) * 10^(scale) == value(d) * 10^(places + scale)
      const scale = d.length + places;
      assert.equal(
        scaled(out, scale),
        scaled(d, scale) * 10n ** BigInt(places),
      );
    }),
    RUNS,
  );
});

Deno.test("shiftDecimal by 3 turns kilometres into metres exactly (property)", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 50_000_000 }), (microKm) => {
      const km = `${Math.floor(microKm / 1e6)}.${
        String(microKm % 1e6).padStart(6, "0")
      }`;
      const metres = shiftDecimal(km, 3);
      assert.equal(scaled(metres, 3), BigInt(microKm));
    }),
    RUNS,
  );
});
