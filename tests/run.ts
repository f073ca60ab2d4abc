/**
 * `deno task test`: runs the whole suite with sanitizers on, then prints the plain
 * `N passed, M failed` line CI reads, counted from Deno's JUnit report. Arguments are passed
 * to `deno test` (e.g. a single file).
 *
 * @module
 */

const junit = await Deno.makeTempFile({
  prefix: "herd-junit-",
  suffix: ".xml",
});
const args = [
  "test",
  "--sanitize-ops",
  "--sanitize-resources",
  "--allow-net=127.0.0.1,localhost",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
  `--junit-path=${junit}`,
  ...(Deno.args.length > 0 ? Deno.args : ["tests/"]),
];
const { code } = await new Deno.Command(Deno.execPath(), {
  args,
  stdin: "null",
  stdout: "inherit",
  stderr: "inherit",
}).spawn().status;

let passed = 0;
let failed = 0;
let skipped = 0;
try {
  const xml = await Deno.readTextFile(junit);
  // Count leaf test cases: each <testcase ...> either self-closes or holds its outcome.
  for (
    const m of xml.matchAll(/<testcase\b[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)
  ) {
    const body = m[2] ?? "";
    if (/<failure\b|<error\b/.test(body)) failed++;
    else if (/<skipped\b/.test(body)) skipped++;
    else passed++;
  }
} catch {
  failed = Math.max(failed, 1);
} finally {
  await Deno.remove(junit).catch(() => {});
}
if (code !== 0 && failed === 0) failed = 1; // the runner itself failed (e.g. type errors)
console.log(
  `\n${passed} passed, ${failed} failed${
    skipped ? `, ${skipped} skipped` : ""
  }`,
);
Deno.exit(code);
