/**
 * Specification of the bus crypto (`lib/bus/handshake.ts`): known-answer vectors for the
 * HMAC proofs and the HKDF session keys (pinned, and recomputed with `node:crypto` as an
 * independent implementation), and AES-GCM frames that open once, in order, unaltered.
 */

import assert from "assert";
import { Buffer } from "node:buffer";
import { createCipheriv, createHmac, hkdfSync } from "node:crypto";
import {
  BUS_VERSION,
  directionKeyBits,
  importSecret,
  ivOf,
  keyInfo,
  prove,
  session,
  SYNC_CRYPTO_BYTES,
  toHex,
  transcript,
  verify,
} from "../lib/bus/handshake.ts";

const SECRET = "correct horse battery staple";
const ND = "000102030405060708090a0b0c0d0e0f";
const NA = "f0e0d0c0b0a090807060504030201000";

Deno.test("handshake KAT: proofs are HMAC-SHA-256 of the versioned transcript, one per role", async () => {
  const keys = await importSecret(SECRET);
  const d = await prove(keys, "dialer", "Alford", "Ball", ND, NA);
  const a = await prove(keys, "acceptor", "Alford", "Ball", ND, NA);
  assert.equal(
    d,
    "840f6c211b3b98d84a4de2a3fbf94d0e37cc4232496f401c4f694fa9e212f0dc",
  );
  assert.equal(
    a,
    "ea9df7cf6da2d44a9e4ff0ac9ae97b36fe5589d1035c8affe534b39c7a0a71cb",
  );
  assert.equal(
    new TextDecoder().decode(transcript("dialer", "Alford", "Ball", ND, NA)),
    `herd-bus-v1|dialer|Alford|Ball|${ND}|${NA}`,
  );
  for (const role of ["dialer", "acceptor"] as const) {
    const mac = createHmac("sha256", SECRET).update(
      `herd-bus-v1|${role}|Alford|Ball|${ND}|${NA}`,
    ).digest("hex");
    assert.equal(await prove(keys, role, "Alford", "Ball", ND, NA), mac);
  }
  assert.ok(await verify(keys, d, "dialer", "Alford", "Ball", ND, NA));
  // Reflected (the other role), replayed on another nonce, or without a secret: refused.
  assert.ok(!await verify(keys, d, "acceptor", "Alford", "Ball", ND, NA));
  assert.ok(!await verify(keys, d, "dialer", "Alford", "Ball", NA, ND));
  assert.ok(!await verify(keys, "-", "dialer", "Alford", "Ball", ND, NA));
  assert.ok(await verify(null, "-", "dialer", "Alford", "Ball", ND, NA));
  assert.ok(!await verify(null, d, "dialer", "Alford", "Ball", ND, NA));
  assert.equal(await prove(null, "dialer", "Alford", "Ball", ND, NA), "-");
});

Deno.test("handshake KAT: session keys are HKDF-SHA-256(secret, nonceD || nonceA, direction and names)", async () => {
  const keys = (await importSecret(SECRET))!;
  const dialer = toHex(
    await directionKeyBits(keys, "dialer", "Alford", "Ball", ND, NA),
  );
  const acceptor = toHex(
    await directionKeyBits(keys, "acceptor", "Alford", "Ball", ND, NA),
  );
  assert.equal(
    dialer,
    "9ee08296b5288e1928710b58a16b4392c8706ab1618224300d47bf6396de6298",
  );
  assert.equal(
    acceptor,
    "b7084cc01ce11069f4793fb762892b97c4d1574f93308defd308c3200d9152dd",
  );
  for (const [from, got] of [["dialer", dialer], ["acceptor", acceptor]]) {
    const want = Buffer.from(
      hkdfSync(
        "sha256",
        SECRET,
        Buffer.from(ND + NA, "hex"),
        keyInfo(from as "dialer", "Alford", "Ball"),
        32,
      ),
    ).toString("hex");
    assert.equal(got, want);
  }
  // Another connection (other nonces) has other keys.
  const other = toHex(
    await directionKeyBits(keys, "dialer", "Alford", "Ball", NA, ND),
  );
  assert.notEqual(other, dialer);
});

Deno.test("sealed frames: opened once each, in order; altered, reordered, replayed, dropped or cross-direction frames fail", async () => {
  const keys = (await importSecret(SECRET))!;
  const d = await session(keys, "dialer", "Alford", "Ball", ND, NA);
  const a = await session(keys, "acceptor", "Alford", "Ball", ND, NA);
  const enc = (s: string) => new TextEncoder().encode(s);
  const frames = [];
  for (const m of ["one", "two", "three"]) {
    frames.push(await d.sealer.seal(enc(m)));
  }
  // A ciphertext hides its text and carries a 16-byte tag.
  assert.equal(frames[0].length, 3 + 16);
  assert.ok(!new TextDecoder().decode(frames[0]).includes("one"));
  const fresh = () => session(keys, "acceptor", "Alford", "Ball", ND, NA);
  // In order: all open.
  for (const [i, m] of ["one", "two", "three"].entries()) {
    assert.equal(
      new TextDecoder().decode((await a.opener.open(frames[i]))!),
      m,
    );
  }
  // Replayed: the next expected number is 3, not 0.
  assert.equal(await a.opener.open(frames[0]), null);
  // Reordered or dropped: frame 1 where frame 0 is expected.
  assert.equal(await (await fresh()).opener.open(frames[1]), null);
  // Altered: one bit flipped anywhere.
  for (const at of [0, 2, frames[0].length - 1]) {
    const bad = frames[0].slice();
    bad[at] ^= 1;
    assert.equal(await (await fresh()).opener.open(bad), null);
  }
  // Cross-direction: the dialer cannot open its own frames (each direction has its key).
  assert.equal(await d.opener.open(frames[0]), null);
  // Another secret: nothing opens.
  const mallory = (await importSecret("another secret of enough bits"))!;
  const m = await session(mallory, "acceptor", "Alford", "Ball", ND, NA);
  assert.equal(await m.opener.open(frames[0]), null);
});

