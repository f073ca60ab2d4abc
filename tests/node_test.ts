/**
 * The client protocol over real TCP against a real node: exact bytes for every rule of
 * PROTOCOL.md (framing, IAMAT, WHATSAT, invalid lines, ordering), with the places upstream
 * stubbed.
 */

import assert from "assert";
import { encodeFrame } from "../lib/bus/frames.ts";
import { createPlaces } from "../lib/places/mod.ts";
import {
  Client,
  exchange,
  fixedClock,
  makeTopology,
  StubPlaces,
  TestHerd,
} from "./helpers.ts";
import type { NodeConfig } from "../lib/node.ts";

const NOW = 1520023935182837383n; // receive time used by the fixed clock
const IAMAT =
  "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";
const AT =
  "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";

function lone(config: Partial<NodeConfig> = {}): TestHerd {
  return new TestHerd({
    topology: makeTopology(["Alford"], []),
    config: () => ({ clock: fixedClock(NOW), ...config }),
  });
}

Deno.test("IAMAT is answered with the AT line: node, exact signed skew, fields verbatim", async () => {
  await using herd = await lone().startAll();
  assert.equal(await exchange(herd.port("Alford"), IAMAT + "\n"), AT + "\n");
});

Deno.test("IAMAT skew is exact in nanoseconds, negative, zero and far in the past", async () => {
  await using herd = await lone().startAll();
  const reply = await exchange(
    herd.port("Alford"),
    [
      "IAMAT a +1+1 1520023935.182837383", // equal: +0
      "IAMAT b +1+1 1520023935.182837384", // 1 ns in the future
      "IAMAT c +1+1 1520023936", // future, no fraction
      "IAMAT d +1+1 0.5", // far past
      "IAMAT e +1+1 1520023935.1", // short fraction
      "IAMAT f +1+1 0001520023935.182837383", // leading zeros
    ].join("\n") + "\n",
  );
  assert.equal(
    reply,
    [
      "AT Alford +0.000000000 a +1+1 1520023935.182837383",
      "AT Alford -0.000000001 b +1+1 1520023935.182837384",
      "AT Alford -0.817162617 c +1+1 1520023936",
      "AT Alford +1520023934.682837383 d +1+1 0.5",
      "AT Alford +0.082837383 e +1+1 1520023935.1",
      "AT Alford +0.000000000 f +1+1 0001520023935.182837383",
    ].join("\n") + "\n",
  );
});

Deno.test("coordinates and times are echoed as written, never re-formatted", async () => {
  await using herd = await lone().startAll();
  const reply = await exchange(
    herd.port("Alford"),
    "IAMAT kiwi +34.06893-118.445127 1520023934.9\nIAMAT kiwi2 +34-118 1520023934\nIAMAT k3 -00.0+000.000 1\n",
  );
  assert.equal(
    reply,
    "AT Alford +0.282837383 kiwi +34.06893-118.445127 1520023934.9\n" +
      "AT Alford +1.182837383 kiwi2 +34-118 1520023934\n" +
      "AT Alford +1520023934.182837383 k3 -00.0+000.000 1\n",
  );
});

Deno.test("fields may be separated by any run of white space, leading and trailing ignored", async () => {
  await using herd = await lone().startAll();
  const messy =
    " \t IAMAT\t\tkiwi.cs.ucla.edu \x0b+34.068930-118.445127\x0c 1520023934.918963997 \r\n";
  assert.equal(await exchange(herd.port("Alford"), messy), AT + "\n");
});

Deno.test("many messages in one write are answered in order", async () => {
  await using herd = await lone().startAll();
  const lines = Array.from({ length: 200 }, (_, i) => `IAMAT c${i} +1+1 ${i}`);
  const reply = await exchange(herd.port("Alford"), lines.join("\n") + "\n");
  const got = reply.trimEnd().split("\n");
  assert.equal(got.length, 200);
  got.forEach((l, i) =>
    assert.match(l, new RegExp(`^AT Alford \\S+ c${i} \\+1\\+1 ${i}$`))
  );
});

