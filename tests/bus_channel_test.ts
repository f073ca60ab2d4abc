/**
 * `BusChannel.encode`: the bytes a channel hands to the kernel for its queued items. They are
 * ready in the call (no promise) unless a frame is too large to seal in the call, so a relay
 * leaves in the turn its record was accepted; either way every frame opens, in order, to the
 * body it was queued as. `BusChannel.nextBatch`, the other way: the frames of a read, opened
 * in the call or by Web Crypto, come out in order, and one that fails to open ends the batch.
 */

import assert from "assert";
import { BusChannel } from "../lib/bus/channel.ts";
import { type BusMessage, formatMessage } from "../lib/bus/codec.ts";
import { FrameDecoder } from "../lib/bus/frames.ts";
import { writeAll } from "../lib/write_all.ts";
import { createCipheriv, createDecipheriv } from "node:crypto";
import {
  directionKey,
  importSecret,
  Opener,
  Sealer,
  type Session,
  session,
  SYNC_CRYPTO_BYTES,
} from "../lib/bus/handshake.ts";

const ND = "000102030405060708090a0b0c0d0e0f";
const NA = "f0e0d0c0b0a090807060504030201000";
const SECRET = "correct horse battery staple";
const dec = new TextDecoder();

const rec = (i: number, pad = 0) =>
  `AT Alford +0.5 client-${i}${
    "x".repeat(pad)
  } +34.068930-118.445127 1700000000.${i}`;

function records(lines: string[], sealer: Sealer | null) {
  let bytes = 0;
  for (const l of lines) bytes += l.length + 1;
  return { body: null, records: lines, bytes, sealer };
}

function control(body: string, sealer: Sealer | null) {
  return { body, records: [], bytes: body.length + 4, sealer };
}

/** The records of a batch's records messages, in order. */
function recordsOf(batch: BusMessage[] | null): string[] | undefined {
  return batch?.flatMap((m) => m.kind === "records" ? m.records : []);
}

/** The frame bodies in `bytes`, in order. */
function frames(bytes: Uint8Array): Uint8Array[] {
  const d = new FrameDecoder(1 << 20);
  const got = d.push(bytes);
  assert.equal(got.error, null);
  return got.frames;
}

Deno.test("a plain channel's frames are encoded in the call, records merged into one frame", () => {
  const out = BusChannel.encode([
    control("PING", null),
    records([rec(1), rec(2)], null),
  ]);
  assert.ok(out instanceof Uint8Array, "no promise for plain frames");
  assert.deepEqual(frames(out).map((f) => dec.decode(f)), [
    "PING",
    formatMessage({ kind: "records", records: [rec(1), rec(2)] }),
  ]);
});

Deno.test("sealed frames are encoded in the call up to SYNC_CRYPTO_BYTES, later above it, and open in order", async () => {
  const keys = (await importSecret(SECRET))!;
  const small = [rec(1), rec(2)];
  // One record whose frame passes the line: its body is over SYNC_CRYPTO_BYTES.
  const large = [rec(3, SYNC_CRYPTO_BYTES)];
  const bodies = [
    formatMessage({ kind: "records", records: small }),
    formatMessage({ kind: "records", records: large }),
    formatMessage({ kind: "records", records: [rec(4)] }),
  ];

  const d = await session(keys, "dialer", "Alford", "Ball", ND, NA);
  const now = BusChannel.encode([records(small, d.sealer)]);
  assert.ok(now instanceof Uint8Array, "small sealed frames: no promise");
  const later = BusChannel.encode([
    records(large, d.sealer),
    control(bodies[2], d.sealer),
  ]);
  assert.ok(
    later instanceof Promise,
    "a frame over the line waits for Web Crypto",
  );
  assert.equal(d.sealer.seq, 3);

  const a = await session(keys, "acceptor", "Alford", "Ball", ND, NA);
  const sealed = [...frames(now), ...frames(await later)];
  assert.equal(sealed.length, 3);
  for (const [i, f] of sealed.entries()) {
    const plain = await a.opener.open(f as Uint8Array<ArrayBuffer>);
    assert.ok(plain !== null, `frame ${i} opens`);
    assert.equal(dec.decode(plain), bodies[i]);
  }
});

