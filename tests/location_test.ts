/**
 * Specification of lib/location.ts: ISO 6709 `[+-]DD[.ddd][+-]DDD[.ddd]` positions with exact
 * range checks, and great-circle distance.
 */

import assert from "assert";
import fc from "fast-check";
import { distanceKm, parseLocation } from "../lib/location.ts";

const RUNS = { numRuns: 300 };

Deno.test("parseLocation reads the protocol's example, keeping the client's digits", () => {
  assert.deepEqual(parseLocation("+34.068930-118.445127"), {
    lat: "34.068930",
    lng: "-118.445127",
    latDeg: 34.06893,
    lngDeg: -118.445127,
  });
});

Deno.test("parseLocation accepts integer degrees: +34-118", () => {
  assert.deepEqual(parseLocation("+34-118"), {
    lat: "34",
    lng: "-118",
    latDeg: 34,
    lngDeg: -118,
  });
});

Deno.test("parseLocation accepts the corners of the range: -90+180, +90-180, +90.000-180.0", () => {
  assert.deepEqual(parseLocation("-90+180"), {
    lat: "-90",
    lng: "180",
    latDeg: -90,
    lngDeg: 180,
  });
  assert.deepEqual(parseLocation("+90-180"), {
    lat: "90",
    lng: "-180",
    latDeg: 90,
    lngDeg: -180,
  });
  assert.deepEqual(parseLocation("+90.000-180.0"), {
    lat: "90.000",
    lng: "-180.0",
    latDeg: 90,
    lngDeg: -180,
  });
  assert.ok(
    parseLocation("-90.000000000000000000000+180.00000000000000000000") !==
      null,
  );
});

Deno.test("parseLocation accepts zero and fractions below one degree: +0+0, -0.5+0.5", () => {
  assert.deepEqual(parseLocation("+0+0"), {
    lat: "0",
    lng: "0",
    latDeg: 0,
    lngDeg: 0,
  });
  assert.deepEqual(parseLocation("-0.5+0.5"), {
    lat: "-0.5",
    lng: "0.5",
    latDeg: -0.5,
    lngDeg: 0.5,
  });
  assert.deepEqual(parseLocation("-0-0")?.lat, "-0");
});

Deno.test("parseLocation drops a + sign and keeps a - sign in lat and lng", () => {
  assert.equal(parseLocation("+1.5+2.5")?.lat, "1.5");
  assert.equal(parseLocation("+1.5+2.5")?.lng, "2.5");
  assert.equal(parseLocation("-1.5-2.5")?.lat, "-1.5");
  assert.equal(parseLocation("-1.5-2.5")?.lng, "-2.5");
});

Deno.test("parseLocation keeps leading and trailing zeros as written", () => {
  const loc = parseLocation("+034.100-0118.4500");
  assert.equal(loc?.lat, "034.100");
  assert.equal(loc?.lng, "-0118.4500");
  assert.equal(loc?.latDeg, 34.1);
  assert.equal(loc?.lngDeg, -118.45);
});

Deno.test("parseLocation requires an explicit sign on both parts", () => {
  for (const bad of ["34-118", "34.0-118.0", "+34118", "+34.068930", "34118"]) {
    assert.equal(parseLocation(bad), null, bad);
  }
});

Deno.test("parseLocation rejects one part only", () => {
  for (
    const bad of [
      "+34",
      "-118.445127",
      "+90.0",
      "+",
      "-",
      "+-",
      "++",
      "+1+",
      "+1-",
    ]
  ) {
    assert.equal(parseLocation(bad), null, bad);
  }
});

Deno.test("parseLocation rejects a latitude beyond ±90, exactly: +90.0000001+0, +91+0", () => {
  for (
    const bad of [
      "+90.0000001+0",
      "-90.0000001+0",
      "+91+0",
      "-91+0",
      "+100+0",
      "+090.1+0",
      "+90.0000000000000000001+0",
      "-90.0000000000000000001+0",
    ]
  ) {
    assert.equal(parseLocation(bad), null, bad);
  }
});

Deno.test("parseLocation rejects a longitude beyond ±180, exactly: +0+180.1", () => {
  for (
    const bad of [
      "+0+180.1",
      "+0-180.1",
      "+0+181",
      "+0-181",
      "+0+1000",
      "+0+180.0000000000000000001",
      "+0-180.0000000000000000001",
    ]
  ) {
    assert.equal(parseLocation(bad), null, bad);
  }
});

Deno.test("parseLocation rejects malformed numbers: +34..0-118, +34.-118, +.5+1", () => {
  for (
    const bad of [
      "+34..0-118",
      "+34.-118",
      "+.5+1",
      "+34-.5",
      "+34-118.",
      "+3.4.5-118",
      "+1e1+1",
      "+0x1+1",
      "+NaN+1",
      "+Infinity+1",
      "+1+Infinity",
    ]
  ) {
    assert.equal(parseLocation(bad), null, bad);
  }
});

Deno.test("parseLocation rejects trailing junk and three parts", () => {
  for (
    const bad of [
      "+34-118x",
      "+34-118 ",
      " +34-118",
      "+34-118\n",
      "+34-118\r",
      "+34-118+5",
      "+34-118-5",
      "+1+1+1",
      "+34-118.5.",
    ]
  ) {
    assert.equal(parseLocation(bad), null, JSON.stringify(bad));
  }
});

