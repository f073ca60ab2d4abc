/**
 * WebSocket watches against real in-process nodes: a client watcher at one node sees updates
 * made at another, a geofence watcher sees what enters its circle and nothing else, a
 * watcher that never reads is dropped while the node keeps serving, and the cell index
 * never misses a watcher that a scan of every watcher would find.
 */

import assert from "assert";
import { distanceKm } from "../lib/location.ts";
import { Watchers, type WatchSink } from "../lib/http/watch.ts";
import type { NodeConfig } from "../lib/node.ts";
import {
  Client,
  fixedClock,
  makeTopology,
  TestHerd,
  waitFor,
} from "./helpers.ts";

const NOW = 1520023935182837383n;

function httpHerd(
  names: string[],
  links: [string, string][],
  config: Partial<NodeConfig> = {},
): TestHerd {
  return new TestHerd({
    topology: makeTopology(names, links, { http: true }),
    config: () => ({ clock: fixedClock(NOW), ...config }),
  });
}

function httpPort(herd: TestHerd, name: string): number {
  return herd.topology.servers.get(name)!.httpPort!;
}

/** A WebSocket client that keeps every message and closes cleanly. */
class Ws {
  readonly ws: WebSocket;
  readonly messages: string[] = [];
  readonly closed: Promise<CloseEvent>;
  #read = 0;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.onmessage = (e) => this.messages.push(e.data as string);
    this.closed = new Promise((r) => (ws.onclose = r));
  }

  static async open(url: string): Promise<Ws> {
    const ws = new WebSocket(url);
    const w = new Ws(ws);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot open ${url}`));
    });
    return w;
  }

  /** The next message not yet returned, parsed. */
  async next(timeoutMs = 5000): Promise<unknown> {
    await waitFor(
      () => this.messages.length > this.#read,
      timeoutMs,
      "a watch message",
    );
    return JSON.parse(this.messages[this.#read++]);
  }

  async close(): Promise<void> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.close();
    await this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

async function post(port: number, body: unknown): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/iamat`, {
    method: "POST",
    body: JSON.stringify(body),
  });
  await res.body?.cancel();
  return res.status;
}

function fields(at: string) {
  const [, server, skew, client, location, time] = at.split(" ");
  const m = /^([+-][\d.]+)([+-][\d.]+)$/.exec(location)!;
  return {
    at,
    server,
    skew,
    client,
    location,
    time,
    latitude: Number(m[1]),
    longitude: Number(m[2]),
  };
}

Deno.test("a client watcher at one node gets the current record, then each update made at another node, and nothing about other clients", async () => {
  await using herd = await httpHerd(["Alford", "Hamilton"], [[
    "Alford",
    "Hamilton",
  ]]).startAll();
  const a = httpPort(herd, "Alford");
  const h = httpPort(herd, "Hamilton");
  const kiwi = {
    client: "kiwi",
    location: "+34.068930-118.445127",
    time: "1520023934.918963997",
  };
  assert.equal(await post(a, kiwi), 200);
  await waitFor(
    () => herd.nodes.get("Hamilton")!.store.get("kiwi") !== undefined,
    5000,
    "the flood",
  );
  await using w = await Ws.open(`ws://127.0.0.1:${h}/v1/watch?client=kiwi`);
  assert.deepEqual(
    await w.next(),
    fields(
      "AT Alford +0.263873386 kiwi +34.068930-118.445127 1520023934.918963997",
    ),
  );
  assert.equal(await post(a, { ...kiwi, client: "other" }), 200);
  assert.equal(
    await post(a, {
      ...kiwi,
      location: "+34.1-118.4",
      time: "1520023935.000000001",
    }),
    200,
  );
  assert.deepEqual(
    await w.next(),
    fields("AT Alford +0.182837382 kiwi +34.1-118.4 1520023935.000000001"),
  );
  // An older record changes nothing, so it is not shown.
  assert.equal(await post(a, kiwi), 200);
  assert.equal(
    await post(a, { ...kiwi, location: "+1+1", time: "1520023936" }),
    200,
  );
  assert.deepEqual(
    await w.next(),
    fields("AT Alford -0.817162617 kiwi +1+1 1520023936"),
  );
  assert.equal(w.messages.length, 3);
});

