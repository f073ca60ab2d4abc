/**
 * The HTTP face of a node on its `httpPort`: the TCP front (`front.ts`), `Deno.serve` with an
 * `AbortSignal` on a Unix socket behind it, the routes, the watchers and the live view's
 * feed, and the bounds around them.
 *
 * What Deno exposes and what it does not (measured with Deno 2.9.6): `Deno.serve` has no
 * option for a header timeout, a body limit or a connection cap, and a client that sends
 * half a request header is held for as long as it likes (70 s and counting in our test), as
 * is an idle keep-alive connection. So the connection bounds (a cap, the first head's
 * deadline and size, an idle timeout) are the front's, and this module enforces the ones a
 * handler can: a body over 16 KiB is refused with 413 (by `Content-Length` before reading,
 * and by counting while reading a chunked one), a body that does not arrive within
 * `bodyTimeoutMs` gets 408, requests being handled at once are capped (503 beyond), every
 * answer is bounded in time (WHATSAT's bound, the store's durability), WebSockets are pinged
 * and closed after `wsIdleTimeoutS` without a pong, and watchers are capped and dropped when
 * they do not read. The handler never uses the client's address (it would see the front's).
 *
 * @module
 */

import { withDefaults } from "../defaults.ts";
import type { NodeLog } from "../log.ts";
import { Assets } from "./assets.ts";
import { type FrontStats, HttpFront } from "./front.ts";
import { json, route, type RouteContext } from "./routes.ts";
import type { HttpApi } from "./types.ts";
import { ViewFeed, type ViewFeedOptions } from "./view_feed.ts";
import { Watchers, type WatchOptions } from "./watch.ts";

/** HTTP bounds. */
export const HTTP_DEFAULTS = {
  /** Largest request body. */
  maxBodyBytes: 16 * 1024,
  /** A request body must arrive within this many ms. */
  bodyTimeoutMs: 10_000,
  /** Requests handled at once (WebSockets count only while upgrading). */
  maxInflight: 256,
  /** A WebSocket that answers no ping for this many seconds is closed. */
  wsIdleTimeoutS: 60,
  /** How long a read waits for the store to load before 503. */
  loadWaitMs: 5_000,
  /**
   * TCP connections open at once on the port; past it a new one is closed at once. Above the
   * watcher cap, so that every watcher can hold its connection; each costs two descriptors.
   */
  maxConnections: 4_200,
  /** The first request's head must arrive within this many ms of accept (else 408). */
  headerTimeoutMs: 10_000,
  /** The first request's head may be at most this many bytes (else 431). */
  maxHeaderBytes: 16 * 1024,
  /**
   * A connection with no byte either way for this many ms is closed. Never below
   * `wsIdleTimeoutS` (WebSockets are pinged after half of that), so a live watcher stays.
   */
  idleTimeoutMs: 60_000,
  /** On stop, how long in-flight answers may take before their connections are closed. */
  stopGraceMs: 5_000,
};

/**
 * The absolute path of the socket the face may serve on behind its front, or null for an
 * ephemeral loopback TCP port instead: when the path is too long for a socket address
 * (`sun_path` is 108 bytes on Linux, 104 on macOS; 100 keeps a margin), or when the process
 * may not use it. Deno 2.9 grants a Unix socket only by its exact absolute path
 * (`--allow-net=unix:/abs/path`, which `deno task herd` gives each node; the compiled binary
 * has all of `--allow-net`), and the test runner, which allows loopback only, cannot know
 * the paths of its nodes' temp dirs. Why not always the loopback port: any local process
 * could connect to it and skip the front's bounds; a socket in the data dir is the node's.
 */
export function usableSocket(path: string): string | null {
  if (Deno.build.os === "windows") return null; // no Unix sockets there
  const abs = absolutePath(path);
  if (new TextEncoder().encode(abs).length >= 100) return null;
  const perm = Deno.permissions.querySync({ name: "net", host: `unix:${abs}` });
  return perm.state === "granted" ? abs : null;
}

/**
 * Where node `name` with data directory `dataDir` puts its HTTP face's socket, absolute: the
 * path the node serves on and the one `deno task herd` grants it (they must be equal).
 */
export function httpSocketPath(dataDir: string, name: string): string {
  return absolutePath(`${dataDir}/${name}.http.sock`);
}

