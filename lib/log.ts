/**
 * The node's log: one JSON object a line, in its data directory, written in batches off the
 * hot path. Every line a node receives or sends, and every peer event, is recorded with a
 * timestamp, the node's name and the connection id (a reply of several lines, a WHATSAT's,
 * as its first line and its size: `traffic`). Nothing secret is ever passed in: the
 * places key and the herd secret never reach this module.
 *
 * Nothing a client does makes this module grow or write without bound (docs/hardening.md):
 *
 * - The buffer is bounded (`maxBufferBytes`): when the disk cannot keep up, entries are
 *   dropped and counted (a `log_dropped` line gives the count once the buffer drains).
 * - Events and warnings are rate-limited per event name: at most `burst` lines per `windowMs`
 *   reach the file and the terminal; the rest are counted and summarised by one
 *   `log_suppressed event=NAME count=K` line when the window ends. A client can cause a
 *   warning (an over-long line, a refused connection) as often as it likes; before this,
 *   each one printed a line on the operator's terminal.
 * - The file rotates at `maxFileBytes` (64 MiB): NAME.log becomes NAME.log.1, NAME.log.1
 *   becomes NAME.log.2, and so on; `keepFiles` (5) old files are kept, the oldest is
 *   deleted. Traffic lines are the record of what the node received and sent and are not
 *   rate-limited; rotation bounds what they cost on disk (at most 6 x 64 MiB).
 * - A drain writes at most `maxWriteBytes` at a time, so flushing a full buffer never joins
 *   it into one string as large as itself.
 * - A drain starts every `flushMs`, or as soon as `drainBytes` are buffered. Under load the
 *   buffer then stays small: its lines die young, in the scavenger, instead of surviving into
 *   the old generation for 100 ms, and each drain's join and encode is a short pause.
 *   Measured with `bench/whatsat.ts` (cached answers, about 80,000 a second, two
 *   alternating runs of each): p99 8.8/9.3 -> 4.6/5.1 ms, RSS right after the load
 *   204/224 -> 151/153 MB, CPU per answer 14/18 -> 12/13 us.
 *
 * @example
 * ```ts
 * const log = await NodeLog.open({ node: "Alford", path: "data/Alford.log" });
 * log.traffic(7, "in", "IAMAT kiwi +34-118 1.5");
 * log.event("peer_connected", { peer: "Hamilton" });
 * await log.close();
 * ```
 * @module
 */

import { decodeUtf8 } from "./bytes.ts";
import { withDefaults } from "./defaults.ts";
import { writeAll } from "./write_all.ts";

/** The bounds of a node's log, in one place. */
export const LOG_DEFAULTS = {
  /** Flush period in ms. */
  flushMs: 100,
  /** Most bytes held before entries are dropped. */
  maxBufferBytes: 8 * 1024 * 1024,
  /** Most bytes written to the file in one write. */
  maxWriteBytes: 256 * 1024,
  /** Bytes buffered that start a drain at once, before the flush period ends. */
  drainBytes: 64 * 1024,
  /** The file rotates once it reaches this size. */
  maxFileBytes: 64 * 1024 * 1024,
  /** Rotated files kept (NAME.log.1 ... NAME.log.N). */
  keepFiles: 5,
  /** Events (or warnings) of one name logged per window; the rest are counted. */
  burst: 10,
  /** The rate-limit window in ms. */
  windowMs: 1000,
};

/** Log options. */
export interface LogOptions {
  node: string;
  /** The log file (appended to); null keeps the log in memory only (tests). */
  path: string | null;
  /** Also print events (not traffic) to stdout for the operator. Default true. */
  console?: boolean;
  /** Flush period in ms. Default 100. */
  flushMs?: number;
  /** Most bytes held before entries are dropped. Default 8 MiB. */
  maxBufferBytes?: number;
  /** Most bytes written to the file at once. Default 256 KiB. */
  maxWriteBytes?: number;
  /** Bytes buffered that start a drain at once, before the flush period ends. Default 64 KiB. */
  drainBytes?: number;
  /** Size at which the file rotates. Default 64 MiB. */
  maxFileBytes?: number;
  /** Rotated files kept. Default 5. */
  keepFiles?: number;
  /** Lines of one event name per window. Default 10. */
  burst?: number;
  /** Rate-limit window in ms. Default 1000. */
  windowMs?: number;
  /** Wall clock in ms, injected for tests. */
  now?: () => number;
  /**
   * Where operator lines go (default: events to stdout, warnings to stderr). `deno task herd`
   * runs several nodes in one process and prefixes each line with the node's name.
   */
  print?: (line: string, stream: "out" | "err") => void;
}

function defaultPrint(line: string, stream: "out" | "err"): void {
  if (stream === "out") console.log(line);
  else console.error(line);
}

