/**
 * The live view: its feed (`/v1/events`) over a real WebSocket, its files, and the page
 * itself in a real headless Chromium (Debian's `chromium`, driven by `npm:puppeteer-core`):
 * it names every node, shows a client just reported, moves and adds points as IAMATs
 * arrive, and never asks for anything but the node that served it.
 *
 * Set `HERD_SCREENSHOT=docs/live-view.png` to save the screenshot the docs show.
 */

import assert from "assert";
import puppeteer from "puppeteer-core";
import type { NodeConfig } from "../lib/node.ts";
import { fixedClock, makeTopology, TestHerd, waitFor } from "./helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const NOW = 1520023935182837383n;

function hasChromium(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

if (!hasChromium()) {
  console.error(
    `view_test: ${CHROMIUM} is missing, so the live view is not tested in a browser here ` +
      "(.ci/run installs Debian's chromium; locally: apt-get install -y chromium)",
  );
}

const NAMES = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];
const LINKS: [string, string][] = [
  ["Alford", "Hamilton"],
  ["Alford", "Welsh"],
  ["Ball", "Holiday"],
  ["Ball", "Welsh"],
  ["Hamilton", "Holiday"],
];

function herd(config: Partial<NodeConfig> = {}): TestHerd {
  return new TestHerd({
    topology: makeTopology(NAMES, LINKS, { http: true }),
    config: () => ({
      clock: fixedClock(NOW),
      http: { view: { tickMs: 200 } },
      ...config,
    }),
  });
}

function base(h: TestHerd, name: string): string {
  return `http://127.0.0.1:${h.topology.servers.get(name)!.httpPort}`;
}

async function post(
  h: TestHerd,
  name: string,
  client: string,
  location: string,
  time: string,
): Promise<void> {
  const res = await fetch(`${base(h, name)}/v1/iamat`, {
    method: "POST",
    body: JSON.stringify({ client, location, time }),
  });
  assert.equal(res.status, 200, await res.text());
}

Deno.test("the view's feed: a first picture of the herd and its clients, then ticks with what changed", async () => {
  await using h = await herd().startAll();
  await post(h, "Alford", "kiwi", "+34.068930-118.445127", "1520023934.5");
  const ws = new WebSocket(
    `${base(h, "Alford").replace("http", "ws")}/v1/events`,
  );
  const messages: Record<string, unknown>[] = [];
  ws.onmessage = (e) => messages.push(JSON.parse(e.data));
  const closed = new Promise((r) => (ws.onclose = r));
  try {
    await waitFor(() => messages.length >= 1, 5000, "the first picture");
    const hello = messages[0] as {
      type: string;
      herd: { node: string; nodes: { name: string; neighbors: string[] }[] };
      peers: { name: string; state: string }[];
      clients: { client: string; latitude: number }[];
    };
    assert.equal(hello.type, "hello");
    assert.equal(hello.herd.node, "Alford");
    const http = (n: string) =>
      `127.0.0.1:${h.topology.servers.get(n)!.httpPort}`;
    assert.deepEqual(hello.herd.nodes, [
      {
        name: "Alford",
        neighbors: ["Hamilton", "Welsh"],
        http: http("Alford"),
      },
      { name: "Ball", neighbors: ["Holiday", "Welsh"], http: http("Ball") },
      {
        name: "Hamilton",
        neighbors: ["Alford", "Holiday"],
        http: http("Hamilton"),
      },
      {
        name: "Holiday",
        neighbors: ["Ball", "Hamilton"],
        http: http("Holiday"),
      },
      { name: "Welsh", neighbors: ["Alford", "Ball"], http: http("Welsh") },
    ]);
    assert.deepEqual(hello.peers.map((p) => p.name), ["Hamilton", "Welsh"]);
    assert.deepEqual(hello.clients.map((c) => [c.client, c.latitude]), [[
      "kiwi",
      34.06893,
    ]]);
    // An update made at Holiday, two hops away, arrives in a tick.
    await post(h, "Holiday", "papaya", "-33.8688+151.2093", "1520023934.6");
    await waitFor(
      () =>
        messages.some((m) =>
          m.type === "tick" &&
          (m.records as { client: string }[]).some((r) => r.client === "papaya")
        ),
      10_000,
      "a tick with papaya",
    );
    // Another node's page asks only for the links: no clients, no records.
    const peersOnly = new WebSocket(
      `${base(h, "Holiday").replace("http", "ws")}/v1/events?only=peers`,
    );
    const got: Record<string, unknown>[] = [];
    peersOnly.onmessage = (e) => got.push(JSON.parse(e.data));
    const closedToo = new Promise((r) => (peersOnly.onclose = r));
    await waitFor(() => got.length >= 2, 5000, "a first picture and a tick");
    peersOnly.close();
    await closedToo;
    assert.deepEqual(got[0].clients, []);
    assert.deepEqual(got[1].records, []);
    assert.deepEqual(
      (got[0].peers as { name: string }[]).map((p) => p.name),
      ["Ball", "Hamilton"],
    );
  } finally {
    ws.close();
    await closed;
  }
});

