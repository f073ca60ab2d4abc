/**
 * A fake neighbor for tests: speaks the bus format (length-prefixed frames, `codec.ts`
 * messages, sealed after a secure handshake) by hand over real TCP, so tests can check what
 * a node sends to its peers and send it what no real node would.
 *
 * @module
 */

import assert from "assert";
import { bytesToString, stringToBytes } from "../lib/bytes.ts";
import {
  type BusMessage,
  formatMessage,
  parseMessage,
} from "../lib/bus/codec.ts";
import { encodeFrame, FrameDecoder } from "../lib/bus/frames.ts";
import {
  importSecret,
  type Opener,
  prove,
  type Sealer,
  session,
} from "../lib/bus/handshake.ts";

/** A nonce that tests use where its value does not matter. */
export const TEST_NONCE = "00112233445566778899aabbccddeeff";

/** A bus connection played by a test. */
export class FakePeer {
  readonly conn: Deno.TcpConn;
  readonly #done: Promise<void>;
  readonly #decoder = new FrameDecoder(64 * 1024 * 1024);
  #frames: Uint8Array[] = [];
  #eof = false;
  #stop = false;
  #wake: (() => void) | null = null;
  #sealer: Sealer | null = null;
  #opener: Opener | null = null;
  /** Every byte received, as a byte string. */
  received = "";
  /** Every byte sent, as a byte string. */
  sent = "";

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.#done = this.#pump();
  }

  /** Connects to a node's bus port. */
  static async dial(port: number): Promise<FakePeer> {
    return new FakePeer(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async #pump(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (!this.#stop) {
        const n = await this.conn.read(chunk);
        if (n === null) break;
        this.received += bytesToString(chunk.subarray(0, n));
        const got = this.#decoder.push(chunk.subarray(0, n));
        for (const f of got.frames) this.#frames.push(f);
        this.#wake?.();
      }
    } catch {
      /* closed */
    } finally {
      this.#eof = true;
      this.#wake?.();
    }
  }

  /** The next message, or null at EOF. */
  async next(timeoutMs = 5000): Promise<BusMessage | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.#frames.length === 0) {
      if (this.#eof) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
    let body = this.#frames.shift()! as Uint8Array<ArrayBuffer>;
    if (this.#opener !== null) {
      const plain = await this.#opener.open(body);
      assert.ok(plain !== null, "a frame from the node failed to open");
      body = plain;
    }
    const msg = parseMessage(bytesToString(body));
    assert.ok(msg !== null, `not a bus message: ${bytesToString(body)}`);
    return msg;
  }

  /** Sends raw bytes. */
  async sendRaw(bytes: Uint8Array): Promise<void> {
    this.sent += bytesToString(bytes);
    let off = 0;
    while (off < bytes.length) {
      off += await this.conn.write(bytes.subarray(off));
    }
  }

  /** The frame of one message body, sealed if the handshake was secure. */
  async frame(body: string): Promise<Uint8Array> {
    let bytes = stringToBytes(body) as Uint8Array<ArrayBuffer>;
    if (this.#sealer !== null) bytes = await this.#sealer.seal(bytes);
    return encodeFrame(bytes);
  }

  /** Sends one message. */
  async send(msg: BusMessage): Promise<void> {
    await this.sendRaw(await this.frame(formatMessage(msg)));
  }

  /** Sends records in one frame, as given (no checks). */
  async sendRecords(records: string[]): Promise<void> {
    await this.sendRaw(await this.frame(`RECORDS\n${records.join("\n")}`));
  }

  /** Plays the dialer side of the handshake as `as` toward `to`; expects OK. */
  async hello(as: string, to: string, secret?: string): Promise<void> {
    const keys = await importSecret(secret);
    const nonceD = TEST_NONCE;
    await this.send({ kind: "hello", node: as, nonce: nonceD });
    const w = await this.next();
    assert.equal(w?.kind, "welcome", JSON.stringify(w));
    if (w?.kind !== "welcome") return;
    assert.equal(w.node, to);
    assert.equal(
      w.proof,
      await prove(keys, "acceptor", as, to, nonceD, w.nonce),
    );
    await this.send({
      kind: "proof",
      proof: await prove(keys, "dialer", as, to, nonceD, w.nonce),
    });
    assert.deepEqual(await this.next(), { kind: "ok" });
    if (keys !== null) {
      const s = await session(keys, "dialer", as, to, nonceD, w.nonce);
      this.#sealer = s.sealer;
      this.#opener = s.opener;
    }
  }

  /** Plays the acceptor side as `as` for a dialing node; returns the dialer's name. */
  async welcome(as: string, secret?: string): Promise<string> {
    const keys = await importSecret(secret);
    const h = await this.next();
    assert.equal(h?.kind, "hello");
    if (h?.kind !== "hello") return "";
    const nonceA = "ab".repeat(16);
    await this.send({
      kind: "welcome",
      node: as,
      nonce: nonceA,
      proof: await prove(keys, "acceptor", h.node, as, h.nonce, nonceA),
    });
    assert.deepEqual(await this.next(), {
      kind: "proof",
      proof: await prove(keys, "dialer", h.node, as, h.nonce, nonceA),
    });
    await this.send({ kind: "ok" });
    if (keys !== null) {
      const s = await session(keys, "acceptor", h.node, as, h.nonce, nonceA);
      this.#sealer = s.sealer;
      this.#opener = s.opener;
    }
    return h.node;
  }

  /** Stops reading after the read in progress: from then on the node's writes pile up. */
  stopReading(): void {
    this.#stop = true;
  }

  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch { /* closed */ }
    await this.#done;
  }
}
