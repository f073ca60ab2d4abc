/**
 * `deno task client`: its commands, exact output and exit codes, run in-process
 * (`runClient`, output captured) against real nodes on loopback, plus a few runs of the real
 * task as a new user would type it.
 *
 * `status` over HTTP and `watch` need the nodes' HTTP face, built on another branch at the same
 * time: until it is merged they are tested against a STAND-IN HTTP server below that serves the
 * exact shapes PROTOCOL.md gives (`/healthz`, `/readyz`, `/metrics`, the `/v1/watch`
 * WebSocket). After the merge these tests should run against real nodes with an `httpPort`.
 * `status` through the TCP probe (no `httpPort`) and with a node down runs on real nodes now.
 *
 * @module
 */

import assert from "assert";
import { parseClientArgs, UsageError } from "../lib/client/args.ts";
import { metricValue, parseMetrics } from "../lib/client/prometheus.ts";
import { clean, paint, renderStatus } from "../lib/client/render.ts";
import { type ClientIo, formatTime, runClient } from "../lib/client/run.ts";
import type { PlacesAnswer } from "../lib/places/contract.ts";
import type { Topology } from "../lib/topology.ts";
import {
  fixedClock,
  freePorts,
  makeTopology,
  StubPlaces,
  tempDir,
  TestHerd,
  waitFor,
  writeTopologyFile,
} from "./helpers.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);

/** The node's clock: 1520023935.182837383, so a client time of ...934.918963997 gives +0.263873386. */
const NODE_NS = 1520023935182837383n;

interface Run {
  code: number;
  out: string;
  err: string;
}

/** Runs the client in this process; stdout and stderr captured as text (lines joined by \n). */
async function client(
  argv: string[],
  opts: Partial<ClientIo> = {},
): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runClient(argv, {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    color: false,
    signal: new AbortController().signal,
    now: () => new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 678)),
    ...opts,
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** Places around UCLA, for a readable table with distances. */
function ucla(q: { bound: number }): PlacesAnswer {
  return {
    html_attributions: [],
    results: [
      {
        name: "Westwood",
        geometry: { location: { lat: 34.05612, lng: -118.43063 } },
        vicinity: "CA, US",
      },
      {
        name: "Beverly\u001b[31mHills",
        geometry: { location: { lat: 34.07362, lng: -118.40036 } },
        vicinity: "CA, US",
      },
    ].slice(0, q.bound),
    status: "OK",
  };
}

/** A one- or two-node herd in this process, its topology in a file. */
async function herdWithFile(
  dir: string,
  names = ["Alford", "Ball"],
  links: [string, string][] = [["Alford", "Ball"]],
): Promise<{ herd: TestHerd; file: string }> {
  const herd = new TestHerd({
    names,
    links,
    config: () => ({
      clock: fixedClock(NODE_NS),
      places: new StubPlaces(ucla),
    }),
  });
  const file = await writeTopologyFile(herd.topology, `${dir}/topology.json`);
  return { herd, file };
}

Deno.test("iamat: the AT line, readable and as JSON; TIME defaults to now, exactly", async () => {
  await using dir = await tempDir();
  const { herd, file } = await herdWithFile(dir.path);
  await using _ = await herd.startAll();
  const json = await client([
    "--topology",
    file,
    "--json",
    "iamat",
    "kiwi.cs.ucla.edu",
    "+34.068930-118.445127",
    "1520023934.918963997",
  ]);
  assert.deepEqual(json, {
    code: 0,
    out:
      '{"at":"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997"}',
    err: "",
  });
  // Without TIME, the client's clock gives it, with nanoseconds.
  const now = await client(
    ["--topology", file, "--node", "Ball", "--json", "iamat", "kiwi", "+1+2"],
    { clock: fixedClock(NODE_NS - 1_500_000_001n) },
  );
  assert.deepEqual(now, {
    code: 0,
    out: '{"at":"AT Ball +1.500000001 kiwi +1+2 1520023933.682837382"}',
    err: "",
  });
  const readable = await client([
    "--topology",
    file,
    "iamat",
    "kiwi",
    "+34-118",
    "1520023934.5",
  ]);
  assert.deepEqual(readable, {
    code: 0,
    out:
      "recorded: kiwi at +34-118 by Alford (client time 1520023934.5 = 2018-03-02T20:52:14.500Z, skew +0.682837383 s)",
    err: "",
  });
});