Deno.test("a geofence watcher gets what enters its circle, from this node or the herd, and nothing else", async () => {
  await using herd = await httpHerd(["Alford", "Hamilton"], [[
    "Alford",
    "Hamilton",
  ]]).startAll();
  const a = httpPort(herd, "Alford");
  const h = httpPort(herd, "Hamilton");
  await using w = await Ws.open(
    `ws://127.0.0.1:${a}/v1/watch?near=34.0689,-118.4451&radius=10`,
  );
  const t = (i: number) => `15200239${10 + i}`;
  const reports: [number, string, string, boolean][] = [
    [a, "in-1", "+34.068930-118.445127", true], // the centre, at this node
    [h, "out-1", "+37.7749-122.4194", false], // San Francisco, via the herd
    [h, "in-2", "+34.1-118.4", true], // 5.4 km away, via the herd
    [a, "edge-out", "+34.0689-118.3251", false], // 11 km east
    [a, "edge-in", "+34.0689-118.3451", true], // 9.2 km east
    [h, "far", "-34.0689+61.5549", false], // the antipode's neighbourhood
  ];
  for (const [i, [port, client, location]] of reports.entries()) {
    assert.equal(await post(port, { client, location, time: t(i) }), 200);
  }
  // A last one inside: once it has arrived, everything before it has been decided.
  assert.equal(
    await post(h, { client: "last", location: "+34.07-118.44", time: t(9) }),
    200,
  );
  const want = [...reports.filter((r) => r[3]).map((r) => r[1]), "last"];
  await waitFor(() => w.messages.length >= want.length, 5000, "the watcher");
  await new Promise((r) => setTimeout(r, 200));
  const got = w.messages.map((m) => JSON.parse(m).client);
  assert.deepEqual(got.toSorted(), want.toSorted());
  for (const m of w.messages) {
    const f = JSON.parse(m);
    assert.ok(distanceKm(34.0689, -118.4451, f.latitude, f.longitude) <= 10);
  }
});

/** Opens a WebSocket by hand and never reads a byte from it. */
async function neverReading(port: number, path: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const req = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
    "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  await conn.write(new TextEncoder().encode(req));
  return conn;
}

Deno.test("a watcher that never reads is dropped at its bound, and the node keeps serving its clients", async () => {
  await using herd = await httpHerd(["Alford"], [], {
    http: { watch: { maxBufferedBytes: 64 * 1024 } },
  }).startAll();
  const node = herd.nodes.get("Alford")!;
  const a = httpPort(herd, "Alford");
  const stuck = await neverReading(a, "/v1/watch?near=34,-118&radius=50");
  try {
    await waitFor(
      () => node.http!.watchers.counts.near === 1,
      5000,
      "the watcher",
    );
    // ~650-byte messages: 12,000 of them are far more than the kernel's socket buffers
    // and the watcher's bound together.
    const pad = "p".repeat(200);
    let text = "";
    for (let i = 0; i < 12_000; i++) {
      text += `IAMAT ${pad}-${i} +34.${i}-118.1 ${1520023000 + i}\n`;
    }
    using c = await Client.connect(herd.port("Alford"));
    await c.send(text);
    await c.lines(12_000, 30_000);
    await waitFor(
      () => node.http!.watchers.counts.near === 0,
      10_000,
      "the watcher to be dropped",
    );
    assert.equal(node.http!.watchers.dropped, 1);
    // Still serving: a line client and HTTP.
    await c.send("IAMAT after +1+1 1520023935\n");
    assert.equal(
      await c.lines(1),
      "AT Alford +0.182837383 after +1+1 1520023935\n",
    );
    const res = await fetch(`http://127.0.0.1:${a}/v1/clients/after`);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const metrics = await (await fetch(`http://127.0.0.1:${a}/metrics`)).text();
    assert.match(metrics, /\nherd_watchers_dropped_total 1\n/);
    assert.match(metrics, /\nherd_watchers\{kind="near"\} 0\n/);
  } finally {
    stuck.close();
  }
});

Deno.test("watch requests the contract refuses get 400 before any upgrade; over the cap, 503", async (t) => {
  await using herd = await httpHerd(["Alford"], [], {
    http: { watch: { maxWatchers: 1 } },
  }).startAll();
  const a = httpPort(herd, "Alford");
  const cases: [string, string][] = [
    [
      "",
      "watch one client (?client=ID) or one circle (?near=LAT,LNG&radius=KM)",
    ],
    [
      "?client=a&near=1,1&radius=1",
      "watch one client (?client=ID) or one circle (?near=LAT,LNG&radius=KM)",
    ],
    [
      "?client=a%20b",
      "client must be 1 to 256 bytes of printable characters without white space",
    ],
    [
      "?near=91,0&radius=1",
      "near must be LAT,LNG in decimal degrees, like 34.0689,-118.4451",
    ],
    [
      "?near=north&radius=1",
      "near must be LAT,LNG in decimal degrees, like 34.0689,-118.4451",
    ],
    [
      "?near=1,1&radius=51",
      "radius must be a decimal number of km, 0 < radius <= 50",
    ],
    ["?near=1,1", "radius must be a decimal number of km, 0 < radius <= 50"],
    ["?client=kiwi", "expected a WebSocket upgrade"], // a plain GET
  ];
  for (const [q, error] of cases) {
    await t.step(q || "(no query)", async () => {
      const res = await fetch(`http://127.0.0.1:${a}/v1/watch${q}`);
      assert.deepEqual([res.status, await res.json()], [400, { error }]);
    });
  }
  await t.step("a second watcher over a cap of one", async () => {
    await using first = await Ws.open(`ws://127.0.0.1:${a}/v1/watch?client=k`);
    assert.equal(first.ws.readyState, WebSocket.OPEN);
    const res = await fetch(`http://127.0.0.1:${a}/v1/watch?client=k`, {
      headers: {
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
      },
    });
    assert.deepEqual([res.status, await res.json()], [503, {
      error: "too many watchers",
    }]);
  });
});

