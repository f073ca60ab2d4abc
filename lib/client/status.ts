/**
 * `status`: every node of the topology, like `serf members`. A node with an `httpPort` is read
 * over HTTP (`/healthz`, `/readyz`, `/metrics` as PROTOCOL.md names them); a node without one,
 * or whose HTTP does not answer, is probed with a TCP connect to its client port, which says
 * up or down and nothing more. Nodes are read concurrently, each request bounded in time and
 * size, so one stuck node costs `status` at most its timeout.
 *
 * Rates come from two scrapes `intervalMs` apart (default 1 s; 0 gives totals only): a
 * counter's total alone says little about a herd that has run for a week.
 *
 * @module
 */

import { delay } from "../async.ts";
import type { ServerSpec } from "../topology.ts";
import { type Endpoint, probe, reason } from "./line.ts";
import {
  metricByLabel,
  metricSum,
  metricValue,
  parseMetrics,
  type Sample,
} from "./prometheus.ts";
import type { Counters, HerdStatus, NodeStatus } from "./render.ts";

/** Bounds of the reads `status` makes. */
export interface StatusOptions {
  connectTimeoutMs: number;
  maxScrapeBytes: number;
  intervalMs: number;
}

/** GET `url` within `timeoutMs`, reading at most `maxBytes` of the body. */
export async function httpGet(
  url: string,
  timeoutMs: number,
  maxBytes: number,
): Promise<{ status: number; text: string }> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const res = await fetch(url, { signal: controller.signal });
    const reader = res.body?.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (reader) {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.length;
        if (size > maxBytes) {
          await reader.cancel();
          throw new Error(`${url}: body over ${maxBytes} bytes`);
        }
        chunks.push(value);
      }
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    return { status: res.status, text: new TextDecoder().decode(all) };
  } catch (e) {
    if (controller.signal.aborted) {
      throw new Error(`no answer from ${url} within ${timeoutMs} ms`);
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** What one look at a node found. */
interface Look {
  status: NodeStatus["status"];
  probe: NodeStatus["probe"];
  note: string | null;
  samples: Sample[] | null;
  at: number;
}

function base(spec: ServerSpec): string {
  const host = spec.host.includes(":") ? `[${spec.host}]` : spec.host;
  return `http://${host}:${spec.httpPort}`;
}

async function look(spec: ServerSpec, opts: StatusOptions): Promise<Look> {
  const at = performance.now();
  const tcp = async (note: string | null): Promise<Look> => {
    const endpoint: Endpoint = {
      label: spec.name,
      host: spec.host,
      port: spec.port,
    };
    const up = await probe(endpoint, opts.connectTimeoutMs);
    return {
      status: up ? "up" : "down",
      probe: "tcp",
      note: up
        ? note
        : `nothing accepts connections on ${spec.host}:${spec.port}`,
      samples: null,
      at,
    };
  };
  if (spec.httpPort === undefined) return await tcp(null);
  const get = (path: string) =>
    httpGet(`${base(spec)}${path}`, opts.connectTimeoutMs, opts.maxScrapeBytes);
  try {
    const health = await get("/healthz");
    if (health.status !== 200) {
      return await tcp(`/healthz answered ${health.status}`);
    }
    const [ready, metrics] = await Promise.all([
      get("/readyz"),
      scrape(spec, opts),
    ]);
    return {
      status: ready.status === 200 ? "up" : "loading",
      probe: "http",
      note: metrics.samples === null ? metrics.note : null,
      samples: metrics.samples,
      at: metrics.at,
    };
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    return await tcp(`no HTTP answer on port ${spec.httpPort}: ${reason(e)}`);
  }
}

async function scrape(
  spec: ServerSpec,
  opts: StatusOptions,
): Promise<{ samples: Sample[] | null; note: string | null; at: number }> {
  const at = performance.now();
  try {
    const res = await httpGet(
      `${base(spec)}/metrics`,
      opts.connectTimeoutMs,
      opts.maxScrapeBytes,
    );
    if (res.status !== 200) {
      return { samples: null, note: `/metrics answered ${res.status}`, at };
    }
    return { samples: parseMetrics(res.text), note: null, at };
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    return { samples: null, note: `/metrics: ${reason(e)}`, at };
  }
}

function counters(samples: Sample[]): Counters {
  const total = (name: string) => metricSum(samples, name) ?? null;
  return {
    iamat: total("herd_iamat_total"),
    whatsat: total("herd_whatsat_total"),
    invalid: total("herd_invalid_total"),
    recordsReceived: total("herd_records_received_total"),
    recordsSent: total("herd_records_sent_total"),
  };
}

function rates(a: Counters, b: Counters, seconds: number): Counters {
  const rate = (x: number | null, y: number | null) =>
    x === null || y === null || seconds <= 0
      ? null
      : Math.max(0, (y - x) / seconds);
  return {
    iamat: rate(a.iamat, b.iamat),
    whatsat: rate(a.whatsat, b.whatsat),
    invalid: rate(a.invalid, b.invalid),
    recordsReceived: rate(a.recordsReceived, b.recordsReceived),
    recordsSent: rate(a.recordsSent, b.recordsSent),
  };
}

/** Looks at every node (concurrently) and returns what `status` prints. */
export async function herdStatus(
  servers: ServerSpec[],
  topologyPath: string,
  opts: StatusOptions,
): Promise<HerdStatus> {
  const first = await Promise.all(servers.map((s) => look(s, opts)));
  let second: (Awaited<ReturnType<typeof scrape>> | null)[] = servers.map(() =>
    null
  );
  if (opts.intervalMs > 0 && first.some((l) => l.samples !== null)) {
    await delay(opts.intervalMs);
    second = await Promise.all(
      servers.map((s, i) => first[i].samples ? scrape(s, opts) : null),
    );
  }
  const nodes = servers.map((spec, i): NodeStatus => {
    const l = first[i];
    const later = second[i];
    // The latest scrape for states and totals; the rates between the two.
    const latest = later?.samples ?? l.samples;
    const links: NodeStatus["links"] = {};
    const peerUp = latest
      ? metricByLabel(latest, "herd_peer_up", "peer")
      : new Map<string, number>();
    for (const n of spec.neighbors) {
      const v = peerUp.get(n);
      links[n] = v === undefined ? "unknown" : v > 0 ? "up" : "down";
    }
    const totals = l.samples ? counters(l.samples) : null;
    const now = later?.samples ? counters(later.samples) : null;
    return {
      name: spec.name,
      host: spec.host,
      port: spec.port,
      httpPort: spec.httpPort ?? null,
      status: l.status,
      probe: l.probe,
      note: l.note,
      clients: latest ? metricValue(latest, "herd_clients") ?? null : null,
      clientConnections: latest
        ? metricValue(latest, "herd_client_connections") ?? null
        : null,
      links,
      totals: now ?? totals,
      rates: totals && now && later
        ? rates(totals, now, (later.at - l.at) / 1000)
        : null,
    };
  });
  return { topology: topologyPath, intervalMs: opts.intervalMs, nodes };
}