Deno.test("whatsat: {at, places} exactly as the node answered; readable places as a table", async () => {
  await using dir = await tempDir();
  const { herd, file } = await herdWithFile(dir.path);
  await using _ = await herd.startAll();
  const at =
    "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";
  await client([
    "--topology",
    file,
    "iamat",
    "kiwi.cs.ucla.edu",
    "+34.068930-118.445127",
    "1520023934.918963997",
  ]);
  // Ball learned it from the herd; its answer carries Alford's AT line.
  let json: Run | undefined;
  await waitFor(
    async () => {
      json = await client([
        "--topology",
        file,
        "--node",
        "Ball",
        "--json",
        "whatsat",
        "kiwi.cs.ucla.edu",
        "10",
        "1",
      ]);
      return json.code === 0;
    },
    10_000,
    "Ball to learn kiwi",
  );
  assert.equal(json!.err, "");
  assert.deepEqual(JSON.parse(json!.out), { at, places: ucla({ bound: 1 }) });
  assert.equal(json!.out.split("\n").length, 1, "one JSON object, one line");
  const readable = await client([
    "--topology",
    file,
    "whatsat",
    "kiwi.cs.ucla.edu",
    "10",
    "2",
  ]);
  assert.deepEqual(readable, {
    code: 0,
    out: [
      "kiwi.cs.ucla.edu is at +34.068930-118.445127 (recorded by Alford, client time 1520023934.918963997)",
      "2 place(s):",
      "  NAME                    DISTANCE  VICINITY",
      "  Westwood                2.0 km    CA, US",
      // A control character from the network is printed escaped, never sent to the terminal.
      "  Beverly\\u001b[31mHills  4.2 km    CA, US",
    ].join("\n"),
    err: "",
  });
});

Deno.test("a '?' answer is exit 1 with the node's line; nothing on stdout", async () => {
  await using dir = await tempDir();
  const { herd, file } = await herdWithFile(dir.path);
  await using _ = await herd.startAll();
  const port = herd.port("Alford");
  for (
    const [argv, line] of [
      [["whatsat", "kiwi", "51", "5"], "? WHATSAT kiwi 51 5"],
      [["whatsat", "nobody", "10", "5"], "? WHATSAT nobody 10 5"],
      [["iamat", "kiwi", "34-118", "1"], "? IAMAT kiwi 34-118 1"],
      [["iamat", "kiwi", "+34-118", "1e9"], "? IAMAT kiwi +34-118 1e9"],
    ] as const
  ) {
    for (const json of [[], ["--json"]]) {
      const r = await client(["--topology", file, ...json, ...argv]);
      assert.deepEqual(r, {
        code: 1,
        out: "",
        err:
          `herd client: Alford (127.0.0.1:${port}) refused the request as invalid: ${line}`,
      });
    }
  }
  // --host/--port talks to that address, named by it.
  const r = await client([
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "whatsat",
    "kiwi",
    "0",
    "5",
  ]);
  assert.deepEqual(r, {
    code: 1,
    out: "",
    err:
      `herd client: 127.0.0.1:${port} refused the request as invalid: ? WHATSAT kiwi 0 5`,
  });
});

