/**
 * Specification of lib/protocol.ts: client lines into IAMAT, WHATSAT or invalid commands,
 * and the replies formatted to the byte (PROTOCOL.md).
 */

import assert from "assert";
import fc from "fast-check";
import {
  type Command,
  formatInvalid,
  formatWhatsat,
  parseCommand,
  placesJson,
  splitFields,
} from "../lib/protocol.ts";

const RUNS = { numRuns: 300 };

const IAMAT_EXAMPLE =
  "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";
const AT_EXAMPLE =
  "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";

/** The protocol's white space: space, tab, CR, LF, FF, VT. */
const BLANKS = [" ", "\t", "\r", "\n", "\f", "\v"];
const blankRun = fc
  .array(fc.constantFrom(...BLANKS), { minLength: 1, maxLength: 5 })
  .map((xs) => xs.join(""));
const optionalBlankRun = fc
  .array(fc.constantFrom(...BLANKS), { minLength: 0, maxLength: 5 })
  .map((xs) => xs.join(""));

function iamat(line: string) {
  const c = parseCommand(line);
  assert.equal(c.kind, "IAMAT", JSON.stringify(line));
  return c as Extract<Command, { kind: "IAMAT" }>;
}

function whatsat(line: string) {
  const c = parseCommand(line);
  assert.equal(c.kind, "WHATSAT", JSON.stringify(line));
  return c as Extract<Command, { kind: "WHATSAT" }>;
}

// ---- splitFields -----------------------------------------------------------------------

Deno.test("splitFields splits on runs of space, tab, CR, LF, FF and VT", () => {
  assert.deepEqual(splitFields("a b"), ["a", "b"]);
  assert.deepEqual(splitFields("a \t\r\n\f\vb"), ["a", "b"]);
  assert.deepEqual(splitFields("\t a  b \n"), ["a", "b"]);
  assert.deepEqual(splitFields(""), []);
  assert.deepEqual(splitFields(" \t\r\n\f\v"), []);
  assert.deepEqual(splitFields("abc"), ["abc"]);
});

Deno.test("splitFields does not split on other control or non-ASCII blank bytes", () => {
  assert.deepEqual(splitFields("a\x00b"), ["a\x00b"]);
  assert.deepEqual(splitFields("a\x1cb"), ["a\x1cb"]);
  assert.deepEqual(splitFields("a\xa0b"), ["a\xa0b"]);
  assert.deepEqual(splitFields("a\x85b"), ["a\x85b"]);
  assert.deepEqual(splitFields("a\x7fb"), ["a\x7fb"]);
});

Deno.test("splitFields matches splitting on the protocol's blanks (property)", () => {
  // Any bytes but the six blanks: NUL, other controls, DEL and high bytes included.
  const nonBlank = fc.integer({ min: 0, max: 255 }).filter((c) =>
    c !== 32 && (c < 9 || c > 13)
  );
  const field = fc.array(nonBlank, { minLength: 1, maxLength: 6 }).map((cs) =>
    String.fromCharCode(...cs)
  );
  fc.assert(
    fc.property(
      optionalBlankRun,
      fc.array(fc.tuple(field, blankRun), { maxLength: 6 }),
      (lead, parts) => {
        const line = lead + parts.map(([f, b]) => f + b).join("");
        assert.deepEqual(
          splitFields(line),
          parts.map(([f]) => f),
        );
      },
    ),
    RUNS,
  );
});

// ---- IAMAT -----------------------------------------------------------------------------

Deno.test("parseCommand reads the protocol's IAMAT example", () => {
  const c = iamat(IAMAT_EXAMPLE);
  assert.equal(c.client, "kiwi.cs.ucla.edu");
  assert.equal(c.location, "+34.068930-118.445127");
  assert.equal(c.time, "1520023934.918963997");
  assert.equal(c.timeNs, 1520023934918963997n);
  assert.deepEqual(c.loc, {
    lat: "34.068930",
    lng: "-118.445127",
    latDeg: 34.06893,
    lngDeg: -118.445127,
  });
});