Deno.test("a message split down to one byte per write is one message", async () => {
  await using herd = await lone().startAll();
  using c = await Client.connect(herd.port("Alford"));
  for (const ch of IAMAT + "\r\n") {
    await c.send(ch);
    await new Promise((r) => setTimeout(r, 1));
  }
  assert.equal(await c.lines(1), AT + "\n");
});

Deno.test("a final line without a newline is answered at EOF before the node closes", async () => {
  await using herd = await lone().startAll();
  assert.equal(await exchange(herd.port("Alford"), IAMAT), AT + "\n");
  assert.equal(await exchange(herd.port("Alford"), "nonsense"), "? nonsense\n");
});

Deno.test("nothing sent and EOF: the node just closes", async () => {
  await using herd = await lone().startAll();
  assert.equal(await exchange(herd.port("Alford"), ""), "");
  assert.equal(await exchange(herd.port("Alford"), "\n"), "? \n");
});

const INVALID_LINES = [
  "",
  "   ",
  "\t",
  "HELLO",
  "iamat kiwi +34-118 1",
  "IAMAT",
  "IAMAT kiwi",
  "IAMAT kiwi +34-118",
  "IAMAT kiwi +34-118 1 extra",
  "IAMAT kiwi 34-118 1",
  "IAMAT kiwi +34 1",
  "IAMAT kiwi +91-118 1",
  "IAMAT kiwi +34-181 1",
  "IAMAT kiwi +90.0000001+0 1",
  "IAMAT kiwi +34..0-118 1",
  "IAMAT kiwi +34.-118 1",
  "IAMAT kiwi ++34-118 1",
  "IAMAT kiwi +34-118+5 1",
  "IAMAT kiwi +3a-118 1",
  "IAMAT kiwi +34-118 -1",
  "IAMAT kiwi +34-118 +1",
  "IAMAT kiwi +34-118 1e9",
  "IAMAT kiwi +34-118 0x10",
  "IAMAT kiwi +34-118 NaN",
  "IAMAT kiwi +34-118 Infinity",
  "IAMAT kiwi +34-118 1.",
  "IAMAT kiwi +34-118 .5",
  "IAMAT kiwi +34-118 1.1234567890",
  "IAMAT kiwi +34-118 1,5",
  "WHATSAT",
  "WHATSAT kiwi",
  "WHATSAT kiwi 10",
  "WHATSAT kiwi 10 5 5",
  "WHATSAT kiwi 0 5",
  "WHATSAT kiwi 0.0 5",
  "WHATSAT kiwi -1 5",
  "WHATSAT kiwi 51 5",
  "WHATSAT kiwi 50.0001 5",
  "WHATSAT kiwi abc 5",
  "WHATSAT kiwi 1e1 5",
  "WHATSAT kiwi NaN 5",
  "WHATSAT kiwi Infinity 5",
  "WHATSAT kiwi 0x10 5",
  "WHATSAT kiwi 10 0",
  "WHATSAT kiwi 10 21",
  "WHATSAT kiwi 10 -1",
  "WHATSAT kiwi 10 1.5",
  "WHATSAT kiwi 10 abc",
  "WHATSAT unknown-client 10 5",
  "whatsat kiwi 10 5",
  "AT Alford +0.263873386 kiwi +34-118 1",
  "AT",
  "HERD SUM abc",
  "IAMAT " + "x".repeat(257) + " +34-118 1",
  "IAMAT ki\x01wi +34-118 1",
  "IAMAT ki\x7fwi +34-118 1",
];

Deno.test("every kind of invalid line gets '? ' and the line as received, and the connection stays open", async () => {
  await using herd = await lone().startAll();
  using c = await Client.connect(herd.port("Alford"));
  await c.send("IAMAT kiwi +34-118 1\n");
  await c.lines(1);
  for (const line of INVALID_LINES) {
    await c.send(line + "\n");
    assert.equal(await c.lines(1), `? ${line}\n`, JSON.stringify(line));
  }
  await c.send(IAMAT + "\n");
  assert.equal(await c.lines(1), AT + "\n");
});