Deno.test("ivOf: 4 zero bytes then the sequence number as 64 bits big-endian", () => {
  assert.deepEqual([...ivOf(0)], Array(12).fill(0));
  assert.deepEqual([...ivOf(1)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  assert.deepEqual(
    [...ivOf(2 ** 32 + 2)],
    [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2],
  );
});

Deno.test("sealed frames, small and large, are AES-256-GCM as Web Crypto and node:crypto compute it: key from HKDF, IV from the sequence number, the bus version as AAD", async () => {
  const keys = (await importSecret(SECRET))!;
  const d = await session(keys, "dialer", "Alford", "Ball", ND, NA);
  const a = await session(keys, "acceptor", "Alford", "Ball", ND, NA);
  /** An acceptor whose next frame is number `seq`. */
  const fresh = async (seq: number) => {
    const s = await session(keys, "acceptor", "Alford", "Ball", ND, NA);
    for (let i = 0; i < seq; i++) await s.opener.open(new Uint8Array(0));
    return s;
  };
  const bits = await directionKeyBits(keys, "dialer", "Alford", "Ball", ND, NA);
  const key = await crypto.subtle.importKey("raw", bits, "AES-GCM", false, [
    "encrypt",
    "decrypt",
  ]);
  const params = (seq: number) => ({
    name: "AES-GCM",
    iv: ivOf(seq),
    additionalData: new TextEncoder().encode(BUS_VERSION),
  });
  // Small frames take node:crypto, larger ones Web Crypto (`SYNC_CRYPTO_BYTES`): sizes on
  // both sides of the line, in one sequence, so both paths count the same frame numbers.
  const record = "R AT Alford +0.5 kiwi +1+1 5\n";
  const sizes = [
    record.length,
    SYNC_CRYPTO_BYTES,
    SYNC_CRYPTO_BYTES + 1,
    70_000,
    record.length,
  ];
  for (const [seq, size] of sizes.entries()) {
    const plain = new TextEncoder().encode(
      record.repeat(Math.ceil(size / record.length)).slice(0, size),
    );
    // Ours, opened by Web Crypto ...
    const ours = await d.sealer.seal(plain);
    const opened = new Uint8Array(
      await crypto.subtle.decrypt(params(seq), key, ours),
    );
    assert.deepEqual(opened, plain);
    // ... the same bytes as node:crypto's ...
    const c = createCipheriv("aes-256-gcm", bits, ivOf(seq));
    c.setAAD(new TextEncoder().encode(BUS_VERSION));
    const node = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
    assert.deepEqual(ours, new Uint8Array(node));
    // ... and Web Crypto's, opened by ours; altered, it does not open.
    const theirs = new Uint8Array(
      await crypto.subtle.encrypt(params(seq), key, plain),
    );
    const bad = theirs.slice();
    bad[size >> 1] ^= 1;
    assert.equal(await (await fresh(seq)).opener.open(bad), null);
    assert.deepEqual(await a.opener.open(theirs), plain);
  }
  // A frame shorter than its tag never opens.
  assert.equal(await a.opener.open(new Uint8Array(15)), null);
  // Sealed without waiting, a large frame (Web Crypto, resolved later) then a small one
  // (node:crypto, at once): each keeps the number it was sealed under, and they open in
  // that order with those numbers, and only so.
  const d2 = await session(keys, "dialer", "Alford", "Ball", ND, NA);
  const big = new Uint8Array(SYNC_CRYPTO_BYTES + 100).fill(65);
  const small = new TextEncoder().encode(record);
  const [sealedBig, sealedSmall] = await Promise.all([
    d2.sealer.seal(big),
    d2.sealer.seal(small),
  ]);
  const a2 = await fresh(0);
  assert.equal(await a2.opener.open(sealedSmall), null);
  const a3 = await fresh(0);
  assert.deepEqual(await a3.opener.open(sealedBig), big);
  assert.deepEqual(await a3.opener.open(sealedSmall), small);
  // Which implementation ran: Web Crypto only for the frame over SYNC_CRYPTO_BYTES.
  const subtle = crypto.subtle;
  const encrypt = subtle.encrypt;
  let webCalls = 0;
  subtle.encrypt = (...args: Parameters<SubtleCrypto["encrypt"]>) => {
    webCalls++;
    return encrypt.apply(subtle, args);
  };
  try {
    await d2.sealer.seal(new Uint8Array(SYNC_CRYPTO_BYTES));
    assert.equal(webCalls, 0);
    await d2.sealer.seal(new Uint8Array(SYNC_CRYPTO_BYTES + 1));
    assert.equal(webCalls, 1);
  } finally {
    subtle.encrypt = encrypt;
  }
});
