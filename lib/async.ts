/**
 * Timeouts, delays and retries in the shapes of Deno's standard library (`@std/async`
 * `delay`, `deadline`, `retry`), which JSR would give us but our machines cannot reach. One
 * module, so that every timed wait in the project is written once: a timer that is always
 * cleared, and an `AbortSignal` for cancellation.
 *
 * @module
 */

/** Options of {@linkcode delay}. */
export interface DelayOptions {
  /** Aborting rejects the delay with the signal's reason and clears its timer. */
  signal?: AbortSignal;
}

/**
 * Resolves after `ms` milliseconds.
 *
 * @throws the signal's reason when `options.signal` aborts first.
 *
 * @example
 * ```ts
 * import { delay } from "./async.ts";
 * await delay(0); // resolves on the next timer turn
 * ```
 */
export function delay(ms: number, options: DelayOptions = {}): Promise<void> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const abort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/**
 * Resolves after `ms` milliseconds, or at once when `signal` aborts; never rejects. For the
 * waits that a stop cuts short (a backoff between attempts), where an abort is not an error.
 *
 * @example
 * ```ts
 * import { pause } from "./async.ts";
 * const stop = new AbortController();
 * const waiting = pause(60_000, stop.signal);
 * stop.abort();
 * await waiting; // at once
 * ```
 */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Thrown by {@linkcode deadline} when the time runs out. */
export class DeadlineError extends Error {
  override name = "DeadlineError";
  /** The deadline that passed, in ms. */
  readonly ms: number;
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
    this.ms = ms;
  }
}

/** Options of {@linkcode deadline}. */
export interface DeadlineOptions {
  /** Aborting rejects at once with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Settles like `promise`, or rejects with a {@linkcode DeadlineError} once `ms` pass. The
 * timer is always cleared, so nothing is left pending (tests run with the op sanitizer).
 * `promise` itself goes on: give it the same signal if it can be cancelled.
 *
 * @throws {DeadlineError} when `ms` pass first.
 *
 * @example
 * ```ts
 * import { deadline, DeadlineError } from "./async.ts";
 * const late = new Promise<string>((r) => setTimeout(() => r("late"), 50));
 * try {
 *   await deadline(late, 10);
 * } catch (e) {
 *   if (!(e instanceof DeadlineError)) throw e;
 * }
 * await late;
 * ```
 */
export function deadline<T>(
  promise: Promise<T>,
  ms: number,
  options: DeadlineOptions = {},
): Promise<T> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", abort);
    };
    const abort = () => {
      done();
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      done();
      reject(new DeadlineError(ms));
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
    promise.then((v) => {
      done();
      resolve(v);
    }, (e) => {
      done();
      reject(e);
    });
  });
}

/**
 * Like {@linkcode deadline}, but a late promise gives `fallback` instead of an error: for
 * answers that must come within a bound whatever happens (a WHATSAT's places, a lock).
 *
 * @example
 * ```ts
 * import { within } from "./async.ts";
 * const got = await within(new Promise<number>(() => {}), 5, () => -1);
 * got; // -1
 * ```
 */
export async function within<T>(
  promise: Promise<T>,
  ms: number,
  fallback: () => T,
): Promise<T> {
  try {
    return await deadline(promise, ms);
  } catch (e) {
    if (e instanceof DeadlineError) return fallback();
    throw e;
  }
}

/** Thrown by {@linkcode retry} when every attempt failed; `cause` is the last error. */
export class RetryError extends Error {
  override name = "RetryError";
  /** How many attempts were made. */
  readonly attempts: number;
  constructor(cause: unknown, attempts: number) {
    super(`still failing after ${attempts} attempts`, { cause });
    this.attempts = attempts;
  }
}

/** Options of {@linkcode retry}; durations in ms. */
export interface RetryOptions {
  /** How many times `fn` runs at most. Default 5. */
  maxAttempts?: number;
  /** The first wait. Default 50. */
  minTimeout?: number;
  /** No wait is longer. Default 1000. */
  maxTimeout?: number;
  /** Each wait's cap is the previous one's times this. Default 2. */
  multiplier?: number;
  /** Full jitter: each wait is uniform in [0, cap) when 1, exactly the cap when 0. Default 1. */
  jitter?: number;
  /** Stops waiting and rejects with its reason when aborted. */
  signal?: AbortSignal;
  /** Called after a failed attempt; returning false gives up at once (a fatal error). */
  shouldRetry?: (error: unknown, attempt: number) => boolean;
  /** Randomness for the jitter (tests pass a fixed one). Default `Math.random`. */
  random?: () => number;
}

/** The wait before attempt `attempt + 1` (capped exponential backoff with jitter). */
export function backoff(
  attempt: number,
  options: Pick<
    RetryOptions,
    "minTimeout" | "maxTimeout" | "multiplier" | "jitter" | "random"
  > = {},
): number {
  const min = options.minTimeout ?? 50;
  const max = options.maxTimeout ?? 1000;
  const cap = Math.min(max, min * (options.multiplier ?? 2) ** attempt);
  const jitter = options.jitter ?? 1;
  return cap * (1 - jitter * (options.random ?? Math.random)());
}

/**
 * Runs `fn` until it resolves, waiting with capped exponential backoff between attempts.
 *
 * @throws {RetryError} after `maxAttempts` failures (or the error itself when `shouldRetry`
 * says no), or the signal's reason when aborted.
 *
 * @example
 * ```ts
 * import { retry } from "./async.ts";
 * let n = 0;
 * const v = await retry(() => ++n < 3 ? Promise.reject(new Error("again")) : Promise.resolve(n), {
 *   minTimeout: 1,
 * });
 * v; // 3
 * ```
 */
export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const maxAttempts = options.maxAttempts ?? 5;
  for (let attempt = 0;; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (options.shouldRetry && !options.shouldRetry(e, attempt)) throw e;
      if (attempt + 1 >= maxAttempts) throw new RetryError(e, attempt + 1);
    }
    await delay(backoff(attempt, options), { signal: options.signal });
  }
}
