/**
 * Specification of lib/topology.ts: the topology file's schema, symmetric links, and one
 * clear line naming every problem.
 */

import assert from "assert";
import fc from "fast-check";
import {
  loadTopology,
  parseTopology,
  type Topology,
  TopologyError,
} from "../lib/topology.ts";

const DEFAULT_FILE = new URL("../topology.json", import.meta.url);

/** Topology JSON text from a plain object. */
function json(servers: Record<string, unknown>): string {
  return JSON.stringify({ servers });
}

function server(port: number, neighbors?: string[], host = "127.0.0.1") {
  return neighbors === undefined ? { host, port } : { host, port, neighbors };
}

function neighborsOf(topo: Topology): Record<string, string[]> {
  return Object.fromEntries(
    [...topo.servers.values()].map((s) => [s.name, s.neighbors]),
  );
}

/** Asserts that parsing fails with a one-line TopologyError naming the file and matching `re`. */
function rejects(text: string, re: RegExp): TopologyError {
  let caught: unknown;
  try {
    parseTopology(text, "herd.json");
  } catch (e) {
    caught = e;
  }
  assert.ok(
    caught instanceof TopologyError,
    `expected a TopologyError, got ${caught}`,
  );
  assert.equal(caught.name, "TopologyError");
  assert.ok(
    !/[\r\n\v\f\u2028\u2029]/.test(caught.message),
    `not one line: ${JSON.stringify(caught.message)}`,
  );
  assert.ok(caught.message.startsWith("herd.json: "), caught.message);
  assert.match(caught.message, re);
  return caught;
}

// ---- the default herd ------------------------------------------------------------------

Deno.test("the default topology.json parses into the five nodes of PROTOCOL.md", async () => {
  const topo = await loadTopology(DEFAULT_FILE.pathname);
  assert.deepEqual([...topo.servers.keys()].sort(), [
    "Alford",
    "Ball",
    "Hamilton",
    "Holiday",
    "Welsh",
  ]);
  const ports = Object.fromEntries(
    [...topo.servers.values()].map((s) => [s.name, s.port]),
  );
  assert.deepEqual(ports, {
    Alford: 12000,
    Ball: 12001,
    Hamilton: 12002,
    Holiday: 12003,
    Welsh: 12004,
  });
  for (const s of topo.servers.values()) assert.equal(s.host, "127.0.0.1");
});

Deno.test("the default topology.json has the symmetric links of PROTOCOL.md", async () => {
  const topo = await loadTopology(DEFAULT_FILE.pathname);
  assert.deepEqual(neighborsOf(topo), {
    Alford: ["Hamilton", "Welsh"],
    Ball: ["Holiday", "Welsh"],
    Hamilton: ["Alford", "Holiday"],
    Holiday: ["Ball", "Hamilton"],
    Welsh: ["Alford", "Ball"],
  });
});

// ---- links -----------------------------------------------------------------------------

Deno.test("parseTopology makes a link listed on one side only symmetric", () => {
  const topo = parseTopology(
    json({ A: server(12000, ["B"]), B: server(12001, []) }),
    "t.json",
  );
  assert.deepEqual(neighborsOf(topo), { A: ["B"], B: ["A"] });
});

Deno.test("parseTopology builds the default herd from each link listed once", () => {
  const topo = parseTopology(
    json({
      Alford: server(12000, ["Hamilton", "Welsh"]),
      Ball: server(12001, ["Holiday", "Welsh"]),
      Hamilton: server(12002, ["Holiday"]),
      Holiday: server(12003),
      Welsh: server(12004),
    }),
    "t.json",
  );
  assert.deepEqual(neighborsOf(topo), {
    Alford: ["Hamilton", "Welsh"],
    Ball: ["Holiday", "Welsh"],
    Hamilton: ["Alford", "Holiday"],
    Holiday: ["Ball", "Hamilton"],
    Welsh: ["Alford", "Ball"],
  });
});

Deno.test("parseTopology treats missing neighbors as none, and keeps duplicates once", () => {
  const topo = parseTopology(
    json({ A: server(1), B: server(2, ["A", "A"]), C: server(3, ["A"]) }),
    "t.json",
  );
  assert.deepEqual(neighborsOf(topo), { A: ["B", "C"], B: ["A"], C: ["A"] });
});

