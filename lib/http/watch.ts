/**
 * Watchers: WebSockets that receive one JSON message for each record the node accepts, for
 * one client (`?client=ID`) or inside a circle (`?near=LAT,LNG&radius=KM`, a geofence).
 *
 * Matching stays cheap with thousands of geofences: each circle is registered in the cells
 * of a fixed grid (0.5 degree) that its bounding box touches, and a record looks up only its
 * own cell, then checks the exact distance for the few watchers there. A circle whose box
 * would touch too many cells (near a pole) goes to a short "wide" list checked for every
 * record. The message text is built once per record, whatever the number of watchers.
 *
 * Bounded: at most `maxWatchers`; a watcher whose socket holds more than
 * `maxBufferedBytes` unsent (a client that does not read) is closed and dropped, counted and
 * logged, so memory never grows with a slow reader.
 *
 * @example
 * ```ts
 * const got: string[] = [];
 * const sink = { send: (t: string) => got.push(t), bufferedAmount: 0, close() {} };
 * const w = new Watchers({});
 * w.addNear(sink, 34.07, -118.44, 10);
 * w.offer("AT Alford +0.1 kiwi +34.068930-118.445127 1.5"); // got holds one message
 * ```
 * @module
 */

import { withDefaults } from "../defaults.ts";
import type { NodeLog } from "../log.ts";
import { distanceKm, parseLocation } from "../location.ts";
import { clientOf } from "../record.ts";
import { recordFields } from "./api.ts";

/** The part of a WebSocket a watcher uses (a real `WebSocket` fits). */
export interface WatchSink {
  send(text: string): void;
  readonly bufferedAmount: number;
  close(code?: number, reason?: string): void;
}

/** Watch bounds. */
export const WATCH_DEFAULTS = {
  /** Most watchers at once (client and geofence together). */
  maxWatchers: 4_000,
  /** Unsent bytes on one watcher's socket before it is dropped. */
  maxBufferedBytes: 256 * 1024,
  /** Grid cell size in degrees (a 50 km circle touches at most 9 cells at mid latitudes). */
  cellDegrees: 0.5,
  /** A circle touching more cells than this is checked for every record instead. */
  maxCellsPerWatcher: 64,
  /** Largest geofence radius in km (the contract's bound). */
  maxRadiusKm: 50,
};

/** Options: any bound left out takes its default. */
export interface WatchOptions extends Partial<typeof WATCH_DEFAULTS> {
  log?: NodeLog;
}

/** One watcher. */
export class Watcher {
  readonly sink: WatchSink;
  readonly client: string | null;
  readonly lat: number;
  readonly lng: number;
  readonly radiusKm: number;
  cells: number[] = [];
  wide = false;
  closed = false;

  constructor(
    sink: WatchSink,
    client: string | null,
    lat = 0,
    lng = 0,
    radiusKm = 0,
  ) {
    this.sink = sink;
    this.client = client;
    this.lat = lat;
    this.lng = lng;
    this.radiusKm = radiusKm;
  }
}

/** Every watcher of one node, indexed by client and by grid cell. */
export class Watchers {
  readonly #o: typeof WATCH_DEFAULTS;
  readonly #log: NodeLog | undefined;
  readonly #cols: number;
  readonly #byClient = new Map<string, Set<Watcher>>();
  readonly #byCell = new Map<number, Set<Watcher>>();
  readonly #wide = new Set<Watcher>();
  #size = 0;
  #near = 0;
  /** Watchers dropped for not reading, or refused over the cap. */
  dropped = 0;
  /** Messages handed to sockets. */
  messages = 0;

  constructor(opts: WatchOptions) {
    this.#o = withDefaults(WATCH_DEFAULTS, opts);
    this.#log = opts.log;
    this.#cols = Math.ceil(360 / this.#o.cellDegrees);
  }