Deno.test("parseCommand keeps IAMAT coordinates and time exactly as written", () => {
  const c = iamat("IAMAT kiwi +34.06893-118.445127 0001520023934.50");
  assert.equal(c.location, "+34.06893-118.445127");
  assert.equal(c.time, "0001520023934.50");
  assert.equal(c.timeNs, 1520023934500000000n);
});

Deno.test("parseCommand accepts IAMAT with each kind of white space between fields", () => {
  for (const b of BLANKS) {
    const c = iamat(["IAMAT", "kiwi", "+34-118", "1.5"].join(b));
    assert.equal(c.client, "kiwi");
    assert.equal(c.location, "+34-118");
    assert.equal(c.time, "1.5");
  }
});

Deno.test("parseCommand accepts IAMAT with runs, leading and trailing white space", () => {
  for (
    const line of [
      "  IAMAT kiwi +34-118 1.5",
      "IAMAT kiwi +34-118 1.5  ",
      "\t\r\n\f\vIAMAT\t\r\n\f\vkiwi\t\r\n\f\v+34-118\t\r\n\f\v1.5\t\r\n\f\v",
      "IAMAT     kiwi\t\t+34-118 \r 1.5\r",
      "\vIAMAT\fkiwi\f+34-118\v1.5\n",
    ]
  ) {
    const c = iamat(line);
    assert.equal(c.client, "kiwi");
    assert.equal(c.time, "1.5");
  }
});

Deno.test("parseCommand accepts IAMAT with any mix of protocol white space (property)", () => {
  fc.assert(
    fc.property(
      optionalBlankRun,
      blankRun,
      blankRun,
      blankRun,
      optionalBlankRun,
      (a, b, c, d, e) => {
        const cmd = iamat(
          `${a}IAMAT${b}kiwi.cs.ucla.edu${c}+34.068930-118.445127${d}1520023934.918963997${e}`,
        );
        assert.equal(cmd.client, "kiwi.cs.ucla.edu");
        assert.equal(cmd.location, "+34.068930-118.445127");
        assert.equal(cmd.time, "1520023934.918963997");
      },
    ),
    RUNS,
  );
});

Deno.test("parseCommand accepts IAMAT with a 256-byte and a UTF-8 client id", () => {
  assert.equal(iamat(`IAMAT ${"k".repeat(256)} +0+0 0`).client.length, 256);
  assert.equal(iamat("IAMAT caf\xc3\xa9 +0+0 0").client, "caf\xc3\xa9");
});

Deno.test("parseCommand accepts IAMAT at the edges of the location range", () => {
  for (
    const loc of ["+90+180", "-90-180", "+90.000-180.0", "+0+0", "-0.5+0.5"]
  ) {
    assert.equal(iamat(`IAMAT kiwi ${loc} 1`).location, loc);
  }
});

// ---- WHATSAT ---------------------------------------------------------------------------

Deno.test("parseCommand reads the protocol's WHATSAT example", () => {
  assert.deepEqual(parseCommand("WHATSAT kiwi.cs.ucla.edu 10 5"), {
    kind: "WHATSAT",
    client: "kiwi.cs.ucla.edu",
    radiusM: "10000",
    bound: 5,
  });
});

Deno.test("parseCommand accepts WHATSAT with each kind of white space, runs, leading and trailing", () => {
  for (const b of BLANKS) {
    const c = whatsat(`${b}WHATSAT${b}kiwi${b}${b}10${b}5${b}`);
    assert.equal(c.client, "kiwi");
    assert.equal(c.radiusM, "10000");
    assert.equal(c.bound, 5);
  }
  assert.equal(whatsat("\t\r\n\f\v WHATSAT \t\r\n\f\vkiwi\v10\f5\r").bound, 5);
});

