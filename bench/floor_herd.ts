/**
 * The floor of a Deno herd on this machine: a yardstick for `../shared/bench/compare.py`,
 * never a server to run. It does what `../shared/bench/peers/node_herd.mjs` does and nothing
 * more, on Deno's own TCP API (`conn.read`, `conn.write`): records in a `Map` only (no log,
 * no fsync, acknowledged before anything is durable), AT lines flooded to every neighbor's
 * client port (no bus, no handshake, no frames), fields checked only as far as the Node herd
 * checks them, WHATSAT answered from the upstream `PLACES_URL` with no cache.
 *
 * What it is for: `compare.py` measures propagation at idle as a ratio to the Node herd's.
 * A herd that keeps nothing and checks little shows how low any Deno herd can go here, so
 * that the herd's own figures can be read against it (docs/benchmarks.md, round eleven):
 *
 * ```sh
 * HERD_CMD="deno run -A bench/floor_herd.ts --name {name} --topology {topology} --data {data}" \
 *   python3 ../shared/bench/compare.py . --impls product,node
 * ```
 *
 * Bounded in time and count as a benchmark must be: a connection with more than 64 Mi chars
 * unwritten is closed, a neighbor is redialled at most 10,000 times, and the process exits after
 * ten minutes. Like the Node herd, it holds every client it hears of and lets WHATSAT's
 * fetches run side by side without a bound.
 *
 * @module
 */

interface Server {
  host?: string;
  port: number;
  neighbors?: string[];
}

interface Held {
  ns: bigint;
  line: string;
  lat: number;
  lng: number;
}

const LIFETIME_MS = 10 * 60_000;
const MAX_OUTBOX = 64 * 1024 * 1024;
const MAX_LINE = 2 * 1024 * 1024;
const MAX_DIALS = 10_000;
const LOCATION = /^([+-])(\d+(?:\.\d+)?)([+-])(\d+(?:\.\d+)?)$/;
const TIME = /^(\d+)(?:\.(\d{1,9}))?$/;
const RADIUS = /^\d+(?:\.\d+)?$/;
const BOUND = /^\d+$/;

function flag(name: string): string {
  const i = Deno.args.indexOf(name);
  const v = i >= 0 ? Deno.args[i + 1] : undefined;
  if (v === undefined) {
    console.error(
      "usage: floor_herd.ts --name NAME --topology FILE [--data DIR]",
    );
    Deno.exit(2);
  }
  return v;
}

const name = flag("--name");
const servers: Record<string, Server> =
  JSON.parse(Deno.readTextFileSync(flag("--topology"))).servers;
const me = servers[name];
if (me === undefined) {
  console.error(`unknown server ${name}`);
  Deno.exit(2);
}
const neighbors = new Set(me.neighbors ?? []);
for (const [other, s] of Object.entries(servers)) {
  if (s.neighbors?.includes(name)) neighbors.add(other);
}
neighbors.delete(name);
const placesUrl = Deno.env.get("PLACES_URL") ??
  "https://maps.googleapis.com/maps/api/place/nearbysearch/json";
const placesKey = Deno.env.get("PLACES_API_KEY") ?? "";

function location(text: string): { lat: number; lng: number } | null {
  const m = LOCATION.exec(text);
  if (m === null) return null;
  const lat = Number(m[2]) * (m[1] === "-" ? -1 : 1);
  const lng = Number(m[4]) * (m[3] === "-" ? -1 : 1);
  return Math.abs(lat) <= 90 && Math.abs(lng) <= 180 ? { lat, lng } : null;
}

function timeNs(text: string): bigint | null {
  const m = TIME.exec(text);
  if (m === null) return null;
  return BigInt(m[1]) * 1_000_000_000n + BigInt((m[2] ?? "").padEnd(9, "0"));
}

function skew(ns: bigint): string {
  const a = ns < 0n ? -ns : ns;
  const frac = (a % 1_000_000_000n).toString().padStart(9, "0");
  return `${ns < 0n ? "-" : "+"}${a / 1_000_000_000n}.${frac}`;
}

const held = new Map<string, Held>();

/** Keeps the record if it is newer than the one held for its client. */
function hold(client: string, loc: string, time: string, line: string) {
  const ns = timeNs(time);
  const at = location(loc);
  if (ns === null || at === null) return false;
  const cur = held.get(client);
  if (cur !== undefined && cur.ns >= ns) return false;
  held.set(client, { ns, line, ...at });
  return true;
}

/**
 * Writes in order: one write in flight per connection, the rest joined behind it. Past
 * `MAX_OUTBOX` unwritten chars (in flight and queued) the connection is closed, once, and
 * later sends are dropped.
 */
class Writer {
  #queue: string[] = [];
  #unwritten = 0;
  #busy = false;
  #closed = false;
  readonly #enc = new TextEncoder();
  constructor(readonly conn: Deno.Conn) {}