Deno.test("sealNow takes no sequence number for a frame it leaves to seal()", async () => {
  const keys = (await importSecret(SECRET))!;
  const d = await session(keys, "dialer", "Alford", "Ball", ND, NA);
  const big = new Uint8Array(SYNC_CRYPTO_BYTES + 1).fill(66);
  assert.equal(d.sealer.sealNow(big), null);
  assert.equal(d.sealer.seq, 0);
  const first = await d.sealer.seal(big);
  const second = d.sealer.sealNow(new Uint8Array(SYNC_CRYPTO_BYTES));
  assert.ok(second !== null);
  const a = await session(keys, "acceptor", "Alford", "Ball", ND, NA);
  assert.deepEqual(await a.opener.open(first), big);
  assert.deepEqual(
    await a.opener.open(second),
    new Uint8Array(SYNC_CRYPTO_BYTES),
  );
});

Deno.test("open answers in the call up to SYNC_CRYPTO_BYTES and through Web Crypto above it", async () => {
  const keys = (await importSecret(SECRET))!;
  const d = await session(keys, "dialer", "Alford", "Ball", ND, NA);
  const small = d.sealer.sealNow(new Uint8Array(SYNC_CRYPTO_BYTES).fill(1))!;
  const large = await d.sealer.seal(
    new Uint8Array(SYNC_CRYPTO_BYTES + 1).fill(2),
  );
  const a = await session(keys, "acceptor", "Alford", "Ball", ND, NA);
  const now = a.opener.open(small);
  assert.ok(now instanceof Uint8Array, "a small frame opens in the call");
  assert.deepEqual(now, new Uint8Array(SYNC_CRYPTO_BYTES).fill(1));
  const later = a.opener.open(large);
  assert.ok(later instanceof Promise, "a large frame waits for Web Crypto");
  assert.deepEqual(await later, new Uint8Array(SYNC_CRYPTO_BYTES + 1).fill(2));
  // A frame that fails to open fails in the call too.
  assert.equal(a.opener.open(small), null);
});

/**
 * Two channels over a loopback connection, both past the handshake: on an open bus, or
 * sealed under `secret`; `sealer` is `a`'s, for frames a test writes to `a.conn` itself.
 */
async function pair(secret?: string): Promise<
  { a: BusChannel; b: BusChannel; sealer: Sealer | null; close(): void }
> {
  const keys = secret === undefined ? null : await importSecret(secret);
  const dialer = keys &&
    await session(keys, "dialer", "Alford", "Ball", ND, NA);
  const acceptor = keys &&
    await session(keys, "acceptor", "Alford", "Ball", ND, NA);
  return {
    ...await pairWith(dialer, acceptor),
    sealer: dialer?.sealer ?? null,
  };
}

/** Two channels over a loopback connection, trusted with the sessions given. */
async function pairWith(
  dialer: Session | null,
  acceptor: Session | null,
): Promise<{ a: BusChannel; b: BusChannel; close(): void }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [dialed, accepted] = await Promise.all([
    Deno.connect({
      hostname: "127.0.0.1",
      port: (listener.addr as Deno.NetAddr).port,
    }),
    listener.accept(),
  ]);
  listener.close();
  const limits = {
    handshakeFrameBytes: 16 * 1024,
    frameBytes: 1 << 20,
    maxOutboxBytes: 1 << 20,
  };
  const a = new BusChannel(dialed, limits);
  const b = new BusChannel(accepted, limits);
  a.trust(dialer);
  b.trust(acceptor);
  return {
    a,
    b,
    close() {
      a.close();
      b.close();
    },
  };
}