Deno.test("parseTopology accepts a single node with no neighbors", () => {
  const topo = parseTopology(json({ Solo: server(55535) }), "t.json");
  assert.deepEqual(topo.servers.get("Solo"), {
    name: "Solo",
    host: "127.0.0.1",
    port: 55535,
    peerPort: 65535,
    neighbors: [],
  });
});

Deno.test("parseTopology keeps each server's host and sorts its neighbors", () => {
  const topo = parseTopology(
    json({
      c: server(3, ["a", "b"], "10.0.0.3"),
      a: server(1, [], "localhost"),
      b: server(2, [], "::1"),
    }),
    "t.json",
  );
  assert.equal(topo.servers.get("a")!.host, "localhost");
  assert.equal(topo.servers.get("b")!.host, "::1");
  assert.deepEqual(topo.servers.get("c")!.neighbors, ["a", "b"]);
});

Deno.test("parseTopology links are symmetric and exactly the listed pairs (property)", () => {
  const names = ["A", "B", "C", "D", "E", "F"];
  const pair = fc
    .tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 5 }))
    .filter(([x, y]) => x !== y);
  fc.assert(
    fc.property(fc.array(pair, { maxLength: 15 }), (pairs) => {
      const servers: Record<
        string,
        { host: string; port: number; neighbors: string[] }
      > = {};
      names.forEach((
        n,
        i,
      ) => (servers[n] = {
        host: "127.0.0.1",
        port: 12000 + i,
        neighbors: [],
      }));
      for (const [x, y] of pairs) servers[names[x]].neighbors.push(names[y]);
      const topo = parseTopology(json(servers), "t.json");
      for (const s of topo.servers.values()) {
        assert.deepEqual(s.neighbors, [...new Set(s.neighbors)].sort());
        for (const n of s.neighbors) {
          assert.ok(
            topo.servers.get(n)!.neighbors.includes(s.name),
            `${s.name}-${n}`,
          );
          const listed = pairs.some(([x, y]) =>
            (names[x] === s.name && names[y] === n) ||
            (names[y] === s.name && names[x] === n)
          );
          assert.ok(listed, `${s.name}-${n} was never listed`);
        }
      }
      for (const [x, y] of pairs) {
        assert.ok(topo.servers.get(names[x])!.neighbors.includes(names[y]));
      }
    }),
    { numRuns: 200 },
  );
});

// ---- errors ----------------------------------------------------------------------------

Deno.test("parseTopology rejects malformed JSON, naming the file", () => {
  rejects("", /not valid JSON/);
  rejects("{", /not valid JSON/);
  rejects("{'servers': {}}", /not valid JSON/);
  rejects('{"servers": {"A": {"host": "h", "port": 1,}}}', /not valid JSON/);
  rejects("servers: []", /not valid JSON/);
});