Deno.test("usage errors: exit 2, one line saying what is wrong, then the usage text", async () => {
  await using dir = await tempDir();
  const { file } = await herdWithFile(dir.path);
  const cases: [string[], string][] = [
    [[], "no command given"],
    [
      ["frob"],
      'unknown command "frob"; commands: iamat, whatsat, watch, status',
    ],
    [
      ["iamat", "kiwi"],
      "iamat takes 2 to 3 argument(s), got 1: iamat CLIENT LOCATION [TIME]",
    ],
    [
      ["whatsat", "kiwi", "10"],
      "whatsat takes 3 argument(s), got 2: whatsat CLIENT RADIUS BOUND",
    ],
    [
      ["iamat", "kiwi\nWHATSAT", "+1+1"],
      'argument "kiwi\\nWHATSAT" is empty or contains white space; each argument is one field of the request',
    ],
    [
      ["--bogus", "status"],
      "Unknown option '--bogus'. To specify a positional argument starting with a '-', place it at the end of the command after '--', as in '-- \"--bogus\"",
    ],
    [
      ["--node", "A", "--host", "h", "status"],
      "give either --node or --host and --port, not both",
    ],
    [["--host", "h", "iamat", "k", "+1+1"], "--host needs --port"],
    [
      ["--host", "h", "--port", "70000", "iamat", "k", "+1+1"],
      '--port "70000" is not a port (1-65535)',
    ],
    [["watch"], "watch takes 1 argument(s), got 0: watch CLIENT"],
    [["watch", "--near", "34,-118"], "--near needs --radius KM"],
    [
      ["watch", "--near", "91,0", "--radius", "1"],
      '--near "91,0" is not LAT,LNG in decimal degrees (e.g. 34.0689,-118.4451)',
    ],
    [
      ["watch", "--near", "1,1", "--radius", "51"],
      '--radius "51" is not a distance in km above 0 and at most 50',
    ],
    [
      ["watch", "kiwi", "--count", "0"],
      '--count "0" is not a positive integer',
    ],
    [["iamat", "k", "+1+1", "--count", "1"], "--count does not apply to iamat"],
    [
      ["status", "--interval", "61"],
      '--interval "61" is not a number of seconds from 0 to 60',
    ],
    [
      ["--host", "h", "--port", "1", "status"],
      "status reads every node of the topology: --host and --port do not apply (--node NAME shows one)",
    ],
  ];
  for (const [argv, message] of cases) {
    const r = await client(["--topology", file, ...argv]);
    assert.equal(r.code, 2, argv.join(" "));
    assert.equal(r.out, "");
    const [first, usage] = [r.err.split("\n")[0], r.err.split("\n")[1]];
    assert.equal(first, `herd client: ${message}`);
    assert.match(usage, /^usage: deno task client /);
  }
  // Configuration problems: exit 2, one line, no usage text.
  const config: [string[], string][] = [
    [
      ["--node", "Nobody", "iamat", "k", "+1+1"],
      `unknown node "Nobody"; ${file} has: Alford, Ball`,
    ],
    [
      ["--node", "Alford", "watch", "kiwi"],
      `Alford has no httpPort in ${file}, and watch goes through the node's HTTP port: add "httpPort" to its entry`,
    ],
  ];
  for (const [argv, message] of config) {
    assert.deepEqual(await client(["--topology", file, ...argv]), {
      code: 2,
      out: "",
      err: `herd client: ${message}`,
    });
  }
  const missing = await client([
    "--topology",
    `${dir.path}/none.json`,
    "status",
  ]);
  assert.equal(missing.code, 2);
  assert.match(
    missing.err,
    /^herd client: cannot read topology file .*none\.json: [^\n]+$/,
  );
  const help = await client(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.out, /^usage: deno task client /);
  assert.throws(() => parseClientArgs(["status", "extra"]), UsageError);
});

Deno.test("a node that is down is one line naming it and its address, exit 3", async () => {
  await using dir = await tempDir();
  const { herd, file } = await herdWithFile(dir.path);
  // Nothing started: every port is closed.
  const port = herd.port("Ball");
  for (
    const argv of [["iamat", "kiwi", "+1+1", "1"], [
      "whatsat",
      "kiwi",
      "1",
      "1",
    ]]
  ) {
    for (const json of [[], ["--json"]]) {
      const r = await client([
        "--topology",
        file,
        "--node",
        "Ball",
        ...json,
        ...argv,
      ]);
      assert.equal(r.code, 3);
      assert.equal(r.out, "");
      assert.match(
        r.err,
        new RegExp(
          `^herd client: cannot reach Ball \\(127\\.0\\.0\\.1:${port}\\): [^\\n]+$`,
        ),
      );
    }
  }
});

Deno.test("status on real nodes without httpPort: a TCP probe says up, a stopped node is down", async () => {
  await using dir = await tempDir();
  const { herd, file } = await herdWithFile(dir.path);
  await using _ = await herd.startAll();
  await herd.stop("Ball");
  const a = herd.topology.servers.get("Alford")!;
  const b = herd.topology.servers.get("Ball")!;
  const r = await client(["--topology", file, "--json", "status"]);
  assert.equal(r.code, 0);
  assert.equal(r.err, "");
  assert.deepEqual(JSON.parse(r.out), {
    topology: file,
    intervalMs: 1000,
    nodes: [
      {
        name: "Alford",
        host: "127.0.0.1",
        port: a.port,
        httpPort: null,
        status: "up",
        probe: "tcp",
        note: null,
        clients: null,
        clientConnections: null,
        links: { Ball: "unknown" },
        totals: null,
        rates: null,
      },
      {
        name: "Ball",
        host: "127.0.0.1",
        port: b.port,
        httpPort: null,
        status: "down",
        probe: "tcp",
        note: `nothing accepts connections on 127.0.0.1:${b.port}`,
        clients: null,
        clientConnections: null,
        links: { Alford: "unknown" },
        totals: null,
        rates: null,
      },
    ],
  });
  const readable = await client(["--topology", file, "status"]);
  assert.equal(readable.code, 0);
  const w = String(a.port).length;
  assert.deepEqual(readable.out.split("\n"), [
    `NODE    ADDRESS${
      " ".repeat(w + 5)
    }HTTP  STATUS  CLIENTS  CONNS  IAMAT  WHATSAT  INVALID  LINKS`,
    `Alford  127.0.0.1:${a.port}  -     up      -        -      -      -        -        Ball:unknown`,
    `Ball    127.0.0.1:${b.port}  -     down    -        -      -      -        -        -`,
    "notes:",
    `  Ball: nothing accepts connections on 127.0.0.1:${b.port}`,
  ]);
});

