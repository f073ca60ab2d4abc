/**
 * Shared test fixtures: free loopback ports, topologies, in-process herds, a TCP client that
 * speaks raw bytes, a stub places provider and bounded waiting. Nothing here is global:
 * each test builds what it uses and tears it down.
 *
 * @module
 */

import { bytesToString } from "../lib/bytes.ts";
import { HerdNode, type NodeConfig } from "../lib/node.ts";
import {
  answerWithin,
  cutToBound,
  type NearbyQuery,
  type PlacesAnswer,
  type PlacesProvider,
} from "../lib/places/contract.ts";
import type { ServerSpec, Topology } from "../lib/topology.ts";

/** The first port of the kernel's range for connections' local ports (Linux: /proc). */
function ephemeralStart(): number {
  try {
    const text = Deno.readTextFileSync(
      "/proc/sys/net/ipv4/ip_local_port_range",
    );
    const first = Number(text.trim().split(/\s+/)[0]);
    if (Number.isInteger(first) && first > 4096) return first;
  } catch { /* not Linux, or no read permission */ }
  return 32768;
}

const EPHEMERAL_START = ephemeralStart();
/** Ports handed out by this process: none twice, bound yet or not. */
const handedOut = new Set<number>();

/**
 * Ports free right now on 127.0.0.1, below the kernel's range for connections' local
 * ports: a port the kernel picked from that range and released could become the local
 * port of a connection a started node opens to its neighbors before the next node binds
 * it ("bus port ... already in use", seen once in the whole suite's runs).
 */
export function freePorts(n: number): number[] {
  const low = Math.max(1024, EPHEMERAL_START - 12_000);
  const listeners: Deno.Listener[] = [];
  const ports: number[] = [];
  for (let tries = 0; ports.length < n && tries < 50 * n; tries++) {
    const port = low + Math.floor(Math.random() * (EPHEMERAL_START - low));
    if (handedOut.has(port)) continue;
    try {
      listeners.push(Deno.listen({ hostname: "127.0.0.1", port }));
      ports.push(port);
      handedOut.add(port);
    } catch { /* in use: another */ }
  }
  for (const l of listeners) l.close();
  if (ports.length < n) {
    throw new Error(`only ${ports.length} of ${n} free ports`);
  }
  return ports;
}

/**
 * A topology on fresh ports; `links` are pairs of names (symmetric). Every node gets a client
 * port and a bus port; with `http`, an HTTP port too.
 */
export function makeTopology(
  names: string[],
  links: [string, string][],
  opts: { http?: boolean } = {},
): Topology {
  const per = opts.http ? 3 : 2;
  const ports = freePorts(names.length * per);
  const servers = new Map<string, ServerSpec>();
  names.forEach((name, i) =>
    servers.set(name, {
      name,
      host: "127.0.0.1",
      port: ports[i * per],
      peerPort: ports[i * per + 1],
      ...(opts.http ? { httpPort: ports[i * per + 2] } : {}),
      neighbors: [],
    })
  );
  for (const [a, b] of links) {
    servers.get(a)!.neighbors.push(b);
    servers.get(b)!.neighbors.push(a);
  }
  for (const s of servers.values()) s.neighbors.sort();
  return { servers };
}

/** The default herd's shape: Alford-Hamilton-Holiday-Ball-Welsh-Alford. */
export const DEFAULT_LINKS: [string, string][] = [
  ["Alford", "Hamilton"],
  ["Alford", "Welsh"],
  ["Ball", "Holiday"],
  ["Ball", "Welsh"],
  ["Hamilton", "Holiday"],
];
/** The default herd's names. */
export const DEFAULT_NAMES = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

/** The UCLA campus, 10 km, as the node would build it from `WHATSAT kiwi 10 20`. */
export const UCLA: NearbyQuery = {
  lat: "34.068930",
  lng: "-118.445127",
  latDeg: 34.06893,
  lngDeg: -118.445127,
  radiusM: "10000",
  radiusMeters: 10000,
  bound: 20,
};

/**
 * Records every query; answers with `answer` (or what `respond` returns) after `delayMs`,
 * within the query's bound as the places contract requires.
 */
export class StubPlaces implements PlacesProvider {
  readonly name = "stub";
  readonly queries: NearbyQuery[] = [];
  respond: (q: NearbyQuery) => PlacesAnswer | Promise<PlacesAnswer>;
  delayMs = 0;
  #timers = new Set<ReturnType<typeof setTimeout>>();
  closed = false;

