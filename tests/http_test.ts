/**
 * The HTTP face over real HTTP against real in-process nodes: every endpoint's success and
 * error answers as exact JSON (PROTOCOL.md, HTTP), the body limit, health and readiness,
 * and the metrics families present and moving. Only the places upstream is stubbed.
 */

import assert from "assert";
import { nodeArgs } from "../lib/herd.ts";
import { HerdNode, NodeStartError } from "../lib/node.ts";
import { Store } from "../lib/store.ts";
import {
  Client,
  exchange,
  fixedClock,
  makeTopology,
  StubPlaces,
  tempDir,
  TestHerd,
  waitFor,
} from "./helpers.ts";

const NOW = 1520023935182837383n;
const KIWI = {
  client: "kiwi.cs.ucla.edu",
  location: "+34.068930-118.445127",
  time: "1520023934.918963997",
};
const KIWI_AT =
  "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";
const KIWI_FIELDS = {
  at: KIWI_AT,
  server: "Alford",
  skew: "+0.263873386",
  client: "kiwi.cs.ucla.edu",
  location: "+34.068930-118.445127",
  time: "1520023934.918963997",
  latitude: 34.06893,
  longitude: -118.445127,
};

function httpHerd(
  names = ["Alford"],
  links: [string, string][] = [],
): TestHerd {
  return new TestHerd({
    topology: makeTopology(names, links, { http: true }),
    config: () => ({ clock: fixedClock(NOW) }),
  });
}

function base(herd: TestHerd, name: string): string {
  return `http://127.0.0.1:${herd.topology.servers.get(name)!.httpPort}`;
}

interface Answer {
  status: number;
  type: string | null;
  body: unknown;
  text: string;
}

async function call(url: string, init?: RequestInit): Promise<Answer> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: unknown = undefined;
  try {
    body = JSON.parse(text);
  } catch { /* not JSON */ }
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    body,
    text,
  };
}

