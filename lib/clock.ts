/**
 * POSIX times as exact integers of nanoseconds, and the signed skew the AT reply carries.
 * A client time such as `1621464827.959498503` has 19 significant digits, more than a
 * float64 holds, so times are parsed from their digits into `bigint`.
 *
 * @example
 * ```ts
 * parseClientTime("1520023934.918963997"); // 1520023934918963997n
 * formatSkew(263873386n); // "+0.263873386"
 * ```
 * @module
 */

/** A source of the current POSIX time in nanoseconds; injected so tests can fix it. */
export type Clock = () => bigint;

const NS_PER_S = 1_000_000_000n;
const TIME = /^(\d+)(?:\.(\d{1,9}))?$/;

/**
 * Whether `text` is a client time `parseClientTime` reads, without reading it: no bigint.
 * Catch-up checks the time of every record it lists and of every entry it receives (two
 * million for a herd of a million clients), and the bigints of a full parse were a tenth of
 * that CPU and more of its garbage (docs/benchmarks.md, round eleven).
 */
export function isTimeText(text: string): boolean {
  return TIME.test(text);
}

/**
 * Parses a client time: digits with an optional fraction of 1 to 9 digits. No sign,
 * exponent, hex, `NaN` or `Infinity`. Returns nanoseconds, or null when invalid.
 */
export function parseClientTime(text: string): bigint | null {
  const m = TIME.exec(text);
  if (m === null) return null;
  const frac = (m[2] ?? "").padEnd(9, "0");
  return BigInt(m[1]) * NS_PER_S + BigInt(frac);
}

/** Formats a nanosecond difference with its sign always (`+` for zero) and 9 fraction digits. */
export function formatSkew(ns: bigint): string {
  const sign = ns < 0n ? "-" : "+";
  const abs = ns < 0n ? -ns : ns;
  const frac = (abs % NS_PER_S).toString().padStart(9, "0");
  return `${sign}${abs / NS_PER_S}.${frac}`;
}

/**
 * The system's real-time clock in nanoseconds, at the microsecond resolution the
 * platform gives. `timeOrigin + now()` keeps sub-millisecond digits that `Date.now()` lacks.
 */
export const systemClock: Clock = () =>
  BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) *
  1000n;

/**
 * Compares two valid time strings exactly, without converting them to numbers:
 * negative when `a` is earlier, zero when equal in value (`1.5` equals `1.50`).
 */
export function compareTimeText(a: string, b: string): number {
  const da = a.indexOf(".");
  const db = b.indexOf(".");
  let ia = da < 0 ? a : a.slice(0, da);
  let ib = db < 0 ? b : b.slice(0, db);
  ia = stripLeadingZeros(ia);
  ib = stripLeadingZeros(ib);
  if (ia.length !== ib.length) return ia.length - ib.length;
  if (ia !== ib) return ia < ib ? -1 : 1;
  const fa = (da < 0 ? "" : a.slice(da + 1)).padEnd(9, "0");
  const fb = (db < 0 ? "" : b.slice(db + 1)).padEnd(9, "0");
  return fa === fb ? 0 : fa < fb ? -1 : 1;
}

function stripLeadingZeros(digits: string): string {
  let i = 0;
  while (i < digits.length - 1 && digits.charCodeAt(i) === 48) i++;
  return i === 0 ? digits : digits.slice(i);
}
