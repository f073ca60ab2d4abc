/**
 * The HTTP face's routes: health, metrics, the JSON API, the WebSocket watches and the live
 * view's files. Each answer is JSON with exactly the contract's fields (PROTOCOL.md, HTTP);
 * every refusal is `{"error": "..."}` with its status code.
 *
 * @module
 */

import { within } from "../async.ts";
import { utf8ByteString } from "../bytes.ts";
import { parseCommand } from "../protocol.ts";
import { isClientId } from "../record.ts";
import {
  type ApiError,
  clientFromPath,
  parseIamatBody,
  parseNearby,
  recordFields,
} from "./api.ts";
import type { Assets } from "./assets.ts";
import type { HttpApi } from "./types.ts";
import type { ViewFeed } from "./view_feed.ts";
import { type Watcher, type Watchers } from "./watch.ts";

/** What the routes use. */
export interface RouteContext {
  api: HttpApi;
  watchers: Watchers;
  feed: ViewFeed;
  assets: Assets;
  /** Reads a request body within the bounds, or gives the refusal to send. */
  readBody(req: Request): Promise<string | Response>;
  /** Seconds without a pong before a WebSocket is closed. */
  wsIdleTimeoutS: number;
  /** How long a request waits for the store to load before 503. */
  loadWaitMs: number;
}

/** A JSON answer. */
export function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8" },
  });
}

function error(status: number, message: string): Response {
  return json(status, { error: message });
}

function isError(x: unknown): x is ApiError {
  return typeof x === "object" && x !== null && "error" in x;
}

function methodNotAllowed(allow: string): Response {
  const r = error(405, `method not allowed: use ${allow}`);
  r.headers.set("allow", allow);
  return r;
}