/**
 * `path` made absolute against the working directory and normalised (`.`, `..` and repeated
 * slashes resolved), as `node:path`'s `resolve` gives it on POSIX; the Node compatibility
 * layer is 15-20 ms of a node's start-up, and this is all the node needed of it.
 */
export function absolutePath(path: string): string {
  const parts: string[] = [];
  const full = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  for (const segment of full.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") parts.pop();
    else parts.push(segment);
  }
  return `/${parts.join("/")}`;
}

/** The tunable part: bounds, watchers and the view's feed; anything left out is a default. */
export interface HttpTuning extends Partial<typeof HTTP_DEFAULTS> {
  watch?: Omit<WatchOptions, "log">;
  view?: Omit<ViewFeedOptions, "log">;
}

/** HTTP face options. */
export interface HttpFaceOptions extends HttpTuning {
  hostname: string;
  port: number;
  /**
   * The Unix socket the face serves on behind its front (`<dataDir>/<name>.http.sock`);
   * absent, or too long for a socket address, an ephemeral loopback port instead.
   */
  socketPath?: string;
  api: HttpApi;
  log: NodeLog;
  /** Called with each response's status code (metrics). */
  onResponse?: (status: number) => void;
}

/** A node's HTTP server. */
export class HttpFace {
  readonly watchers: Watchers;
  readonly feed: ViewFeed;
  readonly #o: HttpFaceOptions & typeof HTTP_DEFAULTS;
  readonly #ctx: RouteContext;
  #ac = new AbortController();
  #server: Deno.HttpServer<Deno.Addr> | null = null;
  #front: HttpFront | null = null;
  /** The Unix socket served on, or null for a loopback port. */
  #socketPath: string | null = null;
  /** Requests being handled. */
  inflight = 0;
  /** Requests refused over the in-flight cap. */
  rejected = 0;