  constructor(
    respond?: (q: NearbyQuery) => PlacesAnswer | Promise<PlacesAnswer>,
  ) {
    this.respond = respond ?? ((q) => ({
      html_attributions: [],
      results: Array.from({ length: 20 }, (_, i) => ({ name: `place ${i}` }))
        .slice(0, q.bound),
      status: "OK",
    }));
  }

  describe(): string {
    return "stub";
  }

  nearby(q: NearbyQuery): Promise<PlacesAnswer> {
    this.queries.push(q);
    return answerWithin(this.#answer(q), q.timeoutMs ?? 5000);
  }

  async #answer(q: NearbyQuery): Promise<PlacesAnswer> {
    if (this.delayMs > 0) {
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          this.#timers.delete(t);
          r();
        }, this.delayMs);
        this.#timers.add(t);
      });
    }
    const answer = await this.respond(q);
    return answer.results.length > q.bound
      ? cutToBound(answer, q.bound)
      : answer;
  }

  close(): void {
    this.closed = true;
    for (const t of this.#timers) clearTimeout(t);
  }

  stats(): Record<string, number> {
    return { queries: this.queries.length };
  }
}

/** Fast flood settings for tests: quick reconnects and idle syncs. */
export const FAST_FLOOD = {
  backoffBaseMs: 10,
  backoffMaxMs: 200,
  handshakeTimeoutMs: 1000,
  syncIntervalMs: 200,
};

/** Options for an in-process herd. */
export interface HerdOptions {
  names?: string[];
  links?: [string, string][];
  topology?: Topology;
  /** Per-node config overrides. */
  config?: (name: string) => Partial<NodeConfig>;
}

/** A herd of nodes in this process. */
export class TestHerd {
  readonly topology: Topology;
  readonly nodes = new Map<string, HerdNode>();
  readonly #config: (name: string) => Partial<NodeConfig>;

  constructor(opts: HerdOptions = {}) {
    this.topology = opts.topology ??
      makeTopology(opts.names ?? DEFAULT_NAMES, opts.links ?? DEFAULT_LINKS);
    this.#config = opts.config ?? (() => ({}));
  }

  /** Starts (or restarts) one node. */
  async start(name: string): Promise<HerdNode> {
    const node = new HerdNode({
      name,
      topology: this.topology,
      dataDir: null,
      places: new StubPlaces(),
      console: false,
      flood: FAST_FLOOD,
      ...this.#config(name),
    });
    await node.start();
    this.nodes.set(name, node);
    return node;
  }

  /** Starts every node. */
  async startAll(): Promise<this> {
    for (const name of this.topology.servers.keys()) await this.start(name);
    return this;
  }

  /** The port of a node. */
  port(name: string): number {
    return this.topology.servers.get(name)!.port;
  }

  /** Stops one node. */
  async stop(name: string): Promise<void> {
    await this.nodes.get(name)?.stop();
    this.nodes.delete(name);
  }

  /** Stops every node. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.nodes.values()].map((n) => n.stop()));
    this.nodes.clear();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopAll();
  }
}

const encoder = new TextEncoder();

/** A raw TCP client for tests. */
export class Client {
  readonly conn: Deno.TcpConn;
  #buf = new Uint8Array(0);
  #eof = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to 127.0.0.1:port. */
  static async connect(port: number): Promise<Client> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new Client(conn);
  }

