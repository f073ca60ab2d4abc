/**
 * WHATSAT end to end through each places provider, over TCP against a real node: the
 * offline gazetteer with no key and no network, and both Google APIs pointed at local fake
 * HTTP servers (real `fetch`, real sockets).
 */

import assert from "assert";
import { distanceKm } from "../lib/location.ts";
import { createPlaces } from "../lib/places/mod.ts";
import { exchange, makeTopology, TestHerd } from "./helpers.ts";
import type { PlacesProvider } from "../lib/places/mod.ts";

const UCLA =
  "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997\n";

async function lone(places: PlacesProvider) {
  return await new TestHerd({
    topology: makeTopology(["Alford"], []),
    config: () => ({ places }),
  }).startAll();
}

function jsonOf(reply: string): {
  status: string;
  results: {
    name: string;
    geometry: { location: { lat: number; lng: number } };
  }[];
} {
  const at = reply.indexOf("\n");
  assert.ok(reply.endsWith("\n\n"));
  return JSON.parse(reply.slice(at + 1));
}

Deno.test("with no key, WHATSAT near UCLA answers from the offline gazetteer, nearest first, within the radius", async () => {
  await using herd = await lone(createPlaces({ provider: "offline" }));
  const port = herd.port("Alford");
  await exchange(port, UCLA);
  const json = jsonOf(
    await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 20\n", 15_000),
  );
  assert.equal(json.status, "OK");
  const names = json.results.map((r) => r.name);
  for (
    const expected of [
      "Beverly Hills",
      "Santa Monica",
      "Culver City",
      "West Hollywood",
    ]
  ) {
    assert.ok(names.includes(expected), `${expected} in ${names}`);
  }
  const d = json.results.map((r) =>
    distanceKm(
      34.06893,
      -118.445127,
      r.geometry.location.lat,
      r.geometry.location.lng,
    )
  );
  for (let i = 0; i < d.length; i++) {
    assert.ok(d[i] <= 10, `${names[i]} is ${d[i]} km away`);
    if (i > 0) assert.ok(d[i] >= d[i - 1], "nearest first");
  }
});

Deno.test("with no key, WHATSAT far out at sea answers ZERO_RESULTS in the same framing", async () => {
  await using herd = await lone(createPlaces({ provider: "offline" }));
  const port = herd.port("Alford");
  await exchange(port, "IAMAT boat +00.0-140.0 1\n");
  const reply = await exchange(port, "WHATSAT boat 1 5\n", 15_000);
  assert.ok(reply.startsWith("AT Alford "));
  assert.deepEqual(JSON.parse(reply.slice(reply.indexOf("\n") + 1)), {
    html_attributions: [],
    results: [],
    status: "ZERO_RESULTS",
  });
});