// ---------------------------------------------------------------------------------------------
// STAND-IN for a node's HTTP face (PROTOCOL.md, section HTTP), until the HTTP branch is merged:
// replace with real nodes that have an httpPort then.
// ---------------------------------------------------------------------------------------------

interface StandIn extends AsyncDisposable {
  port: number;
  scrapes: number;
  /** Updates a watch sends when it opens. */
  updates: Record<string, unknown>[];
  /** Close each watch after its updates, with this code and reason. */
  closeWith: [number, string] | null;
  ready: boolean;
  /** The query strings of watch requests. */
  watches: string[];
}

/** The exact /metrics families of PROTOCOL.md; counters move by 5 with each scrape. */
function metricsText(n: number): string {
  const c = 100 + 5 * n;
  return [
    "# HELP herd_iamat_total IAMAT lines received on the client port.",
    "# TYPE herd_iamat_total counter",
    `herd_iamat_total ${c}`,
    "# TYPE herd_whatsat_total counter",
    `herd_whatsat_total ${c * 2}`,
    "# TYPE herd_invalid_total counter",
    "herd_invalid_total 3",
    "# TYPE herd_clients gauge",
    "herd_clients 42",
    "# TYPE herd_client_connections gauge",
    "herd_client_connections 2",
    "# TYPE herd_peer_up gauge",
    'herd_peer_up{peer="Alford"} 1',
    'herd_peer_up{peer="Cole"} 0',
    "# TYPE herd_records_received_total counter",
    'herd_records_received_total{peer="Alford"} 7',
    'herd_records_received_total{peer="Cole"} 1',
    "# TYPE herd_records_sent_total counter",
    'herd_records_sent_total{peer="Alford"} 9',
    'herd_records_sent_total{peer="Cole"} 0',
    "# TYPE herd_kv_commit_seconds histogram",
    'herd_kv_commit_seconds_bucket{le="0.001"} 4',
    'herd_kv_commit_seconds_bucket{le="+Inf"} 5',
    "herd_kv_commit_seconds_sum 0.0123",
    "herd_kv_commit_seconds_count 5",
    "# TYPE herd_places_requests_total counter",
    'herd_places_requests_total{status="OK"} 11',
    "",
  ].join("\n");
}

function standIn(name: string): StandIn {
  const sockets = new Set<WebSocket>();
  const state: Omit<StandIn, "port" | typeof Symbol.asyncDispose> = {
    scrapes: 0,
    updates: [],
    closeWith: null,
    ready: true,
    watches: [],
  };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => {
      const url = new URL(req.url);
      const json = (status: number, body: unknown) =>
        Response.json(body, { status });
      switch (url.pathname) {
        case "/healthz":
          return json(200, { node: name, status: "ok" });
        case "/readyz":
          return state.ready
            ? json(200, { node: name, status: "ready" })
            : json(503, { node: name, status: "loading" });
        case "/metrics":
          return new Response(metricsText(state.scrapes++), {
            headers: { "content-type": "text/plain; version=0.0.4" },
          });
        case "/v1/watch": {
          if (req.headers.get("upgrade") !== "websocket") {
            return json(400, { error: "a watch is a WebSocket" });
          }
          state.watches.push(url.search);
          const { socket, response } = Deno.upgradeWebSocket(req);
          sockets.add(socket);
          socket.onclose = () => sockets.delete(socket);
          socket.onopen = () => {
            for (const u of state.updates) socket.send(JSON.stringify(u));
            socket.send("not json");
            if (state.closeWith) socket.close(...state.closeWith);
          };
          return response;
        }
        default:
          return json(404, { error: "not found" });
      }
    },
  );
  return Object.assign(state, {
    port: server.addr.port,
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.close();
      await waitFor(() => sockets.size === 0, 5000, "watch sockets to close");
      await server.shutdown();
    },
  });
}

