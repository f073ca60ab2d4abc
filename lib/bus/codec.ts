/**
 * The herd bus format, pure: every message two nodes exchange, as a tagged union, with
 * `parseMessage` and `formatMessage`. A message is the body of one length-prefixed frame
 * (see `frames.ts`), written as a byte string (one char per byte): a keyword, then fields
 * separated by single spaces; a batch of records is `RECORDS` then one AT line per `\n`.
 *
 * ```
 * HELLO <node> <nonce>                 dialer → acceptor: who I am, my fresh nonce
 * WELCOME <node> <nonce> <proof>       acceptor → dialer: its nonce, its proof (or `-`)
 * PROOF <proof>                        dialer → acceptor: the dialer's proof (or `-`)
 * OK                                   acceptor → dialer: authenticated
 * REFUSED <reason>                     either side, then close
 * RECORDS\n<AT line>\n<AT line>...     records, many a frame
 * SUM <root>                           catch-up: the dialer's digest root
 * SAME | BUCKETS <base64>              the acceptor's answer: equal, or its bucket digests
 * DIFF <b,b,...>                       dialer: the buckets that differ where it holds records
 * HAVE <client> <time> <hash> ...      acceptor: what it holds in them (many frames)
 * HAVE-END
 * SYNCED <count>                       dialer: catch-up done, how many records it sent
 * ```
 *
 * Parsing is strict: anything `formatMessage` could not have produced is refused (null),
 * every list has a bound, and every field has the bound a client line gives it. The record
 * lines themselves are only checked for shape here (`AT `, no line break);
 * `record_check.ts` checks their fields as strictly as a client line, one by one, so that
 * one bad record is refused and counted without refusing its batch.
 *
 * Why text bodies in binary frames: measured by `bench/bus_codec.ts` (see `docs/bus.md`),
 * length-prefixed frames parse a batch of records several times faster than scanning a
 * byte stream for line ends, and they carry AES-GCM ciphertext as it is, where lines would
 * need base64 (a third more bytes and an encoding pass). Inside a frame the body stays
 * readable text, so a record travels in the bytes the client gave it.
 *
 * @example
 * ```ts
 * const body = formatMessage({ kind: "sum", root: "0123456789abcdef" });
 * parseMessage(body); // { kind: "sum", root: "0123456789abcdef" }
 * ```
 * @module
 */

import { isTimeText } from "../clock.ts";
import { BUCKETS } from "../digest.ts";
import { isClientId } from "../record.ts";

/** Bounds of the bus format; a peer can make a node hold no more than these. */
export const busLimits = {
  /** The longest client line (an IAMAT) a node accepts: a record's fields came from one. */
  clientLineBytes: 16 * 1024,
  /** Records in one RECORDS frame. */
  recordsPerFrame: 4096,
  /** Entries in one HAVE frame. */
  haveEntries: 4096,
  /** Length of a REFUSED reason. */
  reasonBytes: 200,
  /** Largest SYNCED count. */
  maxCount: 0xffff_ffff,
} as const;

/** One entry of a HAVE list: a client, its record's time, and the record's hash. */
export interface HaveEntry {
  client: string;
  time: string;
  hash: string;
}

/** Every message of the bus. */
export type BusMessage =
  | { kind: "hello"; node: string; nonce: string }
  | { kind: "welcome"; node: string; nonce: string; proof: string }
  | { kind: "proof"; proof: string }
  | { kind: "ok" }
  | { kind: "refused"; reason: string }
  | { kind: "records"; records: string[] }
  | { kind: "sum"; root: string }
  | { kind: "same" }
  | { kind: "buckets"; digest: string }
  | { kind: "diff"; buckets: number[] }
  | { kind: "have"; entries: HaveEntry[] }
  | { kind: "have-end" }
  | { kind: "synced"; count: number };