Deno.test("the view's files are served by the node, and the map is drawn from world-atlas", async () => {
  await using h = await herd().startAll();
  const b = base(h, "Alford");
  for (
    const [path, type] of [
      ["/", "text/html; charset=utf-8"],
      ["/app.js", "text/javascript; charset=utf-8"],
      ["/style.css", "text/css; charset=utf-8"],
      ["/world.svg", "image/svg+xml"],
    ]
  ) {
    const res = await fetch(`${b}${path}`);
    const text = await res.text();
    assert.equal(res.status, 200, path);
    assert.equal(res.headers.get("content-type"), type, path);
    // Nothing refers to another host.
    assert.doesNotMatch(
      text,
      /(https?:)?\/\/(?!www\.w3\.org\/2000\/svg)[a-z0-9.-]+\.[a-z]{2,}/i,
      path,
    );
  }
  const svg = await (await fetch(`${b}/world.svg`)).text();
  assert.ok(svg.length > 20_000 && svg.length < 200_000, `${svg.length} bytes`);
  assert.match(svg, /^<svg [^>]*viewBox="0 0 720 360"><path [^>]*d="M/);
});

Deno.test({
  name:
    "the live view in headless Chromium: every node named, a client just reported shown, new IAMATs move and add points, no request leaves the machine",
  ignore: !hasChromium(),
  // puppeteer-core's own timers and pipes outlive a test step; the browser is closed below.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await using h = await herd().startAll();
    // Wait for Alford's links, so the view shows them up.
    await waitFor(
      () => h.nodes.get("Alford")!.flood.connected().length === 2,
      10_000,
      "Alford's links",
    );
    const places: [string, string][] = [
      ["kiwi.cs.ucla.edu", "+34.068930-118.445127"],
      ["tokyo-rider", "+35.6762+139.6503"],
      ["lagos-1", "+6.5244+3.3792"],
      ["sydney-surf", "-33.8688+151.2093"],
      ["london-cab", "+51.5074-0.1278"],
      ["rio-runner", "-22.9068-43.1729"],
      ["nairobi-bus", "-1.2921+36.8219"],
      ["delhi-train", "+28.6139+77.2090"],
      ["anchorage", "+61.2181-149.9003"],
      ["reykjavik", "+64.1466-21.9426"],
    ];
    for (const [i, [client, location]] of places.entries()) {
      await post(
        h,
        NAMES[i % NAMES.length],
        client,
        location,
        `15200239${10 + i}`,
      );
    }
    const b = base(h, "Alford");
    await waitFor(
      () => h.nodes.get("Alford")!.store.size === places.length,
      10_000,
      "the herd to converge",
    );
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      pipe: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    });
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 760 });
      const urls: string[] = [];
      page.on("request", (r) => urls.push(r.url()));
      // WebSockets are not "requests" to puppeteer: ask the DevTools protocol for them.
      const sockets: string[] = [];
      const cdp = await page.createCDPSession();
      await cdp.send("Network.enable");
      cdp.on("Network.webSocketCreated", (e) => sockets.push(e.url));
      await page.goto(`${b}/`, { waitUntil: "load" });
      await page.waitForSelector(
        '#points circle[data-client="kiwi.cs.ucla.edu"]',
        {
          timeout: 10_000,
        },
      );
      const labels = await page.$$eval(
        "#herd text",
        (els) => els.map((e) => e.textContent),
      );
      assert.deepEqual(labels.toSorted(), NAMES);
      assert.equal(
        await page.$eval("#node", (e) => e.textContent),
        "Alford",
      );
      assert.equal(
        await page.$$eval("#points circle", (els) => els.length),
        10,
      );
      // Every link up, as each node tells the page about its own.
      await page.waitForFunction(
        `[...document.querySelectorAll("#herd line")].map((e) => e.getAttribute("class")).join() === "up,up,up,up,up"`,
        { timeout: 10_000 },
      );
      // A new client reported at Holiday (two hops away) appears; kiwi moves.
      const before = await page.$eval(
        '#points circle[data-client="kiwi.cs.ucla.edu"]',
        (e) => [e.getAttribute("cx"), e.getAttribute("cy")],
      );
      await post(h, "Holiday", "cape-town", "-33.9249+18.4241", "1520023930");
      await post(
        h,
        "Welsh",
        "kiwi.cs.ucla.edu",
        "+37.7749-122.4194",
        "1520023931",
      );
      await page.waitForSelector('#points circle[data-client="cape-town"]', {
        timeout: 10_000,
      });
      await page.waitForFunction(
        `document.querySelector('#points circle[data-client="kiwi.cs.ucla.edu"]')` +
          `?.getAttribute("cx") !== ${JSON.stringify(before[0])}`,
        { timeout: 10_000 },
      );
      const after = await page.$eval(
        '#points circle[data-client="kiwi.cs.ucla.edu"]',
        (e) => [Number(e.getAttribute("cx")), Number(e.getAttribute("cy"))],
      );
      // San Francisco on the 720 x 360 equirectangular map.
      assert.deepEqual(
        after,
        [(-122.4194 + 180) * 2, (90 - 37.7749) * 2].map((v) =>
          Number(v.toFixed(2))
        ),
      );
      await page.waitForFunction(
        `document.querySelector("#updates")?.textContent?.includes("cape-town")`,
        { timeout: 10_000 },
      );
      // No request left the machine: every URL is this node's.
      assert.ok(urls.length >= 4, urls.join(" "));
      for (const u of urls) assert.ok(u.startsWith(`${b}/`), u);
      // Its WebSockets: its own node's feed, and each other node's links, at their addresses.
      const herdWs = NAMES.map((n) =>
        `ws://127.0.0.1:${h.topology.servers.get(n)!.httpPort}/v1/events`
      );
      assert.ok(sockets.includes(herdWs[0]), sockets.join(" "));
      for (const w of herdWs.slice(1)) {
        assert.ok(sockets.includes(`${w}?only=peers`), sockets.join(" "));
      }
      for (const u of sockets) {
        assert.ok(herdWs.some((w) => u.startsWith(w)), u);
      }
      // A node that stops is drawn as down, and so are its links.
      await h.stop("Ball");
      await page.waitForFunction(
        `document.querySelector('#herd circle[data-node="Ball"]')?.getAttribute("class") === "down" &&
         document.querySelector('#herd line[data-link="Ball-Holiday"]')?.getAttribute("class") === "down" &&
         document.querySelector('#herd line[data-link="Ball-Welsh"]')?.getAttribute("class") === "down" &&
         document.querySelector('#herd line[data-link="Alford-Hamilton"]')?.getAttribute("class") === "up"`,
        { timeout: 15_000 },
      );
      const shot = Deno.env.get("HERD_SCREENSHOT");
      if (shot) {
        // A little traffic, so the rates and the pulses show.
        for (let i = 0; i < 8; i++) {
          const [client, location] = places[(i * 3) % places.length];
          const [lat, lng] = location.match(/[+-][\d.]+/g)!.map(Number);
          const moved =
            `${lat + i * 0.3 >= 0 ? "+" : ""}${(lat + i * 0.3).toFixed(4)}` +
            `${lng + i * 0.4 >= 0 ? "+" : ""}${(lng + i * 0.4).toFixed(4)}`;
          await post(
            h,
            ["Alford", "Hamilton", "Holiday", "Welsh"][i % 4],
            client,
            moved,
            `15200239${40 + i}`,
          );
          await new Promise((r) => setTimeout(r, 220));
        }
        await page.screenshot({ path: shot as `${string}.png` });
        const phone = Deno.env.get("HERD_SCREENSHOT_PHONE");
        if (phone) {
          await page.setViewport({
            width: 390,
            height: 844,
            deviceScaleFactor: 2,
          });
          await new Promise((r) => setTimeout(r, 500));
          await page.screenshot({
            path: phone as `${string}.png`,
            fullPage: true,
          });
        }
      }
    } finally {
      await browser.close();
    }
  },
});