/** Ball with a stand-in HTTP face, Alford a real node without one, Cole down. */
async function mixedTopology(dir: string, httpPort: number): Promise<{
  topology: Topology;
  file: string;
}> {
  const topology = makeTopology(["Alford", "Ball", "Cole"], [
    ["Alford", "Ball"],
    ["Ball", "Cole"],
  ]);
  topology.servers.get("Ball")!.httpPort = httpPort;
  topology.servers.get("Cole")!.httpPort = freePorts(1)[0];
  return {
    topology,
    file: await writeTopologyFile(topology, `${dir}/topology.json`),
  };
}

const RECORD = {
  at: "AT Alford +0.263873386 kiwi +34.068930-118.445127 1520023934.918963997",
  server: "Alford",
  skew: "+0.263873386",
  client: "kiwi",
  location: "+34.068930-118.445127",
  time: "1520023934.918963997",
  latitude: 34.06893,
  longitude: -118.445127,
};

Deno.test("status over HTTP against a fake face (answers a real node never gives): health, clients, links, totals and rates", async () => {
  await using dir = await tempDir();
  await using http = standIn("Ball");
  const { topology, file } = await mixedTopology(dir.path, http.port);
  await using herd = new TestHerd({ topology });
  await herd.start("Alford");
  const r = await client([
    "--topology",
    file,
    "--json",
    "status",
    "--interval",
    "0.2",
  ]);
  assert.equal(r.code, 0);
  assert.equal(r.err, "");
  const status = JSON.parse(r.out);
  const [alford, ball, cole] = status.nodes;
  assert.equal(alford.status, "up");
  assert.equal(alford.probe, "tcp");
  assert.equal(cole.status, "down");
  assert.equal(cole.probe, "tcp");
  assert.match(cole.note, /^nothing accepts connections on 127\.0\.0\.1:\d+$/);
  const { rates, ...rest } = ball;
  assert.deepEqual(rest, {
    name: "Ball",
    host: "127.0.0.1",
    port: topology.servers.get("Ball")!.port,
    httpPort: http.port,
    status: "up",
    probe: "http",
    note: null,
    clients: 42,
    clientConnections: 2,
    links: { Alford: "up", Cole: "down" },
    // The second scrape's totals.
    totals: {
      iamat: 105,
      whatsat: 210,
      invalid: 3,
      recordsReceived: 8,
      recordsSent: 9,
    },
  });
  assert.equal(http.scrapes, 2);
  // 5 IAMATs over about 0.2 s: a rate above zero; counters that did not move: zero.
  assert.ok(
    rates.iamat > 0 && rates.whatsat > rates.iamat,
    JSON.stringify(rates),
  );
  assert.deepEqual(
    [rates.invalid, rates.recordsReceived, rates.recordsSent],
    [0, 0, 0],
  );
  // Totals only, and a node still loading its records.
  http.ready = false;
  const once = await client([
    "--topology",
    file,
    "--node",
    "Ball",
    "status",
    "--interval",
    "0",
  ]);
  assert.equal(once.code, 0);
  const lines = once.out.split("\n");
  assert.equal(lines.length, 2);
  assert.match(
    lines[1],
    new RegExp(
      `^Ball  127\\.0\\.0\\.1:\\d+  ${http.port}  loading  42  +2  +110  +220  +3  +Alford:up Cole:down$`,
    ),
  );
});

Deno.test("watch CLIENT against a fake face (answers a real node never gives): each update as JSON or a readable line, --count ends it", async () => {
  await using dir = await tempDir();
  await using http = standIn("Ball");
  const { file } = await mixedTopology(dir.path, http.port);
  const second = {
    ...RECORD,
    server: "Ball",
    time: "1520023935",
    at: "AT Ball ...",
  };
  http.updates = [RECORD, second];
  const json = await client([
    "--topology",
    file,
    "--node",
    "Ball",
    "--json",
    "watch",
    "kiwi",
    "--count",
    "2",
  ]);
  assert.deepEqual(json, {
    code: 0,
    out: `${JSON.stringify(RECORD)}\n${JSON.stringify(second)}`,
    err: "",
  });
  assert.deepEqual(http.watches, ["?client=kiwi"]);
  http.updates = [RECORD];
  const readable = await client([
    "--topology",
    file,
    "--node",
    "Ball",
    "watch",
    "--near",
    "+34.07,-118.44",
    "--radius",
    "5",
    "--count",
    "1",
  ]);
  assert.deepEqual(readable, {
    code: 0,
    out:
      "03:04:05.678 kiwi at +34.068930-118.445127 (recorded by Alford, client time 1520023934.918963997, 0.5 km from the centre)",
    err: "watching within 5 km of +34.07,-118.44 on Ball (Ctrl-C stops)",
  });
  assert.equal(http.watches[1], "?near=%2B34.07%2C-118.44&radius=5");
});

