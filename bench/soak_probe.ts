/**
 * The soak's innocent client, in a worker of its own so that the attackers' work in the
 * soak's main thread never delays it: every 100 ms it connects, sends one IAMAT and waits
 * for the AT line (at most 5 s). On `"stop"` it posts its latencies in ms (a failure counts
 * as the time it took, and is counted).
 *
 * @module
 */

/// <reference lib="deno.worker" />

const enc = new TextEncoder();
let stop = false;
let port = 0;
const latencies: number[] = [];
let failures = 0;

async function once(i: number): Promise<boolean> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const line = `IAMAT probe-${i} +1+1 ${Math.floor(Date.now() / 1000)}.5\n`;
    await conn.write(enc.encode(line));
    const buf = new Uint8Array(512);
    const n = await Promise.race([
      conn.read(buf),
      new Promise<null>((r) => timer = setTimeout(() => r(null), 5000)),
    ]);
    return n !== null && buf[0] === 0x41 && buf[1] === 0x54; // "AT"
  } finally {
    clearTimeout(timer);
    conn.close();
  }
}

self.onmessage = async (e: MessageEvent) => {
  if (e.data === "stop") {
    stop = true;
    return;
  }
  port = e.data as number;
  for (let i = 0; !stop && i < 100_000; i++) {
    const t0 = performance.now();
    let ok = false;
    try {
      ok = await once(i);
    } catch { /* counted below */ }
    if (!ok) failures++;
    latencies.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 100));
  }
  self.postMessage({ latencies, failures });
};