Deno.test("a record that finds the link idle leaves alone at once; those queued behind it leave together", async () => {
  const { a, b, close } = await pair();
  try {
    // One turn: the first is written in the call, the next two wait for that write.
    assert.ok(a.sendRecords([rec(1)]));
    assert.ok(a.sendRecords([rec(2)]));
    assert.ok(a.sendRecords([rec(3)]));
    const got: string[][] = [];
    for (let i = 0; i < 10 && got.flat().length < 3; i++) {
      const msg = await b.next(5000);
      assert.ok(msg !== null && msg.kind === "records");
      got.push(msg.records);
    }
    assert.deepEqual(got, [[rec(1)], [rec(2), rec(3)]]);
  } finally {
    close();
  }
});

/** Frames of `bodies` (records each) sealed by `sealer`, in one buffer, to write at once. */
async function sealedFrames(
  sealer: Sealer,
  bodies: string[][],
): Promise<Uint8Array> {
  const encoded = BusChannel.encode(bodies.map((r) => records(r, sealer)));
  return encoded instanceof Uint8Array ? encoded : await encoded;
}

Deno.test("nextBatch hands over a read's sealed frames in order, small ones opened in the call and a large one by Web Crypto", async () => {
  const { a, b, sealer, close } = await pair(SECRET);
  try {
    const sent = [[rec(1)], [rec(2, SYNC_CRYPTO_BYTES)], [rec(3), rec(4)]];
    // One write: one read at the peer, as a rule.
    await writeAll(a.conn, await sealedFrames(sealer!, sent));
    // EOF after the frames: one that went missing ends the loop below with null, not a hang.
    await a.conn.closeWrite();
    const got: string[][] = [];
    for (let i = 0; i < 10 && got.length < sent.length; i++) {
      const batch = await b.nextBatch();
      assert.ok(batch !== null, b.problem ?? "closed");
      for (const msg of batch) {
        assert.equal(msg.kind, "records");
        if (msg.kind === "records") got.push(msg.records);
      }
    }
    assert.deepEqual(got, sent);
    assert.equal(b.problem, null);
  } finally {
    close();
  }
});

Deno.test("nextBatch ends with null when a frame of the read fails to open, the frames before it included", async () => {
  const { a, b, sealer, close } = await pair(SECRET);
  try {
    const encoded = await sealedFrames(sealer!, [[rec(1)], [rec(2)]]);
    // The last byte is the second frame's tag: altered, that frame fails to open.
    encoded[encoded.length - 1] ^= 1;
    await writeAll(a.conn, encoded);
    await a.conn.closeWrite();
    // One write of two small frames: one read. Nothing of it is handed over.
    const handed: unknown[] = [];
    let batch: unknown[] | null = [];
    for (let i = 0; i < 10 && batch !== null; i++) {
      batch = await b.nextBatch();
      if (batch !== null) handed.push(...batch);
    }
    assert.equal(batch, null);
    assert.deepEqual(handed, []);
    assert.equal(b.problem, "a frame failed authentication");
    assert.ok(b.closed);
  } finally {
    close();
  }
});

Deno.test("encode writes into the scratch buffer when the frames fit in it, into a buffer of their own when not", () => {
  const scratch = new Uint8Array(256);
  const small = BusChannel.encode([records([rec(1)], null)], scratch);
  assert.ok(small instanceof Uint8Array);
  assert.equal(small.buffer, scratch.buffer);
  const large = BusChannel.encode([records([rec(2, 300)], null)], scratch);
  assert.ok(large instanceof Uint8Array);
  assert.notEqual(large.buffer, scratch.buffer);
  assert.deepEqual(frames(small).map((f) => dec.decode(f)), [
    formatMessage({ kind: "records", records: [rec(1)] }),
  ]);
  assert.deepEqual(frames(large).map((f) => dec.decode(f)), [
    formatMessage({ kind: "records", records: [rec(2, 300)] }),
  ]);
});

