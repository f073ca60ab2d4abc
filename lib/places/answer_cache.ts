/**
 * A bounded map of places answers: least recently used first out, bounded in entries and in
 * bytes, each entry kept for a time to live. The Google providers' cache (`cache.ts`, 60 s)
 * and the offline gazetteer's (`gazetteer.ts`, no expiry: an offline answer never changes)
 * are both this map.
 *
 * @example
 * ```ts
 * import { createAnswerCache } from "./answer_cache.ts";
 *
 * const cache = createAnswerCache(1024, 8 * 1024 * 1024, 60_000);
 * cache.set("key", { html_attributions: [], results: [], status: "ZERO_RESULTS" }, Date.now());
 * cache.get("key", Date.now()); // the answer, now the most recently used
 * ```
 * @module
 */

import type { PlacesAnswer } from "./contract.ts";

interface CacheEntry {
  answer: PlacesAnswer;
  expiresAt: number;
  bytes: number;
}

/** A TTL + LRU map on a `Map`, whose insertion order is the recency order. */
export interface AnswerCache {
  get(key: string, now: number): PlacesAnswer | undefined;
  /** Stores `answer`; returns how many entries were evicted to make room. */
  set(key: string, answer: PlacesAnswer, now: number): number;
  /** Forgets every entry. */
  clear(): void;
  readonly size: number;
  readonly bytes: number;
  readonly evictions: number;
}

/**
 * A cache of at most `maxEntries` answers and `maxBytes` (each answer counted by `sizeOf`,
 * by default its JSON's length), each kept `ttlMs` (`Infinity`: until pushed out). An answer
 * larger than `maxBytes` alone is not kept; `maxEntries` or `ttlMs` of 0 keeps nothing.
 */
export function createAnswerCache(
  maxEntries: number,
  maxBytes: number,
  ttlMs: number,
  sizeOf: (answer: PlacesAnswer) => number = (a) => JSON.stringify(a).length,
): AnswerCache {
  const entries = new Map<string, CacheEntry>();
  let bytes = 0;
  let evictions = 0;
  const drop = (key: string, entry: CacheEntry) => {
    entries.delete(key);
    bytes -= entry.bytes;
  };
  return {
    get(key, now) {
      const entry = entries.get(key);
      if (entry === undefined) return undefined;
      drop(key, entry);
      if (now >= entry.expiresAt) return undefined;
      entries.set(key, entry);
      bytes += entry.bytes;
      return entry.answer;
    },
    set(key, answer, now) {
      if (maxEntries <= 0 || ttlMs <= 0) return 0;
      const old = entries.get(key);
      if (old !== undefined) drop(key, old);
      const size = sizeOf(answer);
      if (size > maxBytes) return 0;
      entries.set(key, { answer, expiresAt: now + ttlMs, bytes: size });
      bytes += size;
      let evicted = 0;
      while (entries.size > maxEntries || bytes > maxBytes) {
        const [oldest, entry] = entries.entries().next().value as [
          string,
          CacheEntry,
        ];
        drop(oldest, entry);
        evicted++;
      }
      evictions += evicted;
      return evicted;
    },
    clear() {
      entries.clear();
      bytes = 0;
    },
    get size() {
      return entries.size;
    },
    get bytes() {
      return bytes;
    },
    get evictions() {
      return evictions;
    },
  };
}