Deno.test("parseCommand accepts WHATSAT with any mix of protocol white space (property)", () => {
  fc.assert(
    fc.property(
      optionalBlankRun,
      blankRun,
      blankRun,
      blankRun,
      optionalBlankRun,
      (a, b, c, d, e) => {
        assert.deepEqual(parseCommand(`${a}WHATSAT${b}kiwi${c}1.5${d}20${e}`), {
          kind: "WHATSAT",
          client: "kiwi",
          radiusM: "1500",
          bound: 20,
        });
      },
    ),
    RUNS,
  );
});

Deno.test("parseCommand converts the WHATSAT radius to metres exactly", () => {
  const cases: [string, string][] = [
    ["10", "10000"],
    ["0.5", "500"],
    ["1.2345", "1234.5"],
    ["50", "50000"],
    ["050", "50000"],
    ["50.000", "50000"],
    ["0.001", "1"],
    ["0.0001", "0.1"],
    ["00.5", "500"],
    ["49.9999999", "49999.9999"],
    ["1", "1000"],
  ];
  for (const [km, m] of cases) {
    assert.equal(whatsat(`WHATSAT kiwi ${km} 5`).radiusM, m, km);
  }
});

Deno.test("parseCommand accepts every bound from 1 to 20, with leading zeros", () => {
  for (let n = 1; n <= 20; n++) {
    assert.equal(whatsat(`WHATSAT kiwi 10 ${n}`).bound, n);
    assert.equal(whatsat(`WHATSAT kiwi 10 0${n}`).bound, n);
    assert.equal(whatsat(`WHATSAT kiwi 10 0000${n}`).bound, n);
  }
});

Deno.test("parseCommand accepts any radius in (0, 50] written with up to 6 decimals (property)", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 50_000_000 }), (micro) => {
      const km = `${Math.floor(micro / 1e6)}.${
        String(micro % 1e6).padStart(6, "0")
      }`;
      const c = whatsat(`WHATSAT kiwi ${km} 1`);
      const [i, f = ""] = c.radiusM.split(".");
      assert.equal(BigInt(i + f.padEnd(3, "0")), BigInt(micro));
    }),
    RUNS,
  );
});

// ---- invalid lines ---------------------------------------------------------------------

