/**
 * The places bounds, one test each: every map or queue fed from outside (the answer cache in
 * entries and bytes, the callers waiting on upstream calls, the upstream queue, the queries
 * waiting for the gazetteer) stops at its bound, counts the hit in `stats()`, and tells it
 * in a warning line that is rate-limited. Also the contract the node relies on: an answer
 * within the query's own bound, and the typed configuration error.
 *
 * Upstreams are stubbed `fetch` functions; time for the rate limit is a variable.
 */
import assert from "assert";
import { createBoundLog } from "../lib/places/bounds.ts";
import type { NearbyQuery, PlacesAnswer } from "../lib/places/contract.ts";
import { createOfflinePlaces } from "../lib/places/gazetteer.ts";
import { UCLA } from "./helpers.ts";
import {
  createPlaces,
  type PlacesConfig,
  PlacesConfigError,
  placesConfigFromEnv,
  type PlacesProvider,
} from "../lib/places/mod.ts";

/** A query at latitude `lat` (a distinct cache key for each). */
function at(lat: number, overrides: Partial<NearbyQuery> = {}): NearbyQuery {
  return { ...UCLA, lat: String(lat), latDeg: lat, ...overrides };
}

/** An upstream answer with `n` results, each about `size` bytes of JSON. */
function body(n: number, size = 10): string {
  return JSON.stringify({
    html_attributions: [],
    results: Array.from({ length: n }, (_, i) => ({
      name: `${i}`.padEnd(size, "x"),
    })),
    status: "OK",
  });
}

/** A Google provider on a stubbed upstream, its warning lines and a movable clock. */
function provider(
  respond: (signal: AbortSignal | undefined) => Promise<Response> | Response,
  config: Partial<PlacesConfig> = {},
) {
  const lines: string[] = [];
  const clock = { now: 1_000_000 };
  const calls: string[] = [];
  const places = createPlaces(
    { provider: "google", url: "https://places.test/nearby", ...config },
    {
      fetch: (input, init) => {
        calls.push(String(input));
        return Promise.resolve(respond(init?.signal ?? undefined));
      },
      now: () => clock.now,
      warn: (line) => lines.push(line),
    },
  );
  return { places, lines, clock, calls };
}

/** An upstream that answers only once the test releases it. */
function gate() {
  const waiting: (() => void)[] = [];
  return {
    respond: (text: string) => () =>
      new Promise<Response>((resolve) =>
        waiting.push(() => resolve(new Response(text)))
      ),
    releaseAll: () => waiting.splice(0).forEach((release) => release()),
  };
}

/** An upstream that never answers until its request is aborted. */
function hang(signal: AbortSignal | undefined): Promise<Response> {
  return new Promise((_, reject) =>
    signal?.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    })
  );
}

async function using(
  places: PlacesProvider,
  body: () => Promise<void>,
): Promise<void> {
  try {
    await body();
  } finally {
    await places.close();
  }
}

function assertOverLimit(answer: PlacesAnswer, why: RegExp): void {
  assert.equal(answer.status, "OVER_QUERY_LIMIT");
  assert.deepEqual(answer.results, []);
  assert.match(answer.error_message ?? "", why);
}

// ---------------------------------------------------------------------------------------------
// The rate-limited line

Deno.test("createBoundLog() tells a bound's first hit, counts the next ones, and summarises them after the interval", () => {
  const lines: string[] = [];
  let now = 0;
  const log = createBoundLog({
    warn: (line) => lines.push(line),
    now: () => now,
    intervalMs: 1000,
  });
  log.hit("queueFull", "8 wait");
  for (let i = 0; i < 99; i++) log.hit("queueFull", "8 wait");
  log.hit("cacheFull", "full");
  assert.deepEqual(lines, [
    "places bound hit: queueFull: 8 wait",
    "places bound hit: cacheFull: full",
  ]);
  now = 999;
  log.hit("queueFull", "8 wait");
  assert.equal(lines.length, 2);
  now = 1000;
  log.hit("queueFull", "8 wait");
  assert.equal(
    lines[2],
    "places bound hit: queueFull: 8 wait (100 more since the last such line)",
  );
  assert.equal(log.count("queueFull"), 102);
  assert.equal(log.count("cacheFull"), 1);
  assert.equal(log.count("never"), 0);
});

// ---------------------------------------------------------------------------------------------
// The answer cache

Deno.test("cache: held answers stay within cacheMaxBytes, the least recently used going first", async () => {
  const answer = body(5, 100); // about 600 bytes of JSON
  const size = JSON.stringify(JSON.parse(answer)).length;
  const { places, lines, calls } = provider(() => new Response(answer), {
    cacheMaxBytes: 2 * size + 10,
  });
  await using(places, async () => {
    for (const lat of [1, 2, 3]) await places.nearby(at(lat));
    const stats = places.stats();
    assert.equal(stats.cacheEntries, 2);
    assert.ok(stats.cacheBytes <= 2 * size + 10, `${stats.cacheBytes}`);
    assert.equal(stats.cacheEvictions, 1);
    await places.nearby(at(2)); // held
    await places.nearby(at(1)); // evicted: asked again
    assert.equal(calls.length, 4);
    assert.equal(lines.length, 1);
    assert.match(lines[0], /^places bound hit: cacheFull: /);
  });
});

Deno.test("cache: an answer larger than cacheMaxBytes is served but not kept", async () => {
  const { places, calls } = provider(() => new Response(body(20, 100)), {
    cacheMaxBytes: 100,
  });
  await using(places, async () => {
    assert.equal((await places.nearby(UCLA)).results.length, 20);
    assert.equal((await places.nearby(UCLA)).results.length, 20);
    assert.equal(calls.length, 2);
    assert.equal(places.stats().cacheEntries, 0);
    assert.equal(places.stats().cacheBytes, 0);
  });
});

