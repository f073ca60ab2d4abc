/**
 * `watch`: the node's `GET /v1/watch` WebSocket (PROTOCOL.md), one JSON object per update.
 * The watch ends when the caller's signal fires (Ctrl-C), after `count` updates, or when the
 * node closes it. A browser-style WebSocket says nothing about why a connection failed, so a
 * failure before the socket opens is told apart with a TCP connect to the HTTP port: nothing
 * listening is an unreachable node, something listening refused the request.
 *
 * @module
 */

import { type Endpoint, probe, reason, Unreachable } from "./line.ts";

/** The node answered the watch request with something other than a WebSocket. */
export class WatchRefused extends Error {
  override name = "WatchRefused";
}

/** How a watch ended (when it did not throw). */
export type WatchEnd =
  | { kind: "count" }
  | { kind: "stopped" }
  | { kind: "closed"; code: number; reason: string };

/** What `watch` needs. */
export interface WatchOptions {
  /** The HTTP endpoint (its port is the node's `httpPort`). */
  endpoint: Endpoint;
  /** `client=ID` or `near=LAT,LNG&radius=KM`, already encoded. */
  query: string;
  count?: number;
  connectTimeoutMs: number;
  /** Aborting ends the watch cleanly (Ctrl-C). */
  signal: AbortSignal;
  /** Each update, parsed. */
  onUpdate(update: Record<string, unknown>): void;
  /** A message that is not a JSON object (reported, not fatal). */
  onOdd(text: string): void;
}

/** The watch URL of an endpoint. */
export function watchUrl(e: Endpoint, query: string): string {
  const host = e.host.includes(":") ? `[${e.host}]` : e.host;
  return `ws://${host}:${e.port}/v1/watch?${query}`;
}

/** Runs one watch until it ends; throws `Unreachable` or `WatchRefused`. */
export async function watch(opts: WatchOptions): Promise<WatchEnd> {
  const url = watchUrl(opts.endpoint, opts.query);
  const where = `${opts.endpoint.label} (${url})`;
  if (opts.signal.aborted) return { kind: "stopped" };
  const ws = new WebSocket(url);
  let opened = false;
  let seen = 0;
  let ending: WatchEnd | null = null;
  let timedOut = false;
  const { promise, resolve, reject } = Promise.withResolvers<WatchEnd>();
  const finish = (end: WatchEnd) => {
    ending ??= end;
    if (ws.readyState === WebSocket.CLOSED) resolve(ending);
    else if (ws.readyState !== WebSocket.CLOSING) ws.close(1000);
  };
  const timer = setTimeout(() => {
    if (opened) return;
    timedOut = true;
    reject(
      new Unreachable(
        `cannot reach ${where}: no WebSocket within ${opts.connectTimeoutMs} ms`,
      ),
    );
    ws.close();
  }, opts.connectTimeoutMs);
  const onAbort = () => finish({ kind: "stopped" });
  opts.signal.addEventListener("abort", onAbort);
  ws.onopen = () => {
    opened = true;
    clearTimeout(timer);
  };
  ws.onmessage = (ev) => {
    if (ending !== null) return;
    const text = typeof ev.data === "string" ? ev.data : "(binary message)";
    let update: unknown;
    try {
      update = JSON.parse(text);
    } catch {
      update = null;
    }
    if (
      update === null || typeof update !== "object" || Array.isArray(update)
    ) {
      opts.onOdd(text);
      return;
    }
    opts.onUpdate(update as Record<string, unknown>);
    if (opts.count !== undefined && ++seen >= opts.count) {
      finish({ kind: "count" });
    }
  };
  ws.onerror = () => {/* the close event that follows tells the rest */};
  ws.onclose = (ev) => {
    clearTimeout(timer);
    if (timedOut) return;
    if (ending !== null) return resolve(ending);
    if (opened) {
      return resolve({ kind: "closed", code: ev.code, reason: ev.reason });
    }
    probe(opts.endpoint, opts.connectTimeoutMs).then((listening) =>
      reject(
        listening
          ? new WatchRefused(
            `${where} refused the watch (no WebSocket upgrade; is this a herd node's HTTP port?)`,
          )
          : new Unreachable(
            `cannot reach ${where}: nothing accepts connections on ${opts.endpoint.host}:${opts.endpoint.port}`,
          ),
      ), (e) => reject(new Unreachable(`cannot reach ${where}: ${reason(e)}`)));
  };
  try {
    return await promise;
  } finally {
    clearTimeout(timer);
    opts.signal.removeEventListener("abort", onAbort);
  }
}
