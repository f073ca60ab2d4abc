/**
 * The live view's feed (`GET /v1/events`, a WebSocket): a first picture of the herd (the
 * topology, this node's links, the clients it knows), then once a tick the records accepted
 * since the last tick, this node's link states and its counters, so the page can draw
 * moving points and rates.
 *
 * Records are coalesced per client between ticks and capped, so a node taking 100,000
 * IAMATs a second sends a browser a bounded message a second, not 100,000 messages; what
 * the cap leaves out is counted (the next first picture has it). The tick timer runs only
 * while a view is open, and a view that does not read is dropped like any watcher.
 *
 * @module
 */

import { withDefaults } from "../defaults.ts";
import type { NodeLog } from "../log.ts";
import { clientOf } from "../record.ts";
import { recordFields } from "./api.ts";
import type { HttpApi } from "./types.ts";
import type { WatchSink } from "./watch.ts";

/** View feed bounds. */
export const VIEW_DEFAULTS = {
  /** How often changes go out, in ms. */
  tickMs: 1000,
  /** Most views open at once. */
  maxViews: 64,
  /** Most clients in the first picture. */
  maxInitialClients: 5000,
  /** Most changed clients kept between two ticks. */
  maxChangesPerTick: 2000,
  /** Unsent bytes on a view's socket before it is dropped. */
  maxBufferedBytes: 4 * 1024 * 1024,
};

/** Options: any bound left out takes its default. */
export interface ViewFeedOptions extends Partial<typeof VIEW_DEFAULTS> {
  log?: NodeLog;
}

/** Every open view of one node. */
export class ViewFeed {
  readonly #api: HttpApi;
  readonly #o: typeof VIEW_DEFAULTS;
  readonly #log: NodeLog | undefined;
  /** Open views; true for a view that wants only this node's links (`?only=peers`). */
  readonly #views = new Map<WatchSink, boolean>();
  #changes = new Map<string, string>();
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Changes left out of a tick by the cap. */
  overflowed = 0;
  /** Views dropped for not reading, or refused over the cap. */
  dropped = 0;

  constructor(api: HttpApi, opts: ViewFeedOptions = {}) {
    this.#api = api;
    this.#log = opts.log;
    this.#o = withDefaults(VIEW_DEFAULTS, opts);
  }

  /** Open views. */
  get size(): number {
    return this.#views.size;
  }

  /** Is there room for one more view? Counts and logs a refusal. */
  room(): boolean {
    if (this.#views.size < this.#o.maxViews) return true;
    this.dropped++;
    this.#log?.warn("view_refused", { limit: this.#o.maxViews });
    return false;
  }

  /**
   * A view whose socket just opened: send the first picture and start ticking. A view of
   * another node's page asks only for this node's links (`peersOnly`): no clients, no records.
   */
  add(view: WatchSink, peersOnly = false): void {
    this.#views.set(view, peersOnly);
    const clients = [];
    for (const line of peersOnly ? [] : this.#api.records()) {
      if (clients.length >= this.#o.maxInitialClients) break;
      clients.push(recordFields(line));
    }
    this.#send(
      view,
      JSON.stringify({
        type: "hello",
        herd: this.#api.shape(),
        peers: this.#api.peers(),
        counts: this.#api.counts(),
        clients,
        tickMs: this.#o.tickMs,
      }),
    );
    this.#timer ??= setInterval(() => this.#tick(), this.#o.tickMs);
  }

  /** A view's socket closed. */
  remove(view: WatchSink): void {
    this.#views.delete(view);
    if (this.#views.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#changes = new Map();
    }
  }

  /** A record the node accepted. */
  offer(line: string, client: string = clientOf(line)): void {
    if (this.#views.size === 0) return;
    if (
      this.#changes.size >= this.#o.maxChangesPerTick &&
      !this.#changes.has(client)
    ) {
      this.overflowed++;
      return;
    }
    this.#changes.set(client, line);
  }

  #tick(): void {
    const peers = this.#api.peers();
    const counts = this.#api.counts();
    let full: string | null = null;
    let linksOnly: string | null = null;
    for (const [v, peersOnly] of [...this.#views]) {
      if (peersOnly) {
        linksOnly ??= JSON.stringify({
          type: "tick",
          peers,
          counts,
          records: [],
        });
        this.#send(v, linksOnly);
      } else {
        full ??= JSON.stringify({
          type: "tick",
          peers,
          counts,
          records: [...this.#changes.values()].map(recordFields),
        });
        this.#send(v, full);
      }
    }
    this.#changes = new Map();
  }

  #send(view: WatchSink, text: string): void {
    if (view.bufferedAmount > this.#o.maxBufferedBytes) {
      this.dropped++;
      this.#log?.warn("view_dropped", { reason: "not reading" });
      this.remove(view);
      try {
        view.close(1008, "not reading");
      } catch { /* closing */ }
      return;
    }
    try {
      view.send(text);
    } catch {
      this.remove(view);
    }
  }

  /** Closes every view and stops ticking. */
  closeAll(): void {
    for (const v of [...this.#views.keys()]) {
      this.remove(v);
      try {
        v.close(1001, "node stopping");
      } catch { /* closed */ }
    }
  }
}
