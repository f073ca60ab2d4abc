/**
 * The bus handshake and per-message authentication.
 *
 * ```
 * dialer → acceptor   HELLO <dialer> <nonceD>
 * acceptor → dialer   WELCOME <acceptor> <nonceA> <proofA>   (or REFUSED <reason>, close)
 * dialer → acceptor   PROOF <proofD>                         (or REFUSED <reason>, close)
 * acceptor → dialer   OK                                     (or REFUSED <reason>, close)
 * ... then every frame in both directions is sealed (with a secret)
 * ```
 *
 * - Proofs are HMAC-SHA-256 keyed by `HERD_SECRET` over a transcript of the protocol
 *   version, the role, both names and both nonces, so a proof cannot be reflected or
 *   replayed on a new connection (each side contributes a fresh 128-bit nonce). Without a
 *   secret the proofs are `-` and the bus is open.
 * - Session keys, the way Serf's keyring seals its gossip: HKDF-SHA-256 with the secret as
 *   input key material, both nonces as salt, and the direction and both names as info,
 *   gives one AES-256-GCM key per direction of each connection. Every frame after `OK` is
 *   sealed under its direction's key with a 96-bit IV of 4 zero bytes and a 64-bit sequence
 *   number that both sides count, so a frame that is altered, injected, dropped, reordered
 *   or replayed fails to open and the link is dropped (catch-up then repairs what it lost).
 * - The secret never travels and never appears in a log line or a refusal reason.
 *
 * @module
 */

import type { BusMessage } from "./codec.ts";

const encoder = new TextEncoder();

/** Protocol version, bound into every proof and key. */
export const BUS_VERSION = "herd-bus-v1";

/** A side of a connection. */
export type Role = "dialer" | "acceptor";

/** The secret, imported for the two uses it has; null on an open bus. */
export interface BusKeys {
  hmac: CryptoKey;
  hkdf: CryptoKey;
}

/** A fresh random nonce (128 bits, lowercase hex). */
export function nonce(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(16)));
}

