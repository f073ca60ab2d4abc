/**
 * `deno task compile` builds one `herd` binary of `main.ts` with its permissions embedded:
 * network (the topology, known only at run time, says where), read of the working directory,
 * write of `data/` below it, and the five environment variables a node reads. The binary can
 * always read its own embedded files (the gazetteer worker, the npm packages, the default
 * `topology.json`).
 *
 * `deno compile` needs the `denort` runtime, which these machines cannot download; it honours
 * DENORT_BIN, so the binary itself is built and run only where DENORT_BIN points to one (the
 * test is reported as ignored elsewhere; CI's `compile` job builds it for real). The same
 * checks always run on `deno run` with the task's own permission flags, plus read access to
 * what the binary embeds, so a permission the node lacks fails here too.
 *
 * @module
 */

import assert from "assert";
import { ENV_VARS } from "../lib/config.ts";
import { npmCacheDir } from "../lib/herd.ts";
import { exchange, freePorts, waitFor } from "./helpers.ts";

const denort = Deno.env.get("DENORT_BIN");
const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname)
  .replace(/\/$/, "");

/** The compile task's words (it is one plain command, no shell syntax). */
async function compileTask(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  return (config.tasks.compile as string).split(/\s+/);
}

/** The `--allow-*` flags of the compile task, as name -> value ("" when unscoped). */
function permissions(task: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const word of task) {
    const m = /^--(allow-[a-z]+)(?:=(.*))?$/.exec(word);
    if (m) out.set(m[1], m[2] ?? "");
  }
  return out;
}

const OFFLINE_ENV = {
  PLACES_PROVIDER: "offline",
  PLACES_API_KEY: "",
  PLACES_URL: "",
  HERD_SECRET: "",
};

/** Runs `command args` in `cwd` to completion. */
async function run(
  command: string[],
  args: string[],
  cwd: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(command[0], {
    args: [...command.slice(1), ...args],
    cwd,
    env: OFFLINE_ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/**
 * What the binary must do, run as `command` from a fresh working directory: print usage, know
 * the default herd, refuse files outside its scope in one line, and serve IAMAT and WHATSAT
 * (offline gazetteer) until SIGTERM stops it with exit 0.
 */
async function exercise(command: string[], dir: string): Promise<void> {
  const help = await run(command, ["--help"], dir);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^usage:/);
  // The default topology (embedded in the binary) is the default herd.
  const unknown = await run(command, ["--name", "Nobody"], dir);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /Alford, Ball, Hamilton, Holiday, Welsh/);
  // Reads outside the working directory and writes outside data/ are refused, in one line.
  const outside = await Deno.makeTempDir({ prefix: "herd-outside-" });
  try {
    await Deno.writeTextFile(
      `${outside}/topology.json`,
      JSON.stringify({
        servers: { A: { host: "127.0.0.1", port: 1, peerPort: 2 } },
      }),
    );
    const read = await run(command, [
      "--name",
      "A",
      "--topology",
      `${outside}/topology.json`,
    ], dir);
    assert.equal(read.code, 2);
    assert.match(read.stderr, /^herd: cannot read topology file [^\n]+\n$/);
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
  const [port, peerPort] = freePorts(2);
  await Deno.writeTextFile(
    `${dir}/topology.json`,
    JSON.stringify({
      servers: {
        Alford: { host: "127.0.0.1", port, peerPort, neighbors: [] },
      },
    }),
  );
  const write = await run(command, [
    "--name",
    "Alford",
    "--topology",
    "topology.json",
    "--data",
    "elsewhere",
  ], dir);
  assert.equal(write.code, 2);
  assert.match(write.stderr, /^herd: [^\n]*elsewhere[^\n]*\n$/);
  const child = new Deno.Command(command[0], {
    args: [
      ...command.slice(1),
      "--name",
      "Alford",
      "--topology",
      "topology.json",
      "--data",
      "data",
    ],
    cwd: dir,
    env: OFFLINE_ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  try {
    let reply = "";
    await waitFor(
      async () => {
        reply = await exchange(port, "IAMAT kiwi +34.068930-118.445127 1\n")
          .catch(() => "");
        return reply !== "";
      },
      15_000,
      "the node to listen",
    );
    assert.match(
      reply,
      /^AT Alford \+\d+\.\d{9} kiwi \+34\.068930-118\.445127 1\n$/,
    );
    // The offline gazetteer loads in its worker; until then a WHATSAT may time out upstream.
    let places: { status?: string; results?: { name: string }[] } = {};
    await waitFor(
      async () => {
        const r = await exchange(port, "WHATSAT kiwi 10 3\n", 10_000);
        assert.ok(r.startsWith(reply), r);
        assert.ok(r.endsWith("\n\n"), r);
        places = JSON.parse(r.slice(reply.length));
        return places.status === "OK";
      },
      30_000,
      "the gazetteer to answer",
    );
    assert.deepEqual(places.results!.map((p) => p.name), [
      "Westwood",
      "Century City",
      "Beverly Hills",
    ]);
  } finally {
    child.kill("SIGTERM");
    const status = await child.status;
    const [stdout, stderr] = await output;
    assert.equal(status.code, 0, `stdout:\n${stdout}\nstderr:\n${stderr}`);
  }
}

Deno.test("the compile task embeds scoped permissions: env is exactly what a node reads", async () => {
  const task = await compileTask();
  assert.deepEqual(task.slice(0, 2), ["deno", "compile"]);
  const p = permissions(task);
  assert.deepEqual([...p.keys()].sort(), [
    "allow-env",
    "allow-net",
    "allow-read",
    "allow-write",
  ]);
  assert.deepEqual(p.get("allow-env")!.split(","), [...ENV_VARS]);
  assert.equal(p.get("allow-read"), ".");
  assert.equal(p.get("allow-write"), "data");
  assert.ok(task.includes("lib/places/gazetteer_worker.ts"));
  assert.ok(
    task.includes("lib/http/view"),
    "the live view's files are embedded",
  );
  assert.equal(task.at(-1), "main.ts");
});

Deno.test({
  name:
    "main.ts under the binary's permissions (deno run) serves IAMAT and WHATSAT and stops on SIGTERM",
  sanitizeResources: false,
  async fn() {
    const p = permissions(await compileTask());
    // What the binary embeds, and so can always read: the modules, the default topology,
    // the npm packages (the gazetteer's data).
    const embedded = [`${ROOT}/lib`, `${ROOT}/topology.json`];
    const npm = await npmCacheDir();
    if (npm) embedded.push(npm);
    const dir = await Deno.makeTempDir({ prefix: "herd-perms-" });
    try {
      await exercise([
        Deno.execPath(),
        "run",
        "--config",
        `${ROOT}/deno.json`,
        "--allow-net",
        `--allow-read=${[p.get("allow-read"), ...embedded].join(",")}`,
        `--allow-write=${p.get("allow-write")}`,
        `--allow-env=${p.get("allow-env")}`,
        `${ROOT}/main.ts`,
      ], dir);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the compiled binary (deno task compile) serves IAMAT and WHATSAT and stops on SIGTERM",
  ignore: !denort,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "herd-compile-" });
    try {
      const task = await compileTask();
      const out = `${dir}/bin/herd`;
      task[task.indexOf("--output") + 1] = out;
      const build = await new Deno.Command(Deno.execPath(), {
        args: task.slice(1),
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(build.success, new TextDecoder().decode(build.stderr));
      const work = `${dir}/work`;
      await Deno.mkdir(work);
      await exercise([out], work);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