Deno.test("watch against a fake face (answers a real node never gives): Ctrl-C ends it with 0; a node closing it is 3; a refused watch is 1", async () => {
  await using dir = await tempDir();
  await using http = standIn("Ball");
  const { file, topology } = await mixedTopology(dir.path, http.port);
  http.updates = [RECORD];
  // Ctrl-C (the signal) after the first update: a clean end.
  const controller = new AbortController();
  const out: string[] = [];
  const odd: string[] = [];
  const code = await runClient([
    "--topology",
    file,
    "--node",
    "Ball",
    "--json",
    "watch",
    "kiwi",
  ], {
    out: (l) => {
      out.push(l);
      controller.abort();
    },
    err: (l) => odd.push(l),
    color: false,
    signal: controller.signal,
  });
  assert.equal(code, 0);
  assert.deepEqual(out, [JSON.stringify(RECORD)]);
  // The node closes the watch: exit 3, one line saying so (the odd message reported too).
  http.closeWith = [1008, "too slow"];
  const closed = await client([
    "--topology",
    file,
    "--node",
    "Ball",
    "--json",
    "watch",
    "kiwi",
  ]);
  assert.deepEqual(closed, {
    code: 3,
    out: JSON.stringify(RECORD),
    err: [
      "herd client: Ball sent a watch message that is not a JSON object: not json",
      `herd client: Ball (127.0.0.1:${http.port}) closed the watch (code 1008: too slow)`,
    ].join("\n"),
  });
  // Something that is not a herd node's watch on the HTTP port: refused, exit 1.
  const plain = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("no", { status: 404 }),
  );
  try {
    topology.servers.get("Alford")!.httpPort = plain.addr.port;
    await writeTopologyFile(topology, file);
    const refused = await client([
      "--topology",
      file,
      "--json",
      "watch",
      "kiwi",
    ]);
    assert.deepEqual(refused, {
      code: 1,
      out: "",
      err:
        `herd client: Alford (ws://127.0.0.1:${plain.addr.port}/v1/watch?client=kiwi) refused the watch (no WebSocket upgrade; is this a herd node's HTTP port?)`,
    });
  } finally {
    await plain.shutdown();
  }
  // Cole's HTTP port has nothing behind it: unreachable, exit 3.
  const cole = topology.servers.get("Cole")!.httpPort;
  const down = await client([
    "--topology",
    file,
    "--node",
    "Cole",
    "--json",
    "watch",
    "kiwi",
  ]);
  assert.deepEqual(down, {
    code: 3,
    out: "",
    err:
      `herd client: cannot reach Cole (ws://127.0.0.1:${cole}/v1/watch?client=kiwi): nothing accepts connections on 127.0.0.1:${cole}`,
  });
});

Deno.test("parseMetrics reads labels, escapes, special values; clean escapes control characters", () => {
  const s = parseMetrics(
    [
      "# TYPE x counter",
      'x{a="1",b="q\\"uote\\\\ \\n"} 2.5 1700000000000',
      "y NaN",
      "z +Inf",
      "bad{a=1} 3",
      "w",
      "",
    ].join("\n"),
  );
  assert.equal(metricValue(s, "x", { b: 'q"uote\\ \n' }), 2.5);
  assert.ok(Number.isNaN(metricValue(s, "y")));
  assert.equal(metricValue(s, "z"), Infinity);
  assert.equal(metricValue(s, "bad"), undefined);
  assert.equal(metricValue(s, "w"), undefined);
  assert.equal(clean("a\u001b[2Jb\u202ec\nd"), "a\\u001b[2Jb\\u202ec\\u000ad");
  assert.equal(formatTime(1520023934000000001n), "1520023934.000000001");
  // Colours only when asked for, and never counted in column widths.
  const row = {
    name: "A",
    host: "h",
    port: 1,
    httpPort: null,
    probe: "tcp",
    note: null,
    clients: null,
    clientConnections: null,
    links: {},
    totals: null,
    rates: null,
  } as const;
  const text = renderStatus({
    topology: "t",
    intervalMs: 0,
    nodes: [{ ...row, status: "up" }, { ...row, name: "B", status: "down" }],
  }, paint(true));
  assert.ok(text.includes("\x1b[32mup\x1b[39m    "), JSON.stringify(text));
  assert.ok(
    !renderStatus({
      topology: "t",
      intervalMs: 0,
      nodes: [{ ...row, status: "up" }],
    }, paint(false)).includes("\x1b"),
  );
});

