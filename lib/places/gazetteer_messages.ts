/**
 * The messages between the offline provider (`gazetteer.ts`) and its loading worker
 * (`gazetteer_worker.ts`), in a module of their own so that neither imports the other.
 *
 * The provider sends one {@linkcode GazetteerInit}. The worker answers with one `ready`
 * (carrying the compact index's tables, transferred) or one `failed`; after a load from the
 * package with a cache directory, one of `cacheWritten`, `cacheFound` or `warning`; and last
 * `done`, after which the provider ends the worker: it has nothing left to do, and its
 * isolate's memory (the decoded package, on a cold start) goes with it.
 *
 * @module
 */
import type { GazetteerTables } from "./gazetteer_index.ts";

/** The first and only message to the worker: where its cache file lives, if anywhere. */
export interface GazetteerInit {
  type: "init";
  cacheDir?: string;
}

/** What the worker says; see the module doc for the order. */
export type GazetteerReply =
  | {
    type: "ready";
    places: number;
    loadMs: number;
    source: "cache" | "package";
    tables: GazetteerTables;
  }
  | { type: "failed"; message: string }
  | { type: "cacheWritten"; path: string; bytes: number; ms: number }
  | { type: "cacheFound"; path: string }
  | { type: "warning"; message: string }
  | { type: "done" };