Deno.test("parseTopology reports a JSON syntax error in a multi-line file on one line", async () => {
  const text = await Deno.readTextFile(DEFAULT_FILE);
  // V8 quotes the source around the bad token, line breaks included.
  rejects(
    text.replace('"Ball": {', '"Ball":\n    x{'),
    /not valid JSON \(Unexpected token 'x', .* x\{/,
  );
  rejects(text.replace('"Ball"', 'x"Ball"'), /not valid JSON/);
  rejects(text.replace('"Ball"', '\n\nx\n"Ball"'), /not valid JSON/);
  rejects('{\n  "servers": x\n}', /not valid JSON/);
  rejects(text + "\n}\n", /not valid JSON/);
});

Deno.test("parseTopology rejects a file without servers", () => {
  rejects("{}", /at servers: .*expected record/);
  rejects('{"nodes": {}}', /Unrecognized key|servers/);
});

Deno.test("parseTopology rejects a top level that is not an object", () => {
  rejects("[]", /at top level: .*expected object, received array/);
  rejects("null", /at top level: .*expected object, received null/);
  rejects('"servers"', /at top level: .*expected object/);
  rejects("42", /at top level: .*expected object/);
});

Deno.test("parseTopology rejects an empty server list", () => {
  rejects('{"servers": {}}', /"servers" lists no server/);
});

Deno.test("parseTopology rejects servers of the wrong type", () => {
  rejects('{"servers": []}', /at servers: .*expected record, received array/);
  rejects('{"servers": "Alford"}', /at servers: .*expected record/);
  rejects('{"servers": {"A": 12000}}', /at servers\.A: .*expected object/);
  rejects('{"servers": {"A": null}}', /at servers\.A: .*expected object/);
});

Deno.test("parseTopology rejects unknown keys at any level", () => {
  rejects(
    `{"servers": {"A": ${JSON.stringify(server(1))}}, "extra": 1}`,
    /at top level: Unrecognized key: "extra"/,
  );
  rejects(
    json({ A: { ...server(1), name: "A" } }),
    /at servers\.A: Unrecognized key: "name"/,
  );
});

Deno.test("parseTopology reports a server's bad field before the top level's unknown keys, and names a port of 1e999", () => {
  rejects(
    '{"servers": {"A": {"host": 1, "port": 1}}, "q": 1}',
    /at servers\.A\.host: .*expected string, received number/,
  );
  rejects(
    '{"servers": {"A": {"host": "h", "port": 1e999}}}',
    /at servers\.A\.port: .*expected number, received Infinity/,
  );
});

Deno.test("parseTopology rejects a missing or wrongly typed host", () => {
  rejects(
    json({ A: { port: 1 } }),
    /at servers\.A\.host: .*expected string, received undefined/,
  );
  rejects(
    json({ A: { host: 127, port: 1 } }),
    /at servers\.A\.host: .*expected string, received number/,
  );
  rejects(json({ A: { host: "", port: 1 } }), /at servers\.A\.host: /);
});

Deno.test("parseTopology rejects a missing or wrongly typed port", () => {
  rejects(
    json({ A: { host: "h" } }),
    /at servers\.A\.port: .*expected number, received undefined/,
  );
  rejects(
    json({ A: { host: "h", port: "12000" } }),
    /at servers\.A\.port: .*expected number, received string/,
  );
  rejects(
    json({ A: { host: "h", port: null } }),
    /at servers\.A\.port: .*expected number/,
  );
  rejects(
    json({ A: { host: "h", port: 1.5 } }),
    /at servers\.A\.port: .*expected int/,
  );
});

Deno.test("parseTopology rejects a port out of range: 0, -1, 65536", () => {
  rejects(json({ A: server(0) }), /at servers\.A\.port: .*>=1/);
  rejects(json({ A: server(-1) }), /at servers\.A\.port: .*>=1/);
  rejects(json({ A: server(65536) }), /at servers\.A\.port: .*<=65535/);
  rejects(json({ A: server(1e9) }), /at servers\.A\.port: .*<=65535/);
  assert.ok(parseTopology(json({ A: server(1), B: server(55535) }), "t.json"));
  assert.ok(
    parseTopology(
      json({ A: { host: "h", port: 65535, peerPort: 1 } }),
      "t.json",
    ),
  );
});

Deno.test("parseTopology gives each server a bus port: peerPort, default port + 10000", () => {
  const topo = parseTopology(
    json({
      A: server(12000, ["B"]),
      B: { host: "127.0.0.1", port: 12001, peerPort: 40001, httpPort: 13001 },
    }),
    "t.json",
  );
  assert.equal(topo.servers.get("A")!.peerPort, 22000);
  assert.equal(topo.servers.get("A")!.httpPort, undefined);
  assert.equal(topo.servers.get("B")!.peerPort, 40001);
  assert.equal(topo.servers.get("B")!.httpPort, 13001);
});

Deno.test("parseTopology rejects a port above 55535 without peerPort, naming the fix", () => {
  const e = rejects(json({ A: server(55536) }), /give it a "peerPort"/);
  assert.equal(
    e.message,
    'herd.json: A has port 55536, so its default bus port 65536 does not exist: give it a "peerPort"',
  );
});

Deno.test("parseTopology rejects a bus or HTTP port that collides with any port of the same host", () => {
  const e = rejects(
    json({ A: server(12000), B: server(22000) }),
    /duplicate port 22000/,
  );
  assert.equal(
    e.message,
    "herd.json: duplicate port 22000 on 127.0.0.1: used by both A's bus port and B's client port",
  );
  rejects(
    json({ A: { host: "h", port: 1, peerPort: 1 } }),
    /duplicate port 1 on h: used by both A's client port and A's bus port/,
  );
  rejects(
    json({ A: { host: "h", port: 1, httpPort: 10001 } }),
    /duplicate port 10001 on h: used by both A's bus port and A's HTTP port/,
  );
  rejects(
    json({
      A: { host: "h", port: 1, httpPort: 5 },
      B: { host: "h", port: 2, peerPort: 5 },
    }),
    /duplicate port 5 on h: used by both A's HTTP port and B's bus port/,
  );
  // Other hosts may reuse a port.
  assert.ok(
    parseTopology(
      json({ A: server(12000), B: server(12000, [], "10.0.0.2") }),
      "t.json",
    ),
  );
  rejects(
    json({ A: { host: "h", port: 1, peerPort: 0 } }),
    /at servers\.A\.peerPort: .*>=1/,
  );
  rejects(
    json({ A: { host: "h", port: 1, httpPort: 70000 } }),
    /at servers\.A\.httpPort: .*<=65535/,
  );
});

Deno.test("parseTopology rejects neighbors of the wrong type", () => {
  rejects(
    json({ A: { host: "h", port: 1, neighbors: "B" } }),
    /at servers\.A\.neighbors: .*expected array/,
  );
  rejects(
    json({ A: { host: "h", port: 1, neighbors: [1] } }),
    /at servers\.A\.neighbors\.0: .*expected string/,
  );
  rejects(
    json({ A: { host: "h", port: 1, neighbors: null } }),
    /at servers\.A\.neighbors: /,
  );
});

Deno.test("parseTopology rejects an unknown neighbor, naming both", () => {
  const e = rejects(
    json({ Alford: server(12000, ["Hamiltn"]) }),
    /Alford lists unknown neighbor "Hamiltn"/,
  );
  assert.equal(e.message, 'herd.json: Alford lists unknown neighbor "Hamiltn"');
  rejects(
    json({ A: server(1, ["a"]), B: server(2) }),
    /A lists unknown neighbor "a"/,
  );
  rejects(json({ A: server(1, [""]) }), /A lists unknown neighbor ""/);
  rejects(
    json({ A: server(1, ["constructor"]) }),
    /A lists unknown neighbor "constructor"/,
  );
});

Deno.test("parseTopology rejects a server listing itself as a neighbor", () => {
  const e = rejects(
    json({ A: server(1, ["A"]), B: server(2) }),
    /A lists itself as a neighbor/,
  );
  assert.equal(e.message, "herd.json: A lists itself as a neighbor");
});

Deno.test("parseTopology rejects a duplicate port, naming both servers", () => {
  const e = rejects(
    json({ A: server(12000), B: server(12001), C: server(12000) }),
    /duplicate port 12000/,
  );
  assert.equal(
    e.message,
    "herd.json: duplicate port 12000 on 127.0.0.1: used by both A's client port and C's client port",
  );
});

Deno.test("parseTopology rejects bad server names", () => {
  for (
    const name of [
      "",
      "A B",
      "-A",
      ".A",
      "_A",
      "A/B",
      "A\tB",
      "Ålford",
      "x".repeat(65),
      "A:1",
    ]
  ) {
    rejects(
      json({ [name]: server(1) }),
      /server name .* must be 1-64 letters, digits/,
    );
  }
  assert.ok(
    parseTopology(
      json({ ["x".repeat(64)]: server(1), "a.b_c-D9": server(2) }),
      "t.json",
    ),
  );
});

Deno.test("parseTopology error messages stay on one line, even for names with line breaks", () => {
  rejects(json({ "A\nB": server(1) }), /server name "A\\nB"/);
  rejects(json({ A: server(1, ["B\r\nC"]) }), /unknown neighbor "B\\r\\nC"/);
  rejects(json({ "A\nB": { host: "h", port: "x" } }), /port/);
  rejects(json({ A: { ...server(1), "x\ny": 1 } }), /Unrecognized key/);
});

// ---- loading ---------------------------------------------------------------------------

Deno.test("loadTopology reports a missing file as a TopologyError naming it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/nope.json`;
    await assert.rejects(loadTopology(path), (e: unknown) => {
      assert.ok(e instanceof TopologyError);
      assert.match(e.message, /^cannot read topology file .*nope\.json: /);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadTopology reads a file and names it in errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const good = `${dir}/good.json`;
    await Deno.writeTextFile(good, json({ A: server(1, ["B"]), B: server(2) }));
    assert.deepEqual(neighborsOf(await loadTopology(good)), {
      A: ["B"],
      B: ["A"],
    });
    const bad = `${dir}/bad.json`;
    await Deno.writeTextFile(bad, json({ A: server(1), B: server(1) }));
    await assert.rejects(loadTopology(bad), (e: unknown) => {
      assert.ok(e instanceof TopologyError);
      assert.equal(
        e.message,
        `${bad}: duplicate port 1 on 127.0.0.1: used by both A's client port and B's client port`,
      );
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadTopology reports a directory given as the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(loadTopology(dir), TopologyError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