  /** Sends text (UTF-8) or raw bytes. */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    let off = 0;
    while (off < bytes.length) {
      off += await this.conn.write(bytes.subarray(off));
    }
  }

  /** Half-closes: the node sees EOF. */
  async end(): Promise<void> {
    await this.conn.closeWrite();
  }

  async #fill(deadline: number): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = new Uint8Array(64 * 1024);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) =>
      timer = setTimeout(() => r("timeout"), Math.max(0, deadline - Date.now()))
    );
    try {
      const n = await Promise.race([this.conn.read(chunk), timeout]);
      if (n === "timeout") throw new Error("timed out waiting for the node");
      if (n === null) {
        this.#eof = true;
        return false;
      }
      const next = new Uint8Array(this.#buf.length + n);
      next.set(this.#buf);
      next.set(chunk.subarray(0, n), this.#buf.length);
      this.#buf = next;
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.ConnectionReset) {
        this.#eof = true;
        return false;
      }
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads until `text` appears `count` times in what was received (as latin1). */
  async readUntil(text: string, count = 1, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = bytesToString(this.#buf);
      let found = 0;
      let at = 0;
      let end = -1;
      while (found < count) {
        const i = got.indexOf(text, at);
        if (i < 0) break;
        found++;
        at = i + text.length;
        end = at;
      }
      if (found === count) {
        this.#buf = this.#buf.slice(end);
        return got.slice(0, end);
      }
      if (!(await this.#fill(deadline))) {
        throw new Error(`EOF before ${JSON.stringify(text)} x${count}: ${got}`);
      }
    }
  }

  /** Reads `n` lines (each ending in "\n"). */
  lines(n: number, timeoutMs = 5000): Promise<string> {
    return this.readUntil("\n", n, timeoutMs);
  }

  /** Reads everything until the node closes (or resets) the connection. */
  async readAll(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (await this.#fill(deadline)) { /* keep reading */ }
    const got = bytesToString(this.#buf);
    this.#buf = new Uint8Array(0);
    return got;
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Sends `text`, half-closes, and returns everything the node sends until it closes. */
export async function exchange(
  port: number,
  data: string | Uint8Array,
  timeoutMs = 5000,
): Promise<string> {
  const c = await Client.connect(port);
  try {
    await c.send(data);
    await c.end();
    return await c.readAll(timeoutMs);
  } finally {
    c.close();
  }
}

/** Polls `check` every 10 ms until true; fails after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** A fixed clock: POSIX nanoseconds. */
export function fixedClock(ns: bigint): () => bigint {
  return () => ns;
}

/** A temporary directory removed (with everything in it) when the scope ends. */
export async function tempDir(
  prefix = "herd-test-",
): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

/** Writes `topology` as a topology file at `path` (the shape `loadTopology` reads). */
export async function writeTopologyFile(
  topology: Topology,
  path: string,
): Promise<string> {
  const servers: Record<string, unknown> = {};
  for (const s of topology.servers.values()) {
    servers[s.name] = {
      host: s.host,
      port: s.port,
      peerPort: s.peerPort,
      ...(s.httpPort !== undefined ? { httpPort: s.httpPort } : {}),
      neighbors: s.neighbors,
    };
  }
  await Deno.writeTextFile(path, JSON.stringify({ servers }));
  return path;
}

/** What one atomic commit carried. */
export interface CommitShape {
  mutations: number;
  /** Keys and values, bytes (values that are not bytes counted as their JSON). */
  bytes: number;
  largestValue: number;
}

/**
 * Wraps a KV so every atomic commit is measured, and so a test can hold commits: each commit
 * first awaits `gate(its first key)` (default: at once).
 */
export function measuredKv(kv: Deno.Kv): {
  kv: Deno.Kv;
  commits: CommitShape[];
  gate: (first?: Deno.KvKey) => Promise<void>;
  setGate(g: (first?: Deno.KvKey) => Promise<void>): void;
} {
  const state = {
    kv: kv,
    commits: [] as CommitShape[],
    gate: (_first?: Deno.KvKey) => Promise.resolve(),
    setGate(g: (first?: Deno.KvKey) => Promise<void>) {
      state.gate = g;
    },
  };
  // A value that is not bytes (the snapshot description) as its JSON, its byte arrays
  // counted by length.
  const size = (v: unknown) =>
    v instanceof Uint8Array ? v.byteLength : JSON.stringify(
      v,
      (_, x) => x instanceof Uint8Array ? "#".repeat(x.byteLength) : x,
    ).length;
  const atomic = () => {
    const op = kv.atomic();
    const shape: CommitShape = { mutations: 0, bytes: 0, largestValue: 0 };
    let first: Deno.KvKey | undefined;
    const wrapper = {
      set(key: Deno.KvKey, value: unknown) {
        first ??= key;
        shape.mutations++;
        shape.bytes += size(key) + size(value);
        shape.largestValue = Math.max(shape.largestValue, size(value));
        op.set(key, value);
        return wrapper;
      },
      delete(key: Deno.KvKey) {
        shape.mutations++;
        shape.bytes += size(key);
        op.delete(key);
        return wrapper;
      },
      async commit() {
        await state.gate(first);
        const res = await op.commit();
        state.commits.push(shape);
        return res;
      },
    };
    return wrapper;
  };
  state.kv = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") return atomic;
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return state;
}
