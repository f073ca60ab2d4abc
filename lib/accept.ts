/**
 * One accept loop for every TCP listener of a node (the client port, the bus port): accept,
 * set TCP_NODELAY (replies and records are small and must not wait for Nagle), and hand the
 * connection over. The loop ends quietly when the listener is closed; any other error (out of
 * file descriptors, say) is logged and retried 50 ms later instead of spinning.
 *
 * @example
 * ```ts
 * import { NodeLog } from "./log.ts";
 * import { acceptEach } from "./accept.ts";
 *
 * const log = await NodeLog.open({ node: "A", path: null, console: false });
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const loop = acceptEach(listener, log, "accept_failed", (conn) => conn.close());
 * listener.close();
 * await loop;
 * await log.close();
 * ```
 * @module
 */

import { delay } from "./async.ts";
import type { NodeLog } from "./log.ts";

/** Accepts until `listener` closes, handing each connection to `handle`. */
export async function acceptEach(
  listener: Deno.TcpListener,
  log: NodeLog,
  failedEvent: string,
  handle: (conn: Deno.TcpConn) => void,
): Promise<void> {
  for (;;) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (e) {
      if (e instanceof Deno.errors.BadResource) return;
      if (e instanceof Deno.errors.Interrupted) return;
      log.warn(failedEvent, { error: (e as Error).message });
      await delay(50);
      continue;
    }
    try {
      conn.setNoDelay(true);
    } catch { /* the peer may already be gone */ }
    handle(conn);
  }
}
