/**
 * What the HTTP face needs from its node, as one narrow interface (no back-reference to
 * the node): the node implements it with the same functions its line protocol uses, so an
 * HTTP IAMAT or nearby query is one more way in, not a second implementation.
 *
 * Client ids and records cross this interface as byte strings (one char per byte, see
 * `lib/bytes.ts`), exactly as the store holds them.
 *
 * @module
 */

import type { PeerStatus } from "../flood.ts";
import type { PlacesAnswer } from "../places/contract.ts";
import type { IamatCommand, WhatsatCommand } from "../protocol.ts";

/** The herd as the live view draws it. */
export interface HerdShape {
  /** This node's name. */
  node: string;
  /**
   * Every node of the topology with its neighbors, and `http` (`host:port`) for those that
   * serve HTTP, so the view can ask each node for its own links.
   */
  nodes: { name: string; neighbors: string[]; http?: string }[];
}

/** The node's side of the HTTP face. */
export interface HttpApi {
  readonly name: string;
  /** True once the stored records are loaded. */
  isReady(): boolean;
  /** Resolves when loading ends (never rejects). */
  readonly loaded: Promise<void>;
  /** Handles a valid IAMAT; resolves with its AT line once the record is durable. */
  iamat(cmd: IamatCommand): Promise<string>;
  /** The client's record (an AT line), if known: the watch feeds' first message. */
  record(client: string): string | undefined;
  /**
   * The client's record held now, once it is durable (as a WHATSAT serves it), if known:
   * `GET /v1/clients/ID`.
   */
  durableRecord(client: string): Promise<string | undefined>;
  /** WHATSAT's answer for a known client once durable; null for an unknown client. */
  nearby(
    cmd: WhatsatCommand,
  ): Promise<{ at: string; places: PlacesAnswer } | null>;
  /** The Prometheus text of `/metrics`. */
  metrics(): string;
  /** The topology, for the live view. */
  shape(): HerdShape;
  /** This node's links. */
  peers(): PeerStatus[];
  /** Every record held (the live view's first picture; the caller bounds it). */
  records(): Iterable<string>;
  /** Counts of what the node handled, for the view's rates. */
  counts(): { iamat: number; whatsat: number; clients: number };
}