/** A local HTTP server standing in for Google; counts and records requests. */
function fakeUpstream(handler: (req: Request, body: string) => Response) {
  const seen: { url: URL; method: string; headers: Headers; body: string }[] =
    [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      const body = await req.text();
      seen.push({
        url: new URL(req.url),
        method: req.method,
        headers: req.headers,
        body,
      });
      return handler(req, body);
    },
  );
  return {
    seen,
    url: (path: string) => `http://127.0.0.1:${server.addr.port}${path}`,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

const LEGACY = {
  html_attributions: [],
  results: Array.from({ length: 20 }, (_, i) => ({
    name: `Place ${i}`,
    place_id: `ChIJ${i}`,
    geometry: { location: { lat: 34.07, lng: -118.44 } },
    vicinity: `${i} Westwood Blvd`,
  })),
  status: "OK",
};

Deno.test("legacy Google behind a local fake: ten WHATSATs within the TTL make one upstream request", async () => {
  await using upstream = fakeUpstream(() => Response.json(LEGACY));
  await using herd = await lone(
    createPlaces(
      {
        provider: "google",
        apiKey: "test-key-legacy",
        url: upstream.url("/maps/api/place/nearbysearch/json"),
      },
    ),
  );
  const port = herd.port("Alford");
  await exchange(port, UCLA);
  for (let bound = 1; bound <= 10; bound++) {
    const json = jsonOf(
      await exchange(port, `WHATSAT kiwi.cs.ucla.edu 10 ${bound}\n`),
    );
    assert.equal(json.status, "OK");
    assert.equal(json.results.length, bound);
  }
  assert.equal(upstream.seen.length, 1);
  const q = upstream.seen[0].url.searchParams;
  assert.equal(
    upstream.seen[0].url.pathname,
    "/maps/api/place/nearbysearch/json",
  );
  assert.equal(q.get("location"), "34.068930,-118.445127");
  assert.equal(q.get("radius"), "10000");
  assert.equal(q.get("key"), "test-key-legacy");
});

Deno.test("google-new behind a local fake: the reply is in the legacy shape with the fake's places", async () => {
  await using upstream = fakeUpstream(() =>
    Response.json({
      places: [
        {
          id: "ChIJnew1",
          displayName: { text: "Royce Hall", languageCode: "en" },
          location: { latitude: 34.0729, longitude: -118.4422 },
          shortFormattedAddress: "340 Royce Dr, Los Angeles",
          types: ["performing_arts_theater", "point_of_interest"],
          rating: 4.8,
          userRatingCount: 1520,
          businessStatus: "OPERATIONAL",
        },
        {
          id: "ChIJnew2",
          displayName: { text: "Powell Library" },
          location: { latitude: 34.0716, longitude: -118.4422 },
          types: ["library"],
        },
      ],
    })
  );
  await using herd = await lone(
    createPlaces({
      provider: "google-new",
      apiKey: "test-key-new",
      url: upstream.url("/v1/places:searchNearby"),
    }),
  );
  const port = herd.port("Alford");
  await exchange(port, UCLA);
  const reply = await exchange(port, "WHATSAT kiwi.cs.ucla.edu 2.5 20\n");
  const json = JSON.parse(reply.slice(reply.indexOf("\n") + 1));
  assert.equal(json.status, "OK");
  assert.deepEqual(json.html_attributions, []);
  assert.equal(json.results.length, 2);
  assert.equal(json.results[0].name, "Royce Hall");
  assert.equal(json.results[0].place_id, "ChIJnew1");
  assert.deepEqual(json.results[0].geometry.location, {
    lat: 34.0729,
    lng: -118.4422,
  });
  assert.equal(json.results[0].vicinity, "340 Royce Dr, Los Angeles");
  assert.equal(json.results[0].rating, 4.8);
  assert.equal(json.results[0].user_ratings_total, 1520);
  assert.equal(json.results[0].business_status, "OPERATIONAL");
  assert.equal(json.results[1].name, "Powell Library");
  const req = upstream.seen[0];
  assert.equal(req.method, "POST");
  assert.equal(req.headers.get("x-goog-api-key"), "test-key-new");
  assert.ok(
    req.headers.get("x-goog-fieldmask")?.includes("places.displayName"),
  );
  const body = JSON.parse(req.body);
  assert.deepEqual(body.locationRestriction.circle.center, {
    latitude: 34.06893,
    longitude: -118.445127,
  });
  assert.equal(body.locationRestriction.circle.radius, 2500);
  assert.ok(!reply.includes("test-key-new"));
});

Deno.test("a new position report asks upstream again: a cached success never hides an upstream that now fails", async () => {
  let mode: "ok" | "fail" = "ok";
  await using upstream = fakeUpstream(() =>
    mode === "ok" ? Response.json(LEGACY) : Response.json({
      results: [],
      status: "REQUEST_DENIED",
      error_message: "denied",
    })
  );
  await using herd = await lone(
    createPlaces({
      provider: "google",
      apiKey: "K",
      url: upstream.url("/nearby"),
    }),
  );
  const port = herd.port("Alford");
  await exchange(port, UCLA);
  assert.equal(
    jsonOf(await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 5\n")).status,
    "OK",
  );
  mode = "fail";
  // Another client at the very same spot, and the same client reporting again.
  await exchange(port, UCLA.replace("kiwi.cs.ucla.edu", "other"));
  assert.equal(
    jsonOf(await exchange(port, "WHATSAT other 10 5\n")).status,
    "REQUEST_DENIED",
  );
  await exchange(port, UCLA.replace("1520023934.918963997", "1520023935"));
  assert.equal(
    jsonOf(await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 5\n")).status,
    "REQUEST_DENIED",
  );
  assert.equal(upstream.seen.length, 3);
  for (const req of upstream.seen) {
    assert.equal(req.url.searchParams.get("location"), "34.068930,-118.445127");
  }
});

Deno.test("a short API key that matches ordinary text never corrupts an answer", async () => {
  await using upstream = fakeUpstream(() => Response.json(LEGACY));
  await using herd = await lone(
    createPlaces({
      provider: "google",
      apiKey: "name",
      url: upstream.url("/nearby"),
    }),
  );
  const port = herd.port("Alford");
  await exchange(port, UCLA);
  const reply = await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 2\n");
  assert.deepEqual(JSON.parse(reply.slice(reply.indexOf("\n") + 1)), {
    ...LEGACY,
    results: LEGACY.results.slice(0, 2),
  });
});