function post(url: string, body: unknown): Promise<Answer> {
  return call(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

Deno.test("GET /healthz and /readyz answer with the node's name once it runs and has loaded", async () => {
  await using herd = await httpHerd().startAll();
  await herd.nodes.get("Alford")!.store.loaded;
  const h = await call(`${base(herd, "Alford")}/healthz`);
  assert.deepEqual([h.status, h.body], [200, {
    node: "Alford",
    status: "ok",
  }]);
  assert.equal(h.type, "application/json; charset=utf-8");
  const r = await call(`${base(herd, "Alford")}/readyz`);
  assert.deepEqual([r.status, r.body], [200, {
    node: "Alford",
    status: "ready",
  }]);
});

Deno.test("POST /v1/iamat answers, once durable, with the AT line and its fields; the time keeps every digit", async () => {
  await using herd = await httpHerd().startAll();
  const a = await post(`${base(herd, "Alford")}/v1/iamat`, KIWI);
  assert.deepEqual([a.status, a.body], [200, KIWI_FIELDS]);
  assert.equal(a.type, "application/json; charset=utf-8");
  // The same record the line protocol would have made, and durable.
  const node = herd.nodes.get("Alford")!;
  assert.equal(node.store.get(KIWI.client), KIWI_AT);
  assert.equal(node.store.durable(), null);
  // 19 significant digits and a location written unusually: echoed as written.
  const b = await post(`${base(herd, "Alford")}/v1/iamat`, {
    client: "c2",
    location: "+34.06893-118.4451270",
    time: "1621464827.959498503",
  });
  assert.equal(b.status, 200);
  assert.equal(
    (b.body as { at: string }).at,
    "AT Alford -101440892.776661120 c2 +34.06893-118.4451270 1621464827.959498503",
  );
  assert.equal((b.body as { time: string }).time, "1621464827.959498503");
});

Deno.test("POST /v1/iamat refuses what IAMAT refuses, with 400 and a JSON error", async (t) => {
  await using herd = await httpHerd().startAll();
  const url = `${base(herd, "Alford")}/v1/iamat`;
  const cases: [string, unknown, string][] = [
    ["not JSON", "IAMAT kiwi +1+1 1", "the body must be a JSON object"],
    ["a JSON array", "[1]", "the body must be a JSON object"],
    [
      "no client",
      { location: "+1+1", time: "1" },
      "client is required and must be a string",
    ],
    [
      "a numeric time",
      { client: "k", location: "+1+1", time: 1.5 },
      "time is required and must be a string",
    ],
    [
      "a client with a space",
      { client: "a b", location: "+1+1", time: "1" },
      "client must be 1 to 256 bytes of printable characters without white space",
    ],
    [
      "a client of 257 bytes",
      { client: "x".repeat(257), location: "+1+1", time: "1" },
      "client must be 1 to 256 bytes of printable characters without white space",
    ],
    [
      "a location without signs",
      { client: "k", location: "34-118", time: "1" },
      "location must be ISO 6709 decimal degrees with signs, like +34.068930-118.445127, latitude within 90 and longitude within 180",
    ],
    [
      "a latitude of 91",
      { client: "k", location: "+91+0", time: "1" },
      "location must be ISO 6709 decimal degrees with signs, like +34.068930-118.445127, latitude within 90 and longitude within 180",
    ],
    [
      "an exponent",
      { client: "k", location: "+1+1", time: "1e9" },
      'time must be a string of POSIX seconds with up to 9 fraction digits, like "1520023934.918963997"',
    ],
    [
      "ten fraction digits",
      { client: "k", location: "+1+1", time: "1.0123456789" },
      'time must be a string of POSIX seconds with up to 9 fraction digits, like "1520023934.918963997"',
    ],
  ];
  for (const [what, body, error] of cases) {
    await t.step(what, async () => {
      const a = await post(url, body);
      assert.deepEqual([a.status, a.body], [400, { error }]);
    });
  }
  assert.equal(herd.nodes.get("Alford")!.store.size, 0);
});

Deno.test("a body over 16 KiB gets 413, declared or streamed, and the node keeps serving", async () => {
  await using herd = await httpHerd().startAll();
  const url = `${base(herd, "Alford")}/v1/iamat`;
  const big = JSON.stringify({ ...KIWI, pad: "x".repeat(16 * 1024) });
  const declared = await post(url, big);
  assert.deepEqual([declared.status, declared.body], [413, {
    error: "the body is larger than 16384 bytes",
  }]);
  // Chunked (no Content-Length): counted while read, cut at the limit.
  const chunk = new TextEncoder().encode("x".repeat(4096));
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent++ < 64) c.enqueue(chunk);
      else c.close();
    },
  });
  const streamed = await call(url, { method: "POST", body: stream });
  assert.deepEqual([streamed.status, streamed.body], [413, {
    error: "the body is larger than 16384 bytes",
  }]);
  // Whatever the path: a declared body over the limit is refused before routing.
  const elsewhere = await post(`${base(herd, "Alford")}/v1/clients/kiwi`, big);
  assert.deepEqual([elsewhere.status, elsewhere.body], [413, {
    error: "the body is larger than 16384 bytes",
  }]);
  const ok = await post(url, KIWI);
  assert.equal(ok.status, 200);
});

Deno.test("a record posted at one node is returned by another node's GET /v1/clients/ID", async () => {
  await using herd = await httpHerd(["Alford", "Hamilton", "Welsh"], [[
    "Alford",
    "Hamilton",
  ], ["Hamilton", "Welsh"]]).startAll();
  assert.equal(
    (await post(`${base(herd, "Alford")}/v1/iamat`, KIWI)).status,
    200,
  );
  const url = `${base(herd, "Welsh")}/v1/clients/kiwi.cs.ucla.edu`;
  let got: Answer | undefined;
  await waitFor(
    async () => {
      got = await call(url);
      return got.status === 200;
    },
    10_000,
    "the record to reach Welsh",
  );
  assert.deepEqual(got!.body, KIWI_FIELDS);
});

