/**
 * One herd node, composed from its config: the data directory and its lock, the log, the
 * KV store, the client server, the neighbor pool and the places provider. `start()` brings
 * it up (listening within milliseconds; records load in the background) and `stop()` takes
 * it down cleanly: stop accepting, answer what is in flight, flush state and log.
 *
 * Everything from the outside world is injected (places provider with its `fetch`, clock,
 * KV path), and nothing is module-level, so a whole herd runs in one process in tests.
 *
 * @example
 * ```ts
 * import { createPlaces } from "./places/mod.ts";
 * import { loadTopology } from "./topology.ts";
 *
 * const node = new HerdNode({
 *   name: "Alford",
 *   topology: await loadTopology("topology.json"),
 *   dataDir: "data",
 *   places: createPlaces({ provider: "offline" }),
 * });
 * await node.start();
 * // ...
 * await node.stop();
 * ```
 * @module
 */

import { stringToBytes, utf8ByteString } from "./bytes.ts";
import { type Clock, formatSkew, systemClock } from "./clock.ts";
import { BusListener } from "./bus/listener.ts";
import type { BusSettings } from "./bus/types.ts";
import { Flood } from "./flood.ts";
import { HerdMetrics, renderMetrics } from "./http/herd_metrics.ts";
import { HttpFace, httpSocketPath, type HttpTuning } from "./http/server.ts";
import type { HttpApi } from "./http/types.ts";
import { IdleGc, type IdleGcOptions } from "./idle_gc.ts";
import { parseLocation } from "./location.ts";
import { NodeLog } from "./log.ts";
import {
  failureAnswer,
  type NearbyQuery,
  type PlacesAnswer,
  type PlacesProvider,
  reasonMessage,
} from "./places/contract.ts";
import {
  formatInvalid,
  formatWhatsat,
  type IamatCommand,
  parseCommand,
  placesJson,
  type WhatsatCommand,
} from "./protocol.ts";
import { clientOf, formatAt } from "./record.ts";
import type { Gate } from "./gate.ts";
import {
  type EncodedReply,
  type ReplyText,
  Server,
  SERVER_DEFAULTS,
  type Session,
} from "./server.ts";
import { Store, type StoreOptions } from "./store.ts";
import type { Topology } from "./topology.ts";

/** A node's configuration. */
export interface NodeConfig {
  /** This node's name in the topology. */
  name: string;
  topology: Topology;
  /** Directory for the KV store, log and lock; null keeps everything in memory (tests). */
  dataDir: string | null;
  /** KV location override: a path, `:memory:`, or a KV Connect URL. Default `<dataDir>/<name>.kv`. */
  kv?: string;
  places: PlacesProvider;
  /** Shared secret between nodes (`HERD_SECRET`). */
  secret?: string;
  clock?: Clock;
  /** Bind address override (default: the topology's host). */
  hostname?: string;
  /** Longest client line in bytes. Default 16 KiB. */
  maxLineBytes?: number;
  /** A WHATSAT is answered within this many ms whatever upstream does. Default 5000. */
  whatsatTimeoutMs?: number;
  /** Print events on stdout. Default true. */
  console?: boolean;
  /** Where operator lines go (see `LogOptions.print`). */
  print?: (line: string, stream: "out" | "err") => void;
  /** Bus tuning (tests shorten intervals); defaults in `busDefaults`. */
  flood?: Partial<BusSettings>;
  /** Store tuning (tests shorten it; `onCommit` feeds metrics). */
  store?: Omit<StoreOptions, "log">;
  /** Opens the KV (tests wrap it to slow or break it). Default `Deno.openKv`. */
  openKv?: (path: string) => Promise<Deno.Kv>;
  /** HTTP tuning: bounds, watchers, the live view's feed (tests shorten them). */
  http?: HttpTuning;
  /** Idle collector tuning (tests inject the collector and the heap's size). */
  idleGc?: Omit<IdleGcOptions, "activity" | "busy">;
}

/** The node's own defaults (its parts keep theirs: SERVER_DEFAULTS, busDefaults, ...). */
export const NODE_DEFAULTS = {
  /** A WHATSAT is answered within this many ms whatever upstream does. */
  whatsatTimeoutMs: 5_000,
} as const;

/** A problem the operator caused or can fix; its message is one line. */
export class NodeStartError extends Error {
  override name = "NodeStartError";
}