  send(text: string): void {
    if (this.#closed) return;
    this.#unwritten += text.length;
    if (this.#unwritten > MAX_OUTBOX) {
      this.close();
      return;
    }
    if (this.#busy) {
      this.#queue.push(text);
      return;
    }
    this.#busy = true;
    void this.#pump(text);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  /** Writes `text`, then whatever queued behind it, until nothing is left. */
  async #pump(first: string): Promise<void> {
    let text = first;
    try {
      for (;;) {
        const bytes = this.#enc.encode(text);
        for (let sent = 0; sent < bytes.length;) {
          sent += await this.conn.write(bytes.subarray(sent));
        }
        this.#unwritten -= text.length;
        if (this.#queue.length === 0 || this.#closed) break;
        text = this.#queue.join("");
        this.#queue = [];
      }
    } catch {
      this.close();
    }
    this.#busy = false;
  }
}

const links = new Map<string, Writer | null>();

function flood(line: string): void {
  for (const w of links.values()) w?.send(line + "\n");
}

async function dial(peer: string): Promise<void> {
  let backoff = 100;
  for (let n = 0; n < MAX_DIALS; n++) {
    try {
      const s = servers[peer];
      const conn = await Deno.connect({
        hostname: s.host ?? "127.0.0.1",
        port: s.port,
      });
      conn.setNoDelay(true);
      backoff = 100;
      const w = new Writer(conn);
      links.set(peer, w);
      let all = "";
      for (const h of held.values()) all += h.line + "\n";
      if (all !== "") w.send(all);
      const sink = new Uint8Array(4096);
      try {
        while ((await conn.read(sink)) !== null) {
          // A neighbor sends nothing back on this connection.
        }
      } finally {
        w.close();
      }
    } catch { /* refused or reset: dial again */ }
    links.set(peer, null);
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(2000, backoff * 2);
  }
}

async function places(h: Held, radiusKm: number, bound: number) {
  const url = `${placesUrl}?location=${h.lat},${h.lng}&radius=${
    Math.round(radiusKm * 1000)
  }&key=${encodeURIComponent(placesKey)}`;
  const res = await fetch(url, { signal: AbortSignal.timeout(8000) });
  const body = await res.text();
  if (!res.ok) throw new Error(`http ${res.status}`);
  const answer = JSON.parse(body);
  if (Array.isArray(answer.results)) {
    answer.results = answer.results.slice(0, bound);
  }
  return JSON.stringify(answer, null, 3).replace(/\n+/g, "\n").trim();
}

/** The reply to one line: text, a promise of text, or null (a neighbor's record). */
function handle(raw: string): string | Promise<string> | null {
  const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
  const bad = `? ${line}\n`;
  const f = line.trim().split(/[ \t]+/);
  if (f[0] === "IAMAT" && f.length === 4) {
    const ns = timeNs(f[3]);
    if (ns === null || location(f[2]) === null) return bad;
    const now = BigInt(
      Math.round((performance.timeOrigin + performance.now()) * 1000),
    ) * 1000n;
    const at = `AT ${name} ${skew(now - ns)} ${f[1]} ${f[2]} ${f[3]}`;
    if (hold(f[1], f[2], f[3], at)) flood(at);
    return at + "\n";
  }
  if (f[0] === "WHATSAT" && f.length === 4) {
    const radius = Number(f[2]);
    const bound = Number(f[3]);
    if (!RADIUS.test(f[2]) || !BOUND.test(f[3])) return bad;
    const h = held.get(f[1]);
    if (h === undefined || !(radius > 0 && radius <= 50)) return bad;
    if (!(bound >= 1 && bound <= 20)) return bad;
    return places(h, radius, bound).then(
      (json) => `${h.line}\n${json}\n\n`,
      () => bad,
    );
  }
  if (f[0] === "AT" && f.length === 6) {
    const norm = f.join(" ");
    if (hold(f[3], f[4], f[5], norm)) flood(norm);
    return null;
  }
  return bad;
}

async function serve(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const w = new Writer(conn);
  const dec = new TextDecoder();
  const chunk = new Uint8Array(65536);
  let buf = "";
  // Replies leave in the order of their lines: a WHATSAT's fetch holds those behind it.
  let chain: Promise<void> = Promise.resolve();
  let waiting = 0;
  try {
    for (;;) {
      const n = await conn.read(chunk);
      if (n === null) break;
      buf += dec.decode(chunk.subarray(0, n), { stream: true });
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const reply = handle(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (reply === null) continue;
        if (typeof reply === "string" && waiting === 0) {
          w.send(reply);
          continue;
        }
        waiting++;
        chain = chain.then(async () => {
          const text = await reply;
          waiting--;
          w.send(text);
        });
      }
      if (buf.length > MAX_LINE) break;
    }
  } catch { /* reset by the client */ }
  w.close();
}

setTimeout(() => Deno.exit(0), LIFETIME_MS);
const listener = Deno.listen({
  hostname: me.host ?? "127.0.0.1",
  port: me.port,
});
console.log(
  `${name} (floor herd) listening on ${me.port}; neighbors ${[...neighbors]}`,
);
for (const peer of neighbors) {
  links.set(peer, null);
  void dial(peer);
}
for await (const conn of listener) void serve(conn);
