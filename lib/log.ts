/**
 * The node's log: one JSON object a line, in its data directory, written in batches off the
 * hot path. Every line a node receives or sends, and every peer event, is recorded with a
 * timestamp, the node's name and the connection id. Nothing secret is ever passed in: the
 * places key and the herd secret never reach this module.
 *
 * The buffer is bounded: when the disk cannot keep up, entries are dropped and counted (the
 * count is logged once the buffer drains), never accumulated without bound.
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

/** Log options. */
export interface LogOptions {
  node: string;
  /** The log file (appended to); null keeps the log in memory only (tests). */
  path: string | null;
  /** Also print events (not traffic) to stdout for the operator. Default true. */
  console?: boolean;
  /** Flush period in ms. Default 100. */
  flushMs?: number;
  /** Most bytes held before entries are dropped. Default 16 MiB. */
  maxBufferBytes?: number;
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

/** Buffered JSON-lines log of one node. */
export class NodeLog {
  readonly node: string;
  #file: Deno.FsFile | null;
  #buf: string[] = [];
  #bufBytes = 0;
  #dropped = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The drains, one after another: two never write to the file at once. */
  #flushing: Promise<void> = Promise.resolve();
  #closed = false;
  #tsMs = -1;
  #ts = "";
  #opts: Required<Omit<LogOptions, "path">>;
  /** Entries kept when there is no file (tests read them). */
  readonly memory: string[] = [];

  private constructor(opts: LogOptions, file: Deno.FsFile | null) {
    this.node = opts.node;
    this.#file = file;
    this.#opts = {
      node: opts.node,
      console: opts.console ?? true,
      flushMs: opts.flushMs ?? 100,
      maxBufferBytes: opts.maxBufferBytes ?? 16 * 1024 * 1024,
      now: opts.now ?? Date.now,
      print: opts.print ?? defaultPrint,
    };
  }

  /** Opens (appending to) the log file. */
  static async open(opts: LogOptions): Promise<NodeLog> {
    const file = opts.path === null ? null : await Deno.open(opts.path, {
      create: true,
      append: true,
    });
    return new NodeLog(opts, file);
  }

  /** Records a line received (`in`) or sent (`out`) on connection `conn`. */
  traffic(conn: number, dir: "in" | "out", line: string): void {
    this.#push({ conn, dir, line: readable(line) });
  }

  /** Records an event (peer connected, store loaded, ...) and tells the operator. */
  event(event: string, fields: Record<string, unknown> = {}): void {
    this.#push({ event, ...fields });
    if (this.#opts.console) {
      const detail = Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(
        " ",
      );
      this.#opts.print(
        `${this.node}: ${event}${detail ? " " + detail : ""}`,
        "out",
      );
    }
  }

  /** Records a problem and prints it on stderr. */
  warn(event: string, fields: Record<string, unknown> = {}): void {
    this.#push({ event, level: "warn", ...fields });
    if (this.#opts.console) {
      const detail = Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(
        " ",
      );
      this.#opts.print(
        `${this.node}: ${event}${detail ? " " + detail : ""}`,
        "err",
      );
    }
  }

  /** Entries dropped because the buffer was full. */
  get dropped(): number {
    return this.#dropped;
  }

  #push(fields: Record<string, unknown>): void {
    if (this.#closed) return;
    const text = JSON.stringify({
      ts: this.#stamp(),
      node: this.node,
      ...fields,
    });
    if (this.#file === null) {
      this.memory.push(text);
      if (this.memory.length > 100_000) this.memory.splice(0, 50_000);
      return;
    }
    if (this.#bufBytes + text.length > this.#opts.maxBufferBytes) {
      this.#dropped++;
      return;
    }
    this.#buf.push(text);
    this.#bufBytes += text.length + 1;
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
    const ms = this.#opts.now();
    if (ms !== this.#tsMs) {
      this.#tsMs = ms;
      this.#ts = new Date(ms).toISOString();
    }
    return this.#ts;
  }

  async #drain(): Promise<void> {
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
      const text = this.#buf.join("\n") + "\n";
      this.#buf = [];
      this.#bufBytes = 0;
      try {
        await writeAll(this.#file, encoder.encode(text));
      } catch (e) {
        console.error(
          `${this.node}: cannot write log: ${(e as Error).message}`,
        );
        return;
      }
    }
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

/** Writes every byte, looping over partial writes. */
export async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await w.write(bytes.subarray(off));
}