/** One node of the herd. */
export class HerdNode {
  readonly config: NodeConfig;
  readonly name: string;
  #log!: NodeLog;
  #kv!: Deno.Kv;
  #store!: Store;
  #server!: Server;
  #flood!: Flood;
  #http: HttpFace | null = null;
  readonly #metrics = new HerdMetrics();
  #bus: BusListener | null = null;
  #idleGc: IdleGc | null = null;
  #lock: Deno.FsFile | null = null;
  #clock: Clock;
  #started = false;
  #warmTimer: ReturnType<typeof setTimeout> | undefined;
  /** Shared by the unknown-client WHATSATs of one turn (`#afterReads`). */
  #readsHandled: Promise<ReadonlyMap<string, string>> | null = null;
  /** Neighbors' records accepted while `#readsHandled` waits: the newest per client. */
  #turnRecords = new Map<string, string>();
  #stopping: Promise<void> | null = null;
  /**
   * The encoded end of a WHATSAT reply (the places JSON in UTF-8 and the empty line) by
   * answer, for answers a provider froze: a frozen answer never changes and is shared by
   * every caller that asks the same (the offline gazetteer's cache), so it is rendered and
   * encoded once, and a repeated question costs a lookup and a copy. Weak: an entry lives as
   * long as the provider keeps the answer, so the provider's bounds are its bounds.
   */
  readonly #rendered = new WeakMap<PlacesAnswer, Uint8Array>();

  constructor(config: NodeConfig) {
    this.config = config;
    this.name = config.name;
    this.#clock = config.clock ?? systemClock;
    if (!config.topology.servers.has(config.name)) {
      const known = [...config.topology.servers.keys()].join(", ");
      throw new NodeStartError(
        `unknown node name ${
          JSON.stringify(config.name)
        }; the topology has: ${known}`,
      );
    }
  }

  /** The port the node listens on. */
  get port(): number {
    return this.#server.port;
  }

  /** The node's store (tests and tools read it). */
  get store(): Store {
    return this.#store;
  }

  /** The node's log. */
  get log(): NodeLog {
    return this.#log;
  }

  /** The client side (its `stats` count connections, refusals and pauses). */
  get server(): Server {
    return this.#server;
  }

  /** The neighbor pool. */
  get flood(): Flood {
    return this.#flood;
  }

