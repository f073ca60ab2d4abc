import assert from "assert";
import fc from "fast-check";
import { parseLocation } from "../lib/location.ts";
import { parseCommand } from "../lib/protocol.ts";
import { parseAtLine } from "../lib/record.ts";
import {
  location,
  mutated,
  nearLine,
  oracleKind,
  oracleLocation,
} from "./grammar.ts";

const RUNS = { numRuns: 3000 };

Deno.test("parseCommand agrees with the protocol's grammar on valid and near-valid lines (differential property)", () => {
  const seen = { IAMAT: 0, WHATSAT: 0, INVALID: 0 };
  fc.assert(
    fc.property(nearLine, (line) => {
      const got = parseCommand(line).kind;
      assert.equal(got, oracleKind(line), JSON.stringify(line));
      seen[got]++;
    }),
    RUNS,
  );
  // The generator must reach every branch often, or the property checks little.
  for (const [kind, n] of Object.entries(seen)) {
    assert.ok(n > RUNS.numRuns / 20, `${kind} in only ${n} of ${RUNS.numRuns}`);
  }
});

Deno.test("parseLocation agrees with the protocol's rule on in-range, out-of-range and one-edit locations (differential property)", () => {
  let valid = 0;
  fc.assert(
    fc.property(mutated(location), (text) => {
      const ok = parseLocation(text) !== null;
      assert.equal(ok, oracleLocation(text), JSON.stringify(text));
      if (ok) valid++;
    }),
    RUNS,
  );
  assert.ok(valid > RUNS.numRuns / 5, `only ${valid} valid locations`);
  assert.ok(valid < RUNS.numRuns * 0.8, `only ${RUNS.numRuns - valid} invalid`);
});

Deno.test("parseAtLine accepts exactly the AT lines a node could write for a valid IAMAT (property)", () => {
  let accepted = 0;
  fc.assert(
    fc.property(
      nearLine,
      fc.constantFrom("+0.000000001", "-12.345678901", "+1.5", "0.000000000"),
      (line, skew) => {
        const cmd = parseCommand(line);
        if (cmd.kind !== "IAMAT") return;
        const at =
          `AT Alford ${skew} ${cmd.client} ${cmd.location} ${cmd.time}`;
        const parsed = parseAtLine(at);
        // A node always writes a sign and 9 fraction digits.
        const nodeSkew = /^[+-]\d+\.\d{9}$/.test(skew);
        assert.equal(parsed !== null, nodeSkew, at);
        if (parsed !== null) accepted++;
      },
    ),
    RUNS,
  );
  assert.ok(accepted > 100, `only ${accepted} AT lines accepted`);
});