/** Imports the herd secret (its UTF-8 bytes), or null without a secret. */
export async function importSecret(
  secret: string | undefined,
): Promise<BusKeys | null> {
  if (!secret) return null;
  const raw = encoder.encode(secret);
  const hmac = await crypto.subtle.importKey(
    "raw",
    raw,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  const hkdf = await crypto.subtle.importKey("raw", raw, "HKDF", false, [
    "deriveBits",
  ]);
  return { hmac, hkdf };
}

/** What a side proves: the version, its role, both names, both nonces. */
export function transcript(
  role: Role,
  dialer: string,
  acceptor: string,
  nonceD: string,
  nonceA: string,
): Uint8Array<ArrayBuffer> {
  return encoder.encode(
    `${BUS_VERSION}|${role}|${dialer}|${acceptor}|${nonceD}|${nonceA}`,
  );
}

/** The proof for `role`, lowercase hex; `-` without a secret. */
export async function prove(
  keys: BusKeys | null,
  role: Role,
  dialer: string,
  acceptor: string,
  nonceD: string,
  nonceA: string,
): Promise<string> {
  if (keys === null) return "-";
  const mac = await crypto.subtle.sign(
    "HMAC",
    keys.hmac,
    transcript(role, dialer, acceptor, nonceD, nonceA),
  );
  return toHex(new Uint8Array(mac));
}

/** Checks a proof (Web Crypto verify, constant time); without a secret only `-` passes. */
export async function verify(
  keys: BusKeys | null,
  proof: string,
  role: Role,
  dialer: string,
  acceptor: string,
  nonceD: string,
  nonceA: string,
): Promise<boolean> {
  if (keys === null) return proof === "-";
  if (!/^[0-9a-f]{64}$/.test(proof)) return false;
  return await crypto.subtle.verify(
    "HMAC",
    keys.hmac,
    fromHex(proof),
    transcript(role, dialer, acceptor, nonceD, nonceA),
  );
}

/** Why a proof did not verify, without saying anything about the secret itself. */
export function proofProblem(keys: BusKeys | null, proof: string): string {
  if (keys === null) return "peer uses a secret and this node has none";
  if (proof === "-") return "peer has no secret and this node has one";
  return "wrong secret";
}

/** The HKDF `info` of the key for frames sent by `from`. */
export function keyInfo(from: Role, dialer: string, acceptor: string): string {
  return `${BUS_VERSION} ${from} ${dialer} ${acceptor}`;
}

/** The 256-bit key for the frames `from` sends on the connection with these nonces. */
export async function directionKeyBits(
  keys: BusKeys,
  from: Role,
  dialer: string,
  acceptor: string,
  nonceD: string,
  nonceA: string,
): Promise<Uint8Array<ArrayBuffer>> {
  const salt = new Uint8Array(32);
  salt.set(fromHex(nonceD), 0);
  salt.set(fromHex(nonceA), 16);
  const bits = await crypto.subtle.deriveBits(
    {
      name: "HKDF",
      hash: "SHA-256",
      salt,
      info: encoder.encode(keyInfo(from, dialer, acceptor)),
    },
    keys.hkdf,
    256,
  );
  return new Uint8Array(bits);
}

/** Both directions of one connection, from the point of view of `role`. */
export interface Session {
  sealer: Sealer;
  opener: Opener;
}

/** The sealer (frames `role` sends) and opener (frames it receives) of one connection. */
export async function session(
  keys: BusKeys,
  role: Role,
  dialer: string,
  acceptor: string,
  nonceD: string,
  nonceA: string,
): Promise<Session> {
  const other: Role = role === "dialer" ? "acceptor" : "dialer";
  const [mine, theirs] = await Promise.all([
    directionKeyBits(keys, role, dialer, acceptor, nonceD, nonceA),
    directionKeyBits(keys, other, dialer, acceptor, nonceD, nonceA),
  ]);
  return {
    sealer: new Sealer(await directionKey(mine, "encrypt")),
    opener: new Opener(await directionKey(theirs, "decrypt")),
  };
}

/**
 * The IV of frame number `seq`: 4 zero bytes, then `seq` as 64 bits big-endian. Written
 * into `iv` when given (the sealer and opener reuse one buffer), else into a new one.
 */
export function ivOf(
  seq: number,
  iv: Uint8Array<ArrayBuffer> = new Uint8Array(12),
): Uint8Array<ArrayBuffer> {
  iv[0] =
    iv[1] =
    iv[2] =
    iv[3] =
      0;
  const hi = Math.floor(seq / 2 ** 32);
  const lo = seq >>> 0;
  iv[4] = hi >>> 24;
  iv[5] = (hi >>> 16) & 0xff;
  iv[6] = (hi >>> 8) & 0xff;
  iv[7] = hi & 0xff;
  iv[8] = lo >>> 24;
  iv[9] = (lo >>> 16) & 0xff;
  iv[10] = (lo >>> 8) & 0xff;
  iv[11] = lo & 0xff;
  return iv;
}

const AAD = encoder.encode(BUS_VERSION);
const TAG_BYTES = 16;

/**
 * Frames up to this size are sealed and opened with node:crypto's AES-256-GCM, in the call;
 * larger ones with Web Crypto, on its thread pool. Measured on a 2-core machine: for a
 * 90-byte frame (one record at idle) node:crypto takes 7.5 µs of CPU where Web Crypto takes
 * 40 µs and a thread hop that added up to 0.4 ms at p99 to every hop of a record; for a
 * 64 KiB frame (a flood's batch) Web Crypto is faster (420 against 557 µs) and leaves the
 * event loop free meanwhile. Both give the same bytes: one cipher, key, IV and AAD.
 */
export const SYNC_CRYPTO_BYTES = 16 * 1024;

/** node:crypto's AES-GCM, as the sealer and opener use it. */
export type NodeCrypto = Pick<
  typeof import("node:crypto"),
  "createCipheriv" | "createDecipheriv"
>;

type Cipher = ReturnType<typeof aesGcmCipher>;
type Decipher = ReturnType<typeof aesGcmDecipher>;

function aesGcmCipher(key: DirectionKey, iv: Uint8Array) {
  const c = key.node.createCipheriv("aes-256-gcm", key.raw, iv);
  c.setAAD(AAD);
  return c;
}

function aesGcmDecipher(key: DirectionKey, iv: Uint8Array) {
  const d = key.node.createDecipheriv("aes-256-gcm", key.raw, iv);
  d.setAAD(AAD);
  return d;
}

/**
 * Ends a cipher or decipher made ahead and not used: each holds a runtime resource until
 * `final` (which a decipher without its tag fails, releasing it all the same).
 */
function finalize(c: Cipher | Decipher): void {
  try {
    c.final();
  } catch { /* released */ }
}

/**
 * node:crypto's cipher (or decipher) for one frame number, made ahead by `prepare`, off a
 * record's path: at idle, where every step of a hop runs cold, a one-record frame's seal took
 * 70 µs and its open 73 µs, and of a cipher's steps timed one by one `createCipheriv` alone
 * took 49 µs (a relay on a closed bus opens a frame and seals one; docs/benchmarks.md, round
 * nine). What is made ahead serves its own frame number only: Web Crypto may take that number
 * for a large frame meanwhile, and the next frame then makes its own.
 */
class MadeAhead<T extends Cipher | Decipher> {
  readonly #make: (seq: number) => T;
  #seq = -1;
  #made: T | null = null;

  constructor(make: (seq: number) => T) {
    this.#make = make;
  }

  /** Makes the object for frame `seq` now, if it is not made yet. Never throws. */
  prepare(seq: number): void {
    if (this.#made !== null && this.#seq === seq) return;
    this.release();
    try {
      this.#made = this.#make(seq);
      this.#seq = seq;
    } catch { /* made when the frame comes */ }
  }

  /** The object for frame `seq`: the one made ahead if it is for `seq`, else a new one. */
  take(seq: number): T {
    const made = this.#made;
    this.#made = null;
    if (made !== null && this.#seq === seq) return made;
    if (made !== null) finalize(made);
    return this.#make(seq);
  }

  /** Ends the object made ahead, if any. */
  release(): void {
    if (this.#made !== null) finalize(this.#made);
    this.#made = null;
  }
}

/** One direction's key, as node:crypto and as Web Crypto take it. */
export interface DirectionKey {
  raw: Uint8Array;
  web: CryptoKey;
  node: NodeCrypto;
}

/**
 * node:crypto, imported when the first sealed session starts, not at start-up: importing it
 * takes ~45 ms, and a node must listen within 0.3 s of its start (an open bus never needs it).
 */
let nodeCrypto: Promise<NodeCrypto> | null = null;

/**
 * The key of one direction from its bits. `node` stands in for node:crypto (tests count the
 * ciphers it makes).
 */
export async function directionKey(
  raw: Uint8Array<ArrayBuffer>,
  use: "encrypt" | "decrypt",
  node?: NodeCrypto,
): Promise<DirectionKey> {
  if (node === undefined) nodeCrypto ??= import("node:crypto");
  return {
    raw,
    web: await crypto.subtle.importKey("raw", raw, "AES-GCM", false, [use]),
    node: node ?? await nodeCrypto!,
  };
}

/**
 * Seals the frames of one direction in order (AES-256-GCM, 16-byte tag). `prepare` makes the
 * next frame's cipher ahead (`MadeAhead`).
 */
export class Sealer {
  readonly #key: DirectionKey;
  readonly #iv = new Uint8Array(12);
  #seq = 0;
  readonly #ahead: MadeAhead<Cipher>;

  constructor(key: DirectionKey) {
    this.#key = key;
    this.#ahead = new MadeAhead((seq) =>
      aesGcmCipher(key, ivOf(seq, this.#iv))
    );
  }

  /** Frames sealed so far. */
  get seq(): number {
    return this.#seq;
  }

  /**
   * The ciphertext and tag of the next frame. Callers must seal frames in the order they
   * send them (the sequence number is taken at the call).
   */
  seal(plain: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
    const now = this.sealNow(plain);
    if (now !== null) return Promise.resolve(now);
    return crypto.subtle.encrypt(
      { name: "AES-GCM", iv: ivOf(this.#seq++), additionalData: AAD },
      this.#key.web,
      plain,
    ).then((sealed) => new Uint8Array(sealed));
  }

  /**
   * `seal`, in the call, for a frame of at most `SYNC_CRYPTO_BYTES`; null (taking no
   * sequence number) for a larger one, which `seal` hands to Web Crypto. A channel seals its
   * relays this way so that they reach the kernel in the turn they were queued.
   */
  sealNow(plain: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> | null {
    if (plain.length > SYNC_CRYPTO_BYTES) return null;
    const c = this.#ahead.take(this.#seq++);
    const head = c.update(plain);
    const tail = c.final();
    const out = new Uint8Array(head.length + tail.length + TAG_BYTES);
    out.set(head, 0);
    out.set(tail, head.length);
    out.set(c.getAuthTag(), head.length + tail.length);
    return out;
  }

  /** Makes the cipher for the next frame now, if it is not made yet. Never throws. */
  prepare(): void {
    this.#ahead.prepare(this.#seq);
  }

  /** Ends the cipher made ahead, if any (the channel is closing). */
  release(): void {
    this.#ahead.release();
  }
}

/** Opens the frames of one direction, each exactly once and in order. */
export class Opener {
  readonly #key: DirectionKey;
  readonly #iv = new Uint8Array(12);
  #seq = 0;
  readonly #ahead: MadeAhead<Decipher>;

  constructor(key: DirectionKey) {
    this.#key = key;
    this.#ahead = new MadeAhead((seq) =>
      aesGcmDecipher(key, ivOf(seq, this.#iv))
    );
  }

  /**
   * The plaintext of the next frame, or null when it is not the next frame sealed under
   * this key (altered, injected, dropped, reordered or replayed): the link is then unusable.
   * In the call for a frame of at most `SYNC_CRYPTO_BYTES` (as `Sealer.sealNow`), so that a
   * relay's read reaches the node without a promise of its own for the open; a larger one
   * goes to Web Crypto.
   */
  open(
    cipher: Uint8Array<ArrayBuffer>,
  ):
    | Uint8Array<ArrayBuffer>
    | null
    | Promise<Uint8Array<ArrayBuffer> | null> {
    const seq = this.#seq++;
    // A frame not opened here takes its number all the same: what was made for it is
    // ended by the next frame's `take` (or the channel's close).
    if (cipher.length < TAG_BYTES) return null;
    if (cipher.length - TAG_BYTES > SYNC_CRYPTO_BYTES) {
      return crypto.subtle.decrypt(
        { name: "AES-GCM", iv: ivOf(seq), additionalData: AAD },
        this.#key.web,
        cipher,
      ).then((plain) => new Uint8Array(plain), () => null);
    }
    const end = cipher.length - TAG_BYTES;
    let d: Decipher | null = null;
    try {
      d = this.#ahead.take(seq);
      d.setAuthTag(cipher.subarray(end));
      const head = d.update(cipher.subarray(0, end));
      const tail = d.final();
      d = null;
      const out = new Uint8Array(head.length + tail.length);
      out.set(head, 0);
      out.set(tail, head.length);
      return out;
    } catch {
      // A tag that does not match fails `final`, which releases the decipher; anything
      // failing before it would leave it held.
      if (d !== null) finalize(d);
      return null;
    }
  }

  /**
   * Makes the decipher for the next frame now, if it is not made yet (`MadeAhead`). Never
   * throws. A channel calls it before it waits for its next read.
   */
  prepare(): void {
    this.#ahead.prepare(this.#seq);
  }

  /** Ends the decipher made ahead, if any (the channel is closing). */
  release(): void {
    this.#ahead.release();
  }
}

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Bytes of valid lowercase hex (checked by the caller). */
export function fromHex(hex: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  }
  return out;
}

/** What the handshake needs of a connection (a `BusChannel`). */
export interface HandshakeWire {
  send(msg: BusMessage): boolean;
  /** The next message, null at EOF or on a bad frame; throws when `timeoutMs` passes. */
  next(timeoutMs: number): Promise<BusMessage | null>;
  drained(): Promise<void>;
  trust(session: Session | null): void;
  readonly problem: string | null;
}

/** How a handshake ended. */
export type HandshakeResult =
  | { ok: true; peer: string; authenticated: boolean }
  | {
    ok: false;
    /** `refused`: a real refusal, worth a warning; `unanswered`: a peer that went quiet. */
    kind: "refused" | "unanswered";
    peer: string;
    reason: string;
  };

/** The next message before `deadline`, or null on EOF, a bad frame or the deadline. */
async function nextBefore(
  wire: HandshakeWire,
  deadline: number,
): Promise<BusMessage | null | "timeout"> {
  try {
    return await wire.next(Math.max(1, deadline - Date.now()));
  } catch {
    return "timeout";
  }
}

/** Tells the other side why, waits for it to leave, and reports the refusal. */
async function refuse(
  wire: HandshakeWire,
  peer: string,
  reason: string,
  tell = true,
): Promise<HandshakeResult> {
  reason = reason.replace(/[^\x20-\x7e]/g, "?").slice(0, 200).trim() ||
    "refused";
  if (tell) {
    wire.send({ kind: "refused", reason });
    await wire.drained();
  }
  return { ok: false, kind: "refused", peer, reason };
}

/** The dialer's side: introduce ourselves to `peer` and prove we hold the secret. */
export async function dialerHandshake(
  wire: HandshakeWire,
  keys: BusKeys | null,
  self: string,
  peer: string,
  timeoutMs: number,
): Promise<HandshakeResult> {
  const deadline = Date.now() + timeoutMs;
  const nonceD = nonce();
  wire.send({ kind: "hello", node: self, nonce: nonceD });
  const welcome = await nextBefore(wire, deadline);
  if (welcome === "timeout") {
    return {
      ok: false,
      kind: "unanswered",
      peer,
      reason: "no answer to HELLO",
    };
  }
  if (welcome === null) {
    if (wire.problem !== null) {
      return refuse(wire, peer, "not a herd node", false);
    }
    return {
      ok: false,
      kind: "unanswered",
      peer,
      reason: "closed during the handshake",
    };
  }
  if (welcome.kind === "refused") {
    return refuse(wire, peer, welcome.reason, false);
  }
  if (welcome.kind !== "welcome") {
    return refuse(wire, peer, "not a herd node", false);
  }
  if (welcome.node !== peer) {
    wire.send({ kind: "refused", reason: `expected ${peer}` });
    await wire.drained();
    return refuse(wire, peer, "answered under another name", false);
  }
  const nonceA = welcome.nonce;
  if (
    !await verify(keys, welcome.proof, "acceptor", self, peer, nonceD, nonceA)
  ) {
    return refuse(wire, peer, proofProblem(keys, welcome.proof));
  }
  wire.send({
    kind: "proof",
    proof: await prove(keys, "dialer", self, peer, nonceD, nonceA),
  });
  const ok = await nextBefore(wire, deadline);
  if (ok === null || ok === "timeout" || ok.kind !== "ok") {
    const reason = ok !== null && ok !== "timeout" && ok.kind === "refused"
      ? ok.reason
      : "no OK";
    return refuse(wire, peer, reason, false);
  }
  wire.trust(
    keys === null
      ? null
      : await session(keys, "dialer", self, peer, nonceD, nonceA),
  );
  return { ok: true, peer, authenticated: keys !== null };
}

/** The acceptor's side: `isNeighbor` says who may connect. */
export async function acceptorHandshake(
  wire: HandshakeWire,
  keys: BusKeys | null,
  self: string,
  isNeighbor: (name: string) => boolean,
  timeoutMs: number,
): Promise<HandshakeResult> {
  const deadline = Date.now() + timeoutMs;
  const hello = await nextBefore(wire, deadline);
  if (hello === null || hello === "timeout" || hello.kind !== "hello") {
    const reason = hello === "timeout"
      ? "no HELLO in time"
      : wire.problem ?? "expected HELLO";
    if (hello === null || hello === "timeout") {
      return { ok: false, kind: "unanswered", peer: "", reason };
    }
    return refuse(wire, "", "expected HELLO");
  }
  const peer = hello.node;
  if (!isNeighbor(peer)) {
    return refuse(wire, peer, `${self} does not list ${peer} as a neighbor`);
  }
  const nonceD = hello.nonce;
  const nonceA = nonce();
  wire.send({
    kind: "welcome",
    node: self,
    nonce: nonceA,
    proof: await prove(keys, "acceptor", peer, self, nonceD, nonceA),
  });
  const proof = await nextBefore(wire, deadline);
  if (proof === null || proof === "timeout") {
    return refuse(wire, peer, "no proof");
  }
  if (proof.kind === "refused") {
    return refuse(wire, peer, `peer refused us: ${proof.reason}`);
  }
  if (proof.kind !== "proof") return refuse(wire, peer, "malformed proof");
  if (!await verify(keys, proof.proof, "dialer", peer, self, nonceD, nonceA)) {
    return refuse(wire, peer, proofProblem(keys, proof.proof));
  }
  wire.send({ kind: "ok" });
  wire.trust(
    keys === null
      ? null
      : await session(keys, "acceptor", peer, self, nonceD, nonceA),
  );
  return { ok: true, peer, authenticated: keys !== null };
}
