/**
 * One authenticated inbound connection: a neighbor pushes its records here and runs the
 * dialer's half of catch-up against us, so we answer with the acceptor's half.
 *
 * Every record is checked as strictly as a client line (`record_check.ts`) before the node
 * sees it: a record that fails is refused (never offered to the store), counted, logged
 * within a budget, and a connection that sends more than `maxInvalidRecords` of them is
 * dropped. The node's store pauses this reader while its commits are congested, so a fast
 * neighbor waits in TCP, not in memory.
 *
 * @module
 */

import type { NodeLog } from "../log.ts";
import type { BusChannel } from "./channel.ts";
import { CatchupAcceptor } from "./catchup.ts";
import { recordProblem } from "./record_check.ts";
import type {
  BusSettings,
  CatchupStore,
  FloodStats,
  LogBudget,
  PeerCounters,
} from "./types.ts";

/** What the inbound side needs from the node around it. */
export interface InboundContext {
  settings: BusSettings;
  log: NodeLog;
  stats: FloodStats;
  counters: PeerCounters;
  store: CatchupStore & { congested(): { promise: Promise<void> } | null };
  /** Every node name of the topology (a record names the node that made it). */
  nodes: ReadonlySet<string>;
  /** Budget of `peer_record_invalid` log lines (shared by the node's connections). */
  invalidLog: LogBudget;
  /** Offers valid records from this peer; returns how many the node accepted. */
  receive(records: string[]): number;
  /** Our states differ: our own link toward the peer should compare too. */
  differs(): void;
}

/** Serves an authenticated inbound connection from `peer` until it closes. */
export async function serveInbound(
  ch: BusChannel,
  id: number,
  peer: string,
  ctx: InboundContext,
): Promise<void> {
  const { log, stats, counters, settings } = ctx;
  const catchup = new CatchupAcceptor(ctx.store, ch, log, { conn: id, peer });
  let invalid = 0;
  let wasSyncing = false;
  const track = () => {
    if (catchup.syncing !== wasSyncing) {
      counters.catchingUp += catchup.syncing ? 1 : -1;
      wasSyncing = catchup.syncing;
    }
  };
  try {
    for (;;) {
      const batch = await ch.nextBatch();
      if (batch === null) {
        if (ch.problem !== null) {
          log.warn("peer_protocol_error", {
            conn: id,
            peer,
            side: "acceptor",
            problem: ch.problem,
          });
        }
        break;
      }
      for (const msg of batch) {
        if (msg.kind === "records") {
          const valid: string[] = [];
          for (const line of msg.records) {
            const problem = recordProblem(
              line,
              ctx.nodes,
              settings.clientLineBytes,
            );
            if (problem === null) {
              valid.push(line);
              continue;
            }
            invalid++;
            stats.recordsInvalid++;
            const n = ctx.invalidLog.hit();
            if (n > 0) {
              log.warn("peer_record_invalid", {
                conn: id,
                peer,
                problem,
                bytes: line.length,
                line: line.slice(0, 120),
                ...(n > 1 ? { times: n } : {}),
              });
            }
          }
          if (invalid > settings.maxInvalidRecords) {
            log.warn("peer_dropped", {
              conn: id,
              peer,
              reason: `more than ${settings.maxInvalidRecords} invalid records`,
            });
            return;
          }
          if (valid.length > 0) {
            stats.recordsReceived += valid.length;
            counters.recordsReceived += valid.length;
            catchup.count(valid.length, ctx.receive(valid));
          }
          continue;
        }
        const problem = await catchup.handle(msg, () => ctx.differs());
        track();
        if (problem !== null) {
          log.warn("peer_dropped", { conn: id, peer, reason: problem });
          return;
        }
      }
      const wait = ctx.store.congested();
      if (wait) await wait.promise;
    }
    log.event("peer_inbound_closed", { conn: id, peer });
  } finally {
    if (wasSyncing) counters.catchingUp--;
  }
}