Deno.test("a first line that looks like peer talk is an invalid client line and the connection stays open", async () => {
  await using herd = await lone().startAll();
  for (
    const first of [
      "HERD SUM abc",
      "HERD HELLO Nobody 00",
      "HERD HELLO",
      "HERD",
    ]
  ) {
    assert.equal(
      await exchange(herd.port("Alford"), `${first}\n${IAMAT}\n`),
      `? ${first}\n${AT}\n`,
      first,
    );
  }
});

Deno.test("binary garbage is an invalid line echoed byte for byte", async () => {
  await using herd = await lone().startAll();
  const garbage = new Uint8Array(256);
  for (let i = 0; i < 256; i++) garbage[i] = 255 - i === 10 ? 0 : 255 - i;
  const bytes = new Uint8Array([...garbage, 10]);
  const reply = await exchange(herd.port("Alford"), bytes);
  const expected = "? " + String.fromCharCode(...garbage) + "\n";
  assert.equal(reply, expected);
});

Deno.test("a client id may be UTF-8 text and is echoed byte for byte", async () => {
  await using herd = await lone().startAll();
  const reply = await exchange(
    herd.port("Alford"),
    "IAMAT café-Ω +1+1 1520023935.182837383\n",
  );
  const bytes = new TextEncoder().encode(
    "AT Alford +0.000000000 café-Ω +1+1 1520023935.182837383\n",
  );
  assert.equal(reply, String.fromCharCode(...bytes));
});

Deno.test("a line over the limit is answered '?' cut to the limit, that connection closes, others keep working", async () => {
  await using herd = await lone({ maxLineBytes: 1024 }).startAll();
  using other = await Client.connect(herd.port("Alford"));
  using c = await Client.connect(herd.port("Alford"));
  await c.send(IAMAT + "\n");
  const big = "X".repeat(1024 * 1024);
  const sending = c.send(big + "\n").catch(() => {});
  const reply = await c.readAll(10_000);
  await sending;
  assert.equal(reply, AT + "\n" + "? " + "X".repeat(1024) + "\n");
  await other.send(IAMAT + "\n");
  assert.equal(await other.lines(1), AT + "\n");
});

Deno.test("by default a line over 16 KiB is answered '?' cut to 16 KiB and that connection closes", async () => {
  await using herd = await new TestHerd({
    topology: makeTopology(["Alford"], []),
  })
    .startAll();
  using c = await Client.connect(herd.port("Alford"));
  const sending = c.send("Z".repeat(1024 * 1024)).catch(() => {}); // no newline at all
  const reply = await c.readAll(10_000);
  await sending;
  assert.equal(reply, "? " + "Z".repeat(16 * 1024) + "\n");
  assert.equal(
    await exchange(herd.port("Alford"), "W".repeat(16 * 1024) + "\n"),
    "? " + "W".repeat(16 * 1024) + "\n",
    "16 KiB exactly is still a line",
  );
});

Deno.test("a line of exactly the limit is accepted as a line", async () => {
  await using herd = await lone({ maxLineBytes: 64 }).startAll();
  const line = "Y".repeat(64);
  assert.equal(
    await exchange(herd.port("Alford"), line + "\r\n" + line + "\n"),
    `? ${line}\n? ${line}\n`,
  );
});

Deno.test("a plain client's AT line is refused and stored nowhere", async () => {
  await using herd = await lone().startAll();
  const forged = "AT Ball +0.000000001 victim +1+1 9999999999";
  assert.equal(
    await exchange(herd.port("Alford"), forged + "\n"),
    `? ${forged}\n`,
  );
  assert.equal(herd.nodes.get("Alford")!.store.get("victim"), undefined);
});

