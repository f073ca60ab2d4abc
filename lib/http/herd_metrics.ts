/**
 * The herd's metric families: what a node counts as it works (plain fields its owner
 * increments where lines and records are handled) and how `/metrics` renders them with
 * the gauges read at scrape time (clients, connections, links, store, flood, log, places).
 *
 * Family names, types and labels of the contract (PROTOCOL.md, HTTP) are fixed; the rest
 * are for operators and documented in docs/http.md.
 *
 * @module
 */

import type { FloodStats, PeerStatus } from "../flood.ts";
import type { FrontStats } from "./front.ts";
import type { StoreStats } from "../store.ts";
import { Exposition, Histogram } from "./metrics.ts";

/** Upper bounds of the KV commit histogram, in seconds (one fsync is ~0.2 ms here). */
export const COMMIT_SECONDS_BUCKETS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
];

/** Upper bounds of the records-a-commit histogram (group commit batch sizes). */
export const COMMIT_RECORDS_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384];

/** Longest `status` label kept for places requests; more distinct ones are folded. */
const MAX_PLACES_STATUSES = 32;

/** What a node counts while it works. */
export class HerdMetrics {
  readonly startedMs: number;
  iamat = 0;
  whatsat = 0;
  invalid = 0;
  readonly httpResponses = new Map<number, number>();
  readonly places = new Map<string, number>();
  readonly commitSeconds = new Histogram(COMMIT_SECONDS_BUCKETS);
  readonly commitRecords = new Histogram(COMMIT_RECORDS_BUCKETS);

  constructor(nowMs: number = Date.now()) {
    this.startedMs = nowMs;
  }

  /** Counts a WHATSAT answer by its upstream status (bounded label set). */
  placesStatus(status: string): void {
    const key = this.places.has(status) ||
        this.places.size < MAX_PLACES_STATUSES
      ? status
      : "OTHER";
    this.places.set(key, (this.places.get(key) ?? 0) + 1);
  }

  /** Counts an HTTP response by status code. */
  httpResponse(code: number): void {
    this.httpResponses.set(code, (this.httpResponses.get(code) ?? 0) + 1);
  }

  /** Called by the store after each successful group commit. */
  commit(seconds: number, records: number): void {
    this.commitSeconds.observe(seconds);
    this.commitRecords.observe(records);
  }
}

/** The gauges and counters read at scrape time. */
export interface MetricSources {
  node: string;
  clients: number;
  connections: number;
  ready: boolean;
  peers: PeerStatus[];
  store: StoreStats;
  flood: FloodStats;
  logDropped: number;
  placesProvider: string;
  placesStats: Record<string, number>;
  watchers: { client: number; near: number; view: number };
  watchersDropped: number;
  watchMessages: number;
  httpInflight: number;
  httpRejected: number;
  /** The HTTP port's TCP front (absent without HTTP: zeros). */
  httpFront?: FrontStats;
  nowMs: number;
}