const INVALID_LINES: [string, string][] = [
  // empty and blank
  ["an empty line", ""],
  ["only a space", " "],
  ["only white space", " \t\r\n\f\v "],
  // unknown or miscased commands
  ["an unknown command", "HELLO kiwi +34-118 1"],
  ["a lowercase iamat", "iamat kiwi +34-118 1"],
  ["a mixed-case Iamat", "Iamat kiwi +34-118 1"],
  ["a lowercase whatsat", "whatsat kiwi 10 5"],
  ["a command with a NUL", "IAMAT\x00 kiwi +34-118 1"],
  ["an AT line from a client", AT_EXAMPLE],
  ["a short AT line from a client", "AT kiwi +34-118 1"],
  [
    "an AT line shaped like IAMAT",
    "AT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997",
  ],
  ["a reply echoed back", "? IAMAT kiwi +34-118 1"],
  // field counts
  ["IAMAT alone", "IAMAT"],
  ["IAMAT with two fields", "IAMAT kiwi +34-118"],
  ["IAMAT with one field", "IAMAT kiwi"],
  ["IAMAT with five fields", "IAMAT kiwi +34-118 1 extra"],
  ["IAMAT with the time split", "IAMAT kiwi +34-118 1 .5"],
  ["WHATSAT alone", "WHATSAT"],
  ["WHATSAT with two fields", "WHATSAT kiwi 10"],
  ["WHATSAT with five fields", "WHATSAT kiwi 10 5 5"],
  ["a command glued to its client", "IAMATkiwi +34-118 1"],
  // IAMAT client id
  ["a 257-byte client id", `IAMAT ${"k".repeat(257)} +34-118 1`],
  ["a NUL in the client id", "IAMAT ki\x00wi +34-118 1"],
  ["DEL in the client id", "IAMAT ki\x7fwi +34-118 1"],
  ["an ESC in the client id", "IAMAT ki\x1bwi +34-118 1"],
  ["a Latin-1 byte in the client id", "IAMAT caf\xe9 +34-118 1"],
  ["an NBSP (UTF-8) in the client id", "IAMAT ki\xc2\xa0wi +34-118 1"],
  ["a UTF-8 byte order mark as the client id", "IAMAT \xef\xbb\xbf +34-118 1"],
  // IAMAT location
  ["a location without signs", "IAMAT kiwi 34.068930-118.445127 1"],
  ["a location with one part", "IAMAT kiwi +34.068930 1"],
  ["a latitude of 91", "IAMAT kiwi +91+0 1"],
  ["a latitude just above 90", "IAMAT kiwi +90.0000001+0 1"],
  ["a longitude just above 180", "IAMAT kiwi +0+180.1 1"],
  ["a location with a double point", "IAMAT kiwi +34..0-118 1"],
  ["a location with a dangling point", "IAMAT kiwi +34.-118 1"],
  ["a location with letters", "IAMAT kiwi +3a-118 1"],
  ["a location with three parts", "IAMAT kiwi +1+1+1 1"],
  ["a location with Unicode digits", "IAMAT kiwi +\u0663\u0664-118 1"],
  // IAMAT time
  ["a negative time", "IAMAT kiwi +34-118 -1"],
  ["a signed time", "IAMAT kiwi +34-118 +1"],
  ["a time with an exponent", "IAMAT kiwi +34-118 1e9"],
  ["a hex time", "IAMAT kiwi +34-118 0x10"],
  ["a NaN time", "IAMAT kiwi +34-118 NaN"],
  ["an Infinity time", "IAMAT kiwi +34-118 Infinity"],
  ["a time with 10 fraction digits", "IAMAT kiwi +34-118 1.0000000001"],
  ["a time with a dangling point", "IAMAT kiwi +34-118 1."],
  ["a time with a leading point", "IAMAT kiwi +34-118 .5"],
  // WHATSAT radius
  ["a radius of 0", "WHATSAT kiwi 0 5"],
  ["a radius of 0.0", "WHATSAT kiwi 0.0 5"],
  ["a radius of 000.000", "WHATSAT kiwi 000.000 5"],
  ["a radius of -1", "WHATSAT kiwi -1 5"],
  ["a radius of +10", "WHATSAT kiwi +10 5"],
  ["a radius of 51", "WHATSAT kiwi 51 5"],
  ["a radius of 50.0001", "WHATSAT kiwi 50.0001 5"],
  ["a radius just above 50", "WHATSAT kiwi 50.00000000000000000001 5"],
  ["a radius of abc", "WHATSAT kiwi abc 5"],
  ["a radius of 1e1", "WHATSAT kiwi 1e1 5"],
  ["a radius of NaN", "WHATSAT kiwi NaN 5"],
  ["a radius of Infinity", "WHATSAT kiwi Infinity 5"],
  ["a radius of 0x10", "WHATSAT kiwi 0x10 5"],
  ["a radius of .5", "WHATSAT kiwi .5 5"],
  ["a radius of 5.", "WHATSAT kiwi 5. 5"],
  ["a radius of 1,5", "WHATSAT kiwi 1,5 5"],
  ["an empty radius", "WHATSAT kiwi  5"],
  // WHATSAT bound
  ["a bound of 0", "WHATSAT kiwi 10 0"],
  ["a bound of 00", "WHATSAT kiwi 10 00"],
  ["a bound of 21", "WHATSAT kiwi 10 21"],
  ["a bound of 021", "WHATSAT kiwi 10 021"],
  ["a bound of 100", "WHATSAT kiwi 10 100"],
  ["a bound of -1", "WHATSAT kiwi 10 -1"],
  ["a bound of +5", "WHATSAT kiwi 10 +5"],
  ["a bound of 1.5", "WHATSAT kiwi 10 1.5"],
  ["a bound of 5.0", "WHATSAT kiwi 10 5.0"],
  ["a bound of abc", "WHATSAT kiwi 10 abc"],
  ["a bound of 1e1", "WHATSAT kiwi 10 1e1"],
  ["a bound of 0x5", "WHATSAT kiwi 10 0x5"],
  ["a bound of NaN", "WHATSAT kiwi 10 NaN"],
  ["a bound in Unicode digits", "WHATSAT kiwi 10 \u0665"],
  // WHATSAT client id
  ["a 257-byte WHATSAT client id", `WHATSAT ${"k".repeat(257)} 10 5`],
  ["a NUL in the WHATSAT client id", "WHATSAT ki\x00wi 10 5"],
  // binary garbage
  ["binary garbage", "\x00\x01\x02\xff\xfe\x80\x7f"],
  ["binary garbage with four fields", "\xff\xfe \x00\x01 \x80 \x7f"],
  [
    "all 256 byte values",
    String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i)),
  ],
];

