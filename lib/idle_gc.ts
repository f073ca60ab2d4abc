/**
 * Gives memory back once a burst of traffic is over. V8 collects its old generation only
 * when the program allocates, so a node that goes quiet after a burst keeps the garbage of
 * that burst: measured with `deno task soak`, a node that answered 100,000 fuzzed lines
 * stayed 119 MB above its starting RSS for as long as it stayed idle, and went back to
 * +22 MB after one full collection (5,000 connections opened and closed: +62 MB, then +9 MB).
 *
 * So once a second, if the node did little since the last look (fewer than `quietBelow`
 * lines, connections and records: a trickle of ordinary clients still counts as quiet), is
 * not busy in the background (`busy`: folding its log) and its heap grew by more than
 * `growthBytes` since the last collection, it runs one full GC. That stops the node for
 * tens of milliseconds on a heap of 100 MB, and for 100-770 ms after a burst of 245,000 new
 * clients with the herd beside it on two cores, so it waits for a node that few clients
 * are waiting on. A busy node is left to V8, which collects as it allocates.
 *
 * `gc` comes from V8's `--expose-gc`, switched on at run time through `node:v8` and read
 * from a fresh context through `node:vm`; where that is not possible, this does nothing.
 * Both are imported the first time a collection is due, not at start: importing `node:vm`
 * takes about 55 ms, and a node must listen within half a second of its start.
 *
 * @example
 * ```ts
 * let lines = 0;
 * const idle = new IdleGc({ activity: () => lines });
 * idle.start();
 * idle.stop();
 * ```
 * @module
 */

/** When a quiet node collects its garbage. */
export const IDLE_GC_DEFAULTS = {
  /** How often to look, in ms. */
  intervalMs: 1000,
  /** Heap growth since the last collection that makes a quiet node collect. */
  growthBytes: 16 * 1024 * 1024,
  /**
   * Fewer units of activity than this since the last look is quiet: a client connecting
   * and sending a line every 100 ms (20) is, a node relaying 50 records a second is not. A
   * collection after a burst stops the node for 100-770 ms, and what arrives meanwhile
   * waits (measured after a burst of 245,000 new clients).
   */
  quietBelow: 25,
};

/** Idle collector options. */
export interface IdleGcOptions extends Partial<typeof IDLE_GC_DEFAULTS> {
  /** A number that changes whenever the node does work (lines handled, for one). */
  activity: () => number;
  /** True while the node does background work that makes garbage (a fold): no collection. */
  busy?: () => boolean;
  /** The heap's size in bytes (injected for tests). Default: `Deno.memoryUsage().heapTotal`. */
  heapBytes?: () => number;
  /** The collector (injected for tests). Default: V8's `gc`, when it can be had. */
  gc?: (() => void) | null;
}

/** Runs a full GC when the node is quiet and its heap has grown. */
export class IdleGc {
  readonly #activity: () => number;
  readonly #busy: () => boolean;
  readonly #heap: () => number;
  /** The collector; undefined until first needed and loaded, null where unavailable. */
  #gc: (() => void) | null | undefined;
  #loading = false;
  readonly #intervalMs: number;
  readonly #growth: number;
  readonly #quietBelow: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #last = Number.NaN;
  #floor: number;
  /** Collections run. */
  collections = 0;

  constructor(opts: IdleGcOptions) {
    this.#activity = opts.activity;
    this.#busy = opts.busy ?? (() => false);
    this.#heap = opts.heapBytes ?? (() => Deno.memoryUsage().heapTotal);
    this.#gc = opts.gc;
    this.#intervalMs = opts.intervalMs ?? IDLE_GC_DEFAULTS.intervalMs;
    this.#growth = opts.growthBytes ?? IDLE_GC_DEFAULTS.growthBytes;
    this.#quietBelow = opts.quietBelow ?? IDLE_GC_DEFAULTS.quietBelow;
    this.#floor = this.#heap();
  }

  /** Starts looking; the timer never keeps the process alive. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.tick(), this.#intervalMs);
    Deno.unrefTimer(this.#timer);
  }

  /** One look (the timer's; tests call it directly). */
  tick(): void {
    const now = this.#activity();
    const quiet = now - this.#last < this.#quietBelow;
    this.#last = now;
    if (!quiet || this.#gc === null || this.#busy()) return;
    if (this.#heap() < this.#floor + this.#growth) return;
    if (this.#gc === undefined) {
      // Loaded now, used from the next look on.
      if (!this.#loading) {
        this.#loading = true;
        v8Gc().then((gc) => this.#gc = gc);
      }
      return;
    }
    this.#gc();
    this.collections++;
    this.#floor = this.#heap();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** V8's full collection, or null where the flag cannot be set. */
async function v8Gc(): Promise<(() => void) | null> {
  try {
    const { setFlagsFromString } = await import("node:v8");
    const { runInNewContext } = await import("node:vm");
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc");
    return typeof gc === "function" ? gc : null;
  } catch {
    return null;
  }
}