// ---------------------------------------------------------------------------------------------
// Callers waiting on upstream calls (the coalescing map)

Deno.test("cache: callers waiting on upstream calls are bounded, coalesced ones included", async () => {
  const upstream = gate();
  const { places, lines, calls } = provider(upstream.respond(body(3)), {
    maxWaiting: 2,
  });
  await using(places, async () => {
    const first = places.nearby(UCLA);
    const second = places.nearby(UCLA); // joins the first's call
    assertOverLimit(await places.nearby(UCLA), /2 callers wait/);
    assertOverLimit(await places.nearby(at(5)), /2 callers wait/);
    let stats = places.stats();
    assert.equal(stats.waiting, 2);
    assert.equal(stats.coalesced, 1);
    assert.equal(stats.rejectedWaitingFull, 2);
    assert.equal(calls.length, 1);
    assert.equal(lines.length, 1, "told once within the interval");
    assert.match(lines[0], /^places bound hit: waitingFull: /);
    upstream.releaseAll();
    assert.equal((await first).status, "OK");
    assert.equal((await second).status, "OK");
    stats = places.stats();
    assert.equal(stats.waiting, 0);
    assert.equal(stats.flights, 0);
  });
});

// ---------------------------------------------------------------------------------------------
// The upstream queue

Deno.test("cache: a full upstream queue is counted, and told once per interval with a count", async () => {
  const upstream = gate();
  const { places, lines, clock } = provider(upstream.respond(body(1)), {
    maxInFlight: 1,
    maxQueue: 1,
  });
  await using(places, async () => {
    const running = places.nearby(at(1));
    const queued = places.nearby(at(2));
    for (let lat = 3; lat < 8; lat++) {
      assertOverLimit(
        await places.nearby(at(lat)),
        /^the node's places queue is full \(1 requests waiting for 1 upstream calls\)/,
      );
    }
    assert.equal(places.stats().queued, 1);
    assert.equal(places.stats().rejectedQueueFull, 5);
    assert.equal(lines.length, 1);
    clock.now += 10_000;
    await places.nearby(at(9));
    assert.equal(lines.length, 2);
    assert.match(lines[1], /\(4 more since the last such line\)$/);
    upstream.releaseAll();
    await running;
    await Promise.resolve();
    upstream.releaseAll();
    await queued;
  });
});

// ---------------------------------------------------------------------------------------------
// Queries waiting for the gazetteer

Deno.test("offline: queries waiting for the gazetteer to load are bounded, counted and told", async () => {
  const lines: string[] = [];
  const places = createOfflinePlaces({
    maxQueue: 2,
    workerUrl: new URL("./fixtures/places/silent_worker.ts", import.meta.url),
    warn: (line) => lines.push(line),
    now: () => 0,
  });
  const waiting = [places.nearby(UCLA), places.nearby(UCLA)];
  for (let i = 0; i < 3; i++) {
    assertOverLimit(
      await places.nearby(UCLA),
      /^the node's places queue is full \(2 requests waiting for the offline gazetteer to load\)/,
    );
  }
  const stats = places.stats();
  assert.equal(stats.pending, 2);
  assert.equal(stats.maxQueue, 2);
  assert.equal(stats.rejectedQueueFull, 3);
  assert.deepEqual(lines, [
    "places bound hit: queueFull: 2 requests waiting for the offline gazetteer to load",
  ]);
  await places.close();
  for (const answer of await Promise.all(waiting)) {
    assert.equal(answer.error_message, "places provider is closed");
  }
  assert.equal(places.stats().pending, 0);
});

// ---------------------------------------------------------------------------------------------
// The query's own bound (what the node relies on instead of a timer of its own)

Deno.test("google answers within the query's timeoutMs when it is shorter than its own", async () => {
  const { places } = provider(hang, { timeoutMs: 4500 });
  await using(places, async () => {
    const started = performance.now();
    const answer = await places.nearby({ ...UCLA, timeoutMs: 50 });
    assert.ok(performance.now() - started < 2000);
    assert.equal(answer.status, "UNKNOWN_ERROR");
    assert.equal(
      answer.error_message,
      "places upstream did not answer within 50 ms",
    );
  });
});

Deno.test("offline answers within the query's timeoutMs while it loads", async () => {
  const places = createOfflinePlaces({
    timeoutMs: 4500,
    workerUrl: new URL("./fixtures/places/silent_worker.ts", import.meta.url),
  });
  await using(places, async () => {
    const started = performance.now();
    const answer = await places.nearby({ ...UCLA, timeoutMs: 50 });
    assert.ok(performance.now() - started < 2000);
    assert.equal(
      answer.error_message,
      "offline gazetteer did not answer within 50 ms (it is still loading)",
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The configuration error

Deno.test("placesConfigFromEnv() throws a PlacesConfigError naming the variable, in one line", async (t) => {
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ PLACES_PROVIDER: "bing\nnext line" }, "PLACES_PROVIDER", /"bing\\n/],
    [{ PLACES_URL: "ftp://x/\r\ny" }, "PLACES_URL", /^PLACES_URL must be/],
  ];
  for (const [env, variable, message] of cases) {
    await t.step(variable, () => {
      assert.throws(() => placesConfigFromEnv(env), (error: unknown) => {
        assert.ok(error instanceof PlacesConfigError);
        assert.equal(error.name, "PlacesConfigError");
        assert.equal(error.variable, variable);
        assert.match(error.message, message);
        assert.ok(!/[\n\r]/.test(error.message), error.message);
        return true;
      });
    });
  }
});