for (const [what, line] of INVALID_LINES) {
  Deno.test(`parseCommand rejects ${what}`, () => {
    assert.deepEqual(parseCommand(line), { kind: "INVALID" });
  });
}

Deno.test("parseCommand accepts 256 bytes of client id but rejects 257", () => {
  assert.equal(parseCommand(`WHATSAT ${"k".repeat(256)} 10 5`).kind, "WHATSAT");
  assert.equal(parseCommand(`WHATSAT ${"k".repeat(257)} 10 5`).kind, "INVALID");
  assert.equal(parseCommand(`IAMAT ${"k".repeat(256)} +0+0 1`).kind, "IAMAT");
  assert.equal(parseCommand(`IAMAT ${"k".repeat(257)} +0+0 1`).kind, "INVALID");
});

Deno.test("parseCommand never throws on arbitrary bytes, and accepts only IAMAT/WHATSAT lines (property)", () => {
  const byteString = fc
    .array(fc.integer({ min: 0, max: 255 }), { maxLength: 80 })
    .map((codes) => String.fromCharCode(...codes));
  fc.assert(
    fc.property(byteString, (line) => {
      const c = parseCommand(line);
      if (c.kind !== "INVALID") {
        assert.equal(splitFields(line)[0], c.kind);
        assert.equal(splitFields(line).length, 4);
      }
    }),
    RUNS,
  );
});

Deno.test("parseCommand rejects a valid line with any one field replaced by an invalid value", () => {
  const badClient = [
    "ki\x7fwi",
    "\x00",
    "caf\xe9",
    "k".repeat(257),
    "\xc2\xa0",
  ];
  const iamatBad = [
    badClient,
    ["34-118", "+91+0", "+0+181", "+34", "NaN", "1", "+1e1+1"],
    ["-1", "+1", "1e1", "0x1", "NaN", "Infinity", "1.", ".1", "1.0000000001"],
  ];
  const whatsatBad = [
    badClient,
    [
      "0",
      "0.0",
      "-1",
      "51",
      "50.0001",
      "1e1",
      "NaN",
      "Infinity",
      "0x1",
      ".5",
      "abc",
    ],
    ["0", "21", "-1", "1.5", "1e1", "0x1", "NaN", "abc"],
  ];
  const cases: [string[], string[][]][] = [
    [["IAMAT", "kiwi", "+34-118", "1"], iamatBad],
    [["WHATSAT", "kiwi", "10", "5"], whatsatBad],
  ];
  for (const [good, bads] of cases) {
    assert.notEqual(parseCommand(good.join(" ")).kind, "INVALID");
    bads.forEach((values, i) => {
      for (const value of values) {
        const fields = [...good];
        fields[i + 1] = value;
        const line = fields.join(" ");
        assert.equal(parseCommand(line).kind, "INVALID", JSON.stringify(line));
      }
    });
  }
});

