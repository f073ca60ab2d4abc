/**
 * One request on the line protocol, the way PROTOCOL.md says a simple client may do it:
 * connect, send the line, half-close, and read until the node closes. The node answers
 * before it closes, so the whole reply is what arrives before EOF. Connecting and the whole
 * exchange are bounded in time, and the reply in size.
 *
 * @module
 */

/** The node could not be reached, or did not answer in time; the message names it. */
export class Unreachable extends Error {
  override name = "Unreachable";
}

/** Where a node listens, and its name for messages. */
export interface Endpoint {
  /** The node's name, or `host:port` when it has none. */
  label: string;
  host: string;
  port: number;
}

/** Bounds of one exchange. */
export interface ExchangeOptions {
  connectTimeoutMs: number;
  replyTimeoutMs: number;
  maxReplyBytes: number;
}

/** `Alford (127.0.0.1:12000)`, or just `127.0.0.1:12000`. */
export function describeEndpoint(e: Endpoint): string {
  const address = `${e.host}:${e.port}`;
  return e.label === address ? address : `${e.label} (${address})`;
}

/**
 * The first line of an error's message; for `fetch`'s bare "fetch failed", its cause (which
 * says what failed, e.g. "... Connection refused (os error 111)") without the repeated URL.
 */
export function reason(e: unknown): string {
  if (e instanceof Error && e.cause instanceof Error) {
    return e.cause.message.replace(
      /^error sending request for url \([^)]*\): /,
      "",
    )
      .split("\n")[0];
  }
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}

/**
 * Opens a TCP connection within `timeoutMs`, or throws `Unreachable` naming the endpoint
 * (`what` says which port it was, e.g. "its client port").
 */
export async function connectWithin(
  e: Endpoint,
  timeoutMs: number,
): Promise<Deno.TcpConn> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await Deno.connect({
      hostname: e.host,
      port: e.port,
      signal: controller.signal,
    });
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable) throw err;
    throw new Unreachable(
      controller.signal.aborted
        ? `cannot reach ${
          describeEndpoint(e)
        }: no connection within ${timeoutMs} ms`
        : `cannot reach ${describeEndpoint(e)}: ${reason(err)}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

/** Sends `line` + `\n`, half-closes, and returns everything received until EOF (UTF-8). */
export async function exchangeLine(
  e: Endpoint,
  line: string,
  opts: ExchangeOptions,
): Promise<string> {
  const conn = await connectWithin(e, opts.connectTimeoutMs);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch { /* already closed */ }
  }, opts.replyTimeoutMs);
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    const bytes = new TextEncoder().encode(`${line}\n`);
    for (let off = 0; off < bytes.length;) {
      off += await conn.write(bytes.subarray(off));
    }
    await conn.closeWrite();
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      size += n;
      if (size > opts.maxReplyBytes) {
        throw new Unreachable(
          `${
            describeEndpoint(e)
          } sent more than ${opts.maxReplyBytes} bytes without finishing its reply`,
        );
      }
      chunks.push(buf.slice(0, n));
    }
  } catch (err) {
    if (err instanceof Unreachable) throw err;
    if (timedOut) {
      throw new Unreachable(
        `${
          describeEndpoint(e)
        } did not finish its reply within ${opts.replyTimeoutMs} ms`,
      );
    }
    // A reset after a complete reply still leaves the reply; otherwise it is a lost node.
    if (!(err instanceof Deno.errors.ConnectionReset) || size === 0) {
      throw new Unreachable(
        `lost the connection to ${describeEndpoint(e)}: ${reason(err)}`,
      );
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all);
}

/** True when something accepts TCP connections at `e` within `timeoutMs`. */
export async function probe(e: Endpoint, timeoutMs: number): Promise<boolean> {
  try {
    const conn = await connectWithin(e, timeoutMs);
    conn.close();
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    return false;
  }
}