Deno.test("parseLocation rejects letters, the empty string and short garbage", () => {
  for (
    const bad of [
      "",
      "+",
      "+1",
      "+1+",
      "abc",
      "+ab-cd",
      "+3a-118",
      "N34W118",
      "\x00\x00\x00\x00",
    ]
  ) {
    assert.equal(parseLocation(bad), null, JSON.stringify(bad));
  }
});

Deno.test("parseLocation rejects Unicode digits, signs and points", () => {
  for (
    const bad of [
      "+\u0663\u0664-118", // Arabic-Indic digits
      "+\uff13\uff14-118", // fullwidth digits
      "+34\u2212118", // MINUS SIGN
      "\uff0b34-118", // FULLWIDTH PLUS SIGN
      "+34\uff0e0-118", // FULLWIDTH FULL STOP
      "+34\xb7-118",
      "+\xb3\xb4-118", // superscript digits as bytes
    ]
  ) {
    assert.equal(parseLocation(bad), null, JSON.stringify(bad));
  }
});

Deno.test("parseLocation accepts exactly the in-range values (property vs scaled integers)", () => {
  // Degrees as integers of 10^-7 over a range a little wider than the valid one.
  const part = (max: number) =>
    fc.tuple(
      fc.constantFrom("+", "-"),
      fc.integer({ min: 0, max: (max + 2) * 1e7 }),
      fc.boolean(),
    );
  fc.assert(
    fc.property(part(90), part(180), ([ls, lv, lf], [gs, gv, gf]) => {
      const fmt = (v: number, frac: boolean) =>
        frac
          ? `${Math.floor(v / 1e7)}.${String(v % 1e7).padStart(7, "0")}`
          : String(Math.floor(v / 1e7));
      const latText = fmt(lv, lf);
      const lngText = fmt(gv, gf);
      const latUnits = lf ? lv : Math.floor(lv / 1e7) * 1e7;
      const lngUnits = gf ? gv : Math.floor(gv / 1e7) * 1e7;
      const loc = parseLocation(`${ls}${latText}${gs}${lngText}`);
      const valid = latUnits <= 90e7 && lngUnits <= 180e7;
      assert.equal(loc !== null, valid);
      if (loc !== null) {
        assert.equal(loc.lat, ls === "-" ? `-${latText}` : latText);
        assert.equal(loc.lng, gs === "-" ? `-${lngText}` : lngText);
        assert.equal(loc.latDeg, Number(`${ls}${latText}`));
        assert.equal(loc.lngDeg, Number(`${gs}${lngText}`));
      }
    }),
    RUNS,
  );
});

Deno.test("parseLocation never throws and rejects anything without two signed parts (property)", () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 30 }), (s) => {
      const loc = parseLocation(s);
      if (loc !== null) {
        assert.match(s, /^[+-]\d+(\.\d+)?[+-]\d+(\.\d+)?$/);
        assert.ok(Math.abs(loc.latDeg) <= 90 && Math.abs(loc.lngDeg) <= 180);
      }
    }),
    RUNS,
  );
});

Deno.test("distanceKm is zero from a point to itself", () => {
  assert.equal(distanceKm(34.06893, -118.445127, 34.06893, -118.445127), 0);
  assert.equal(distanceKm(0, 0, 0, 0), 0);
});

Deno.test("distanceKm from UCLA to downtown Los Angeles is about 18 km", () => {
  const d = distanceKm(34.06893, -118.445127, 34.0522, -118.2437);
  assert.ok(d > 17 && d < 19.5, `got ${d}`);
});

Deno.test("distanceKm between antipodes is about 20015 km (half the Earth's circumference)", () => {
  for (
    const [a, b, c, e] of [
      [0, 0, 0, 180],
      [90, 0, -90, 0],
      [34.06893, -118.445127, -34.06893, 61.554873],
    ]
  ) {
    const d = distanceKm(a, b, c, e);
    assert.ok(Math.abs(d - 20015) < 2, `got ${d}`);
  }
});

Deno.test("distanceKm: one degree of latitude is about 111.2 km", () => {
  const d = distanceKm(10, 20, 11, 20);
  assert.ok(Math.abs(d - 111.2) < 0.1, `got ${d}`);
});

Deno.test("distanceKm treats -180 and +180 as the same meridian", () => {
  assert.ok(distanceKm(10, -180, 10, 180) < 1e-6);
  assert.ok(distanceKm(0, 179.5, 0, -179.5) < 112);
});

Deno.test("distanceKm is symmetric, non-negative and at most half the circumference (property)", () => {
  const lat = fc.double({ min: -90, max: 90, noNaN: true });
  const lng = fc.double({ min: -180, max: 180, noNaN: true });
  fc.assert(
    fc.property(lat, lng, lat, lng, (a, b, c, d) => {
      const x = distanceKm(a, b, c, d);
      const y = distanceKm(c, d, a, b);
      assert.ok(Number.isFinite(x) && x >= 0 && x <= 20016, `got ${x}`);
      assert.ok(Math.abs(x - y) < 1e-6);
    }),
    RUNS,
  );
});