// ---- formatInvalid ---------------------------------------------------------------------

Deno.test("formatInvalid echoes the line verbatim after '? ' and ends with one newline", () => {
  assert.equal(
    formatInvalid("WHATSAT kiwi.cs.ucla.edu 51 5"),
    "? WHATSAT kiwi.cs.ucla.edu 51 5\n",
  );
  assert.equal(formatInvalid(""), "? \n");
  assert.equal(formatInvalid("  spaced\tout  "), "?   spaced\tout  \n");
  assert.equal(formatInvalid(AT_EXAMPLE), `? ${AT_EXAMPLE}\n`);
  assert.equal(formatInvalid("\x00\xff\r"), "? \x00\xff\r\n");
});

Deno.test("formatInvalid echoes any byte string unchanged (property)", () => {
  const byteString = fc
    .array(fc.integer({ min: 0, max: 255 }), { maxLength: 100 })
    .map((codes) => String.fromCharCode(...codes));
  fc.assert(
    fc.property(byteString, (line) => {
      assert.equal(formatInvalid(line), `? ${line}\n`);
    }),
    RUNS,
  );
});

// ---- formatWhatsat and placesJson ------------------------------------------------------

Deno.test("formatWhatsat is the AT line, a newline, the JSON and exactly one empty line", () => {
  const json = '{\n  "results": [],\n  "status": "ZERO_RESULTS"\n}';
  assert.equal(formatWhatsat(AT_EXAMPLE, json), `${AT_EXAMPLE}\n${json}\n\n`);
});

Deno.test("formatWhatsat ends in exactly one \\n\\n even when the JSON ends in newlines", () => {
  for (const tail of ["", "\n", "\n\n", "\n\n\n\n"]) {
    const out = formatWhatsat(AT_EXAMPLE, `{"status": "OK"}${tail}`);
    assert.equal(
      out,
      `${AT_EXAMPLE}\n{"status": "OK"}\n\n`,
      JSON.stringify(tail),
    );
    assert.ok(!out.slice(0, -2).includes("\n\n"));
  }
});

Deno.test("formatWhatsat keeps the stored AT line byte for byte, whatever node made it", () => {
  const stored = "AT Welsh -0.000000001 caf\xc3\xa9 +34-118 1.50";
  const out = formatWhatsat(stored, "{}");
  assert.ok(out.startsWith(`${stored}\n`));
});

Deno.test("placesJson has no empty line, even for strings holding newlines", () => {
  const answer = {
    html_attributions: [],
    results: [
      { name: "Line\nbreak\n\n", vicinity: "\r\n\r\n" },
      { name: "", types: [] },
      { nested: { empty: {}, list: [[]] } },
    ],
    status: "OK",
  };
  const json = placesJson(answer);
  assert.ok(!json.includes("\n\n"));
  assert.ok(!/\n\s*\n/.test(json));
  assert.deepEqual(JSON.parse(json), answer);
  const reply = formatWhatsat(AT_EXAMPLE, json);
  assert.equal(reply.indexOf("\n\n"), reply.length - 2);
});

Deno.test("placesJson is indented JSON that parses back to the answer", () => {
  const answer = {
    html_attributions: [],
    results: [{ name: "A" }],
    status: "OK",
  };
  const json = placesJson(answer);
  assert.deepEqual(JSON.parse(json), answer);
  assert.ok(json.includes('\n  "results": ['));
});

Deno.test("formatWhatsat(placesJson(x)) has its only empty line at the end (property)", () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 3 }), (value) => {
      const reply = formatWhatsat(
        AT_EXAMPLE,
        placesJson({ results: [value], status: "OK" }),
      );
      assert.ok(reply.startsWith(`${AT_EXAMPLE}\n`));
      assert.ok(reply.endsWith("}\n\n"));
      assert.equal(reply.indexOf("\n\n"), reply.length - 2);
    }),
    RUNS,
  );
});