  /** Brings the node up; throws NodeStartError for operator-fixable problems. */
  async start(): Promise<void> {
    const { name, dataDir, topology } = this.config;
    const spec = topology.servers.get(name)!;
    if (dataDir !== null) await this.#prepareDataDir(dataDir);
    this.#log = await NodeLog.open({
      node: name,
      path: dataDir === null ? null : `${dataDir}/${name}.log`,
      console: this.config.console,
      print: this.config.print,
    });
    const kvPath = this.config.kv ??
      (dataDir === null ? ":memory:" : `${dataDir}/${name}.kv`);
    try {
      const openKv = this.config.openKv ?? ((p: string) => Deno.openKv(p));
      this.#kv = await openKv(kvPath);
    } catch (e) {
      await this.#release();
      throw new NodeStartError(
        `cannot open the KV store ${kvPath}: ${(e as Error).message}`,
      );
    }
    this.#store = await Store.open(this.#kv, {
      log: this.#log,
      ...this.config.store,
      onCommit: (seconds, records) => {
        this.#metrics.commit(seconds, records);
        this.config.store?.onCommit?.(seconds, records);
      },
    });
    this.#server = new Server({
      hostname: this.config.hostname ?? spec.host,
      port: spec.port,
      log: this.#log,
      maxLineBytes: this.config.maxLineBytes,
      handler: {
        line: (line, session) => this.#onLine(line, session),
      },
    });
    this.#flood = new Flood({
      name,
      neighbors: spec.neighbors.map((n) => topology.servers.get(n)!),
      nodes: topology.servers.keys(),
      secret: this.config.secret,
      store: this.#store,
      log: this.#log,
      receive: (lines, from) => this.#onRecords(lines, from),
      connId: () => this.#server.nextId(),
      // A neighbor's record came from a client line of at most this length.
      clientLineBytes: this.config.maxLineBytes,
      ...this.config.flood,
    });
    try {
      this.#server.listen();
    } catch (e) {
      // Let the background load end before KV closes under it.
      this.#store.stopLoading();
      await this.#store.loaded.catch(() => {});
      await this.#release();
      if (e instanceof Deno.errors.AddrInUse) {
        throw new NodeStartError(
          `port ${spec.port} on ${spec.host} is already in use (is ${name} already running?)`,
        );
      }
      throw new NodeStartError(
        `cannot listen on ${spec.host}:${spec.port}: ${(e as Error).message}`,
      );
    }
    // The bus port: neighbors only, on the same host as the client port.
    this.#bus = new BusListener({
      hostname: this.config.hostname ?? spec.host,
      port: spec.peerPort,
      log: this.#log,
      onConnection: (conn) => this.#flood.adopt(conn),
    });
    try {
      this.#bus.listen();
    } catch (e) {
      await this.#abandonStart();
      if (e instanceof Deno.errors.AddrInUse) {
        throw new NodeStartError(
          `bus port ${spec.peerPort} on ${spec.host} is already in use (is ${name} already running?)`,
        );
      }
      throw new NodeStartError(
        `cannot listen on ${spec.host}:${spec.peerPort} (bus): ${
          (e as Error).message
        }`,
      );
    }
    if (spec.httpPort !== undefined) await this.#startHttp(spec.httpPort);
    this.#started = true;
    this.#flood.start();
    // Records from neighbors count as work too: a node that only relays a flood saw no
    // client line, looked quiet, and ran a full collection every second of the flood. A
    // fold is the aftermath of a burst: collected in the middle of it, its garbage is not
    // all there yet, and the collection stalls a node already short of CPU.
    this.#idleGc = new IdleGc({
      ...this.config.idleGc,
      activity: () => this.#server.activity + this.#flood.stats.recordsReceived,
      busy: () => this.#store.folding,
    });
    this.#idleGc.start();
    // The offline gazetteer takes CPU to load (a worker, ~0.1 s from its cache, ~0.5 s
    // cold); starting it a moment after listening lets the other nodes of a herd that start
    // together come up first. A WHATSAT before then starts it at once.
    this.#warmTimer = setTimeout(() => this.config.places.warm?.(), 250);
    this.#log.event("listening", {
      host: spec.host,
      port: this.port,
      bus: spec.peerPort,
      places: this.config.places.describe(),
      kv: kvPath.includes("://") ? kvPath.replace(/\?.*$/, "") : kvPath,
      neighbors: spec.neighbors.join(","),
      secret: this.config.secret ? "set" : "none",
      ...(this.#http ? { http: this.#http.port } : {}),
    });
    if (!this.config.secret) {
      this.#log.warn("bus_open", {
        port: spec.peerPort,
        reason:
          "no HERD_SECRET: anyone who reaches the bus port can join as a neighbor; run deno task keygen",
      });
    }
  }

  /** The HTTP port, when the node serves HTTP. */
  get httpPort(): number | undefined {
    return this.#http?.port;
  }

  /** The HTTP face (tests read its watchers). */
  get http(): HttpFace | null {
    return this.#http;
  }

  /** Serves HTTP on `port`; a port in use is an operator error, like the client port. */
  async #startHttp(port: number): Promise<void> {
    const spec = this.config.topology.servers.get(this.name)!;
    const host = this.config.hostname ?? spec.host;
    const http = new HttpFace({
      hostname: host,
      port,
      ...(this.config.dataDir === null
        ? {}
        : { socketPath: httpSocketPath(this.config.dataDir, this.name) }),
      api: this.#httpApi(),
      log: this.#log,
      onResponse: (status) => this.#metrics.httpResponse(status),
      ...this.config.http,
    });
    try {
      http.start();
    } catch (e) {
      await this.#abandonStart();
      if (e instanceof Deno.errors.AddrInUse) {
        throw new NodeStartError(
          `HTTP port ${port} on ${host} is already in use (is ${this.name} already running?)`,
        );
      }
      throw new NodeStartError(
        `cannot listen for HTTP on ${host}:${port}: ${(e as Error).message}`,
      );
    }
    this.#http = http;
  }

  /** Undoes a start that failed once the client port listened: nothing is left open. */
  async #abandonStart(): Promise<void> {
    await this.#server.stop(0);
    await this.#bus?.stop();
    // Let the background load end before KV closes under it.
    this.#store.stopLoading();
    await this.#store.loaded.catch(() => {});
    await this.#release();
  }

  /** The node's side of the HTTP face: the same paths as the line protocol. */
  #httpApi(): HttpApi {
    return {
      name: this.name,
      isReady: () => this.#store.isLoaded,
      loaded: this.#store.loaded,
      iamat: async (cmd) => {
        this.#metrics.iamat++;
        const { at, gate } = this.#iamat(cmd);
        if (gate) await gate.promise;
        return at;
      },
      record: (client) => this.#store.get(client),
      durableRecord: (client) => this.#whenDurable(this.#store.get(client)),
      nearby: (cmd) => {
        this.#metrics.whatsat++;
        return this.#nearby(cmd);
      },
      metrics: () => this.metricsText(),
      shape: () => ({
        node: this.name,
        nodes: [...this.config.topology.servers.values()].map((s) => ({
          name: s.name,
          neighbors: s.neighbors,
          ...(s.httpPort ? { http: `${s.host}:${s.httpPort}` } : {}),
        })),
      }),
      peers: () => this.#flood.peerStatus(),
      records: () => this.#store.records(),
      counts: () => ({
        iamat: this.#metrics.iamat,
        whatsat: this.#metrics.whatsat,
        clients: this.#store.size,
      }),
    };
  }

  /** The node's metrics in Prometheus text format. */
  metricsText(): string {
    const w = this.#http?.watchers;
    return renderMetrics(this.#metrics, {
      node: this.name,
      clients: this.#store.size,
      connections: this.#server.stats.connections,
      ready: this.#store.isLoaded,
      peers: this.#flood.peerStatus(),
      store: this.#store.stats(),
      flood: this.#flood.stats,
      logDropped: this.#log.dropped,
      placesProvider: this.config.places.name,
      placesStats: this.config.places.stats(),
      watchers: {
        ...(w?.counts ?? { client: 0, near: 0 }),
        view: this.#http?.feed.size ?? 0,
      },
      watchersDropped: (w?.dropped ?? 0) + (this.#http?.feed.dropped ?? 0),
      watchMessages: w?.messages ?? 0,
      httpInflight: this.#http?.inflight ?? 0,
      httpRejected: this.#http?.rejected ?? 0,
      httpFront: this.#http?.frontStats,
      nowMs: Date.now(),
    });
  }

  /** Creates the data directory, checks it is writable, and takes this node's lock in it. */
  async #prepareDataDir(dir: string): Promise<void> {
    // Synchronous calls: each is a syscall of microseconds, where an async one takes a trip
    // through the runtime's blocking thread pool (these four were 15-19 ms of the time from
    // spawn to listening on our 2-core machine; docs/benchmarks.md, round four).
    try {
      Deno.mkdirSync(dir, { recursive: true });
      const probe = `${dir}/.${this.name}.probe`;
      Deno.writeTextFileSync(probe, "");
      Deno.removeSync(probe);
    } catch (e) {
      throw new NodeStartError(
        `data directory ${dir} is not usable: ${(e as Error).message}`,
      );
    }
    const lockPath = `${dir}/${this.name}.lock`;
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(lockPath, { create: true, write: true });
    } catch (e) {
      throw new NodeStartError(
        `cannot open the lock file ${lockPath}: ${(e as Error).message}`,
      );
    }
    // flock is released by the kernel when a process dies, even by kill -9, so a crashed
    // node never leaves a stale lock. Deno has no try-lock: wait briefly, then give up.
    // `AbortSignal.timeout`, not `setTimeout`: Deno 2.9's first `setTimeout` loads Node's
    // timers, 17-18 ms, which would come before the node listens.
    const giveUp = AbortSignal.timeout(300);
    let locked: boolean;
    try {
      locked = await Promise.race([
        file.lock(true).then(() => true),
        new Promise<false>((r) =>
          giveUp.addEventListener("abort", () => r(false), { once: true })
        ),
      ]);
    } catch (e) {
      file.close();
      throw new NodeStartError(
        `cannot lock ${lockPath}: ${(e as Error).message}`,
      );
    }
    if (!locked) {
      try {
        file.close();
      } catch { /* the pending lock call may hold it */ }
      throw new NodeStartError(
        `${dir}/${this.name}.kv is in use by another process (${lockPath} is locked): is ${this.name} already running?`,
      );
    }
    this.#lock = file;
  }

  #onLine(line: string, session: Session): void {
    const cmd = parseCommand(line);
    if (cmd.kind === "IAMAT") {
      this.#metrics.iamat++;
      const { at, gate } = this.#iamat(cmd);
      session.reply(at + "\n", gate);
    } else if (cmd.kind === "WHATSAT") {
      this.#metrics.whatsat++;
      if (this.#store.isLoaded) this.#answerWhatsat(line, cmd, session);
      else {
        session.replyLater(
          this.#store.loaded.then(() => this.#whatsatWhenDurable(line, cmd))
            .catch(() => formatInvalid(line)),
          SERVER_DEFAULTS.maxReplyBytes,
        );
      }
    } else {
      this.#metrics.invalid++;
      session.reply(formatInvalid(line));
    }
  }

  /**
   * An IAMAT, from a line or from HTTP: its AT line, offered to the store (and, when
   * accepted, flooded and shown to watchers); the reply waits on the returned gate.
   */
  #iamat(cmd: IamatCommand): { at: string; gate: Gate | null } {
    const skew = formatSkew(this.#clock() - cmd.timeNs);
    const at = formatAt(this.name, skew, cmd.client, cmd.location, cmd.time);
    this.#accept(at, cmd.client);
    return { at, gate: this.#store.durable() };
  }

  /**
   * Offers a client's record; an accepted one is relayed and watched. Every record the store
   * accepts is published at once, here or in `#onRecords`, to every ready link but the one
   * it came from: catch-up relies on it, leaving clients first seen during a comparison to
   * the flood (`Store.recordsIn`). A new way into the store must publish too.
   */
  #accept(line: string, client: string): void {
    if (!this.#store.offer(line, client)) return;
    this.#flood.publish([line]);
    this.#http?.accepted(line, client);
  }

  /**
   * Answers a WHATSAT once the store is loaded. For a client not known yet, a neighbor's
   * record for it accepted in this turn (`#afterReads`) answers it instead of `?`: one that
   * arrived with the WHATSAT, but whose read the runtime handed over after the client's.
   * Only a neighbor's: an IAMAT later on the same connection is a later request, and the
   * WHATSAT is answered as of before it. Measured at idle, five nodes, WHATSATs polling two
   * hops away: without this, a poll read together with the record it asks for was answered
   * `?`, and the next poll came a round trip later (docs/benchmarks.md, round seven).
   */
  #answerWhatsat(line: string, cmd: WhatsatCommand, session: Session): void {
    const known = this.#store.has(cmd.client);
    const answer = known
      ? this.#whatsatWhenDurable(line, cmd)
      : this.#afterReads().then((seen) => {
        const held = seen.get(cmd.client);
        return held === undefined
          ? formatInvalid(line)
          : this.#whatsatWhenDurable(line, cmd, held);
      });
    session.replyLater(
      answer.catch(() => formatInvalid(line)),
      SERVER_DEFAULTS.maxReplyBytes,
    );
  }

  /**
   * The neighbors' records accepted in this turn, once the I/O completed in it has been
   * handled: `setImmediate` runs after the promise jobs of the reads the runtime delivered
   * together, and a neighbor's record is offered in the jobs that follow its read, with no
   * I/O of its own (on a closed bus too: frames up to 16 KiB are opened in the call).
   * 2-45 µs at idle; one per turn, shared by every WHATSAT of the turn. Records are noted
   * (`#onRecords`) only while one waits.
   */
  #afterReads(): Promise<ReadonlyMap<string, string>> {
    this.#readsHandled ??= new Promise((resolve) =>
      setImmediate(() => {
        const seen = this.#turnRecords;
        this.#turnRecords = new Map();
        this.#readsHandled = null;
        resolve(seen);
      })
    );
    return this.#readsHandled;
  }

  /**
   * Serves the record held now (or `held`), but only once it is durable: a record learned
   * from a peer a moment ago might otherwise be served and then, after a crash, be missing,
   * so that the restarted node would serve an older one (a regression a client could see).
   */
  async #whatsatWhenDurable(
    line: string,
    cmd: WhatsatCommand,
    held?: string,
  ): Promise<ReplyText> {
    const answer = await this.#nearby(cmd, held);
    if (answer === null) return formatInvalid(line);
    if (Object.isFrozen(answer.places)) {
      const reply = this.#encodedReply(answer.at, answer.places);
      if (reply !== null) return reply;
    }
    const reply = formatWhatsat(
      answer.at,
      utf8ByteString(placesJson(answer.places)),
    );
    // The session counted this reply at its largest size: hold the node to it.
    if (reply.length <= SERVER_DEFAULTS.maxReplyBytes) return reply;
    return formatWhatsat(
      answer.at,
      placesJson(failureAnswer(
        "UNKNOWN_ERROR",
        `places answer over ${SERVER_DEFAULTS.maxReplyBytes} bytes`,
      )),
    );
  }

  /**
   * A frozen answer's reply, the same bytes `formatWhatsat` gives, its JSON encoded once per
   * answer; null when it would be over `maxReplyBytes` (the caller answers that).
   */
  #encodedReply(at: string, places: PlacesAnswer): EncodedReply | null {
    let tail = this.#rendered.get(places);
    if (tail === undefined) {
      // formatWhatsat("", json) is "\n" + the rest of the reply after the AT line.
      const text = formatWhatsat("", utf8ByteString(placesJson(places)));
      tail = stringToBytes(text.slice(1));
      this.#rendered.set(places, tail);
    }
    const length = at.length + 1 + tail.length;
    if (length > SERVER_DEFAULTS.maxReplyBytes) return null;
    return { head: `${at}\n`, tail, length };
  }

  /**
   * WHATSAT's answer, for a line or for HTTP: the client's record held now (or `record`),
   * once durable, and the places near it; null for an unknown client.
   */
  async #nearby(
    cmd: WhatsatCommand,
    record?: string,
  ): Promise<{ at: string; places: PlacesAnswer } | null> {
    const held = await this.#whenDurable(
      record ?? this.#store.get(cmd.client),
    );
    if (held === undefined) return null;
    const places = await this.#places(held, cmd);
    this.#metrics.placesStatus(places.status);
    return { at: held, places };
  }

  /**
   * `held` (a record read from the store now) once everything accepted so far is durable: a
   * record learned from a peer a moment ago is served only then (`#whatsatWhenDurable`).
   */
  async #whenDurable(held: string | undefined): Promise<string | undefined> {
    if (held === undefined) return undefined;
    const gate = this.#store.durable();
    if (gate) await gate.promise;
    return held;
  }

  /** Asks the places provider for a known client; always resolves within the bound. */
  async #places(held: string, cmd: WhatsatCommand): Promise<PlacesAnswer> {
    const location = held.split(" ")[4];
    const loc = parseLocation(location)!;
    const query: NearbyQuery = {
      lat: loc.lat,
      lng: loc.lng,
      latDeg: loc.latDeg,
      lngDeg: loc.lngDeg,
      radiusM: cmd.radiusM,
      radiusMeters: Number(cmd.radiusM),
      bound: cmd.bound,
      record: held,
      timeoutMs: this.config.whatsatTimeoutMs ?? NODE_DEFAULTS.whatsatTimeoutMs,
    };
    // The provider's contract: an answer within query.timeoutMs, cut to the bound, never a
    // rejection (a provider that breaks it anyway still gets a framed failure answer).
    return await this.config.places.nearby(query).catch((e) =>
      failureAnswer("UNKNOWN_ERROR", `places failed: ${reasonMessage(e)}`)
    );
  }

  /**
   * Offers a neighbor's records (each may wait a moment for its commit: `Store.offer`'s
   * `lazy`); the accepted ones are relayed together (except back to `from`) and watched.
   */
  #onRecords(lines: string[], from: string): number {
    const accepted: string[] = [];
    for (const line of lines) {
      const client = clientOf(line);
      if (!this.#store.offer(line, client, true)) continue;
      accepted.push(line);
      if (this.#readsHandled !== null) this.#turnRecords.set(client, line);
      this.#http?.accepted(line, client);
    }
    this.#flood.publish(accepted, from);
    return accepted.length;
  }

  /** Stops cleanly; idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    if (!this.#started) return;
    this.#log.event("stopping");
    clearTimeout(this.#warmTimer);
    await this.#http?.stop();
    this.#idleGc?.stop();
    await this.#server.stop(
      this.config.whatsatTimeoutMs ?? NODE_DEFAULTS.whatsatTimeoutMs,
    );
    await this.#bus?.stop();
    // Links wait for the store's load before catching up: abandon it so they let go now.
    this.#store.stopLoading();
    await this.#flood.stop();
    await this.#store.close();
    await this.config.places.close();
    this.#log.event("stopped", { clients: this.#store.size });
    await this.#release();
  }

  async #release(): Promise<void> {
    try {
      this.#kv?.close();
    } catch { /* closed */ }
    await this.#log?.close();
    if (this.#lock) {
      try {
        await this.#lock.unlock();
      } catch { /* released */ }
      this.#lock.close();
      this.#lock = null;
    }
  }
}
