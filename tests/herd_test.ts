/**
 * `deno task herd` and `deno task node`: the launcher runs every node of a topology (or the
 * named ones) as its own least-privilege process, prefixes their output with their names,
 * and stops them all cleanly on one SIGINT or SIGTERM.
 *
 * @module
 */

import assert from "assert";
import { ENV_VARS } from "../lib/config.ts";
import { nodeArgs, placesHosts } from "../lib/herd.ts";
import { parseTopology } from "../lib/topology.ts";
import { Client, freePorts, tempDir } from "./helpers.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);

/** A temporary directory, removed at the end of the scope. */
function topologyJson(
  servers: Record<
    string,
    {
      port: number;
      peerPort?: number;
      httpPort?: number;
      neighbors?: string[];
    }
  >,
): string {
  const json: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(servers)) {
    json[name] = {
      host: "127.0.0.1",
      port: s.port,
      // A free bus port: the default (port + 10000) may not exist for a free client port.
      peerPort: s.peerPort ?? freePorts(1)[0],
      ...(s.httpPort ? { httpPort: s.httpPort } : {}),
      neighbors: s.neighbors ?? [],
    };
  }
  return JSON.stringify({ servers: json });
}

const ENV = {
  PLACES_PROVIDER: "offline",
  PLACES_API_KEY: "",
  PLACES_URL: "",
  HERD_SECRET: "",
};

/** The launcher as `deno task herd` runs it, with writes limited to `data`. */
class Launcher implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  exit: Deno.CommandStatus | null = null;
  readonly #drained: Promise<void>;

  constructor(args: string[], writable: string) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        `--allow-write=${writable}`,
        "--allow-env",
        "--allow-run",
        "lib/herd.ts",
        ...args,
      ],
      cwd: ROOT,
      env: ENV,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child.status.then((s) => (this.exit = s));
    const collect = async (
      s: ReadableStream<Uint8Array>,
      add: (t: string) => void,
    ) => {
      for await (const t of s.pipeThrough(new TextDecoderStream())) add(t);
    };
    this.#drained = Promise.all([
      collect(this.child.stdout, (t) => (this.stdout += t)),
      collect(this.child.stderr, (t) => (this.stderr += t)),
    ]).then(() => {});
  }

  kill(signal: Deno.Signal): void {
    this.child.kill(signal);
  }

  /** Waits for the exit (and all output); kills the launcher and fails after `timeoutMs`. */
  async exited(timeoutMs: number): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<null>((r) => {
      timer = setTimeout(() => r(null), timeoutMs);
    });
    const status = await Promise.race([this.child.status, late]);
    clearTimeout(timer);
    if (status === null) {
      this.child.kill("SIGKILL");
      await this.child.status;
      await this.#drained;
      throw new Error(
        `launcher still running after ${timeoutMs} ms\n${this.stdout}`,
      );
    }
    await this.#drained;
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.exit === null) {
      // The nodes stop with it; SIGKILL would orphan them.
      this.child.kill("SIGTERM");
      await this.exited(15_000).catch(() => {});
    }
    await this.child.status;
    await this.#drained;
  }
}

/** Sends an IAMAT to `port` until a node answers (bounded); returns the reply. */
async function iamatWhenUp(
  port: number,
  iamat: string,
  launcher: Launcher,
  timeoutMs = 10_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 2000 && Date.now() < deadline; i++) {
    if (launcher.exit !== null) break;
    let c: Client;
    try {
      c = await Client.connect(port);
    } catch {
      await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    try {
      await c.send(iamat + "\n");
      return await c.lines(1, 5000);
    } finally {
      c.close();
    }
  }
  throw new Error(
    `no node answered on ${port} (exit ${
      JSON.stringify(launcher.exit)
    })\n${launcher.stdout}${launcher.stderr}`,
  );
}

async function refused(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return false;
  } catch {
    return true;
  }
}

// ---------------------------------------------------------------------------------------
// Least privilege.

const TOPO_TEXT = topologyJson({
  Alford: {
    port: 12000,
    peerPort: 22000,
    httpPort: 13000,
    neighbors: ["Hamilton", "Welsh"],
  },
  Hamilton: { port: 12002, peerPort: 22002 },
  Welsh: { port: 12004, peerPort: 22004, neighbors: ["Ball"] },
  Ball: { port: 12001, peerPort: 22001 },
});

function argsFor(
  name: string,
  env: Record<string, string | undefined>,
  kv?: string,
): string[] {
  const topology = parseTopology(TOPO_TEXT, "t.json");
  return nodeArgs(topology.servers.get(name)!, topology, {
    topologyPath: "/etc/herd/t.json",
    dataDir: "/var/herd",
    kv,
    npmCache: "/cache/npm",
    env,
  });
}