Deno.test("an older IAMAT is answered with its own AT line but does not replace the newer record", async () => {
  await using herd = await lone().startAll();
  const port = herd.port("Alford");
  await exchange(port, "IAMAT kiwi +1+1 100\n");
  assert.equal(
    await exchange(port, "IAMAT kiwi +2+2 50\n"),
    "AT Alford +1520023885.182837383 kiwi +2+2 50\n",
  );
  assert.equal(
    herd.nodes.get("Alford")!.store.get("kiwi"),
    "AT Alford +1520023835.182837383 kiwi +1+1 100",
  );
});

const PLACES = {
  html_attributions: [],
  results: Array.from(
    { length: 20 },
    (_, i) => ({ name: `Place ${i}`, place_id: `p${i}` }),
  ),
  status: "OK",
};

Deno.test("WHATSAT: the stored AT line, the JSON cut to the bound, and an empty line", async () => {
  const stub = new StubPlaces(() => PLACES);
  await using herd = await lone({ places: stub }).startAll();
  const port = herd.port("Alford");
  await exchange(port, IAMAT + "\n");
  const reply = await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 3\n");
  assert.ok(reply.startsWith(AT + "\n"));
  assert.ok(reply.endsWith("\n\n"));
  assert.equal(
    reply.indexOf("\n\n"),
    reply.length - 2,
    "no empty line before the end",
  );
  const json = JSON.parse(reply.slice(AT.length + 1));
  assert.deepEqual(json, { ...PLACES, results: PLACES.results.slice(0, 3) });
  assert.deepEqual(stub.queries[0], {
    lat: "34.068930",
    lng: "-118.445127",
    latDeg: 34.06893,
    lngDeg: -118.445127,
    radiusM: "10000",
    radiusMeters: 10000,
    bound: 3,
    record: AT,
    timeoutMs: 5000,
  });
});

Deno.test("WHATSAT replies keep request order behind a slow upstream", async () => {
  const stub = new StubPlaces(() => PLACES);
  stub.delayMs = 150;
  await using herd = await lone({ places: stub }).startAll();
  const port = herd.port("Alford");
  await exchange(port, IAMAT + "\n");
  const reply = await exchange(
    port,
    "WHATSAT kiwi.cs.ucla.edu 1 1\nIAMAT fast +1+1 1520023935.182837383\nBAD\n",
  );
  const firstJsonEnd = reply.indexOf("\n\n") + 2;
  assert.ok(reply.startsWith(AT + "\n{"));
  assert.equal(
    reply.slice(firstJsonEnd),
    "AT Alford +0.000000000 fast +1+1 1520023935.182837383\n? BAD\n",
  );
});

Deno.test("WHATSAT answers the record learned from another node with that node's AT line", async () => {
  await using herd = await new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: () => ({
      clock: fixedClock(NOW),
      places: new StubPlaces(() => PLACES),
    }),
  }).startAll();
  await exchange(herd.port("Ball"), IAMAT + "\n");
  const ballAt = AT.replace("AT Alford", "AT Ball");
  let reply = "";
  for (let i = 0; i < 200 && !reply.startsWith("AT"); i++) {
    reply = await exchange(
      herd.port("Alford"),
      "WHATSAT kiwi.cs.ucla.edu 5 1\n",
    );
    if (!reply.startsWith("AT")) await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(reply.startsWith(ballAt + "\n"), reply);
});

function fetchStub(handler: (url: URL) => Response | Promise<Response>) {
  const calls: URL[] = [];
  const fn = (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(
      input instanceof Request ? input.url : input.toString(),
    );
    calls.push(url);
    const signal = init?.signal;
    return new Promise<Response>((resolve, reject) => {
      signal?.addEventListener("abort", () => reject(signal.reason));
      Promise.resolve(handler(url)).then(resolve, reject);
    });
  };
  return { fetch: fn as typeof fetch, calls };
}