const encoder = new TextEncoder();
/** Largest scratch buffer a drain keeps (a drain of more encodes into a buffer of its own). */
const SCRATCH_MAX = 4 * 1024 * 1024;

/** A line received or sent, kept as it is until the drain formats it. */
interface Traffic {
  /** Wall clock in ms when it was logged. */
  ms: number;
  conn: number;
  dir: "in" | "out";
  line: string;
  bytes: number | undefined;
}

/** A traffic line's size less its client line and node name, counted against the bounds. */
const TRAFFIC_BYTES = 80;

/** One event name's rate-limit window. */
interface Window {
  start: number;
  count: number;
  suppressed: number;
  /** Where the event's lines are printed (null: the file only); its summary goes there too. */
  stream: "out" | "err" | null;
}

/** Windows kept at most (event names are the code's own; this only guards the map). */
const MAX_WINDOWS = 1024;

/** Buffered JSON-lines log of one node. */
export class NodeLog {
  readonly node: string;
  /** `"node":"NAME",`, JSON-escaped once. */
  readonly #nodeField: string;
  #file: Deno.FsFile | null;
  readonly #path: string | null;
  #fileBytes: number;
  /** Lines, and traffic entries the drain formats, in the order they were logged. */
  #buf: (string | Traffic)[] = [];
  #bufBytes = 0;
  #dropped = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** A drain for `drainBytes` is queued. */
  #drainSoon = false;
  /** The drains, one after another: two never write to the file at once. */
  #flushing: Promise<void> = Promise.resolve();
  #scratch = new Uint8Array(0);
  #closed = false;
  #tsMs = -1;
  #ts = "";
  #opts: Required<Omit<LogOptions, "path">>;
  readonly #windows = new Map<string, Window>();
  #summaryTimer: ReturnType<typeof setTimeout> | undefined;
  #suppressed = 0;
  #rotations = 0;
  /** Entries kept when there is no file (tests read them). */
  readonly memory: string[] = [];

