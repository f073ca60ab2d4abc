/**
 * A small seeded generator (mulberry32) for tests and benchmarks: the same seed gives the
 * same sequence in every run and every checkout, so fuzzed lines, synthetic places and
 * benchmark clients can be reproduced and compared.
 *
 * @example
 * ```ts
 * const next = rng(42);
 * next(); // a number in [0, 1), the same one every run
 * ```
 * @module
 */

/** A function giving numbers in [0, 1), the same sequence for the same seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
