/**
 * `deno task bench`: runs every benchmark in its own process, one after another (they need
 * the whole machine), and prints their figures as a table. Sizes come from BENCH_ACKS,
 * BENCH_CLIENTS, BENCH_CATCHUP_CLIENTS, BENCH_MISSED, BENCH_RATE, BENCH_HERD_ACKS,
 * BENCH_AFTER_RATE and BENCH_HERD50_NODES / _DEGREE / _SAMPLES; docs/benchmarks.md lists
 * every figure. Each bench is bounded in count and time, and one that runs past
 * `BENCH_TIMEOUT_S` (default 180 s) is killed and reported as failed.
 *
 * @module
 */

const benches: [string, string[]][] = [
  ["acks.ts", []],
  ["catchup.ts", []],
  ["reload.ts", ["--v8-flags=--expose-gc"]],
  ["herd.ts", []],
  ["herd50.ts", []],
  ["watch.ts", []],
  ["whatsat.ts", []],
  ["bus_codec.ts", []],
  ["bus_attack.ts", []],
];
const timeoutS = Number(Deno.env.get("BENCH_TIMEOUT_S") ?? 180);
const dir = decodeURIComponent(new URL(".", import.meta.url).pathname);
const rows: Record<string, unknown>[] = [];
let failed = 0;
/** Runs one bench within the time bound; its RESULT figures, or null when it failed. */
async function runOne(
  file: string,
  flags: string[],
): Promise<Record<string, unknown> | null> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...flags, `${dir}${file}`],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const timer = setTimeout(() => {
    console.log(`bench: ${file} ran past ${timeoutS} s; killing it`);
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, timeoutS * 1000);
  const out = await child.output();
  clearTimeout(timer);
  const text = new TextDecoder().decode(out.stdout);
  const line = text.split("\n").find((l) => l.startsWith("RESULT "));
  if (!out.success || !line) {
    console.log(`bench: ${file} failed (exit ${out.code})`);
    return null;
  }
  return JSON.parse(line.slice(7));
}

for (const [file, flags] of benches) {
  console.log(`bench: ${file} ...`);
  // Once more after a failure: on a shared machine a free port picked for a node can be
  // taken by another program before the node binds it.
  const row = await runOne(file, flags) ?? await runOne(file, flags);
  if (row === null) failed++;
  else rows.push(row);
}
for (const r of rows) {
  console.log(`\n${r.name}`);
  for (const [k, v] of Object.entries(r)) {
    if (k !== "name") console.log(`  ${k.padEnd(28)} ${v}`);
  }
}
Deno.exit(failed === 0 ? 0 : 1);
