/**
 * What the places modules do when one of their bounds is hit: count it, and say so in a
 * warning line that is rate-limited per bound, so that a client hammering a full queue cannot
 * make the node write without bound. The first hit of a bound is told at once; later hits
 * within `intervalMs` of the last line are only counted, and the next line after the interval
 * says how many there were.
 *
 * No timer: a summary waits for the next hit after the interval (a bound nobody hits any more
 * has nothing new to say, and its counter in `stats()` holds the total).
 *
 * @example
 * ```ts
 * import { createBoundLog } from "./bounds.ts";
 *
 * const lines: string[] = [];
 * const bounds = createBoundLog({ warn: (line) => lines.push(line), now: () => 0 });
 * bounds.hit("queueFull", "1024 requests wait");
 * bounds.hit("queueFull", "1024 requests wait");
 * console.log(lines.length, bounds.count("queueFull")); // 1 2
 * ```
 *
 * @module
 */

/** Defaults of the bound log. */
export const BOUND_LOG_DEFAULTS = {
  /** At most one line per bound this often. */
  intervalMs: 10_000,
} as const;

/** Where bound hits are counted and told. */
export interface BoundLog {
  /** Counts a hit of `bound` and tells it unless it was told less than the interval ago. */
  hit(bound: string, detail: string): void;
  /** How many times `bound` was hit. */
  count(bound: string): number;
}

/** What a bound log needs: where lines go and a clock. */
export interface BoundLogOptions {
  /** Receives one line per told hit (e.g. printed as `herd: warning: <line>`). */
  warn: (line: string) => void;
  now: () => number;
  intervalMs?: number;
}

/** A bound log; all its state lives in this closure. */
export function createBoundLog(options: BoundLogOptions): BoundLog {
  const intervalMs = options.intervalMs ?? BOUND_LOG_DEFAULTS.intervalMs;
  const counts = new Map<string, number>();
  const told = new Map<string, { at: number; count: number }>();
  return {
    hit(bound, detail) {
      const count = (counts.get(bound) ?? 0) + 1;
      counts.set(bound, count);
      const now = options.now();
      const last = told.get(bound);
      if (last !== undefined && now - last.at < intervalMs) return;
      const since = last === undefined ? 0 : count - last.count - 1;
      const more = since > 0 ? ` (${since} more since the last such line)` : "";
      told.set(bound, { at: now, count });
      options.warn(`places bound hit: ${bound}: ${detail}${more}`);
    },
    count(bound) {
      return counts.get(bound) ?? 0;
    },
  };
}

/** The default place for bound lines: one `herd: warning:` line on stderr. */
export function warnOnStderr(line: string): void {
  console.error(`herd: warning: ${line}`);
}