Deno.test("GET /v1/clients/ID: percent-encoded UTF-8 ids, 404 for an unknown client, 400 for an id IAMAT refuses", async () => {
  await using herd = await httpHerd().startAll();
  const b = base(herd, "Alford");
  // Said over the line protocol (UTF-8 bytes), read over HTTP (percent-encoded).
  const id = "kiwi/é";
  assert.equal(
    await exchange(herd.port("Alford"), `IAMAT ${id} +1+1 1520023935\n`),
    // The reply is bytes: the test client reads them as latin1.
    `AT Alford +0.182837383 ${
      String.fromCharCode(...new TextEncoder().encode(id))
    } +1+1 1520023935\n`,
  );
  const known = await call(`${b}/v1/clients/${encodeURIComponent(id)}`);
  assert.deepEqual([known.status, known.body], [200, {
    at: `AT Alford +0.182837383 ${id} +1+1 1520023935`,
    server: "Alford",
    skew: "+0.182837383",
    client: id,
    location: "+1+1",
    time: "1520023935",
    latitude: 1,
    longitude: 1,
  }]);
  const unknown = await call(`${b}/v1/clients/nobody`);
  assert.deepEqual([unknown.status, unknown.body], [404, {
    error: "unknown client: nobody",
  }]);
  const spaced = await call(`${b}/v1/clients/a%20b`);
  assert.deepEqual([spaced.status, spaced.body], [400, {
    error:
      "client must be 1 to 256 bytes of printable characters without white space",
  }]);
  const badUtf8 = await call(`${b}/v1/clients/%FF`);
  assert.deepEqual([badUtf8.status, badUtf8.body], [400, {
    error: "the client id is not valid percent-encoded UTF-8",
  }]);
});

Deno.test("GET /v1/clients/ID/nearby: places is exactly the JSON WHATSAT answers with; 400 and 404 as WHATSAT refuses", async () => {
  await using herd = await httpHerd().startAll();
  const b = base(herd, "Alford");
  await post(`${b}/v1/iamat`, KIWI);
  const a = await call(
    `${b}/v1/clients/kiwi.cs.ucla.edu/nearby?radius=10&bound=3`,
  );
  assert.equal(a.status, 200);
  const places = {
    html_attributions: [],
    results: [{ name: "place 0" }, { name: "place 1" }, { name: "place 2" }],
    status: "OK",
  };
  assert.deepEqual(a.body, { at: KIWI_AT, places });
  // The line protocol's answer carries the same JSON.
  const line = await exchange(
    herd.port("Alford"),
    "WHATSAT kiwi.cs.ucla.edu 10 3\n",
  );
  const [atLine, ...json] = line.replace(/\n\n$/, "").split("\n");
  assert.equal(atLine, KIWI_AT);
  assert.deepEqual(JSON.parse(json.join("\n")), places);
  // The upstream got the same query both times.
  const stub = herd.nodes.get("Alford")!.config.places as StubPlaces;
  assert.equal(stub.queries.length, 2);
  assert.deepEqual(
    [stub.queries[0].radiusM, stub.queries[0].bound],
    [stub.queries[1].radiusM, stub.queries[1].bound],
  );
  const rule =
    "radius must be a decimal number of km, 0 < radius <= 50, and bound an integer, 1 <= bound <= 20";
  for (
    const q of [
      "radius=51&bound=5",
      "radius=0&bound=5",
      "radius=10&bound=21",
      "radius=10&bound=0",
      "radius=1e1&bound=5",
      "radius=10%205&bound=5",
    ]
  ) {
    const r = await call(`${b}/v1/clients/kiwi.cs.ucla.edu/nearby?${q}`);
    assert.deepEqual([r.status, r.body], [400, { error: rule }], q);
  }
  const missing = await call(
    `${b}/v1/clients/kiwi.cs.ucla.edu/nearby?radius=10`,
  );
  assert.deepEqual([missing.status, missing.body], [400, {
    error: "radius and bound are required: ?radius=KM&bound=N",
  }]);
  const unknown = await call(`${b}/v1/clients/nobody/nearby?radius=10&bound=3`);
  assert.deepEqual([unknown.status, unknown.body], [404, {
    error: "unknown client: nobody",
  }]);
  assert.equal(stub.queries.length, 2, "refused queries never reach upstream");
});