/** Renders every family as Prometheus text. */
export function renderMetrics(m: HerdMetrics, s: MetricSources): string {
  const e = new Exposition();
  e.family(
    "herd_iamat_total",
    "counter",
    "IAMAT messages received (client port and HTTP), valid ones.",
  ).sample("herd_iamat_total", m.iamat);
  e.single(
    "herd_whatsat_total",
    "counter",
    "WHATSAT messages received (client port and HTTP nearby), valid ones.",
    m.whatsat,
  );
  e.single(
    "herd_invalid_total",
    "counter",
    "Invalid lines received on the client port (answered with ?).",
    m.invalid,
  );
  e.single("herd_clients", "gauge", "Clients known to this node.", s.clients);
  e.single(
    "herd_client_connections",
    "gauge",
    "Open connections on the client port.",
    s.connections,
  );
  e.family("herd_peer_up", "gauge", "1 when the link to this neighbor is up.");
  for (const p of s.peers) {
    e.sample("herd_peer_up", p.state === "down" ? 0 : 1, { peer: p.name });
  }
  e.family(
    "herd_records_received_total",
    "counter",
    "Records received from each neighbor.",
  );
  for (const p of s.peers) {
    e.sample("herd_records_received_total", p.recordsReceived, {
      peer: p.name,
    });
  }
  e.family(
    "herd_records_sent_total",
    "counter",
    "Records sent to each neighbor.",
  );
  for (const p of s.peers) {
    e.sample("herd_records_sent_total", p.recordsSent, { peer: p.name });
  }
  e.family(
    "herd_kv_commit_seconds",
    "histogram",
    "Duration of each group commit to Deno KV.",
  ).histogram("herd_kv_commit_seconds", m.commitSeconds);
  e.family(
    "herd_places_requests_total",
    "counter",
    "WHATSAT answers by the places upstream status.",
  );
  for (const [status, n] of m.places) {
    e.sample("herd_places_requests_total", n, { status });
  }
  // Beyond the contract: what an operator needs at a glance.
  e.family(
    "herd_kv_commit_records",
    "histogram",
    "Records in each group commit (batch size).",
  ).histogram("herd_kv_commit_records", m.commitRecords);
  e.family("herd_build_info", "gauge", "Runtime versions of this node.")
    .sample("herd_build_info", 1, {
      node: s.node,
      deno: Deno.version.deno,
      v8: Deno.version.v8,
      typescript: Deno.version.typescript,
    });
  e.single(
    "herd_uptime_seconds",
    "gauge",
    "Seconds since this node started.",
    Math.max(0, Math.round((s.nowMs - m.startedMs) / 1000)),
  );
  e.single(
    "herd_ready",
    "gauge",
    "1 once the stored records are loaded.",
    s.ready ? 1 : 0,
  );
  e.family(
    "herd_peer_state",
    "gauge",
    "Link state per neighbor (1 for the current state).",
  );
  for (const p of s.peers) {
    for (const state of ["up", "down", "catching-up"]) {
      e.sample("herd_peer_state", p.state === state ? 1 : 0, {
        peer: p.name,
        state,
      });
    }
  }
  const f = s.flood;
  e.single(
    "herd_records_invalid_total",
    "counter",
    "Records from peers refused as malformed.",
    f.recordsInvalid,
  );
  e.single(
    "herd_records_dropped_while_down_total",
    "counter",
    "Records not queued because the link was down (left to catch-up).",
    f.droppedWhileDown,
  );
  e.single(
    "herd_peer_outbox_overflows_total",
    "counter",
    "Links dropped because their outbox passed its bound.",
    f.outboxOverflows,
  );
  e.single(
    "herd_peer_refused_total",
    "counter",
    "Peer handshakes refused.",
    f.refused,
  );
  e.single(
    "herd_sync_records_sent_total",
    "counter",
    "Records sent by catch-up.",
    f.syncRecordsSent,
  );
  const st = s.store;
  e.single("herd_kv_commits_total", "counter", "KV commits.", st.commits);
  e.single(
    "herd_kv_commit_errors_total",
    "counter",
    "KV commits that failed (and were retried).",
    st.commitErrors,
  );
  e.single(
    "herd_kv_pending_records",
    "gauge",
    "Records accepted and waiting for the next commit.",
    st.pendingRecords,
  );
  e.single(
    "herd_kv_snapshots_total",
    "counter",
    "Snapshots written.",
    st.snapshots,
  );
  e.single(
    "herd_kv_records_refused_total",
    "counter",
    "Records the store refused because they cannot be stored (over a KV value).",
    st.refused,
  );
  e.single(
    "herd_kv_commits_abandoned_total",
    "counter",
    "Log commits given up after every attempt failed (their records were never acknowledged).",
    st.commitsAbandoned,
  );
  e.single(
    "herd_log_dropped",
    "gauge",
    "Log entries dropped since the last log_dropped line (buffer full).",
    s.logDropped,
  );
  e.family("herd_places_info", "gauge", "The places provider in use.")
    .sample("herd_places_info", 1, { provider: s.placesProvider });
  e.family(
    "herd_places_stat",
    "gauge",
    "The places provider's own figures (calls, cache, gazetteer).",
  );
  for (const [k, v] of Object.entries(s.placesStats)) {
    if (typeof v === "number") e.sample("herd_places_stat", v, { stat: k });
  }
  e.family("herd_watchers", "gauge", "Open WebSocket watchers by kind.");
  for (const [kind, n] of Object.entries(s.watchers)) {
    e.sample("herd_watchers", n, { kind });
  }
  e.single(
    "herd_watchers_dropped_total",
    "counter",
    "Watchers dropped for not reading (or refused over the cap).",
    s.watchersDropped,
  );
  e.single(
    "herd_watch_messages_total",
    "counter",
    "Messages sent to watchers.",
    s.watchMessages,
  );
  e.single(
    "herd_http_inflight",
    "gauge",
    "HTTP requests being handled.",
    s.httpInflight,
  );
  e.single(
    "herd_http_rejected_total",
    "counter",
    "HTTP requests refused with 503 over the in-flight cap.",
    s.httpRejected,
  );
  e.single(
    "herd_http_connections",
    "gauge",
    "TCP connections open on the HTTP port.",
    s.httpFront?.connections ?? 0,
  );
  e.family(
    "herd_http_cut_total",
    "counter",
    "HTTP connections cut: over the cap, head late or too large, idle.",
  );
  for (const reason of ["cap", "header", "idle"] as const) {
    e.sample("herd_http_cut_total", s.httpFront?.cuts[reason] ?? 0, { reason });
  }
  e.family("herd_http_responses_total", "counter", "HTTP responses by code.");
  for (const [code, n] of m.httpResponses) {
    e.sample("herd_http_responses_total", n, { code: String(code) });
  }
  return e.text();
}
