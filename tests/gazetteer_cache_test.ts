/**
 * The offline gazetteer's answer cache, through real nodes over TCP, byte for byte: a
 * question asked again is answered from the cache (and from the node's encoded copy of the
 * reply) with exactly the bytes a node without the cache sends; each point, radius and bound
 * is its own entry; the entry and byte bounds evict the least recently used answer, counted
 * and told; `cacheMaxEntries: 0` keeps nothing.
 */

import assert from "assert";
import type { HerdNode } from "../lib/node.ts";
import { offlineCacheKey } from "../lib/places/gazetteer.ts";
import {
  createPlaces,
  PLACES_DEFAULTS,
  type PlacesConfig,
  PlacesConfigError,
  placesConfigFromEnv,
} from "../lib/places/mod.ts";
import {
  exchange,
  fixedClock,
  makeTopology,
  TestHerd,
  UCLA,
} from "./helpers.ts";

/** The clients: UCLA, and Zürich (place names with non-ASCII letters). */
const IAMATS = "IAMAT kiwi +34.068930-118.445127 1520023934.918963997\n" +
  "IAMAT zed +47.3769+008.5417 1520023934.5\n";

/** One node "Alford" with the offline provider; a fixed clock so AT lines agree. */
async function lone(config: Partial<PlacesConfig> = {}) {
  const lines: string[] = [];
  const places = createPlaces({ provider: "offline", ...config }, {
    warn: (line) => lines.push(line),
  });
  const herd = await new TestHerd({
    topology: makeTopology(["Alford"], []),
    config: () => ({
      places,
      clock: fixedClock(1520023935_000000000n),
    }),
  }).startAll();
  const port = herd.port("Alford");
  await exchange(port, IAMATS);
  return {
    herd,
    places,
    lines,
    node: herd.nodes.get("Alford") as HerdNode,
    ask: (question: string) => exchange(port, `WHATSAT ${question}\n`, 15_000),
  };
}

function stat(places: { stats(): Record<string, number> }, key: string) {
  return places.stats()[key];
}

/** The questions of these tests: two points, two radii, two bounds. */
const QUESTIONS = ["kiwi 10 20", "kiwi 10 5", "kiwi 5 20", "zed 10 20"];

Deno.test("offline cache: a repeated WHATSAT is byte-identical to the first and to a node without the cache", async () => {
  const cached = await lone();
  await using _a = cached.herd;
  const plain = await lone({ cacheMaxEntries: 0 });
  await using _b = plain.herd;
  for (const question of QUESTIONS) {
    const first = await cached.ask(question);
    const again = await cached.ask(question);
    const uncached = await plain.ask(question);
    assert.ok(first.endsWith("}\n\n"), `a framed answer to ${question}`);
    assert.equal(again, first, `${question} asked again`);
    assert.equal(first, uncached, `${question} with and without the cache`);
  }
  // Zürich's answer holds UTF-8 (Zürich itself): the encoded copy kept its bytes.
  assert.ok((await cached.ask("zed 10 20")).includes("Z\u00c3\u00bcrich"));
  assert.equal(stat(cached.places, "cacheMisses"), QUESTIONS.length);
  assert.equal(stat(cached.places, "cacheHits"), QUESTIONS.length + 1);
  assert.equal(stat(cached.places, "cacheEntries"), QUESTIONS.length);
  assert.ok(stat(cached.places, "cacheBytes") > 0);
  assert.equal(stat(cached.places, "cacheEvictions"), 0);
});

Deno.test("offline cache: point, radius and bound each make their own entry, each answered as without the cache", async () => {
  const cached = await lone();
  await using _a = cached.herd;
  const plain = await lone({ cacheMaxEntries: 0 });
  await using _b = plain.herd;
  // Every question once, so that each is in the cache, then all again from the cache: an
  // entry shared by two questions would give one of them the other's answer.
  for (const question of QUESTIONS) await cached.ask(question);
  assert.equal(stat(cached.places, "cacheEntries"), QUESTIONS.length);
  const answers = new Set<string>();
  for (const question of QUESTIONS) {
    const reply = await cached.ask(question);
    assert.equal(reply, await plain.ask(question), question);
    answers.add(reply.slice(reply.indexOf("\n")));
  }
  assert.equal(answers.size, QUESTIONS.length, "four different answers");
  assert.equal(stat(cached.places, "cacheHits"), QUESTIONS.length);
  const keys = new Set(
    [
      UCLA,
      { ...UCLA, bound: 5 },
      { ...UCLA, radiusMeters: 5000 },
      { ...UCLA, latDeg: 47.3769 },
      { ...UCLA, lngDeg: 8.5417 },
    ].map(offlineCacheKey),
  );
  assert.equal(
    keys.size,
    5,
    "the key holds the point, the radius and the bound",
  );
});

