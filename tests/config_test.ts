/**
 * `main.ts`'s flags as `parseFlags` reads them (both forms of a value, the last of a repeated
 * flag, `--help`), every mistake as one `ConfigError` naming the flag, and the absolute path a
 * node's HTTP socket is granted by (`absolutePath`, the same string `node:path` gives).
 */

import assert from "assert";
import fc from "fast-check";
import { resolve } from "node:path";
import { ConfigError, DEFAULT_TOPOLOGY, parseFlags } from "../lib/config.ts";
import { absolutePath } from "../lib/http/server.ts";

function fails(args: string[], message: string): void {
  assert.throws(
    () => parseFlags(args),
    (e) => e instanceof ConfigError && e.message === message,
    `${JSON.stringify(args)} should fail with ${JSON.stringify(message)}`,
  );
}

Deno.test("parseFlags reads --flag value and --flag=value, with defaults for what is left out", () => {
  assert.deepEqual(parseFlags(["--name", "Alford"]), {
    name: "Alford",
    topology: DEFAULT_TOPOLOGY,
    data: "data",
    help: false,
  });
  assert.deepEqual(
    parseFlags([
      "--name=Ball",
      "--topology",
      "t.json",
      "--data=d",
      "--kv",
      ":memory:",
    ]),
    {
      name: "Ball",
      topology: "t.json",
      data: "d",
      kv: ":memory:",
      help: false,
    },
  );
  // A value may hold '=' and may be a lone '-'.
  assert.equal(parseFlags(["--name", "A", "--data=a=b"]).data, "a=b");
  assert.equal(parseFlags(["--name", "-"]).name, "-");
  // The last of a repeated flag wins.
  assert.equal(parseFlags(["--name", "A", "--name", "B"]).name, "B");
  // A final "--" with nothing after it is allowed, as parseArgs allowed it.
  assert.equal(parseFlags(["--name", "A", "--"]).name, "A");
});

Deno.test("parseFlags: --help or -h anywhere asks for the usage, whatever else is there", () => {
  for (
    const args of [["--help"], ["-h"], ["--name", "A", "-h"], [
      "--data",
      "d",
      "--help",
    ]]
  ) {
    assert.equal(parseFlags(args).help, true, JSON.stringify(args));
  }
});

Deno.test("parseFlags: each mistake is one ConfigError naming the flag or argument", () => {
  fails([], "--name is required");
  fails(["--data", "d"], "--name is required");
  fails(["--name"], "--name needs a value: --name <value>");
  fails(["--name", "--data", "d"], "--name needs a value: --name <value>");
  fails(["--name", ""], "--name is empty");
  fails(["--name", "A", "--topology="], "--topology is empty");
  fails(["--name", "A", "--data", ""], "--data is empty");
  fails(["--name", "A", "--kv="], "--kv is empty");
  fails(["--name", "A", "--bogus"], "unknown flag '--bogus'");
  fails(["--name", "A", "--bogus=1"], "unknown flag '--bogus'");
  fails(["--name", "A", "-x"], "unknown flag '-x'");
  fails(["--name", "A", "--help=yes"], "--help takes no value");
  fails(
    ["--name", "A", "extra"],
    "unexpected argument 'extra': main.ts takes flags only",
  );
  fails(
    ["--name", "A", "--", "x"],
    "unexpected argument 'x': main.ts takes flags only",
  );
});

Deno.test("absolutePath gives the path node:path's resolve gives, for relative and absolute paths (property)", () => {
  const segment = fc.constantFrom(
    "a",
    "data",
    ".",
    "..",
    "",
    "x.sock",
    "A.http.sock",
  );
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.array(segment, { minLength: 1, maxLength: 8 }),
      (absolute, parts) => {
        const path = (absolute ? "/" : "") + parts.join("/");
        if (path === "") return;
        assert.equal(absolutePath(path), resolve(path), path);
      },
    ),
    { numRuns: 500 },
  );
});
