/**
 * The inter-node format, pure. Peers speak lines, like clients. Each node dials each of its
 * neighbors and pushes records on that connection; the acceptor only answers control lines.
 *
 * ```
 * dialer → acceptor   HERD HELLO <dialer> <nonceD>
 * acceptor → dialer   HERD WELCOME <acceptor> <nonceA> <proofA>
 *                     (or HERD REFUSED <reason>, then close: not a neighbor)
 * dialer → acceptor   HERD PROOF <proofD>
 *                     (or HERD REFUSED <reason>, then close: proofA did not verify)
 * acceptor → dialer   HERD OK                       (or HERD REFUSED <reason>, then close)
 * dialer → acceptor   AT ...                        records, many a write
 * dialer → acceptor   HERD SUM <root>               catch-up: on connection, and when idle
 * acceptor → dialer   HERD SAME | HERD BUCKETS <b64> the acceptor's per-bucket digests
 * dialer → acceptor   HERD DIFF <b,b,...>           differing buckets where the dialer holds records
 *                     (or HERD SYNCED 0 when there are none)
 * acceptor → dialer   HERD HAVE <client> <time> <hash> ...  what it holds in them (many lines)
 *                     then HERD HAVE-END
 * dialer → acceptor   AT ... (only records the acceptor lacks or holds older) then
 *                     HERD SYNCED <count>
 * ```
 *
 * Proofs are HMAC-SHA-256 over both nonces and both names, keyed by `HERD_SECRET`, with the
 * role in the message so a proof cannot be reflected; without a secret they are `-`. Both
 * sides contribute a fresh 128-bit nonce, so a recorded proof is worthless on the next
 * connection. The secret itself never travels, and nothing a peer sends before `HERD OK`
 * is accepted. Reasons in `HERD REFUSED` never depend on the secret's value.
 *
 * Limitation: only the handshake is authenticated. Someone who can splice into an
 * established TCP connection (on path, not just on the network) could inject lines; the
 * herd's links are expected to run on a trusted network or under a tunnel.
 *
 * @module
 */

const encoder = new TextEncoder();

/** A fresh random nonce (128 bits, hex). */
export function nonce(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** Imports the herd secret as an HMAC key, or null without a secret. */
export async function importSecret(
  secret: string | undefined,
): Promise<CryptoKey | null> {
  if (!secret) return null;
  return await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
}

/** What a side proves: its role, both names, both nonces. */
function transcript(
  role: "dialer" | "acceptor",
  dialer: string,
  acceptor: string,
  nonceD: string,
  nonceA: string,
): Uint8Array<ArrayBuffer> {
  return encoder.encode(
    `herd-v1|${role}|${dialer}|${acceptor}|${nonceD}|${nonceA}`,
  );
}

/** The proof for `role`, hex; `-` without a key. */
export async function prove(
  key: CryptoKey | null,
  role: "dialer" | "acceptor",
  dialer: string,
  acceptor: string,
  nonceD: string,
  nonceA: string,
): Promise<string> {
  if (key === null) return "-";
  const mac = await crypto.subtle.sign(
    "HMAC",
    key,
    transcript(role, dialer, acceptor, nonceD, nonceA),
  );
  return [...new Uint8Array(mac)].map((x) => x.toString(16).padStart(2, "0"))
    .join("");
}

/** Checks a proof in constant time (Web Crypto verify); without a key only `-` passes. */
export async function verify(
  key: CryptoKey | null,
  proof: string,
  role: "dialer" | "acceptor",
  dialer: string,
  acceptor: string,
  nonceD: string,
  nonceA: string,
): Promise<boolean> {
  if (key === null) return proof === "-";
  if (!/^[0-9a-f]{64}$/.test(proof)) return false;
  const mac = new Uint8Array(32);
  for (let i = 0; i < 32; i++) {
    mac[i] = parseInt(proof.slice(i * 2, i * 2 + 2), 16);
  }
  return await crypto.subtle.verify(
    "HMAC",
    key,
    mac,
    transcript(role, dialer, acceptor, nonceD, nonceA),
  );
}