Deno.test("records sent one by one to a peer that reads late arrive whole and in order", async () => {
  // Small writes go out of one buffer the channel keeps, and reads are framed in place:
  // neither may be reused while its bytes are still in use. The peer starts reading only
  // once a write waits on the kernel (loopback buffers full), or after 2 s; records keep
  // coming until then and for 500 more.
  const { a, b, close } = await pair();
  let blocked: () => void = () => {};
  const writeWaits = new Promise<void>((r) => blocked = r);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const sent: string[] = [];
  let waited = 0;
  try {
    const reader = (async () => {
      await Promise.race([
        writeWaits,
        new Promise((r) => timer = setTimeout(r, 2000)),
      ]);
      clearTimeout(timer);
      const got: string[] = [];
      for (let reads = 0; reads < 100_000; reads++) {
        const batch = await b.nextBatch();
        if (batch === null) break;
        for (const msg of batch) {
          if (msg.kind === "records") got.push(...msg.records);
        }
      }
      return got;
    })();
    // Up to 20,000 records of ~4 KB, more than any loopback buffers hold.
    let after = 0;
    for (let i = 0; i < 20_000 && after < 500; i++) {
      // Frames of up to ~8 KB: each fits the channel's own buffer.
      const r = rec(i, (i * 7919) % 8000);
      if (a.outboxBytes > 256 * 1024) {
        waited++;
        blocked();
        await a.drained(64 * 1024);
      }
      assert.ok(a.sendRecords([r]), "queued");
      sent.push(r);
      if (waited > 0) after++;
      if (i % 16 === 0) await new Promise((r) => setTimeout(r, 0));
    }
    await a.drained(0);
    await a.conn.closeWrite();
    const got = await reader;
    assert.ok(waited > 0, "some writes waited on the kernel");
    assert.equal(got.length, sent.length);
    assert.ok(
      got.every((r, i) => r === sent[i]),
      "every record intact, in order",
    );
    assert.equal(b.problem, null);
  } finally {
    clearTimeout(timer);
    close();
  }
});

/** node:crypto's AES-GCM with the ciphers and deciphers it makes counted. */
function countingCrypto() {
  const made = { ciphers: 0, deciphers: 0 };
  const node = {
    createCipheriv: ((...args: Parameters<typeof createCipheriv>) => {
      made.ciphers++;
      return createCipheriv(...args);
    }) as typeof createCipheriv,
    createDecipheriv: ((...args: Parameters<typeof createDecipheriv>) => {
      made.deciphers++;
      return createDecipheriv(...args);
    }) as typeof createDecipheriv,
  };
  return { made, node };
}

Deno.test("a prepared cipher or decipher serves the next frame only, and frames come out as without it", async () => {
  const { made, node } = countingCrypto();
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const sealer = new Sealer(await directionKey(raw, "encrypt", node));
  const opener = new Opener(await directionKey(raw, "decrypt", node));
  const small = (i: number) => new TextEncoder().encode(rec(i));
  const large = new Uint8Array(SYNC_CRYPTO_BYTES + 1).fill(9);

  sealer.prepare();
  sealer.prepare();
  assert.equal(made.ciphers, 1, "prepare makes one cipher");
  const f0 = sealer.sealNow(small(0))!;
  assert.equal(made.ciphers, 1, "frame 0 is sealed with the prepared cipher");
  sealer.prepare();
  // Web Crypto takes frame 1's number: the cipher made for it must not seal frame 2.
  const f1 = await sealer.seal(large);
  const f2 = sealer.sealNow(small(2))!;
  assert.equal(made.ciphers, 3);

  // The same frames as a sealer that never prepares.
  const plain = new Sealer(await directionKey(raw, "encrypt", node));
  assert.deepEqual(plain.sealNow(small(0)), f0);
  assert.deepEqual(await plain.seal(large), f1);
  assert.deepEqual(plain.sealNow(small(2)), f2);

  opener.prepare();
  opener.prepare();
  assert.equal(made.deciphers, 1, "prepare makes one decipher");
  assert.deepEqual(opener.open(f0), small(0));
  assert.equal(made.deciphers, 1, "frame 0 is opened with the prepared one");
  opener.prepare();
  assert.deepEqual(await opener.open(f1), large);
  assert.deepEqual(opener.open(f2), small(2));
  // Prepared for frame 3, it does not open frame 2 again.
  opener.prepare();
  assert.equal(opener.open(f2), null);
});