Deno.test("WHATSAT calls Nearby Search with location, radius in metres and the key", async () => {
  const { fetch, calls } = fetchStub(() => Response.json(PLACES));
  await using herd = await lone({
    places: createPlaces({
      provider: "google",
      apiKey: "SECRET-KEY-123",
      url: "http://places.test/nearby",
    }, { fetch }),
  }).startAll();
  const port = herd.port("Alford");
  await exchange(port, IAMAT + "\n");
  const reply = await exchange(port, "WHATSAT kiwi.cs.ucla.edu 0.5 20\n");
  assert.equal(calls.length, 1);
  assert.equal(
    calls[0].origin + calls[0].pathname,
    "http://places.test/nearby",
  );
  assert.equal(calls[0].searchParams.get("location"), "34.068930,-118.445127");
  assert.equal(calls[0].searchParams.get("radius"), "500");
  assert.equal(calls[0].searchParams.get("key"), "SECRET-KEY-123");
  assert.equal(JSON.parse(reply.slice(AT.length + 1)).results.length, 20);
});

Deno.test("upstream failures keep the framing with results [], a status and no key", async (t) => {
  const KEY = "SECRET-KEY-456";
  const cases: [string, () => Response | Promise<Response>, string][] = [
    ["HTTP 500", () => new Response("oops", { status: 500 }), "UNKNOWN_ERROR"],
    ["invalid JSON", () => new Response("{not json"), "UNKNOWN_ERROR"],
    [
      "REQUEST_DENIED",
      () =>
        Response.json({
          results: [],
          status: "REQUEST_DENIED",
          error_message: `The key ${KEY} is invalid.`,
        }),
      "REQUEST_DENIED",
    ],
    [
      "OVER_QUERY_LIMIT",
      () => Response.json({ results: [], status: "OVER_QUERY_LIMIT" }),
      "OVER_QUERY_LIMIT",
    ],
    [
      "network error",
      () =>
        Promise.reject(
          new TypeError(`connect failed: http://places.test/?key=${KEY}`),
        ),
      "UNKNOWN_ERROR",
    ],
    ["hang", () => new Promise<Response>(() => {}), "UNKNOWN_ERROR"],
  ];
  for (const [name, handler, status] of cases) {
    await t.step(name, async () => {
      const { fetch } = fetchStub(handler);
      await using herd = await lone({
        places: createPlaces({
          provider: "google",
          apiKey: KEY,
          url: "http://places.test/",
          timeoutMs: 200,
        }, { fetch }),
      }).startAll();
      const port = herd.port("Alford");
      await exchange(port, IAMAT + "\n");
      const reply = await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 5\n");
      assert.ok(reply.startsWith(AT + "\n"));
      assert.ok(reply.endsWith("\n\n"));
      assert.equal(reply.indexOf("\n\n"), reply.length - 2);
      assert.ok(!reply.includes(KEY), "the key never appears in a reply");
      const json = JSON.parse(reply.slice(AT.length + 1));
      assert.deepEqual(json.results, []);
      assert.equal(json.status, status);
      assert.equal(typeof json.error_message, "string");
      const log = herd.nodes.get("Alford")!.log.memory.join("\n");
      assert.ok(!log.includes(KEY), "the key never appears in the log");
    });
  }
});

Deno.test("a WHATSAT is answered within the node's bound whatever the provider does", async () => {
  const stub = new StubPlaces(() => new Promise(() => {}));
  await using herd = await lone({ places: stub, whatsatTimeoutMs: 300 })
    .startAll();
  const port = herd.port("Alford");
  await exchange(port, IAMAT + "\n");
  const t0 = Date.now();
  const reply = await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 5\n");
  assert.ok(Date.now() - t0 < 2000);
  assert.equal(JSON.parse(reply.slice(AT.length + 1)).status, "UNKNOWN_ERROR");
});

Deno.test("the log records every line in and out with time, node, connection and direction", async () => {
  await using herd = await lone().startAll();
  await exchange(herd.port("Alford"), IAMAT + "\nBAD\n");
  const entries = herd.nodes.get("Alford")!.log.memory.map((l) =>
    JSON.parse(l)
  );
  const traffic = entries.filter((e) => e.dir);
  assert.deepEqual(traffic.map((e) => [e.dir, e.line]), [
    ["in", IAMAT],
    ["in", "BAD"],
    ["out", AT],
    ["out", "? BAD"],
  ]);
  for (const e of traffic) {
    assert.equal(e.node, "Alford");
    assert.equal(typeof e.conn, "number");
    assert.ok(!Number.isNaN(Date.parse(e.ts)));
  }
});

