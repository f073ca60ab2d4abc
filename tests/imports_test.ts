/**
 * The module graph's rules, checked from `deno info --json`: no import cycle among the
 * project's own modules (type-only imports included), and every entry of the `deno.json`
 * import map imported by something.
 */
import assert from "assert";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);

interface Dependency {
  specifier: string;
  code?: { specifier: string };
  type?: { specifier: string };
}
interface Module {
  specifier: string;
  dependencies?: Dependency[];
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await sourceFiles(path));
    else if (/\.(ts|js)$/.test(e.name)) out.push(path);
  }
  return out;
}

/** Every module reachable from the project's entry points, by specifier. */
async function graph(): Promise<Map<string, Module>> {
  const roots = [
    "main.ts",
    ...await sourceFiles("lib"),
    ...await sourceFiles("tests"),
    ...await sourceFiles("bench"),
  ].filter((f) => !f.startsWith("lib/http/view/"));
  const all = new Map<string, Module>();
  for (const root of roots) {
    if (all.has(`file://${ROOT}${root}`)) continue;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", root],
      cwd: ROOT,
      stdout: "piped",
      stderr: "null",
    }).output();
    assert.ok(out.success, `deno info ${root}`);
    const info = JSON.parse(new TextDecoder().decode(out.stdout));
    for (const m of info.modules as Module[]) all.set(m.specifier, m);
  }
  return all;
}

const own = (s: string) =>
  s.startsWith(`file://${ROOT}`) && !s.includes("/node_modules/");

Deno.test("the project's modules import each other with no cycle, type-only imports included", async () => {
  const modules = await graph();
  const edges = new Map<string, string[]>();
  for (const [s, m] of modules) {
    if (!own(s)) continue;
    edges.set(
      s,
      (m.dependencies ?? []).flatMap((d) =>
        [d.code?.specifier, d.type?.specifier].filter((x): x is string =>
          x !== undefined && own(x)
        )
      ),
    );
  }
  assert.ok(edges.size > 50, `only ${edges.size} modules found`);
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (s: string, path: string[]) => {
    if (state.get(s) === "done") return;
    if (state.get(s) === "open") {
      const loop = path.slice(path.indexOf(s)).concat(s);
      cycles.push(
        loop.map((x) => x.slice(`file://${ROOT}`.length)).join(" -> "),
      );
      return;
    }
    state.set(s, "open");
    for (const d of edges.get(s) ?? []) visit(d, [...path, s]);
    state.set(s, "done");
  };
  for (const s of edges.keys()) visit(s, []);
  assert.deepEqual(cycles, []);
});

Deno.test("every entry of the deno.json import map is imported by a module", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const modules = await graph();
  const used = new Set<string>();
  for (const m of modules.values()) {
    for (const d of m.dependencies ?? []) used.add(d.specifier);
  }
  const unused = Object.keys(config.imports).filter((name) =>
    ![...used].some((s) =>
      s === name || s.startsWith(name.endsWith("/") ? name : `${name}/`)
    )
  );
  assert.deepEqual(unused, []);
});
