/**
 * `deno task compile` builds a single binary. `deno compile` needs the `denort` runtime,
 * which these machines cannot download; it honours DENORT_BIN, so this test runs where
 * DENORT_BIN points to one and is skipped (reported as ignored) elsewhere.
 */

import assert from "assert";
import { exchange, freePorts, waitFor } from "./helpers.ts";

const denort = Deno.env.get("DENORT_BIN");
const root = decodeURIComponent(new URL("..", import.meta.url).pathname);

Deno.test({
  name: "the compiled binary prints usage and serves IAMAT like main.ts",
  ignore: !denort,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "herd-compile-" });
    try {
      const out = `${dir}/herd`;
      const build = await new Deno.Command(Deno.execPath(), {
        args: [
          "compile",
          "--allow-net",
          "--allow-read",
          "--allow-write",
          "--allow-env",
          "--include",
          "lib/places/gazetteer_worker.ts",
          "--output",
          out,
          "main.ts",
        ],
        cwd: root,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(build.success, new TextDecoder().decode(build.stderr));
      const help = await new Deno.Command(out, { args: ["--help"] }).output();
      assert.ok(new TextDecoder().decode(help.stdout).startsWith("usage:"));
      const [port, peerPort] = freePorts(2);
      const topo = `${dir}/topology.json`;
      await Deno.writeTextFile(
        topo,
        JSON.stringify({
          servers: {
            Alford: { host: "127.0.0.1", port, peerPort, neighbors: [] },
          },
        }),
      );
      const child = new Deno.Command(out, {
        args: ["--name", "Alford", "--topology", topo, "--data", `${dir}/data`],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        let reply = "";
        await waitFor(
          async () => {
            reply = await exchange(port, "IAMAT kiwi +1+1 1\n").catch(() => "");
            return reply !== "";
          },
          5000,
          "the binary to listen",
        );
        assert.match(reply, /^AT Alford \+\d+\.\d{9} kiwi \+1\+1 1\n$/);
      } finally {
        child.kill("SIGTERM");
        assert.equal((await child.status).code, 0);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
