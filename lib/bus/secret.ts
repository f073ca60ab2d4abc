/**
 * The herd secret (`HERD_SECRET`): the rule for how strong it must be, and a fresh one for
 * `deno task keygen` and `deno task herd`.
 *
 * The rule, for a secret of at least 128 bits: a string of hex digits only needs at least 32
 * of them (4 bits each); a string of base64 or base64url characters only (with optional `=`
 * padding) needs at least 22 of them (6 bits each); any other string needs at least 16 bytes
 * (UTF-8). A node uses the string's UTF-8 bytes as key material whatever its form, so a
 * secret from `deno task keygen` (43 base64url characters, 256 bits) and a long passphrase
 * both work; the rule only refuses what is certainly too short.
 *
 * @example
 * ```ts
 * secretProblem("0123456789abcdef"); // "HERD_SECRET is too short: ..."
 * secretProblem(newSecret()); // null
 * ```
 * @module
 */

/** The shortest secret, in bits. */
export const MIN_SECRET_BITS = 128;
/** Bytes of randomness in a new secret. */
export const NEW_SECRET_BYTES = 32;

/** Bits the rule credits to `secret` (see the module doc). */
export function secretBits(secret: string): number {
  if (/^[0-9a-fA-F]+$/.test(secret)) return secret.length * 4;
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(secret)) {
    return secret.replace(/=+$/, "").length * 6;
  }
  return new TextEncoder().encode(secret).length * 8;
}

/** Why `secret` is refused, as one line that never quotes it; null when it is strong enough. */
export function secretProblem(secret: string): string | null {
  const bits = secretBits(secret);
  if (bits >= MIN_SECRET_BITS) return null;
  return `HERD_SECRET is too short: it carries ${bits} bits, at least ${MIN_SECRET_BITS} are needed (32 hex digits, 22 base64 characters or 16 bytes); run deno task keygen for a good one`;
}

/** A new random secret: 256 bits as base64url without padding (43 characters). */
export function newSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(NEW_SECRET_BYTES));
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