Deno.test("nodeArgs: a node may reach only its own client, bus and HTTP ports and its neighbors' bus ports (offline places), read its topology, data, lib/ and the npm cache, and write only its data", () => {
  assert.deepEqual(argsFor("Alford", { PLACES_PROVIDER: "offline" }), [
    "run",
    "--config",
    `${ROOT}deno.json`,
    "--allow-net=127.0.0.1:12000,127.0.0.1:22000,127.0.0.1:13000,127.0.0.1:22002,127.0.0.1:22004,unix:/var/herd/Alford.http.sock",
    `--allow-read=/etc/herd/t.json,/var/herd,${ROOT}lib,/cache/npm`,
    "--allow-write=/var/herd",
    `--allow-env=${ENV_VARS.join(",")}`,
    `${ROOT}main.ts`,
    "--name",
    "Alford",
    "--topology",
    "/etc/herd/t.json",
    "--data",
    "/var/herd",
  ]);
  // Links are symmetric: Ball lists nobody, yet Welsh is its neighbor. A neighbor's client
  // port is never in the list: nodes talk over the bus only.
  assert.ok(
    argsFor("Ball", {}).includes(
      "--allow-net=127.0.0.1:12001,127.0.0.1:22001,127.0.0.1:22004",
    ),
  );
});

Deno.test("nodeArgs: the network list adds exactly the places host the node's provider uses", async (t) => {
  const cases: [string, Record<string, string | undefined>, string][] = [
    ["no key, no provider: offline, no places host", {}, ""],
    ["a key: google's legacy endpoint", {
      PLACES_API_KEY: "k",
    }, ",maps.googleapis.com"],
    ["google-new: the new endpoint", {
      PLACES_PROVIDER: "google-new",
    }, ",places.googleapis.com"],
    ["PLACES_URL: its host and port", {
      PLACES_PROVIDER: "google",
      PLACES_URL: "http://127.0.0.1:8080/nearby",
    }, ",127.0.0.1:8080"],
    ["offline with a key and a URL set: still none", {
      PLACES_PROVIDER: "offline",
      PLACES_API_KEY: "k",
      PLACES_URL: "https://example.com/x",
    }, ""],
    ["a provider main.ts rejects: none (the node says why)", {
      PLACES_PROVIDER: "bing",
    }, ""],
  ];
  for (const [what, env, places] of cases) {
    await t.step(what, () => {
      const net = argsFor("Hamilton", env).find((a) =>
        a.startsWith("--allow-net=")
      );
      assert.equal(
        net,
        `--allow-net=127.0.0.1:12002,127.0.0.1:22002,127.0.0.1:22000${places}`,
      );
      assert.deepEqual(placesHosts(env), places ? [places.slice(1)] : []);
    });
  }
});

Deno.test("nodeArgs: a KV Connect URL adds its host and is passed on as --kv", () => {
  const url = "https://api.deno.com/databases/0123/connect";
  const args = argsFor("Hamilton", {}, url);
  assert.ok(
    args.includes(
      "--allow-net=127.0.0.1:12002,127.0.0.1:22002,127.0.0.1:22000,api.deno.com",
    ),
  );
  assert.deepEqual(args.slice(-2), ["--kv", url]);
});

Deno.test("nodeArgs: never grants blanket permissions", () => {
  for (const name of ["Alford", "Ball", "Hamilton", "Welsh"]) {
    for (const a of argsFor(name, { PLACES_API_KEY: "k" })) {
      assert.ok(
        !/^(-A|--allow-all|--allow-(net|read|write|env)$|--allow-(run|sys|ffi|import))/
          .test(a),
        a,
      );
    }
  }
});

// ---------------------------------------------------------------------------------------
// The launcher.

Deno.test("herd launcher: runs every node of the topology, each line prefixed with its node's name, and one SIGINT stops them all with exit 0", async () => {
  await using dir = await tempDir();
  const names = ["Alpha", "Bo", "Cecilia"];
  const ports = freePorts(3);
  const topo = `${dir.path}/topology.json`;
  await Deno.writeTextFile(
    topo,
    topologyJson({
      Alpha: { port: ports[0], neighbors: ["Bo"] },
      Bo: { port: ports[1], neighbors: ["Cecilia"] },
      Cecilia: { port: ports[2] },
    }),
  );
  const data = `${dir.path}/data`; // created by the launcher
  await using herd = new Launcher(["--topology", topo, "--data", data], data);
  for (const [i, name] of names.entries()) {
    const iamat = `IAMAT client-${name} +34.068930-118.445127 1700000000.${i}`;
    const reply = await iamatWhenUp(ports[i], iamat, herd);
    const [, node, skew, ...rest] = reply.slice(0, -1).split(" ");
    assert.equal(node, name);
    assert.match(skew, /^[+-]\d+\.\d{9}$/);
    assert.equal(`${rest.join(" ")}\n`, `${iamat.slice(6)}\n`);
    assert.ok(reply.startsWith("AT ") && reply.endsWith("\n"));
  }
  herd.kill("SIGINT");
  const status = await herd.exited(15_000);
  assert.equal(status.code, 0, herd.stdout + herd.stderr);
  assert.equal(herd.stderr, "");
  const lines = herd.stdout.slice(0, -1).split("\n");
  assert.equal(lines.at(-1), "herd: all nodes stopped");
  assert.ok(lines.includes("herd: stopping 3 node(s)"));
  // Started without HERD_SECRET, the herd made one: its bus is closed, the secret unseen.
  assert.ok(
    lines[0].startsWith("herd: no HERD_SECRET set: generated a random one"),
  );
  assert.doesNotMatch(herd.stdout, /[A-Za-z0-9_-]{43}/);
  for (const line of lines) {
    if (line.startsWith("herd: ")) continue;
    // Names padded to the longest: "Alpha   | ", "Bo      | ", "Cecilia | ".
    const name = names.find((n) => line.startsWith(`${n.padEnd(7)} | `));
    assert.ok(name, `unprefixed line: ${JSON.stringify(line)}`);
    // A node's own lines start with its name: the prefix is the right one.
    assert.ok(line.slice(10).startsWith(`${name}: `), line);
  }
  for (const [i, name] of names.entries()) {
    const pad = name.padEnd(7);
    assert.ok(lines.some((l) => l.startsWith(`${pad} | ${name}: listening `)));
    assert.ok(
      lines.some((l) =>
        /^\S+ +\| \S+: stopped clients=\d+$/.test(l) &&
        l.startsWith(`${pad} | ${name}: `)
      ),
      name,
    );
    assert.ok(await refused(ports[i]), `${name} still accepts connections`);
    const log = (await Deno.readTextFile(`${data}/${name}.log`)).trimEnd();
    assert.equal(
      JSON.parse(log.slice(log.lastIndexOf("\n") + 1)).event,
      "stopped",
    );
  }
});

