/**
 * Generators built from the line protocol's grammar, for property tests: whole IAMAT and
 * WHATSAT lines, mostly valid or one edit away from valid, so that properties reach both the
 * accepting and the refusing branches (random bytes almost never make a valid line: a
 * "never throws" property fed only those checks the first `if` of the parser).
 *
 * `oracle*` are independent reference definitions written from the protocol text with
 * regular expressions and BigInt arithmetic, for differential properties against the real
 * parsers.
 *
 * @module
 */

import fc from "fast-check";

const BLANKS = [" ", "\t", "\r", "\n", "\f", "\v"];

/** A run of protocol white space, at least one character. */
export const blankRun: fc.Arbitrary<string> = fc
  .array(fc.constantFrom(...BLANKS), { minLength: 1, maxLength: 3 })
  .map((a) => a.join(""));

const digits = (min: number, max: number) =>
  fc.array(fc.constantFrom(..."0123456789"), { minLength: min, maxLength: max })
    .map((a) => a.join(""));

/** An unsigned decimal, biased toward the edges of the protocol's ranges. */
const degrees = (limit: number): fc.Arbitrary<string> =>
  fc.oneof(
    fc.tuple(
      fc.constantFrom(
        String(limit),
        String(limit - 1),
        String(limit + 1),
        "0",
        "00",
        "1",
      ),
      fc.oneof(
        fc.constant(""),
        digits(1, 6).map((d) => "." + d),
        fc.constant(".0"),
        fc.constant(".000"),
      ),
    ).map(([i, f]) => i + f),
    fc.tuple(digits(1, 3), fc.option(digits(1, 7), { nil: undefined })).map((
      [i, f],
    ) => f === undefined ? i : `${i}.${f}`),
  );

/** A location in the grammar `[+-]DD[.ddd][+-]DDD[.ddd]`, in or out of range. */
export const location: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom("+", "-"),
    degrees(90),
    fc.constantFrom("+", "-"),
    degrees(180),
  )
  .map(([a, lat, b, lng]) => `${a}${lat}${b}${lng}`);

/** A client time: digits and an optional fraction of 0 to 10 digits. */
export const time: fc.Arbitrary<string> = fc
  .tuple(digits(1, 11), fc.option(digits(0, 10), { nil: undefined }))
  .map(([s, f]) => f === undefined ? s : `${s}.${f}`);

/** A client id: printable ASCII, sometimes at or past the 256-byte limit. */
export const clientId: fc.Arbitrary<string> = fc.oneof(
  { weight: 8, arbitrary: fc.stringMatching(/^[\x21-\x7e]{1,20}$/) },
  { weight: 1, arbitrary: fc.constantFrom("k".repeat(256), "k".repeat(257)) },
);

/** A radius in km: decimals around 0 and 50. */
export const radius: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "0",
    "0.0",
    "0.001",
    "50",
    "50.0",
    "50.0001",
    "51",
    "10",
    "1.5",
  ),
  fc.tuple(digits(1, 2), fc.option(digits(1, 4), { nil: undefined })).map((
    [i, f],
  ) => f === undefined ? i : `${i}.${f}`),
);

/** A bound: integers around 1 and 20, some with leading zeros. */
export const bound: fc.Arbitrary<string> = fc.oneof(
  fc.integer({ min: 0, max: 22 }).map(String),
  fc.constantFrom("01", "020", "021", "000"),
);

/** Characters a one-character edit inserts or substitutes. */
const EDIT_CHARS = [..."+-.0123456789eE \tIAMTWHSx\u00e9"];

/** Applies one random edit (insert, delete or replace a character), or none. */
export function mutated(line: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.tuple(
    line,
    fc.constantFrom("none", "none", "none", "insert", "delete", "replace"),
    fc.nat(),
    fc.constantFrom(...EDIT_CHARS),
  ).map(([s, op, at, c]) => {
    if (op === "none" || s.length === 0) return s;
    const i = at % (s.length + (op === "insert" ? 1 : 0));
    if (op === "insert") return s.slice(0, i) + c + s.slice(i);
    if (op === "delete") return s.slice(0, i) + s.slice(i + 1);
    return s.slice(0, i) + c + s.slice(i + 1);
  });
}

/** An IAMAT line from the grammar, with protocol white space between and around fields. */
export const iamatLine: fc.Arbitrary<string> = fc
  .tuple(
    fc.option(blankRun, { nil: "" }),
    fc.constantFrom("IAMAT", "IAMAT", "IAMAT", "iamat", "WHATSAT"),
    blankRun,
    clientId,
    blankRun,
    location,
    blankRun,
    time,
    fc.option(blankRun, { nil: "" }),
  )
  .map((parts) => parts.join(""));

/** A WHATSAT line from the grammar. */
export const whatsatLine: fc.Arbitrary<string> = fc
  .tuple(
    fc.option(blankRun, { nil: "" }),
    fc.constantFrom("WHATSAT", "WHATSAT", "WHATSAT", "IAMAT"),
    blankRun,
    clientId,
    blankRun,
    radius,
    blankRun,
    bound,
    fc.option(blankRun, { nil: "" }),
  )
  .map((parts) => parts.join(""));

/** Lines near the grammar: valid, or one edit away. */
export const nearLine: fc.Arbitrary<string> = mutated(
  fc.oneof(iamatLine, whatsatLine),
);

// ---- the oracle ------------------------------------------------------------------------

/** `d+(.d+)?` as [integer part, fraction digits], or null. */
function decimal(s: string): [bigint, string] | null {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(s);
  return m === null ? null : [BigInt(m[1]), m[2] ?? ""];
}

/** Is the unsigned decimal `s` at most `limit` (an integer)? */
function atMost(s: string, limit: bigint): boolean {
  const d = decimal(s)!;
  return d[0] < limit || (d[0] === limit && /^0*$/.test(d[1]));
}

/** The protocol's location rule, read directly from its text. */
export function oracleLocation(s: string): boolean {
  const m = /^[+-](\d+(?:\.\d+)?)[+-](\d+(?:\.\d+)?)$/.exec(s);
  return m !== null && atMost(m[1], 90n) && atMost(m[2], 180n);
}

/** What kind of command the protocol says `line` is (ASCII lines only). */
export function oracleKind(line: string): "IAMAT" | "WHATSAT" | "INVALID" {
  const f = line.split(/[ \t\r\n\f\v]+/).filter((x) => x !== "");
  if (f.length !== 4) return "INVALID";
  if (!/^[\x21-\x7e]{1,256}$/.test(f[1])) return "INVALID";
  if (f[0] === "IAMAT") {
    return oracleLocation(f[2]) && /^\d+(\.\d{1,9})?$/.test(f[3])
      ? "IAMAT"
      : "INVALID";
  }
  if (f[0] === "WHATSAT") {
    const r = decimal(f[2]);
    const positive = r !== null && (r[0] > 0n || /[1-9]/.test(r[1]));
    const okBound = /^\d+$/.test(f[3]) && Number(f[3]) >= 1 &&
      Number(f[3]) <= 20;
    return positive && atMost(f[2], 50n) && okBound ? "WHATSAT" : "INVALID";
  }
  return "INVALID";
}
