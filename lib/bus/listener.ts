/**
 * The bus port: where a node's neighbors connect (`peerPort` in the topology, by default
 * the client port + 10000). It only accepts; what a connection may do is decided by the
 * neighbor pool it hands each one to. Bound to the same host as the client port.
 *
 * @module
 */

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
    this.#accepting = this.#acceptLoop(this.#listener);
  }

  async #acceptLoop(listener: Deno.TcpListener): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (e instanceof Deno.errors.BadResource) return;
        if (e instanceof Deno.errors.Interrupted) return;
        this.#o.log.warn("bus_accept_failed", { error: (e as Error).message });
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      try {
        conn.setNoDelay(true);
      } catch { /* the peer may already be gone */ }
      this.#o.onConnection(conn);
    }
  }

  /** Stops accepting (connections already handed over are the pool's to close). */
  async stop(): Promise<void> {
    try {
      this.#listener?.close();
    } catch { /* closed */ }
    await this.#accepting;
  }
}
