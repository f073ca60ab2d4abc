/**
 * The bus port: where a node's neighbors connect (`peerPort` in the topology, by default
 * the client port + 10000). It only accepts; what a connection may do is decided by the
 * neighbor pool it hands each one to. Bound to the same host as the client port.
 *
 * @module
 */

import { acceptEach } from "../accept.ts";
import type { NodeLog } from "../log.ts";

/** Bus listener options. */
export interface BusListenerOptions {
  hostname: string;
  port: number;
  log: NodeLog;
  /** Takes each accepted connection. */
  onConnection(conn: Deno.TcpConn): void;
}

/** Accepts bus connections. */
export class BusListener {
  readonly #o: BusListenerOptions;
  #listener: Deno.TcpListener | null = null;
  #accepting: Promise<void> | null = null;

  constructor(opts: BusListenerOptions) {
    this.#o = opts;
  }

  /** The bound port (useful with port 0). */
  get port(): number {
    return (this.#listener!.addr as Deno.NetAddr).port;
  }

  /** Binds the port; throws Deno.errors.AddrInUse and friends for the caller to report. */
  listen(): void {
    this.#listener = Deno.listen({
      hostname: this.#o.hostname,
      port: this.#o.port,
      transport: "tcp",
    });
    this.#accepting = acceptEach(
      this.#listener,
      this.#o.log,
      "bus_accept_failed",
      (conn) => this.#o.onConnection(conn),
    );
  }

  /** Stops accepting (connections already handed over are the pool's to close). */
  async stop(): Promise<void> {
    try {
      this.#listener?.close();
    } catch { /* closed */ }
    await this.#accepting;
  }
}
