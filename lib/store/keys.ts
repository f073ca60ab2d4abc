/**
 * The KV key schema of a node's store, every key and range named in one place (the way
 * denoland/saaskit's `utils/db.ts` owns its keys). Nothing else in the project spells a key.
 *
 * | key | value |
 * | --- | --- |
 * | `["meta", "snap"]` | the snapshot description (`SnapMeta`, see `codec.ts`) |
 * | `["wal", seq]` | one write-ahead log value: AT lines joined by `\n`; `seq` counts up from 0 |
 * | `["snap", gen, i]` | chunk `i` of snapshot generation `gen`: AT lines joined by `\n` |
 *
 * Deno KV orders numbers within a key part, so a log is read in `seq` order and a snapshot in
 * chunk order. Only the snapshot named by the meta key is ever read; other generations, and
 * log values below its `walFrom`, are leftovers of a crash and collected by the next snapshot.
 *
 * @example
 * ```ts
 * import { storeKeys } from "./keys.ts";
 * storeKeys.wal(7); // ["wal", 7]
 * storeKeys.walRange(0, 7, 9); // log values 7 and 8
 * ```
 * @module
 */

/** Every key and range the store uses. */
export const storeKeys = {
  /** The snapshot description. */
  meta: ["meta", "snap"] as Deno.KvKey,
  /** Every log value (for the last sequence number at open). */
  walAll: { prefix: ["wal"] } as Deno.KvListSelector,
  /** Log value `seq`. */
  wal: (seq: number): Deno.KvKey => ["wal", seq],
  /** Log values `from` up to (not including) `to`: what a load replays after the snapshot. */
  walRange: (_: number, from: number, to: number): Deno.KvListSelector => ({
    start: ["wal", from],
    end: ["wal", to],
  }),
  /** Log values below `seq`: folded into a snapshot, to delete. */
  walBefore: (seq: number): Deno.KvListSelector => ({
    start: ["wal", 0],
    end: ["wal", seq],
  }),
  /** Chunk `i` of snapshot generation `gen`. */
  snapChunk: (gen: number, i: number): Deno.KvKey => ["snap", gen, i],
  /** Chunks `from` up to (not including) `to` of generation `gen`. */
  snapChunks: (gen: number, from: number, to: number): Deno.KvListSelector => ({
    start: ["snap", gen, from],
    end: ["snap", gen, to],
  }),
  /** Every generation below `gen`: superseded snapshots, to delete. */
  snapBefore: (gen: number): Deno.KvListSelector => ({
    start: ["snap", 0],
    end: ["snap", gen],
  }),
  /** Chunks of generation `gen` from `i` on: a crashed earlier attempt's extras, to delete. */
  snapFrom: (gen: number, i: number): Deno.KvListSelector => ({
    start: ["snap", gen, i],
    end: ["snap", gen + 1],
  }),
} as const;