/** Handles one request. */
export async function route(
  req: Request,
  ctx: RouteContext,
): Promise<Response> {
  const url = new URL(req.url);
  const path = url.pathname;
  const get = req.method === "GET" || req.method === "HEAD";
  if (path === "/healthz") {
    if (!get) return methodNotAllowed("GET");
    return json(200, { node: ctx.api.name, status: "ok" });
  }
  if (path === "/readyz") {
    if (!get) return methodNotAllowed("GET");
    const ready = ctx.api.isReady();
    return json(ready ? 200 : 503, {
      node: ctx.api.name,
      status: ready ? "ready" : "loading",
    });
  }
  if (path === "/metrics") {
    if (!get) return methodNotAllowed("GET");
    return new Response(ctx.api.metrics(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  }
  if (path === "/v1/iamat") {
    if (req.method !== "POST") return methodNotAllowed("POST");
    return await iamat(req, ctx);
  }
  if (path.startsWith("/v1/clients/")) {
    if (!get) return methodNotAllowed("GET");
    return await client(path.slice("/v1/clients/".length), url, ctx);
  }
  if (path === "/v1/watch") {
    if (!get) return methodNotAllowed("GET");
    return watch(req, url, ctx);
  }
  if (path === "/v1/events") {
    if (!get) return methodNotAllowed("GET");
    return events(req, ctx);
  }
  if (ctx.assets.has(path)) {
    if (!get) return methodNotAllowed("GET");
    const asset = await ctx.assets.get(path);
    return new Response(asset.body, {
      headers: { "content-type": asset.type, "cache-control": "no-cache" },
    });
  }
  return error(404, `no such resource: ${path}`);
}

async function iamat(req: Request, ctx: RouteContext): Promise<Response> {
  const body = await ctx.readBody(req);
  if (body instanceof Response) return body;
  const cmd = parseIamatBody(body);
  if (isError(cmd)) return error(400, cmd.error);
  const at = await ctx.api.iamat(cmd);
  return json(200, recordFields(at));
}

/** Waits (bounded) for the store to load; false when it did not in time. */
async function loaded(ctx: RouteContext): Promise<boolean> {
  if (ctx.api.isReady()) return true;
  await within(ctx.api.loaded.catch(() => {}), ctx.loadWaitMs, () => {});
  return ctx.api.isReady();
}

async function client(
  rest: string,
  url: URL,
  ctx: RouteContext,
): Promise<Response> {
  const parts = rest.split("/");
  if (parts.length > 2 || (parts.length === 2 && parts[1] !== "nearby")) {
    return error(404, `no such resource: ${url.pathname}`);
  }
  const id = clientFromPath(parts[0]);
  if (isError(id)) return error(400, id.error);
  if (parts.length === 2) {
    const cmd = parseNearby(
      id,
      url.searchParams.get("radius"),
      url.searchParams.get("bound"),
    );
    if (isError(cmd)) return error(400, cmd.error);
    if (!await loaded(ctx)) return error(503, "the node is still loading");
    const answer = await ctx.api.nearby(cmd);
    if (answer === null) return unknown(parts[0]);
    return json(200, { at: recordFields(answer.at).at, places: answer.places });
  }
  if (!await loaded(ctx)) return error(503, "the node is still loading");
  const at = await ctx.api.durableRecord(id);
  if (at === undefined) return unknown(parts[0]);
  return json(200, recordFields(at));
}

function unknown(segment: string): Response {
  let id = segment;
  try {
    id = decodeURIComponent(segment);
  } catch { /* shown as sent */ }
  return error(404, `unknown client: ${id}`);
}

const NEAR = /^([+-]?\d{1,3}(?:\.\d+)?),([+-]?\d{1,3}(?:\.\d+)?)$/;

/** `GET /v1/watch?client=ID` or `?near=LAT,LNG&radius=KM`, as a WebSocket. */
function watch(req: Request, url: URL, ctx: RouteContext): Response {
  const q = url.searchParams;
  const clientParam = q.get("client");
  const near = q.get("near");
  let add: (socket: WebSocket) => Watcher | null;
  let first: string | undefined;
  if (clientParam !== null && near === null) {
    const id = utf8ByteString(clientParam);
    if (!isClientId(id)) {
      return error(
        400,
        "client must be 1 to 256 bytes of printable characters without white space",
      );
    }
    add = (s) => ctx.watchers.addClient(s, id);
    first = id;
  } else if (near !== null && clientParam === null) {
    const m = NEAR.exec(near);
    const lat = m ? Number(m[1]) : NaN;
    const lng = m ? Number(m[2]) : NaN;
    if (!m || Math.abs(lat) > 90 || Math.abs(lng) > 180) {
      return error(
        400,
        "near must be LAT,LNG in decimal degrees, like 34.0689,-118.4451",
      );
    }
    const radius = q.get("radius") ?? "";
    const r = parseCommand(`WHATSAT x ${radius} 1`);
    if (!/^[^\s]+$/.test(radius) || r.kind !== "WHATSAT") {
      return error(
        400,
        "radius must be a decimal number of km, 0 < radius <= 50",
      );
    }
    const km = Number(r.radiusM) / 1000;
    add = (s) => ctx.watchers.addNear(s, lat, lng, km);
  } else {
    return error(
      400,
      "watch one client (?client=ID) or one circle (?near=LAT,LNG&radius=KM)",
    );
  }
  if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return error(400, "expected a WebSocket upgrade");
  }
  if (ctx.watchers.full) {
    ctx.watchers.dropped++;
    return error(503, "too many watchers");
  }
  const { socket, response } = Deno.upgradeWebSocket(req, {
    idleTimeout: ctx.wsIdleTimeoutS,
  });
  let w: Watcher | null = null;
  socket.onopen = () => {
    w = add(socket);
    if (w === null) {
      socket.close(1013, "too many watchers");
      return;
    }
    if (first !== undefined) {
      const at = ctx.api.record(first);
      if (at !== undefined) {
        ctx.watchers.send(w, JSON.stringify(recordFields(at)));
      }
    }
  };
  socket.onclose = () => {
    if (w !== null) ctx.watchers.remove(w);
  };
  socket.onerror = () => {};
  return response;
}

/**
 * `GET /v1/events`: the live view's feed, as a WebSocket; `?only=peers` carries only this
 * node's links and counts (what another node's page asks for).
 */
function events(req: Request, ctx: RouteContext): Response {
  if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return error(400, "expected a WebSocket upgrade");
  }
  if (!ctx.feed.room()) return error(503, "too many views open");
  const { socket, response } = Deno.upgradeWebSocket(req, {
    idleTimeout: ctx.wsIdleTimeoutS,
  });
  const peersOnly = new URL(req.url).searchParams.get("only") === "peers";
  socket.onopen = () => ctx.feed.add(socket, peersOnly);
  socket.onclose = () => ctx.feed.remove(socket);
  socket.onerror = () => {};
  return response;
}
