/**
 * A node against hostile clients, over real TCP: fuzzed lines each answered to the byte, a
 * never-reading WHATSAT pipeliner paused while others are served, and a storm of warnings
 * summarised on the operator's terminal.
 */

import assert from "assert";
import type { PlacesAnswer } from "../lib/places/contract.ts";
import { checkReply, type FuzzLine, LineFuzzer } from "./fuzz.ts";
import { Client, StubPlaces, TestHerd, waitFor } from "./helpers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KNOWN = ["k0", "k1", "k2", "k3"];

function latin1(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** One node (its neighbors absent) with `places`, the known clients registered. */
async function oneNode(
  places = new StubPlaces(),
  extra: { print?: (line: string) => void } = {},
) {
  const herd = new TestHerd({
    names: ["Alford", "Ball"],
    links: [["Alford", "Ball"]],
    config: () => ({
      places,
      ...(extra.print ? { console: true, print: extra.print } : {}),
    }),
  });
  const node = await herd.start("Alford");
  using c = await Client.connect(node.port);
  for (const k of KNOWN) await c.send(`IAMAT ${k} +34-118 1600000000.5\n`);
  await c.lines(KNOWN.length);
  return { herd, node, port: node.port };
}

Deno.test("fuzzed lines over TCP are each answered with the right reply, in order, to the byte", async () => {
  const { herd, port } = await oneNode();
  await using _ = herd;
  let answered = 0;
  await Promise.all([0, 1, 2, 3].map(async (k) => {
    const fuzz = new LineFuzzer(1000 + k, "Alford", 16 * 1024, KNOWN);
    const lines: FuzzLine[] = Array.from({ length: 800 }, () => fuzz.next());
    if (k === 0) lines.push(fuzz.overLong()); // the connection's last line
    using c = await Client.connect(port);
    const sending = c.send(latin1(lines.map((l) => l.text + "\n").join("")));
    let got = "";
    const buf = new Uint8Array(64 * 1024);
    const more = async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        c.conn.read(buf),
        new Promise<"late">((r) => timer = setTimeout(() => r("late"), 10_000)),
      ]).finally(() => clearTimeout(timer));
      if (typeof n !== "number") throw new Error(`conn ${k}: EOF or timeout`);
      for (let j = 0; j < n; j++) got += String.fromCharCode(buf[j]);
    };
    for (const [i, l] of lines.entries()) {
      for (;;) {
        const r = checkReply(got, l.expect);
        if (r instanceof Error) {
          throw new Error(
            `conn ${k} line ${i} ${
              JSON.stringify(l.text.slice(0, 80))
            }: ${r.message}`,
          );
        }
        if (r > 0) {
          got = got.slice(r);
          answered++;
          break;
        }
        await more();
      }
    }
    await sending;
    if (k === 0) assert.equal(await c.readAll(5000), ""); // closed after the overflow
  }));
  assert.equal(answered, 3201);
});

Deno.test("a client pipelining WHATSATs without reading is paused: the node queries places a bounded number of times and answers others", async () => {
  const big: PlacesAnswer = {
    html_attributions: [],
    results: Array.from(
      { length: 20 },
      (_, i) => ({ name: `place ${i} ${"n".repeat(8000)}` }),
    ),
    status: "OK",
  };
  const places = new StubPlaces(() => big);
  const { herd, node, port } = await oneNode(places);
  await using _ = herd;
  using hog = await Client.connect(port);
  await hog.send("WHATSAT k1 10 20\n".repeat(5000));
  let last = -1;
  await waitFor(
    async () => {
      const now = places.queries.length;
      await sleep(300);
      const stable = now === places.queries.length && now === last;
      last = places.queries.length;
      return stable;
    },
    20_000,
    "the node to stop taking WHATSATs in",
  );
  // ~160 KB a reply: the kernel's socket buffers take a few dozen, the queue 16 more.
  assert.ok(last < 1000, `${last} WHATSATs taken in`);
  assert.ok(node.server.stats.paused >= 1);
  using other = await Client.connect(port);
  await other.send("IAMAT other +1+1 1600000000.5\n");
  assert.match(await other.lines(1, 2000), /^AT Alford \S+ other \+1\+1 /);
  hog.close();
});

Deno.test("a storm of over-long lines prints a bounded number of lines on the operator's terminal, then a count", async () => {
  const printed: string[] = [];
  const { herd, port } = await oneNode(new StubPlaces(), {
    print: (line) => printed.push(line),
  });
  await using _ = herd;
  const before = printed.length;
  await Promise.all(Array.from({ length: 40 }, async () => {
    using c = await Client.connect(port);
    await c.send("x".repeat(20_000) + "\n");
    await c.readAll(5000);
  }));
  const warnings = printed.slice(before).filter((l) =>
    l.includes("line_too_long")
  );
  assert.ok(warnings.length <= 10, `${warnings.length} warnings printed`);
  await waitFor(
    () =>
      printed.some((l) =>
        /log_suppressed event=line_too_long count=\d+/.test(l)
      ),
    3000,
    "the count of suppressed warnings",
  );
  const counted = printed.map((l) =>
    /log_suppressed event=line_too_long count=(\d+)/.exec(l)
  ).filter((m) => m !== null).reduce((n, m) => n + Number(m![1]), 0);
  assert.equal(warnings.length + counted, 40);
});

Deno.test("a WHATSAT whose places answer would pass the largest reply size is answered with the failure form", async () => {
  const huge: PlacesAnswer = {
    html_attributions: [],
    results: Array.from(
      { length: 20 },
      (_, i) => ({ name: `place ${i} ${"n".repeat(20_000)}` }),
    ),
    status: "OK",
  };
  const { herd, port } = await oneNode(new StubPlaces(() => huge));
  await using _ = herd;
  using c = await Client.connect(port);
  await c.send("WHATSAT k2 10 20\n");
  const reply = await c.readUntil("\n\n", 1, 5000);
  const [at, ...json] = reply.trimEnd().split("\n");
  assert.match(at, /^AT Alford \S+ k2 \+34-118 1600000000\.5$/);
  assert.deepEqual(JSON.parse(json.join("\n")), {
    html_attributions: [],
    results: [],
    status: "UNKNOWN_ERROR",
    error_message: "places answer over 262144 bytes",
  });
  // A smaller bound fits: the same places, cut to 5 results, are served.
  await c.send("WHATSAT k2 10 5\n");
  const small = await c.readUntil("\n\n", 1, 5000);
  assert.equal(
    JSON.parse(small.slice(small.indexOf("\n") + 1)).results.length,
    5,
  );
});