  private constructor(
    opts: LogOptions,
    file: Deno.FsFile | null,
    fileBytes: number,
  ) {
    this.node = opts.node;
    this.#nodeField = `"node":${JSON.stringify(opts.node)},`;
    this.#file = file;
    this.#path = opts.path;
    this.#fileBytes = fileBytes;
    this.#opts = {
      ...withDefaults(LOG_DEFAULTS, opts),
      node: opts.node,
      console: opts.console ?? true,
      now: opts.now ?? Date.now,
      print: opts.print ?? defaultPrint,
    };
  }

  /** Opens (appending to) the log file. */
  static async open(opts: LogOptions): Promise<NodeLog> {
    if (opts.path === null) return new NodeLog(opts, null, 0);
    const file = await Deno.open(opts.path, { create: true, append: true });
    return new NodeLog(opts, file, (await file.stat()).size);
  }

  /**
   * Records a line received (`in`) or sent (`out`) on connection `conn`. A reply of more
   * than one line (a WHATSAT's AT line and its JSON) is recorded as its first line and
   * `bytes`, its whole size: the AT line says what was answered, and the JSON, up to 256 KiB,
   * is the places provider's to keep (measured: logging a 5 KB WHATSAT reply whole took
   * 39 of the 127 µs of CPU the node spent on it).
   *
   * Every client line in and every reply out passes here, two log lines per IAMAT, so the
   * call only keeps the entry (its time, connection and line); the drain formats it. Formatted
   * here, a line came before the node's answer to it: at an idle node, 35-40 µs between an
   * IAMAT's arrival and its relays leaving (the ISO time, `JSON.stringify` and the UTF-8 test
   * of code a quiet process runs cold; docs/benchmarks.md, round four).
   */
  traffic(conn: number, dir: "in" | "out", line: string, bytes?: number): void {
    if (this.#closed) return;
    const entry: Traffic = { ms: this.#opts.now(), conn, dir, line, bytes };
    // A reply of several lines comes as its first line, a slice of the whole reply (up to
    // 256 KiB): kept as it is, the entry would keep the reply alive until the drain, past
    // what the buffer's bound counts. Formatted now, only the line is kept.
    if (this.#file === null || bytes !== undefined) {
      this.#pushText(this.#format(entry));
    } else {
      this.#pushEntry(entry);
    }
  }

  /**
   * A traffic entry as its JSON line, by hand, not through an object and `JSON.stringify`,
   * in the same field order as other entries.
   */
  #format(e: Traffic): string {
    return `{"ts":"${
      this.#stampAt(e.ms)
    }",${this.#nodeField}"conn":${e.conn},"dir":"${e.dir}","line":${
      JSON.stringify(readable(e.line))
    }${e.bytes === undefined ? "" : `,"bytes":${e.bytes}`}}`;
  }

  /** Records an event (peer connected, store loaded, ...) and tells the operator. */
  event(event: string, fields: Record<string, unknown> = {}): void {
    if (!this.#admit(event, "out")) return;
    this.#push({ event, ...fields });
    this.#tell(event, fields, "out");
  }

  /**
   * Records an event in the file only: what an operator may look up but need not see live
   * (a pipelining client's connection pausing is ordinary flow control).
   */
  record(event: string, fields: Record<string, unknown> = {}): void {
    if (!this.#admit(event, null)) return;
    this.#push({ event, ...fields });
  }

  /** Records a problem and prints it on stderr. */
  warn(event: string, fields: Record<string, unknown> = {}): void {
    if (!this.#admit(event, "err")) return;
    this.#push({ event, level: "warn", ...fields });
    this.#tell(event, fields, "err");
  }

  #tell(
    event: string,
    fields: Record<string, unknown>,
    stream: "out" | "err" | null,
  ): void {
    if (!this.#opts.console || stream === null) return;
    const detail = Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(
      " ",
    );
    this.#opts.print(
      `${this.node}: ${event}${detail ? " " + detail : ""}`,
      stream,
    );
  }

  /**
   * The rate limit: true while `event` has had fewer than `burst` lines in its window.
   * Past it the line is counted, and a timer summarises the count when the window ends.
   */
  #admit(event: string, stream: "out" | "err" | null): boolean {
    if (this.#closed) return true;
    const now = this.#opts.now();
    let w = this.#windows.get(event);
    if (w !== undefined && now - w.start >= this.#opts.windowMs) {
      this.#summarise(event, w);
      w = undefined;
    }
    if (w === undefined) {
      if (this.#windows.size >= MAX_WINDOWS) this.#summariseAll(true);
      w = { start: now, count: 0, suppressed: 0, stream };
      this.#windows.set(event, w);
    }
    if (w.count < this.#opts.burst) {
      w.count++;
      return true;
    }
    w.suppressed++;
    this.#suppressed++;
    this.#summaryTimer ??= setTimeout(() => {
      this.#summaryTimer = undefined;
      this.#summariseAll(false);
    }, Math.max(1, w.start + this.#opts.windowMs - now));
    return false;
  }

  /** One line for what a window suppressed; forgets the window. */
  #summarise(event: string, w: Window): void {
    this.#windows.delete(event);
    if (w.suppressed === 0) return;
    const fields = { suppressed: event, count: w.suppressed };
    this.#push({ event: "log_suppressed", level: "warn", ...fields });
    this.#tell("log_suppressed", { event, count: w.suppressed }, w.stream);
  }

  /** Summarises windows that have ended (all of them with `all`); re-arms for the rest. */
  #summariseAll(all: boolean): void {
    const now = this.#opts.now();
    let next = Infinity;
    for (const [event, w] of [...this.#windows]) {
      const ends = w.start + this.#opts.windowMs;
      if (all || ends <= now) this.#summarise(event, w);
      else if (w.suppressed > 0) next = Math.min(next, ends);
    }
    if (
      next !== Infinity && this.#summaryTimer === undefined && !this.#closed
    ) {
      this.#summaryTimer = setTimeout(() => {
        this.#summaryTimer = undefined;
        this.#summariseAll(false);
      }, Math.max(1, next - now));
    }
  }

  /** Entries dropped because the buffer was full. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Event and warning lines suppressed by the rate limit, in all. */
  get suppressed(): number {
    return this.#suppressed;
  }

  /** Times the file rotated. */
  get rotations(): number {
    return this.#rotations;
  }

  #push(fields: Record<string, unknown>): void {
    if (this.#closed) return;
    this.#pushText(JSON.stringify({
      ts: this.#stamp(),
      node: this.node,
      ...fields,
    }));
  }

  #pushText(text: string): void {
    if (this.#file === null) {
      this.memory.push(text);
      if (this.memory.length > 100_000) this.memory.splice(0, 50_000);
      return;
    }
    this.#pushEntry(text);
  }

  /** What a buffered entry counts against the bounds: a line its length, traffic an estimate. */
  #sizeOf(entry: string | Traffic): number {
    return typeof entry === "string"
      ? entry.length
      : TRAFFIC_BYTES + this.node.length + entry.line.length;
  }

  /** Buffers an entry (a line, or traffic the drain formats). */
  #pushEntry(entry: string | Traffic): void {
    const size = this.#sizeOf(entry);
    if (this.#bufBytes + size > this.#opts.maxBufferBytes) {
      this.#dropped++;
      return;
    }
    this.#buf.push(entry);
    this.#bufBytes += size + 1;
    if (this.#bufBytes >= this.#opts.drainBytes) {
      // Once the lines logged in this turn are in (a microtask), not in the middle of them.
      if (!this.#drainSoon) {
        this.#drainSoon = true;
        queueMicrotask(() => void this.#drainInTurn());
      }
      return;
    }
    if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#drainInTurn();
      }, this.#opts.flushMs);
    }
  }

  /** Queues a drain behind any drain still writing. */
  #drainInTurn(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#drain());
    return this.#flushing;
  }

  /** ISO time of now, formatted once per millisecond (the hot path logs many lines a ms). */
  #stamp(): string {
    return this.#stampAt(this.#opts.now());
  }

  /** ISO time of `ms`, the last one formatted kept (entries come in time order). */
  #stampAt(ms: number): string {
    if (ms !== this.#tsMs) {
      this.#tsMs = ms;
      this.#ts = new Date(ms).toISOString();
    }
    return this.#ts;
  }

  async #drain(): Promise<void> {
    this.#drainSoon = false;
    while (this.#buf.length > 0 && this.#file !== null) {
      if (this.#dropped > 0) {
        this.#buf.push(JSON.stringify({
          ts: this.#stamp(),
          node: this.node,
          event: "log_dropped",
          count: this.#dropped,
        }));
        this.#dropped = 0;
      }
      // At most maxWriteBytes a write (and at least one entry); traffic is formatted here.
      const lines: string[] = [];
      let size = 0;
      let estimated = 0;
      for (const entry of this.#buf) {
        const line = typeof entry === "string" ? entry : this.#format(entry);
        if (
          lines.length > 0 && size + line.length >= this.#opts.maxWriteBytes
        ) {
          break;
        }
        lines.push(line);
        size += line.length + 1;
        estimated += this.#sizeOf(entry) + 1;
      }
      const text = lines.join("\n") + "\n";
      this.#buf = lines.length === this.#buf.length
        ? []
        : this.#buf.slice(lines.length);
      this.#bufBytes = Math.max(0, this.#bufBytes - estimated);
      const bytes = this.#encode(text);
      try {
        await writeAll(this.#file, bytes);
        this.#fileBytes += bytes.length;
        if (this.#fileBytes >= this.#opts.maxFileBytes) await this.#rotate();
      } catch (e) {
        console.error(
          `${this.node}: cannot write log: ${(e as Error).message}`,
        );
        return;
      }
    }
  }

  /**
   * The UTF-8 bytes of `text`, in a scratch buffer kept between drains (drains run one at a
   * time, and each is written before the next begins). `TextEncoder.encode` of a joined
   * string of a thousand lines flattens and copies it through a fresh buffer: 0.69 µs a
   * line against 0.12 µs for `encodeInto`, more than half the cost of the traffic log.
   */
  #encode(text: string): Uint8Array {
    // UTF-8 takes at most 3 bytes for each UTF-16 code unit.
    const need = text.length * 3;
    if (need > SCRATCH_MAX) return encoder.encode(text);
    if (this.#scratch.length < need) {
      this.#scratch = new Uint8Array(
        Math.min(SCRATCH_MAX, Math.max(need, 64 * 1024)),
      );
    }
    const { written } = encoder.encodeInto(text, this.#scratch);
    return this.#scratch.subarray(0, written);
  }

  /** NAME.log.K becomes NAME.log.K+1 (the last is deleted), NAME.log becomes NAME.log.1. */
  async #rotate(): Promise<void> {
    const path = this.#path!;
    this.#file!.close();
    this.#file = null;
    const keep = this.#opts.keepFiles;
    try {
      await Deno.remove(`${path}.${keep}`);
    } catch { /* not there yet */ }
    for (let k = keep - 1; k >= 1; k--) {
      try {
        await Deno.rename(`${path}.${k}`, `${path}.${k + 1}`);
      } catch { /* not there yet */ }
    }
    if (keep > 0) await Deno.rename(path, `${path}.1`);
    else await Deno.remove(path);
    this.#file = await Deno.open(path, { create: true, append: true });
    this.#fileBytes = 0;
    this.#rotations++;
  }

  /** Writes everything buffered. */
  flush(): Promise<void> {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    return this.#drainInTurn();
  }

  /**
   * Flushes and closes the file. Entries logged while the last writes are under way are
   * written too; entries logged once it has resolved are ignored. No timer is left behind.
   */
  async close(): Promise<void> {
    clearTimeout(this.#summaryTimer);
    this.#summaryTimer = undefined;
    this.#summariseAll(true);
    await this.flush();
    this.#closed = true;
    await this.flush(); // what arrived during the first flush
    this.#file?.close();
    this.#file = null;
  }
}

/** Shows UTF-8 client data as text in the log; other bytes stay as their char codes. */
function readable(line: string): string {
  // deno-lint-ignore no-control-regex
  if (!/[^\x00-\x7f]/.test(line)) return line;
  return decodeUtf8(line) ?? line;
}