/** A sink that records what it is sent. */
class Sink implements WatchSink {
  sent: string[] = [];
  bufferedAmount = 0;
  closed = false;
  send(text: string): void {
    this.sent.push(text);
  }
  close(): void {
    this.closed = true;
  }
}

Deno.test("Watchers: the cell index finds exactly the circles a scan of every watcher finds, poles and the antimeridian included", () => {
  // A seeded generator: the same cases every run.
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const watchers = new Watchers({});
  const circles: { sink: Sink; lat: number; lng: number; r: number }[] = [];
  const centres: [number, number][] = [
    [89.99, 0],
    [-89.5, 120],
    [10, 179.95],
    [-20, -179.9],
    [0, 0],
  ];
  for (let i = 0; i < 1000; i++) {
    const [lat, lng] = i < centres.length
      ? centres[i]
      : [rand() * 180 - 90, rand() * 360 - 180];
    const r = 1 + rand() * 49;
    const sink = new Sink();
    assert.ok(watchers.addNear(sink, lat, lng, r));
    circles.push({ sink, lat, lng, r });
  }
  const fmt = (v: number, w: number) =>
    `${v < 0 ? "-" : "+"}${Math.abs(v).toFixed(5).padStart(w + 6, "0")}`;
  for (let i = 0; i < 2000; i++) {
    // Half the records land close to some circle's centre, the rest anywhere.
    const c = circles[Math.floor(rand() * circles.length)];
    let lat = i % 2 ? c.lat + (rand() - 0.5) * 0.6 : rand() * 180 - 90;
    let lng = i % 2
      ? c.lng +
        ((rand() - 0.5) * 0.6) / Math.max(0.05, Math.cos(c.lat * Math.PI / 180))
      : rand() * 360 - 180;
    lat = Math.max(-90, Math.min(90, lat));
    lng = ((lng + 540) % 360) - 180;
    const line = `AT A +0.000000000 c${i} ${fmt(lat, 2)}${fmt(lng, 3)} ${i}`;
    const before = circles.map((x) => x.sink.sent.length);
    watchers.offer(line);
    const [latS, lngS] = [fmt(lat, 2), fmt(lng, 3)].map(Number);
    circles.forEach((x, j) => {
      const inside = distanceKm(x.lat, x.lng, latS, lngS) <= x.r;
      if (x.sink.sent.length - before[j] !== (inside ? 1 : 0)) {
        assert.fail(
          `record ${line} and circle ${j} (${x.lat},${x.lng} r=${x.r}): inside=${inside}`,
        );
      }
    });
  }
  assert.ok(
    circles.reduce((n, x) => n + x.sink.sent.length, 0) > 300,
    "the cases hit circles",
  );
});

Deno.test("Watchers: a watcher whose socket holds more than the bound is closed and counted, the others still served", () => {
  const watchers = new Watchers({ maxBufferedBytes: 1000 });
  const slow = new Sink();
  const fast = new Sink();
  watchers.addClient(slow, "kiwi");
  watchers.addClient(fast, "kiwi");
  watchers.offer("AT A +0.000000000 kiwi +1+1 1");
  slow.bufferedAmount = 1001;
  watchers.offer("AT A +0.000000000 kiwi +1+1 2");
  watchers.offer("AT A +0.000000000 kiwi +1+1 3");
  assert.equal(slow.sent.length, 1);
  assert.equal(slow.closed, true);
  assert.equal(fast.sent.length, 3);
  assert.equal(watchers.dropped, 1);
  assert.deepEqual(watchers.counts, { client: 1, near: 0 });
});

Deno.test("a node that stops closes its watchers and views with 1001", async () => {
  const herd = httpHerd(["Alford"], []);
  await herd.startAll();
  const a = httpPort(herd, "Alford");
  const w = await Ws.open(`ws://127.0.0.1:${a}/v1/watch?client=kiwi`);
  const v = await Ws.open(`ws://127.0.0.1:${a}/v1/events`);
  await v.next(); // the first picture
  await herd.stopAll();
  const [cw, cv] = await Promise.all([w.closed, v.closed]);
  assert.deepEqual([cw.code, cv.code], [1001, 1001]);
  assert.equal(cw.reason, "node stopping");
});