/** `deno task client ...` from the project directory, as a user types it. */
async function task(args: string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "client", ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    out: dec.decode(out.stdout),
    err: dec.decode(out.stderr),
  };
}

Deno.test("deno task client: runs with scoped permissions against a real node; errors are one line", async () => {
  await using dir = await tempDir();
  const { herd, file } = await herdWithFile(dir.path);
  await using _ = await herd.startAll();
  const ok = await task([
    "--topology",
    file,
    "--json",
    "iamat",
    "kiwi",
    "+1+1",
    "1520023934.918963997",
  ]);
  assert.deepEqual(ok, {
    code: 0,
    out: '{"at":"AT Alford +0.263873386 kiwi +1+1 1520023934.918963997"}\n',
    err: "",
  });
  const bad = await task(["--topology", file, "whatsat", "kiwi", "51", "1"]);
  assert.deepEqual(bad, {
    code: 1,
    out: "",
    err: `herd client: Alford (127.0.0.1:${
      herd.port("Alford")
    }) refused the request as invalid: ? WHATSAT kiwi 51 1\n`,
  });
  await herd.stop("Ball");
  const down = await task([
    "--topology",
    file,
    "--node",
    "Ball",
    "iamat",
    "kiwi",
    "+1+1",
  ]);
  assert.equal(down.code, 3);
  assert.match(
    down.err,
    /^herd client: cannot reach Ball \(127\.0\.0\.1:\d+\): [^\n]+\n$/,
  );
  const usage = await task(["--topology", file, "whatsat"]);
  assert.equal(usage.code, 2);
  assert.match(usage.err, /^herd client: whatsat takes 3 argument\(s\), got 0/);
  for (const r of [ok, bad, down, usage]) {
    assert.doesNotMatch(r.err, /\n\s+at /);
  }
});

Deno.test("whatsat: an upstream failure or no places is still an answer (exit 0), said plainly", async () => {
  await using dir = await tempDir();
  let answer: PlacesAnswer = {
    html_attributions: [],
    results: [],
    status: "REQUEST_DENIED",
    error_message: "The provided API key is invalid.",
  };
  const herd = new TestHerd({
    names: ["Alford"],
    links: [],
    config: () => ({
      clock: fixedClock(NODE_NS),
      places: new StubPlaces(() => answer),
    }),
  });
  const file = await writeTopologyFile(herd.topology, `${dir.path}/t.json`);
  await using _ = await herd.startAll();
  await client(["--topology", file, "iamat", "kiwi", "+1+1", "1"]);
  const head = "kiwi is at +1+1 (recorded by Alford, client time 1)";
  assert.deepEqual(
    await client(["--topology", file, "whatsat", "kiwi", "1", "1"]),
    {
      code: 0,
      out:
        `${head}\nplaces upstream failed: REQUEST_DENIED: The provided API key is invalid.`,
      err: "",
    },
  );
  answer = { html_attributions: [], results: [], status: "ZERO_RESULTS" };
  assert.deepEqual(
    await client(["--topology", file, "whatsat", "kiwi", "1", "1"]),
    { code: 0, out: `${head}\nno places (ZERO_RESULTS)`, err: "" },
  );
});

Deno.test("something that is not a herd node on the port: exit 3, one line with what it said", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const replies = ["HELLO\n", ""];
  const serving = (async () => {
    for (const reply of replies) {
      const conn = await listener.accept();
      const buf = new Uint8Array(1024);
      while ((await conn.read(buf)) !== null) { /* read the request to EOF */ }
      if (reply) await conn.write(new TextEncoder().encode(reply));
      conn.close();
    }
  })();
  try {
    const target = ["--host", "127.0.0.1", "--port", String(port)];
    assert.deepEqual(await client([...target, "iamat", "kiwi", "+1+1", "1"]), {
      code: 3,
      out: "",
      err:
        `herd client: 127.0.0.1:${port} answered something that is not a herd reply: "HELLO\\n"`,
    });
    assert.deepEqual(await client([...target, "whatsat", "kiwi", "1", "1"]), {
      code: 3,
      out: "",
      err:
        `herd client: 127.0.0.1:${port} closed the connection without answering`,
    });
  } finally {
    await serving;
    listener.close();
  }
});

