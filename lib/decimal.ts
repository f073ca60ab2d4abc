/**
 * Exact comparisons and scaling of plain decimal strings (`12`, `0.5`, `050.250`), so range
 * checks such as `latitude <= 90` or `radius <= 50` never suffer from float rounding.
 *
 * @example
 * ```ts
 * compareDecimal("90.0000000000000000001", "90"); // 1
 * shiftDecimal("1.2345", 3); // "1234.5"
 * ```
 * @module
 */

/** A plain unsigned decimal: digits, optionally a point and more digits. */
export const UNSIGNED_DECIMAL = /^\d+(?:\.\d+)?$/;

function parts(text: string): [string, string] {
  const dot = text.indexOf(".");
  let int = dot < 0 ? text : text.slice(0, dot);
  let frac = dot < 0 ? "" : text.slice(dot + 1);
  int = int.replace(/^0+(?=\d)/, "");
  frac = frac.replace(/0+$/, "");
  return [int, frac];
}

/** Compares two unsigned decimals by value: negative, zero or positive. */
export function compareDecimal(a: string, b: string): number {
  const [ia, fa] = parts(a);
  const [ib, fb] = parts(b);
  if (ia.length !== ib.length) return ia.length - ib.length;
  if (ia !== ib) return ia < ib ? -1 : 1;
  const n = Math.max(fa.length, fb.length);
  const pa = fa.padEnd(n, "0");
  const pb = fb.padEnd(n, "0");
  return pa === pb ? 0 : pa < pb ? -1 : 1;
}

/** True when an unsigned decimal is zero (`0`, `000.000`). */
export function isZeroDecimal(text: string): boolean {
  return /^[0.]*$/.test(text);
}

/** Multiplies an unsigned decimal by 10^places, exactly, in canonical form (`0.5`,3 → `500`). */
export function shiftDecimal(text: string, places: number): string {
  const [int, frac] = parts(text);
  const padded = frac.padEnd(places, "0");
  const whole = (int + padded.slice(0, places)).replace(/^0+(?=\d)/, "");
  const rest = padded.slice(places);
  return rest.length > 0 ? `${whole}.${rest}` : whole;
}
