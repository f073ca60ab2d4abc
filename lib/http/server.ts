/**
 * The HTTP face of a node on its `httpPort`: `Deno.serve` with an `AbortSignal`, the routes,
 * the watchers and the live view's feed, and the bounds around them.
 *
 * What Deno exposes and what it does not (measured with Deno 2.9.6): `Deno.serve` has no
 * option for a header timeout, a body limit or a connection cap, and a client that sends
 * half a request header is held for as long as it likes (60 s and counting in our test), as
 * is an idle keep-alive connection. So the bounds this module enforces are the ones a
 * handler can: a body over 16 KiB is refused with 413 (by `Content-Length` before reading,
 * and by counting while reading a chunked one), a body that does not arrive within
 * `bodyTimeoutMs` gets 408, requests being handled at once are capped (503 beyond), every
 * answer is bounded in time (WHATSAT's bound, the store's durability), WebSockets are pinged
 * and closed after `wsIdleTimeoutS` without a pong, and watchers are capped and dropped when
 * they do not read. Hyper itself caps a request head (a larger one gets 431).
 *
 * @module
 */

import type { NodeLog } from "../log.ts";
import { Assets } from "./assets.ts";
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
};

/** The tunable part: bounds, watchers and the view's feed; anything left out is a default. */
export interface HttpTuning extends Partial<typeof HTTP_DEFAULTS> {
  watch?: Omit<WatchOptions, "log">;
  view?: Omit<ViewFeedOptions, "log">;
}

/** HTTP face options. */
export interface HttpFaceOptions extends HttpTuning {
  hostname: string;
  port: number;
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
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;
  /** Requests being handled. */
  inflight = 0;
  /** Requests refused over the in-flight cap. */
  rejected = 0;

  constructor(opts: HttpFaceOptions) {
    this.#o = {
      ...opts,
      maxBodyBytes: opts.maxBodyBytes ?? HTTP_DEFAULTS.maxBodyBytes,
      bodyTimeoutMs: opts.bodyTimeoutMs ?? HTTP_DEFAULTS.bodyTimeoutMs,
      maxInflight: opts.maxInflight ?? HTTP_DEFAULTS.maxInflight,
      wsIdleTimeoutS: opts.wsIdleTimeoutS ?? HTTP_DEFAULTS.wsIdleTimeoutS,
      loadWaitMs: opts.loadWaitMs ?? HTTP_DEFAULTS.loadWaitMs,
    };
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
    return this.#server!.addr.port;
  }

  /** Binds and serves; throws `Deno.errors.AddrInUse` and friends for the caller. */
  start(): void {
    this.#server = Deno.serve({
      hostname: this.#o.hostname,
      port: this.#o.port,
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

  /** Stops: closes watchers and views, stops serving, waits for the server to finish. */
  async stop(): Promise<void> {
    if (this.#server === null) return;
    this.watchers.closeAll();
    this.feed.closeAll();
    this.#ac.abort();
    await this.#server.finished;
    this.#server = null;
  }
}