/** The same commands against real nodes with an httpPort. */
Deno.test({
  name: "status and watch against real nodes with an httpPort",
  async fn() {
    await using dir = await tempDir();
    const topology = makeTopology(["Alford", "Ball"], [["Alford", "Ball"]], {
      http: true,
    });
    const file = await writeTopologyFile(topology, `${dir.path}/t.json`);
    await using herd = new TestHerd({
      topology,
      config: () => ({ clock: fixedClock(NODE_NS) }),
    });
    await herd.startAll();
    const at = await client([
      "--topology",
      file,
      "--json",
      "iamat",
      "kiwi",
      "+34.068930-118.445127",
      "1520023934.918963997",
    ]);
    assert.equal(at.code, 0, at.err);
    let status: { nodes: Record<string, unknown>[] } = { nodes: [] };
    await waitFor(
      async () => {
        const r = await client([
          "--topology",
          file,
          "--json",
          "status",
          "--interval",
          "0",
        ]);
        status = JSON.parse(r.out);
        return status.nodes.every((n) =>
          n.status === "up" && n.probe === "http" && n.clients === 1 &&
          Object.values(n.links as object).every((s) => s === "up")
        );
      },
      10_000,
      "both nodes up over HTTP, each knowing kiwi, links up",
    );
    assert.ok(
      ((status.nodes[0].totals as Record<string, number>).iamat) >= 1,
      JSON.stringify(status),
    );
    // client= first sends the current record.
    const watch = await client([
      "--topology",
      file,
      "--node",
      "Ball",
      "--json",
      "watch",
      "kiwi",
      "--count",
      "1",
    ]);
    assert.equal(watch.code, 0, watch.err);
    assert.deepEqual(JSON.parse(watch.out), RECORD);
  },
});

Deno.test("watch --near on a real node sees an update made at another node inside the circle, not one outside; Ctrl-C ends it with 0, a stopping node with 3", async () => {
  await using dir = await tempDir();
  const topology = makeTopology(["Alford", "Ball"], [["Alford", "Ball"]], {
    http: true,
  });
  const file = await writeTopologyFile(topology, `${dir.path}/t.json`);
  await using herd = new TestHerd({
    topology,
    config: () => ({ clock: fixedClock(NODE_NS) }),
  });
  await herd.startAll();
  const stop = new AbortController();
  const out: string[] = [];
  const err: string[] = [];
  const watching = runClient([
    "--topology",
    file,
    "--node",
    "Ball",
    "--json",
    "watch",
    "--near",
    "+34.07,-118.44",
    "--radius",
    "5",
  ], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    color: false,
    signal: stop.signal,
  });
  const watchers = () =>
    herd.nodes.get("Ball")!.metricsText().includes(
      'herd_watchers{kind="near"} 1',
    );
  await waitFor(watchers, 10_000, "the watch to open at Ball");
  const report = (id: string, location: string) =>
    client([
      "--topology",
      file,
      "--node",
      "Alford",
      "iamat",
      id,
      location,
      "1520023934.918963997",
    ]);
  assert.equal((await report("far", "+40.7-74.0")).code, 0);
  assert.equal((await report("near", "+34.068930-118.445127")).code, 0);
  await waitFor(() => out.length > 0, 10_000, "the update inside the circle");
  stop.abort();
  assert.equal(await watching, 0);
  assert.deepEqual(out.map((l) => JSON.parse(l).client), ["near"]);
  // A node that stops closes its watchers: the client says so and exits 3.
  const closed = client([
    "--topology",
    file,
    "--node",
    "Ball",
    "--json",
    "watch",
    "near",
  ]);
  await waitFor(
    () =>
      herd.nodes.get("Ball")!.metricsText().includes(
        'herd_watchers{kind="client"} 1',
      ),
    10_000,
    "the second watch to open",
  );
  await herd.stop("Ball");
  const r = await closed;
  assert.equal(r.code, 3, r.err);
  assert.match(r.err, /Ball .* closed the watch/);
});
