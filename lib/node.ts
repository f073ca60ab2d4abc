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
 * const node = new HerdNode({
 *   name: "Alford",
 *   topology,
 *   dataDir: "data",
 *   places: createPlaces({ provider: "offline" }),
 * });
 * await node.start();
 * // ...
 * await node.stop();
 * ```
 * @module
 */

import { utf8ByteString } from "./bytes.ts";
import { type Clock, formatSkew, systemClock } from "./clock.ts";
import { Flood } from "./flood.ts";
import type { LineFramer } from "./lines.ts";
import { parseLocation } from "./location.ts";
import { NodeLog } from "./log.ts";
import type { NearbyQuery, PlacesAnswer, PlacesProvider } from "./places.ts";
import {
  formatInvalid,
  formatWhatsat,
  parseCommand,
  placesJson,
  type WhatsatCommand,
} from "./protocol.ts";
import { clientOf, formatAt } from "./record.ts";
import { Server, type Session } from "./server.ts";
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
  /** Flood tuning (tests shorten intervals). */
  flood?: {
    backoffBaseMs?: number;
    backoffMaxMs?: number;
    handshakeTimeoutMs?: number;
    syncIntervalMs?: number;
    maxOutboxBytes?: number;
  };
  /** Store tuning (tests shorten it; `onCommit` feeds metrics). */
  store?: Omit<StoreOptions, "log">;
  /** Opens the KV (tests wrap it to slow or break it). Default `Deno.openKv`. */
  openKv?: (path: string) => Promise<Deno.Kv>;
}

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
  #lock: Deno.FsFile | null = null;
  #clock: Clock;
  #started = false;
  #warmTimer: ReturnType<typeof setTimeout> | undefined;
  #stopping: Promise<void> | null = null;

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
    });
    this.#server = new Server({
      hostname: this.config.hostname ?? spec.host,
      port: spec.port,
      log: this.#log,
      maxLineBytes: this.config.maxLineBytes,
      handler: {
        line: (line, session) => this.#onLine(line, session),
        isPeerHello: (line) => this.#isPeerHello(line),
        peer: (conn, lines, framer, id) =>
          this.#onPeer(conn, lines, framer, id),
      },
    });
    this.#flood = new Flood({
      name,
      neighbors: spec.neighbors.map((n) => topology.servers.get(n)!),
      secret: this.config.secret,
      store: this.#store,
      log: this.#log,
      receive: (lines, from) => this.#onRecords(lines, from),
      connId: () => this.#server.nextId(),
      ...this.config.flood,
    });
    try {
      this.#server.listen();
    } catch (e) {
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
    this.#started = true;
    this.#flood.start();
    // The offline gazetteer takes CPU to load (a worker, ~0.1 s from its cache, ~0.5 s
    // cold); starting it a moment after listening lets the other nodes of a herd that start
    // together come up first. A WHATSAT before then starts it at once.
    this.#warmTimer = setTimeout(() => this.config.places.warm?.(), 250);
    this.#log.event("listening", {
      host: spec.host,
      port: this.port,
      places: this.config.places.describe(),
      kv: kvPath.includes("://") ? kvPath.replace(/\?.*$/, "") : kvPath,
      neighbors: spec.neighbors.join(","),
      secret: this.config.secret ? "set" : "none",
    });
  }

  /** Creates the data directory, checks it is writable, and takes this node's lock in it. */
  async #prepareDataDir(dir: string): Promise<void> {
    try {
      await Deno.mkdir(dir, { recursive: true });
      const probe = `${dir}/.${this.name}.probe`;
      await Deno.writeTextFile(probe, "");
      await Deno.remove(probe);
    } catch (e) {
      throw new NodeStartError(
        `data directory ${dir} is not usable: ${(e as Error).message}`,
      );
    }
    const lockPath = `${dir}/${this.name}.lock`;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(lockPath, { create: true, write: true });
    } catch (e) {
      throw new NodeStartError(
        `cannot open the lock file ${lockPath}: ${(e as Error).message}`,
      );
    }
    // flock is released by the kernel when a process dies, even by kill -9, so a crashed
    // node never leaves a stale lock. Deno has no try-lock: wait briefly, then give up.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const locked = await Promise.race([
      file.lock(true).then(() => true),
      new Promise<false>((r) => (timer = setTimeout(() => r(false), 300))),
    ]);
    clearTimeout(timer);
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
      const skew = formatSkew(this.#clock() - cmd.timeNs);
      const at = formatAt(this.name, skew, cmd.client, cmd.location, cmd.time);
      if (this.#store.offer(at, cmd.client)) this.#flood.publish(at);
      session.reply(at + "\n", this.#store.durable());
    } else if (cmd.kind === "WHATSAT") {
      if (this.#store.isLoaded) this.#answerWhatsat(line, cmd, session);
      else {
        session.replyLater(
          this.#store.loaded.then(() => this.#whatsatWhenDurable(line, cmd))
            .catch(() => formatInvalid(line)),
        );
      }
    } else {
      session.reply(formatInvalid(line));
    }
  }

  /** Answers a WHATSAT once the store is loaded. */
  #answerWhatsat(line: string, cmd: WhatsatCommand, session: Session): void {
    if (this.#store.get(cmd.client) === undefined) {
      session.reply(formatInvalid(line));
    } else {
      session.replyLater(
        this.#whatsatWhenDurable(line, cmd).catch(() => formatInvalid(line)),
      );
    }
  }

  /**
   * Serves the record held now, but only once it is durable: a record learned from a peer a
   * moment ago might otherwise be served and then, after a crash, be missing, so that the
   * restarted node would serve an older one (a regression a client could see).
   */
  async #whatsatWhenDurable(
    line: string,
    cmd: WhatsatCommand,
  ): Promise<string> {
    const held = this.#store.get(cmd.client);
    if (held === undefined) return formatInvalid(line);
    const gate = this.#store.durable();
    if (gate) await gate.promise;
    return await this.#whatsat(held, cmd);
  }

  /** Answers a WHATSAT for a known client; always resolves within the bound. */
  async #whatsat(held: string, cmd: WhatsatCommand): Promise<string> {
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
    };
    const limit = this.config.whatsatTimeoutMs ?? 5000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<PlacesAnswer>((resolve) => {
      timer = setTimeout(() =>
        resolve({
          html_attributions: [],
          results: [],
          status: "UNKNOWN_ERROR",
          error_message: `places did not answer within ${limit} ms`,
        }), limit);
    });
    let answer: PlacesAnswer;
    try {
      answer = await Promise.race([this.config.places.nearby(query), late]);
    } catch (e) {
      answer = {
        html_attributions: [],
        results: [],
        status: "UNKNOWN_ERROR",
        error_message: `places failed: ${(e as Error).message}`,
      };
    } finally {
      clearTimeout(timer);
    }
    if (answer.results.length > cmd.bound) {
      answer = { ...answer, results: answer.results.slice(0, cmd.bound) };
    }
    return formatWhatsat(held, utf8ByteString(placesJson(answer)));
  }

  /**
   * A first line `HERD HELLO <name> <nonce>` naming one of this node's neighbors opens a
   * peer link. A HELLO naming anyone else is refused (and logged) by treating it as what it
   * is to this node, an invalid client line: `? <line>`, connection kept open.
   */
  #isPeerHello(line: string): boolean {
    if (!line.startsWith("HERD HELLO ")) return false;
    const f = line.split(" ");
    if (f.length === 4 && this.#flood.isNeighbor(f[2])) return true;
    this.#log.warn("peer_refused", {
      peer: f[2] ?? "",
      reason: "not a neighbor",
    });
    return false;
  }

  #onPeer(conn: Deno.TcpConn, lines: string[], framer: LineFramer, id: number) {
    this.#flood.adopt(conn, lines, framer, id);
  }

  #onRecords(lines: string[], from: string): number {
    let accepted = 0;
    for (const line of lines) {
      if (this.#store.offer(line, clientOf(line))) {
        this.#flood.publish(line, from);
        accepted++;
      }
    }
    return accepted;
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
    await this.#server.stop(this.config.whatsatTimeoutMs ?? 5000);
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