Deno.test("unknown paths get 404 and wrong methods 405 with Allow, as JSON", async () => {
  await using herd = await httpHerd().startAll();
  const b = base(herd, "Alford");
  const nf = await call(`${b}/nope`);
  assert.deepEqual([nf.status, nf.body], [404, {
    error: "no such resource: /nope",
  }]);
  const deep = await call(`${b}/v1/clients/kiwi/near`);
  assert.deepEqual([deep.status, deep.body], [404, {
    error: "no such resource: /v1/clients/kiwi/near",
  }]);
  const res = await fetch(`${b}/v1/iamat`);
  assert.deepEqual([res.status, await res.json(), res.headers.get("allow")], [
    405,
    { error: "method not allowed: use POST" },
    "POST",
  ]);
  const del = await call(`${b}/healthz`, { method: "DELETE" });
  assert.equal(del.status, 405);
});

/** Parses Prometheus text into `name{labels}` -> value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

async function metrics(
  herd: TestHerd,
  name: string,
): Promise<Map<string, number>> {
  const a = await call(`${base(herd, name)}/metrics`);
  assert.equal(a.status, 200);
  assert.equal(a.type, "text/plain; version=0.0.4; charset=utf-8");
  return samples(a.text);
}

Deno.test("/metrics has the contract's families with their types, and they move", async () => {
  await using herd = await httpHerd(["Alford", "Hamilton"], [[
    "Alford",
    "Hamilton",
  ]]).startAll();
  await waitFor(
    () => herd.nodes.get("Alford")!.flood.connected().length === 1,
    10_000,
    "the link to come up",
  );
  const text = (await call(`${base(herd, "Alford")}/metrics`)).text;
  for (
    const [family, type] of [
      ["herd_iamat_total", "counter"],
      ["herd_whatsat_total", "counter"],
      ["herd_invalid_total", "counter"],
      ["herd_clients", "gauge"],
      ["herd_client_connections", "gauge"],
      ["herd_peer_up", "gauge"],
      ["herd_records_received_total", "counter"],
      ["herd_records_sent_total", "counter"],
      ["herd_kv_commit_seconds", "histogram"],
      ["herd_places_requests_total", "counter"],
      ["herd_uptime_seconds", "gauge"],
      ["herd_build_info", "gauge"],
    ]
  ) {
    assert.ok(
      text.includes(`\n# TYPE ${family} ${type}\n`) ||
        text.startsWith(`# HELP ${family} `),
      `${family} ${type}`,
    );
  }
  let m = await metrics(herd, "Alford");
  assert.equal(m.get("herd_iamat_total"), 0);
  assert.equal(m.get('herd_peer_up{peer="Hamilton"}'), 1);
  assert.equal(m.get("herd_kv_commit_seconds_count"), 0);
  // An IAMAT, a WHATSAT and an invalid line on the client port, from one open connection.
  using c = await Client.connect(herd.port("Alford"));
  await c.send(`IAMAT ${KIWI.client} ${KIWI.location} ${KIWI.time}\n`);
  await c.lines(1);
  await c.send(`WHATSAT ${KIWI.client} 10 2\nHELLO\n`);
  await c.readUntil("? HELLO\n");
  m = await metrics(herd, "Alford");
  assert.equal(m.get("herd_iamat_total"), 1);
  assert.equal(m.get("herd_whatsat_total"), 1);
  assert.equal(m.get("herd_invalid_total"), 1);
  assert.equal(m.get("herd_clients"), 1);
  assert.equal(m.get("herd_client_connections"), 1);
  assert.equal(m.get('herd_places_requests_total{status="OK"}'), 1);
  assert.equal(m.get("herd_kv_commit_seconds_count"), 1);
  assert.equal(m.get('herd_kv_commit_seconds_bucket{le="+Inf"}'), 1);
  assert.equal(m.get("herd_kv_commit_records_sum"), 1);
  await waitFor(
    async () =>
      (await metrics(herd, "Alford")).get(
        'herd_records_sent_total{peer="Hamilton"}',
      ) === 1,
    5000,
    "the record to be sent",
  );
  await waitFor(
    async () =>
      (await metrics(herd, "Hamilton")).get(
        'herd_records_received_total{peer="Alford"}',
      ) === 1,
    5000,
    "the record to be received",
  );
  // A neighbor that stops: its link goes down.
  await herd.stop("Hamilton");
  await waitFor(
    async () =>
      (await metrics(herd, "Alford")).get('herd_peer_up{peer="Hamilton"}') ===
        0,
    10_000,
    "herd_peer_up to fall to 0",
  );
});

Deno.test("/readyz is 503 while a large store loads, then 200; /healthz is 200 throughout", async () => {
  await using dir = await tempDir();
  const n = 200_000;
  {
    const kv = await Deno.openKv(`${dir.path}/A.kv`);
    const store = await Store.open(kv, {
      snapshotMinRecords: Number.MAX_SAFE_INTEGER,
    });
    await store.loaded;
    for (let i = 0; i < n; i++) {
      store.offer(`AT A +0.000000000 client-${i} +1+1 ${1700000000 + i}`);
    }
    await store.durable()!.promise;
    await store.snapshot();
    await store.close();
    kv.close();
  }
  const topology = makeTopology(["A"], [], { http: true });
  const node = new HerdNode({
    name: "A",
    topology,
    dataDir: dir.path,
    places: new StubPlaces(),
    console: false,
  });
  try {
    await node.start();
    const b = `http://127.0.0.1:${node.httpPort}`;
    const first = await call(`${b}/readyz`);
    assert.equal(node.store.isLoaded, false, "still loading after the answer");
    assert.deepEqual([first.status, first.body], [503, {
      node: "A",
      status: "loading",
    }]);
    assert.equal((await call(`${b}/healthz`)).status, 200);
    await waitFor(
      async () => (await call(`${b}/readyz`)).status === 200,
      30_000,
      "ready",
    );
    assert.equal(node.store.size, n);
  } finally {
    await node.stop();
  }
});

Deno.test("a node serves no HTTP without an httpPort, and an HTTP port in use is one clear start error", async () => {
  await using plain = await new TestHerd({
    topology: makeTopology(["A"], []),
  }).startAll();
  assert.equal(plain.nodes.get("A")!.httpPort, undefined);
  assert.equal(plain.nodes.get("A")!.http, null);

  const topology = makeTopology(["A"], [], { http: true });
  const spec = topology.servers.get("A")!;
  const squatter = Deno.listen({ hostname: "127.0.0.1", port: spec.httpPort! });
  try {
    const node = new HerdNode({
      name: "A",
      topology,
      dataDir: null,
      places: new StubPlaces(),
      console: false,
    });
    await assert.rejects(
      () => node.start(),
      (e: Error) => {
        assert.ok(e instanceof NodeStartError);
        assert.equal(
          e.message,
          `HTTP port ${spec.httpPort} on 127.0.0.1 is already in use (is A already running?)`,
        );
        return true;
      },
    );
    // The client port was let go: it can be bound again at once.
    Deno.listen({ hostname: "127.0.0.1", port: spec.port }).close();
  } finally {
    squatter.close();
  }
});

Deno.test("nodeArgs: a node with an httpPort may listen on it", () => {
  const topology = makeTopology(["A", "B"], [["A", "B"]], { http: true });
  const a = topology.servers.get("A")!;
  const net = nodeArgs(a, topology, {
    topologyPath: "/t.json",
    dataDir: "/d",
    env: {},
  }).find((x) => x.startsWith("--allow-net="))!;
  assert.ok(net.split(/[=,]/).includes(`127.0.0.1:${a.httpPort}`), net);
});
