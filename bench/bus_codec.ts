/**
 * Micro-benchmark behind the bus codec's choice (`lib/bus/codec.ts`): lines versus
 * length-prefixed frames for a batch of records, as a receiving node decodes them, with and
 * without the base64 that lines would need to carry AES-GCM ciphertext.
 *
 * ```sh
 * deno run -A bench/bus_codec.ts      # BENCH_RECORDS=50000 by default
 * ```
 *
 * Prints `RESULT {...}` with MB/s and records/s of each way; the run takes a few seconds.
 *
 * @module
 */

import { bytesToString, stringToBytes } from "../lib/bytes.ts";
import { formatMessage, parseMessage } from "../lib/bus/codec.ts";
import { encodeFrame, FrameDecoder } from "../lib/bus/frames.ts";
import { importSecret, session } from "../lib/bus/handshake.ts";
import { LineFramer } from "../lib/lines.ts";
import { result } from "./common.ts";

const N = Number(Deno.env.get("BENCH_RECORDS") ?? 50_000);
const ROUNDS = 5;
const CHUNK = 64 * 1024;

const records = Array.from(
  { length: N },
  (_, i) =>
    `AT Alford +0.${
      String(i).padStart(9, "0")
    } client-${i}.cs.ucla.edu +34.068930-118.445127 1520023934.${
      String(i).padStart(9, "0")
    }`,
);

/** Splits a stream into the reads a socket would give. */
function chunks(bytes: Uint8Array): Uint8Array[] {
  const out = [];
  for (let i = 0; i < bytes.length; i += CHUNK) {
    out.push(bytes.subarray(i, i + CHUNK));
  }
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Batches of about 256 KiB, as a channel writes them. */
function batches(): string[][] {
  const out: string[][] = [];
  let part: string[] = [];
  let bytes = 0;
  for (const r of records) {
    if (bytes + r.length > 256 * 1024) {
      out.push(part);
      part = [];
      bytes = 0;
    }
    part.push(r);
    bytes += r.length + 1;
  }
  if (part.length > 0) out.push(part);
  return out;
}

const lineStream = stringToBytes(records.join("\n") + "\n");
const frameStream = concat(
  batches().map((b) =>
    encodeFrame(stringToBytes(formatMessage({ kind: "records", records: b })))
  ),
);

function decodeLines(stream: Uint8Array): number {
  const framer = new LineFramer(1024 * 1024);
  let n = 0;
  for (const c of chunks(stream)) n += framer.push(c).lines.length;
  return n;
}

function decodeFrames(stream: Uint8Array): number {
  const d = new FrameDecoder(1024 * 1024);
  let n = 0;
  for (const c of chunks(stream)) {
    for (const f of d.push(c).frames) {
      const m = parseMessage(bytesToString(f));
      if (m?.kind === "records") n += m.records.length;
    }
  }
  return n;
}

/** Lines carrying ciphertext: one base64 line a batch (what lines would need sealed). */
function base64Lines(): Uint8Array {
  return stringToBytes(
    batches().map((b) => btoa(b.join("\n"))).join("\n") + "\n",
  );
}
const b64Stream = base64Lines();

function decodeBase64Lines(stream: Uint8Array): number {
  const framer = new LineFramer(2 * 1024 * 1024);
  let n = 0;
  for (const c of chunks(stream)) {
    for (const l of framer.push(c).lines) n += atob(l).split("\n").length;
  }
  return n;
}

function time(what: string, bytes: number, run: () => number) {
  let best = Infinity;
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = performance.now();
    const n = run();
    best = Math.min(best, performance.now() - t0);
    if (n !== N) throw new Error(`${what}: ${n} of ${N} records`);
  }
  return {
    [`${what} MB/s`]: Math.round(bytes / 1e6 / (best / 1000)),
    [`${what} records/s`]: Math.round(N / (best / 1000)),
  };
}

// Sealing cost per frame (AES-256-GCM through Web Crypto), both framings pay it alike.
const keys = (await importSecret("bench-secret-of-enough-bits-0123456789"))!;
const s = await session(
  keys,
  "dialer",
  "A",
  "B",
  "0".repeat(32),
  "1".repeat(32),
);
const bodies = batches().map((b) =>
  stringToBytes(formatMessage({ kind: "records", records: b })) as Uint8Array<
    ArrayBuffer
  >
);
let sealMs = Infinity;
for (let i = 0; i < ROUNDS; i++) {
  const t0 = performance.now();
  for (const b of bodies) await s.sealer.seal(b);
  sealMs = Math.min(sealMs, performance.now() - t0);
}

result(
  "bus codec (decode a batch of records as a receiving node does)",
  {
    records: N,
    "bytes as lines": lineStream.length,
    "bytes as frames": frameStream.length,
    "bytes as base64 lines": b64Stream.length,
    ...time("lines", lineStream.length, () => decodeLines(lineStream)),
    ...time("frames", frameStream.length, () => decodeFrames(frameStream)),
    ...time(
      "base64 lines",
      b64Stream.length,
      () => decodeBase64Lines(b64Stream),
    ),
    "AES-GCM seal MB/s": Math.round(frameStream.length / 1e6 / (sealMs / 1000)),
  },
);