/** A node name as the topology allows it. */
export const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** A handshake nonce: 128 bits, lowercase hex. */
export const NONCE = /^[0-9a-f]{32}$/;
/** A proof: HMAC-SHA-256 as lowercase hex, or `-` on a bus without a secret. */
export const PROOF = /^(?:-|[0-9a-f]{64})$/;
const ROOT = /^[0-9a-f]{16}$/;
const HASH = /^[0-9a-f]{8}$/;
const REASON = /^[\x20-\x7e]+$/;
const COUNT = /^(?:0|[1-9]\d{0,9})$/;
const BUCKET = /^(?:0|[1-9]\d{0,3})$/;
/** Bucket digests as `Digest.encode()` writes them: 8 bytes a bucket, base64. */
const DIGEST_CHARS = Math.ceil((BUCKETS * 8) / 3) * 4;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** The message in `body` (a byte string), or null when it is not one `formatMessage` makes. */
export function parseMessage(body: string): BusMessage | null {
  if (body.startsWith("RECORDS\n")) return parseRecords(body);
  const f = body.split(" ");
  switch (f[0]) {
    case "HELLO":
      return f.length === 3 && NODE_NAME.test(f[1]) && NONCE.test(f[2])
        ? { kind: "hello", node: f[1], nonce: f[2] }
        : null;
    case "WELCOME":
      return f.length === 4 && NODE_NAME.test(f[1]) && NONCE.test(f[2]) &&
          PROOF.test(f[3])
        ? { kind: "welcome", node: f[1], nonce: f[2], proof: f[3] }
        : null;
    case "PROOF":
      return f.length === 2 && PROOF.test(f[1])
        ? { kind: "proof", proof: f[1] }
        : null;
    case "OK":
      return f.length === 1 ? { kind: "ok" } : null;
    case "REFUSED": {
      const reason = body.slice(8);
      return f.length >= 2 && isReason(reason)
        ? { kind: "refused", reason }
        : null;
    }
    case "SUM":
      return f.length === 2 && ROOT.test(f[1])
        ? { kind: "sum", root: f[1] }
        : null;
    case "SAME":
      return f.length === 1 ? { kind: "same" } : null;
    case "BUCKETS":
      return f.length === 2 && f[1].length === DIGEST_CHARS &&
          BASE64.test(f[1])
        ? { kind: "buckets", digest: f[1] }
        : null;
    case "DIFF":
      return f.length === 2 ? parseDiff(f[1]) : null;
    case "HAVE":
      return parseHave(f);
    case "HAVE-END":
      return f.length === 1 ? { kind: "have-end" } : null;
    case "SYNCED":
      return f.length === 2 && COUNT.test(f[1]) &&
          Number(f[1]) <= busLimits.maxCount
        ? { kind: "synced", count: Number(f[1]) }
        : null;
    default:
      return null;
  }
}

/**
 * The body (a byte string) of `msg`. Throws on a control message `parseMessage` would
 * refuse; records are written as given.
 */
export function formatMessage(msg: BusMessage): string {
  let body: string;
  switch (msg.kind) {
    case "hello":
      body = `HELLO ${msg.node} ${msg.nonce}`;
      break;
    case "welcome":
      body = `WELCOME ${msg.node} ${msg.nonce} ${msg.proof}`;
      break;
    case "proof":
      body = `PROOF ${msg.proof}`;
      break;
    case "ok":
      return "OK";
    case "refused":
      body = `REFUSED ${msg.reason}`;
      break;
    case "records":
      body = `RECORDS\n${msg.records.join("\n")}`;
      break;
    case "sum":
      body = `SUM ${msg.root}`;
      break;
    case "same":
      return "SAME";
    case "buckets":
      body = `BUCKETS ${msg.digest}`;
      break;
    case "diff":
      body = `DIFF ${msg.buckets.join(",")}`;
      break;
    case "have":
      body = `HAVE ${
        msg.entries.map((e) => `${e.client} ${e.time} ${e.hash}`).join(" ")
      }`;
      break;
    case "have-end":
      return "HAVE-END";
    case "synced":
      body = `SYNCED ${msg.count}`;
      break;
  }
  // Records were checked when they came in (from a client or a peer); checking them again
  // on every publish would cost a second pass for nothing. Everything else is checked.
  if (msg.kind !== "records" && parseMessage(body) === null) {
    throw new RangeError(`not a valid ${msg.kind} message`);
  }
  return body;
}

/** Reason text: printable ASCII, bounded, with no space at either end. */
function isReason(reason: string): boolean {
  return reason.length > 0 && reason.length <= busLimits.reasonBytes &&
    REASON.test(reason) && reason.trim() === reason;
}

/**
 * Is `line` shaped like a record? Its fields, and its length, are checked one record at a
 * time by `record_check.ts`, so that an over-long record is refused and counted on its own;
 * the frame bound limits what it can cost.
 */
export function isRecordShape(line: string): boolean {
  return line.length > 3 && line.startsWith("AT ");
}

function parseRecords(body: string): BusMessage | null {
  const records = body.slice(8).split("\n");
  if (records.length > busLimits.recordsPerFrame) return null;
  for (const r of records) if (!isRecordShape(r)) return null;
  return { kind: "records", records };
}

function parseDiff(list: string): BusMessage | null {
  const parts = list.split(",");
  if (parts.length > BUCKETS) return null;
  const buckets: number[] = [];
  let last = -1;
  for (const p of parts) {
    if (!BUCKET.test(p)) return null;
    const b = Number(p);
    // Strictly ascending: one way to write a set, and no duplicates.
    if (b >= BUCKETS || b <= last) return null;
    buckets.push(b);
    last = b;
  }
  return { kind: "diff", buckets };
}

/** Is `time` a client time as IAMAT allows it? */
export function isClientTime(time: string): boolean {
  return time.length <= busLimits.clientLineBytes && isTimeText(time);
}

function parseHave(f: string[]): BusMessage | null {
  const n = (f.length - 1) / 3;
  if (!Number.isInteger(n) || n < 1 || n > busLimits.haveEntries) return null;
  const entries: HaveEntry[] = [];
  for (let i = 1; i < f.length; i += 3) {
    const [client, time, hash] = [f[i], f[i + 1], f[i + 2]];
    if (!isClientId(client) || !isClientTime(time) || !HASH.test(hash)) {
      return null;
    }
    entries.push({ client, time, hash });
  }
  return { kind: "have", entries };
}