Deno.test("a channel makes the next frame's cipher and decipher while idle, not when a record comes", async () => {
  const { made, node } = countingCrypto();
  const there = crypto.getRandomValues(new Uint8Array(32));
  const back = crypto.getRandomValues(new Uint8Array(32));
  const dialer: Session = {
    sealer: new Sealer(await directionKey(there, "encrypt", node)),
    opener: new Opener(await directionKey(back, "decrypt", node)),
  };
  const acceptor: Session = {
    sealer: new Sealer(await directionKey(back, "encrypt", node)),
    opener: new Opener(await directionKey(there, "decrypt", node)),
  };
  const { a, b, close } = await pairWith(dialer, acceptor);
  try {
    // b waits for its first read: its decipher for frame 0 is made before the frame comes.
    const first = b.nextBatch();
    assert.equal(made.deciphers, 1);
    assert.ok(a.sendRecords([rec(1)]));
    assert.equal(made.ciphers, 1, "the first frame makes its cipher");
    const got1 = await first;
    assert.deepEqual(recordsOf(got1), [rec(1)]);
    assert.equal(
      made.deciphers,
      1,
      "frame 0 opened with the decipher made before it",
    );
    // a's write is done and a is idle: the cipher for frame 1 is made now.
    for (let i = 0; i < 50 && made.ciphers < 2; i++) {
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(made.ciphers, 2);
    const second = b.nextBatch();
    assert.equal(made.deciphers, 2);
    assert.ok(a.sendRecords([rec(2)]));
    assert.equal(
      made.ciphers,
      2,
      "frame 1 is sealed with the cipher made before it",
    );
    const got2 = await second;
    assert.deepEqual(recordsOf(got2), [rec(2)]);
    assert.equal(
      made.deciphers,
      2,
      "and opened with the decipher made before it",
    );
  } finally {
    close();
  }
});

Deno.test("a channel idle after a frame sealed by Web Crypto lets go of the cipher made for that frame", async () => {
  // The sanitizers see a cipher or decipher never finalized (a runtime resource).
  const { a, b, close } = await pair(SECRET);
  try {
    assert.ok(a.sendRecords([rec(0)]));
    assert.ok((await b.nextBatch()) !== null);
    // a's write is gone: it made the cipher for frame 1, whose number Web Crypto now takes.
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(a.sendRecords([rec(1, SYNC_CRYPTO_BYTES)]));
    const got = await b.nextBatch();
    assert.deepEqual(recordsOf(got), [rec(1, SYNC_CRYPTO_BYTES)]);
    // Idle again: the cipher for frame 2 replaces it.
    await new Promise((r) => setTimeout(r, 20));
  } finally {
    close();
  }
});

Deno.test("a channel closed with a write in flight, or read once closed, makes no cipher after close", async () => {
  const { a, b, close } = await pair(SECRET);
  assert.ok(a.sendRecords([rec(1)]));
  a.close();
  await new Promise((r) => setTimeout(r, 20));
  b.close();
  assert.equal(await b.next(), null);
  assert.equal(await b.nextBatch(), null);
  close();
});

/** How `p` settles within 200 ms: its error's message, "resolved", or "pending". */
async function settled(p: Promise<unknown>): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<string>((r) =>
    timer = setTimeout(() => r("pending"), 200)
  );
  try {
    return await Promise.race([
      p.then(() => "resolved", (e) => String((e as Error).message)),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("a channel is read by one reader at a time", async () => {
  const { a, b, close } = await pair();
  try {
    const first = b.nextBatch();
    // Refused in the call: the promise is already rejected (bounded, so a second reader let
    // in fails the test rather than hanging it).
    assert.match(await settled(b.nextBatch()), /one reader at a time/);
    assert.match(await settled(b.next()), /one reader at a time/);
    assert.ok(a.sendRecords([rec(1)]));
    assert.deepEqual(recordsOf(await first), [rec(1)]);
    // Done: the next reader may come.
    assert.ok(a.sendRecords([rec(2)]));
    const msg = await b.next(5000);
    assert.ok(msg !== null && msg.kind === "records");
    assert.deepEqual(msg.records, [rec(2)]);
  } finally {
    close();
  }
});
