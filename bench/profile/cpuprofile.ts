/**
 * Self and inclusive time by function in a V8 `.cpuprofile` (what `deno run --cpu-prof`
 * writes), as shares of the samples where the thread was busy (not `(idle)`).
 *
 * ```sh
 * deno run -R bench/profile/cpuprofile.ts /tmp/herd-prof/Alford/CPU.*.cpuprofile [TOP]
 * ```
 *
 * Inclusive time counts a function once per sample even when it recurses.
 *
 * @module
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

const [path, topArg] = Deno.args;
if (!path) {
  console.error("usage: cpuprofile.ts FILE.cpuprofile [TOP]");
  Deno.exit(2);
}
const top = Number(topArg ?? 40);
const profile = JSON.parse(await Deno.readTextFile(path)) as {
  nodes: ProfileNode[];
  samples: number[];
};
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) {
  for (const c of n.children ?? []) parent.set(c, n.id);
}
const key = (n: ProfileNode) => {
  const f = n.callFrame;
  const file = f.url.split("/").slice(-2).join("/");
  return `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}`;
};
const hits = new Map<number, number>();
for (const s of profile.samples) hits.set(s, (hits.get(s) ?? 0) + 1);
const self = new Map<string, number>();
const incl = new Map<string, number>();
let idle = 0;
for (const [id, count] of hits) {
  const k = key(byId.get(id)!);
  if (k.startsWith("(idle)")) {
    idle += count;
    continue;
  }
  self.set(k, (self.get(k) ?? 0) + count);
  const seen = new Set<string>();
  for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
    const kx = key(byId.get(x)!);
    if (seen.has(kx) || kx.startsWith("(root)")) continue;
    seen.add(kx);
    incl.set(kx, (incl.get(kx) ?? 0) + count);
  }
}
const busy = profile.samples.length - idle;
console.log(
  `samples ${profile.samples.length}, busy ${busy} (${
    (100 * busy / profile.samples.length).toFixed(1)
  }%)`,
);
for (const [title, m] of [["self", self], ["inclusive", incl]] as const) {
  console.log(`\n${title} (% of busy samples)`);
  const rows = [...m].sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [k, c] of rows) {
    console.log(`${(100 * c / busy).toFixed(1).padStart(6)}  ${k}`);
  }
}