Deno.test("offline cache: at most cacheMaxEntries answers, the least recently used evicted, counted and told", async () => {
  const { herd, places, lines, ask } = await lone({ cacheMaxEntries: 2 });
  await using _ = herd;
  await ask("kiwi 10 20"); // miss: [A]
  await ask("kiwi 10 5"); // miss: [A, B]
  await ask("kiwi 10 20"); // hit: [B, A]
  await ask("kiwi 5 20"); // miss, B evicted: [A, C]
  assert.equal(stat(places, "cacheEvictions"), 1);
  assert.equal(stat(places, "cacheEntries"), 2);
  assert.equal(stat(places, "cacheHits"), 1);
  await ask("kiwi 10 20"); // hit: A stayed
  assert.equal(stat(places, "cacheHits"), 2);
  await ask("kiwi 10 5"); // miss: B went
  assert.equal(stat(places, "cacheMisses"), 4);
  assert.equal(stat(places, "cacheEvictions"), 2);
  assert.equal(stat(places, "cacheEntries"), 2);
  // One line for the first eviction; the second falls within the rate limit's interval.
  const told = lines.filter((line) => line.includes("cacheFull"));
  assert.equal(told.length, 1, lines.join("\n"));
  assert.match(told[0], /offline answer cache is full \(2 answers/);
});

Deno.test("offline cache: its bytes stay within cacheMaxBytes, the least recently used going first", async () => {
  const probe = await lone();
  await using _p = probe.herd;
  await probe.ask("kiwi 10 20");
  const kiwi = stat(probe.places, "cacheBytes");
  await probe.ask("zed 10 20");
  const zed = stat(probe.places, "cacheBytes") - kiwi;
  assert.ok(kiwi > 1000 && zed > 1000, `20 places count ${kiwi}, ${zed} bytes`);
  // Room for either answer, not for both.
  const max = Math.floor(Math.max(kiwi, zed) * 1.2);
  assert.ok(kiwi + zed > max);

  const { herd, places, ask } = await lone({ cacheMaxBytes: max });
  await using _ = herd;
  await ask("kiwi 10 20");
  await ask("zed 10 20"); // the first goes
  assert.equal(stat(places, "cacheEntries"), 1);
  assert.equal(stat(places, "cacheBytes"), zed);
  assert.equal(stat(places, "cacheEvictions"), 1);
  await ask("zed 10 20");
  assert.equal(stat(places, "cacheHits"), 1);
  await ask("kiwi 10 20");
  assert.equal(stat(places, "cacheMisses"), 3);
});

Deno.test("offline cache: cacheMaxEntries 0 keeps nothing", async () => {
  const { herd, places, ask } = await lone({ cacheMaxEntries: 0 });
  await using _ = herd;
  for (const question of QUESTIONS) {
    assert.equal(await ask(question), await ask(question));
  }
  assert.equal(stat(places, "cacheEntries"), 0);
  assert.equal(stat(places, "cacheBytes"), 0);
  assert.equal(stat(places, "cacheHits"), 0);
  assert.equal(stat(places, "cacheMaxEntries"), 0);
});

Deno.test("PLACES_CACHE_ENTRIES sets cacheMaxEntries (0 turns the cache off); anything else is a one-line PlacesConfigError", () => {
  assert.equal(
    placesConfigFromEnv({ PLACES_CACHE_ENTRIES: "0" }).config.cacheMaxEntries,
    0,
  );
  assert.equal(
    placesConfigFromEnv({ PLACES_CACHE_ENTRIES: "2048" }).config
      .cacheMaxEntries,
    2048,
  );
  assert.equal(
    placesConfigFromEnv({ PLACES_CACHE_ENTRIES: "" }).config.cacheMaxEntries,
    undefined,
  );
  const off = createPlaces(
    placesConfigFromEnv({ PLACES_CACHE_ENTRIES: "0" }).config,
  );
  assert.equal(off.stats().cacheMaxEntries, 0);
  off.close();
  const on = createPlaces(placesConfigFromEnv({}).config);
  assert.equal(
    on.stats().cacheMaxEntries,
    PLACES_DEFAULTS.offlineCacheMaxEntries,
  );
  on.close();
  for (const value of ["-1", "1.5", "lots", "1e3"]) {
    assert.throws(
      () => placesConfigFromEnv({ PLACES_CACHE_ENTRIES: value }),
      (e: unknown) =>
        e instanceof PlacesConfigError &&
        e.variable === "PLACES_CACHE_ENTRIES" && !e.message.includes("\n"),
      value,
    );
  }
});
