/**
 * A mutation pass: for each mutation in `mutations.json`, copy the project's tracked files to
 * a scratch directory, make that one small change, and run the test files that should notice.
 * A mutation the tests do not notice ("survived") is a test missing.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-run --allow-env tests/mutation/run.ts [ID ...]
 * ```
 *
 * Each entry: `{"id", "why", "file", "find", "replace", "tests": [...]}`; `find` must occur
 * exactly once in `file`. Prints one line per mutation and exits 1 if any survived.
 *
 * @module
 */

interface Mutation {
  id: string;
  why: string;
  file: string;
  find: string;
  replace: string;
  tests: string[];
}

const root = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const all: Mutation[] = JSON.parse(
  await Deno.readTextFile(`${root}tests/mutation/mutations.json`),
);
const chosen = Deno.args.length > 0
  ? all.filter((m) => Deno.args.includes(m.id))
  : all;

async function run(cmd: string, args: string[], cwd: string) {
  const out = await new Deno.Command(cmd, {
    args,
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    ok: out.success,
    text: decoder.decode(out.stdout),
    err: decoder.decode(out.stderr),
  };
}

const files = (await run("git", ["ls-files"], root)).text.split("\n").filter(
  Boolean,
);
let survived = 0;
for (const m of chosen) {
  const dir = await Deno.makeTempDir({ prefix: `mutant-${m.id}-` });
  try {
    for (const f of files) {
      const to = `${dir}/${f}`;
      await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true });
      await Deno.copyFile(`${root}${f}`, to);
    }
    const path = `${dir}/${m.file}`;
    const text = await Deno.readTextFile(path);
    const at = text.indexOf(m.find);
    if (at < 0 || text.indexOf(m.find, at + 1) >= 0) {
      console.log(
        `${m.id}: STALE (the text to change is not found exactly once)`,
      );
      survived++;
      continue;
    }
    await Deno.writeTextFile(
      path,
      text.slice(0, at) + m.replace + text.slice(at + m.find.length),
    );
    const t0 = performance.now();
    const r = await run(
      Deno.execPath(),
      [
        "test",
        "--allow-all",
        "--no-check",
        "--fail-fast",
        // As `deno task test` runs them: a leaked resource or op fails the test.
        "--sanitize-ops",
        "--sanitize-resources",
        ...m.tests,
      ],
      dir,
    );
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    if (r.ok) survived++;
    // The failing tests, or else (a crash, a leak, a test file that does not load) the
    // first error line: a mutant "killed" by anything but a failing test needs a look.
    const caughtBy = r.text.split("\n").filter((l) => l.includes(" ... FAILED"))
      .map((l) => l.replace(/ \.\.\. .*$/, ""))
      .slice(0, 2).join("; ") ||
      `no failing test; ${
        (r.err + r.text).split("\n").find((l) => /error/i.test(l))?.trim() ??
          "exit code not 0"
      }`;
    console.log(
      `${m.id}: ${r.ok ? "SURVIVED" : "killed"} (${secs} s)${
        r.ok ? ` - ${m.why}` : ` by: ${caughtBy}`
      }`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
console.log(`${chosen.length - survived} killed, ${survived} survived`);
Deno.exit(survived > 0 ? 1 : 0);