  /** Watchers by kind. */
  get counts(): { client: number; near: number } {
    return { client: this.#size - this.#near, near: this.#near };
  }

  /** True when no watcher can be added (the caller answers 503 and counts it). */
  get full(): boolean {
    return this.#size >= this.#o.maxWatchers;
  }

  /** Is there room for one more watcher? Counts and logs a refusal. */
  #room(): boolean {
    if (this.#size < this.#o.maxWatchers) return true;
    this.dropped++;
    this.#log?.warn("watcher_refused", { limit: this.#o.maxWatchers });
    return false;
  }

  /** Watches one client (a byte string id); null when the cap is reached. */
  addClient(sink: WatchSink, client: string): Watcher | null {
    if (!this.#room()) return null;
    const w = new Watcher(sink, client);
    let set = this.#byClient.get(client);
    if (set === undefined) this.#byClient.set(client, set = new Set());
    set.add(w);
    this.#size++;
    return w;
  }

  /** Watches a circle; null when the cap is reached. */
  addNear(
    sink: WatchSink,
    lat: number,
    lng: number,
    radiusKm: number,
  ): Watcher | null {
    if (!this.#room()) return null;
    const w = new Watcher(sink, null, lat, lng, radiusKm);
    const cells = this.#cellsOf(lat, lng, radiusKm);
    if (cells === null) {
      w.wide = true;
      this.#wide.add(w);
    } else {
      w.cells = cells;
      for (const c of cells) {
        let set = this.#byCell.get(c);
        if (set === undefined) this.#byCell.set(c, set = new Set());
        set.add(w);
      }
    }
    this.#size++;
    this.#near++;
    return w;
  }

  /** The grid cells a circle's bounding box touches, or null when too many. */
  #cellsOf(lat: number, lng: number, radiusKm: number): number[] | null {
    const d = this.#o.cellDegrees;
    // A degree of latitude is 111.19 km on the haversine sphere; 10% margin on both spans.
    const dLat = (radiusKm / 111.19) * 1.1;
    const top = Math.min(90, lat + dLat);
    const bottom = Math.max(-90, lat - dLat);
    const edge = Math.max(Math.abs(top), Math.abs(bottom));
    const cos = Math.cos((edge * Math.PI) / 180);
    if (cos < 1e-6) return null;
    const dLng = (radiusKm / (111.19 * cos)) * 1.1;
    if (dLng >= 180) return null;
    const row0 = this.#row(bottom);
    const row1 = this.#row(top);
    const col0 = Math.floor((lng - dLng + 180) / d);
    const col1 = Math.floor((lng + dLng + 180) / d);
    const count = (row1 - row0 + 1) * (col1 - col0 + 1);
    if (count > this.#o.maxCellsPerWatcher) return null;
    const cells: number[] = [];
    for (let r = row0; r <= row1; r++) {
      for (let c = col0; c <= col1; c++) {
        const col = ((c % this.#cols) + this.#cols) % this.#cols;
        cells.push(r * this.#cols + col);
      }
    }
    return cells;
  }

  #row(lat: number): number {
    const rows = Math.ceil(180 / this.#o.cellDegrees);
    return Math.min(rows - 1, Math.floor((lat + 90) / this.#o.cellDegrees));
  }

  #cellOf(lat: number, lng: number): number {
    const col = Math.min(
      this.#cols - 1,
      Math.floor((lng + 180) / this.#o.cellDegrees),
    );
    return this.#row(lat) * this.#cols + col;
  }

  /** Removes a watcher (its socket closed); idempotent. */
  remove(w: Watcher): void {
    if (w.closed) return;
    w.closed = true;
    this.#size--;
    if (w.client !== null) {
      const set = this.#byClient.get(w.client);
      set?.delete(w);
      if (set?.size === 0) this.#byClient.delete(w.client);
      return;
    }
    this.#near--;
    if (w.wide) this.#wide.delete(w);
    for (const c of w.cells) {
      const set = this.#byCell.get(c);
      set?.delete(w);
      if (set?.size === 0) this.#byCell.delete(c);
    }
  }

  /** Sends `text` to a watcher, or drops it when it is not reading. */
  send(w: Watcher, text: string): void {
    if (w.closed) return;
    if (w.sink.bufferedAmount > this.#o.maxBufferedBytes) {
      this.dropped++;
      this.#log?.warn("watcher_dropped", {
        reason: "not reading",
        buffered: w.sink.bufferedAmount,
        limit: this.#o.maxBufferedBytes,
      });
      this.remove(w);
      try {
        w.sink.close(1008, "not reading");
      } catch { /* already closing */ }
      return;
    }
    try {
      w.sink.send(text);
      this.messages++;
    } catch {
      this.remove(w);
    }
  }

  /** A record the node accepted: tell every watcher of its client or its place. */
  offer(line: string, client: string = clientOf(line)): void {
    if (this.#size === 0) return;
    let text: string | null = null;
    const message = () => text ??= JSON.stringify(recordFields(line));
    const byClient = this.#byClient.get(client);
    if (byClient !== undefined) {
      for (const w of [...byClient]) this.send(w, message());
    }
    if (this.#near === 0) return;
    const loc = parseLocation(line.split(" ")[4] ?? "");
    if (loc === null) return;
    const { latDeg, lngDeg } = loc;
    const cell = this.#byCell.get(this.#cellOf(latDeg, lngDeg));
    const candidates = cell === undefined
      ? [...this.#wide]
      : [...cell, ...this.#wide];
    for (const w of candidates) {
      if (distanceKm(w.lat, w.lng, latDeg, lngDeg) <= w.radiusKm) {
        this.send(w, message());
      }
    }
  }

  /** Closes every watcher (the node stops). */
  closeAll(code = 1001, reason = "node stopping"): void {
    const all = new Set<Watcher>(this.#wide);
    for (const s of this.#byClient.values()) for (const w of s) all.add(w);
    for (const s of this.#byCell.values()) for (const w of s) all.add(w);
    for (const w of all) {
      this.remove(w);
      try {
        w.sink.close(code, reason);
      } catch { /* closed */ }
    }
  }
}