Deno.test("herd launcher: --name runs just that node (deno task node), and SIGTERM stops it with exit 0", async () => {
  await using dir = await tempDir();
  const ports = freePorts(2);
  const topo = `${dir.path}/topology.json`;
  await Deno.writeTextFile(
    topo,
    topologyJson({
      A: { port: ports[0], neighbors: ["B"] },
      B: { port: ports[1] },
    }),
  );
  await using herd = new Launcher(
    ["--name", "B", "--topology", topo, "--data", dir.path],
    dir.path,
  );
  const reply = await iamatWhenUp(ports[1], "IAMAT kiwi +1+1 1700000000", herd);
  assert.match(reply, /^AT B /);
  assert.ok(await refused(ports[0]), "A was not asked for");
  herd.kill("SIGTERM");
  assert.equal((await herd.exited(15_000)).code, 0, herd.stdout);
  assert.ok(herd.stdout.includes("B | B: stopped clients=1\n"), herd.stdout);
  assert.ok(!herd.stdout.includes("A | "), herd.stdout);
});

Deno.test("herd launcher: a node that cannot start stops the rest, and the launcher exits 2", async () => {
  await using dir = await tempDir();
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const busy = (holder.addr as Deno.NetAddr).port;
    const [free] = freePorts(1);
    const topo = `${dir.path}/topology.json`;
    await Deno.writeTextFile(
      topo,
      topologyJson({ Up: { port: free }, Busy: { port: busy } }),
    );
    await using herd = new Launcher(
      ["--topology", topo, "--data", dir.path],
      dir.path,
    );
    const status = await herd.exited(15_000);
    assert.equal(status.code, 2, herd.stdout);
    assert.match(
      herd.stdout,
      new RegExp(
        `Busy \\| herd: port ${busy} on 127\\.0\\.0\\.1 is already in use`,
      ),
    );
    assert.match(
      herd.stdout,
      /herd: Busy exited with code 2; stopping the rest\n/,
    );
    assert.match(herd.stdout, /herd: all nodes stopped \(1 failed\)\n$/);
    assert.ok(await refused(free));
  } finally {
    holder.close();
  }
});

Deno.test("herd launcher: operator mistakes are one line on stderr and exit 2", async (t) => {
  await using dir = await tempDir();
  const [p] = freePorts(1);
  const topo = `${dir.path}/topology.json`;
  await Deno.writeTextFile(topo, topologyJson({ A: { port: p } }));
  await Deno.writeTextFile(`${dir.path}/file`, "");
  const cases: [string, string[], RegExp][] = [
    ["an unknown flag", ["--bogus"], /--bogus/],
    [
      "an unknown --name",
      ["--topology", topo, "--name", "Zed"],
      /unknown node name "Zed"/,
    ],
    [
      "a malformed topology",
      ["--topology", `${dir.path}/file`],
      /not valid JSON/,
    ],
    ["a data directory under a file", [
      "--topology",
      topo,
      "--data",
      `${dir.path}/file/data`,
    ], /data directory .*file\/data is not usable/],
  ];
  for (const [what, args, names] of cases) {
    await t.step(what, async () => {
      await using herd = new Launcher(args, dir.path);
      const status = await herd.exited(10_000);
      assert.equal(status.code, 2, herd.stderr);
      assert.equal(herd.stdout, "");
      const lines = herd.stderr.slice(0, -1).split("\n");
      assert.equal(lines.length, 1, herd.stderr);
      assert.match(lines[0], /^herd: /);
      assert.match(lines[0], names);
    });
  }
});