  constructor(opts: HttpFaceOptions) {
    this.#o = { ...opts, ...withDefaults(HTTP_DEFAULTS, opts) };
    // Deno pings a WebSocket after `wsIdleTimeoutS / 2` of silence: an idle timeout of at
    // least `wsIdleTimeoutS` always sees that ping (and its pong) first.
    this.#o.idleTimeoutMs = Math.max(
      this.#o.idleTimeoutMs,
      this.#o.wsIdleTimeoutS * 1000,
    );
    this.watchers = new Watchers({ log: opts.log, ...opts.watch });
    this.feed = new ViewFeed(opts.api, { log: opts.log, ...opts.view });
    this.#ctx = {
      api: opts.api,
      watchers: this.watchers,
      feed: this.feed,
      assets: new Assets(),
      readBody: (req) => this.#readBody(req),
      wsIdleTimeoutS: this.#o.wsIdleTimeoutS,
      loadWaitMs: this.#o.loadWaitMs,
    };
  }

  /** The bound port. */
  get port(): number {
    return this.#front!.port;
  }

  /** Where the server behind the front listens (for a bench that bypasses the front). */
  get innerAddr(): Deno.Addr {
    return this.#server!.addr;
  }

  /** The front's figures: connections open, cuts by reason. */
  get frontStats(): FrontStats {
    return this.#front?.stats ??
      { connections: 0, cuts: { cap: 0, header: 0, idle: 0 } };
  }

  /** Binds and serves; throws `Deno.errors.AddrInUse` and friends for the caller. */
  start(): void {
    const wanted = this.#o.socketPath;
    this.#socketPath = wanted === undefined ? null : usableSocket(wanted);
    if (wanted !== undefined && this.#socketPath === null) {
      this.#o.log.warn("http_socket_unusable", {
        path: wanted,
        instead: "a loopback port",
      });
    }
    const front = new HttpFront({
      ...this.#o,
      inner: () => this.#connectInner(),
    });
    // The TCP port first: a node already running there keeps its socket file.
    front.listen();
    try {
      this.#server = this.#serveInner();
    } catch (e) {
      front.stopAccepting();
      this.#removeSocket();
      throw e;
    }
    this.#front = front;
    front.serve();
  }

  /**
   * Serves behind the front: on the Unix socket (replacing a stale socket file left by a
   * crash), else on an ephemeral loopback TCP port (see `usableSocket`).
   */
  #serveInner(): Deno.HttpServer<Deno.Addr> {
    const path = this.#socketPath;
    if (path !== null) {
      try {
        Deno.removeSync(path);
      } catch { /* none */ }
    }
    return Deno.serve({
      ...(path !== null ? { path } : { hostname: "127.0.0.1", port: 0 }),
      signal: this.#ac.signal,
      onListen: () => {},
      onError: (e) => {
        this.#o.log.warn("http_failed", { error: (e as Error).message });
        return json(500, { error: "internal error" });
      },
    }, (req) => this.#handle(req));
  }

  async #handle(req: Request): Promise<Response> {
    if (this.inflight >= this.#o.maxInflight) {
      this.rejected++;
      if (this.rejected === 1 || this.rejected % 100 === 0) {
        this.#o.log.warn("http_busy", {
          limit: this.#o.maxInflight,
          rejected: this.rejected,
        });
      }
      return this.#answer(json(503, { error: "too many requests at once" }));
    }
    // A declared body over the limit is refused whatever the route (only `POST /v1/iamat`
    // reads a body, and it also counts a chunked one while reading).
    const declared = req.headers.get("content-length");
    if (declared !== null && Number(declared) > this.#o.maxBodyBytes) {
      return this.#answer(this.#tooLarge());
    }
    this.inflight++;
    try {
      return this.#answer(await route(req, this.#ctx));
    } finally {
      this.inflight--;
    }
  }

  #answer(res: Response): Response {
    this.#o.onResponse?.(res.status);
    return res;
  }

  #tooLarge(): Response {
    return json(413, {
      error: `the body is larger than ${this.#o.maxBodyBytes} bytes`,
    });
  }

  /** Reads a body of at most `maxBodyBytes` within `bodyTimeoutMs`, as UTF-8 text. */
  async #readBody(req: Request): Promise<string | Response> {
    const max = this.#o.maxBodyBytes;
    const tooLarge = () => this.#tooLarge();
    if (req.body === null) return "";
    const reader = req.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      reader.cancel().catch(() => {});
    }, this.#o.bodyTimeoutMs);
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.length;
        if (total > max) {
          await reader.cancel().catch(() => {});
          return tooLarge();
        }
        chunks.push(value);
      }
    } catch {
      if (!timedOut) return json(400, { error: "the body could not be read" });
    } finally {
      clearTimeout(timer);
    }
    if (timedOut) {
      return json(408, { error: "the body did not arrive in time" });
    }
    const bytes = new Uint8Array(total);
    let off = 0;
    for (const c of chunks) {
      bytes.set(c, off);
      off += c.length;
    }
    return new TextDecoder().decode(bytes);
  }

  /** A record the node accepted (from a client or the herd). */
  accepted(line: string, client: string): void {
    this.watchers.offer(line, client);
    this.feed.offer(line, client);
  }

  /**
   * Stops: no new connections; closes watchers and views; in-flight answers get
   * `stopGraceMs`, then every connection is closed and the socket file removed.
   */
  async stop(): Promise<void> {
    if (this.#server === null || this.#front === null) return;
    const server = this.#server;
    const front = this.#front;
    this.#server = null;
    await front.stopAccepting();
    this.watchers.closeAll();
    this.feed.closeAll();
    this.#ac.abort();
    // The server ends its keep-alive connections once their answers are sent and the
    // WebSockets once their close handshakes are done; the front lets the bytes through.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([server.finished, front.drained()]),
      new Promise((r) => (timer = setTimeout(r, this.#o.stopGraceMs))),
    ]);
    clearTimeout(timer);
    await front.closeAll();
    await server.finished;
    this.#removeSocket();
  }

  /** A new connection to the server behind the front. */
  #connectInner(): Promise<Deno.Conn> {
    const addr = this.#server!.addr;
    return addr.transport === "unix"
      ? Deno.connect({ transport: "unix", path: addr.path })
      : Deno.connect({
        hostname: (addr as Deno.NetAddr).hostname,
        port: (addr as Deno.NetAddr).port,
      });
  }

  #removeSocket(): void {
    if (this.#socketPath === null) return;
    try {
      Deno.removeSync(this.#socketPath);
    } catch { /* gone */ }
  }
}