Deno.test("the log records a WHATSAT reply as its AT line and its size in bytes", async () => {
  const stub = new StubPlaces(() => PLACES);
  await using herd = await lone({ places: stub }).startAll();
  const port = herd.port("Alford");
  await exchange(port, IAMAT + "\n");
  const reply = await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 3\n");
  const out = herd.nodes.get("Alford")!.log.memory.map((l) => JSON.parse(l))
    .filter((e) => e.dir === "out");
  assert.deepEqual(out.map((e) => [e.line, e.bytes]), [
    [AT, undefined],
    [AT, reply.length],
  ]);
});

Deno.test("a client that vanishes mid-request does not disturb the node", async () => {
  const stub = new StubPlaces(() => PLACES);
  stub.delayMs = 100;
  await using herd = await lone({ places: stub }).startAll();
  const port = herd.port("Alford");
  await exchange(port, IAMAT + "\n");
  const c = await Client.connect(port);
  await c.send("WHATSAT kiwi.cs.ucla.edu 10 5\nIAMAT x +1+1 1\n");
  c.close();
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(await exchange(port, IAMAT + "\n"), AT + "\n");
});

Deno.test("a bus handshake whose first frame arrives in pieces is still recognised; on the client port it is an invalid line", async () => {
  const topology = makeTopology(["Alford", "Ball"], [["Alford", "Ball"]]);
  await using herd = await new TestHerd({ topology }).start("Alford").then((
    n,
  ) => ({
    port: n.port,
    async [Symbol.asyncDispose]() {
      await n.stop();
    },
  }));
  const hello = "HERD HELLO Ball 00112233445566778899aabbccddeeff";
  assert.equal(await exchange(herd.port, hello + "\n"), `? ${hello}\n`);
  using c = await Client.connect(topology.servers.get("Alford")!.peerPort);
  const frame = encodeFrame(
    new TextEncoder().encode("HELLO Ball 00112233445566778899aabbccddeeff"),
  );
  await c.send(frame.subarray(0, 7));
  await new Promise((r) => setTimeout(r, 20));
  await c.send(frame.subarray(7));
  const reply = await c.readUntil(" -");
  assert.match(reply.slice(4), /^WELCOME Alford [0-9a-f]{32} -$/);
});

Deno.test("pipelined WHATSATs answered by a real upstream all arrive, in order", async () => {
  // Answers from a local HTTP server land at moments of their own, some just as the writer
  // finishes a write and finds its head not ready; none may be left behind.
  const upstream = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const loc = new URL(req.url).searchParams.get("location");
      return Response.json({
        html_attributions: [],
        results: [{ name: loc }],
        status: "OK",
      });
    },
  );
  try {
    await using herd = await lone({
      places: createPlaces({
        provider: "google",
        apiKey: "k",
        url: `http://127.0.0.1:${upstream.addr.port}/nearbysearch`,
      }),
    }).startAll();
    const port = herd.port("Alford");
    using c = await Client.connect(port);
    const n = 30;
    await c.send(
      Array.from(
        { length: n },
        (_, i) => `IAMAT c${i} +${10 + i}.5-118.4 1.${i}\n`,
      ).join(""),
    );
    await c.lines(n);
    await c.send(
      Array.from({ length: n }, (_, i) => `WHATSAT c${i} 5 1\n`).join(""),
    );
    const got = await c.readUntil("\n\n", n, 5000);
    const names = got.split("\n\n").filter(Boolean).map((r) =>
      JSON.parse(r.slice(r.indexOf("\n") + 1)).results[0].name
    );
    assert.deepEqual(
      names,
      Array.from({ length: n }, (_, i) => `${10 + i}.5,-118.4`),
    );
  } finally {
    await upstream.shutdown();
  }
});
