import assert from "assert";
import { exchange, fixedClock, TestHerd, waitFor } from "./helpers.ts";

Deno.test("smoke: IAMAT answered and flooded to every node", async () => {
  await using herd = await new TestHerd({
    config: () => ({ clock: fixedClock(1520023935182837383n) }),
  }).startAll();
  const reply = await exchange(
    herd.port("Alford"),
    "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997\n",
  );
  assert.equal(
    reply,
    "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997\n",
  );
  await waitFor(() =>
    [...herd.nodes.values()].every((n) =>
      n.store.get("kiwi.cs.ucla.edu") !== undefined
    )
  );
});
