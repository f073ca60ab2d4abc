/**
 * Hostile client lines and what the node must answer to each, shared by the fuzz test over
 * TCP (`hostile_test.ts`) and the soak (`bench/soak.ts`): random bytes, mutated IAMAT and
 * WHATSAT lines, forged AT lines, odd white space, and over-long tokens. A seeded generator,
 * so a failure is reproduced by its seed.
 *
 * The expected reply of a line that parses is checked by shape (an IAMAT's skew depends on
 * the node's clock; a WHATSAT's places on the provider); every other reply to the byte.
 *
 * @module
 */

import { parseCommand } from "../lib/protocol.ts";
import { rng } from "./random.ts";

/** What the node must answer to one line. */
export type Expect =
  | { kind: "invalid"; reply: string }
  | { kind: "iamat"; prefix: string; suffix: string }
  | { kind: "whatsat" }
  | { kind: "whatsat-or-invalid"; reply: string }
  | { kind: "overflow"; reply: string };

/** One line to send (a byte string, without its `\n`) and its expected reply. */
export interface FuzzLine {
  text: string;
  expect: Expect;
}

const BLANKS = [" ", "\t", "\v", "\f", "\r", "  "];

/** Generates hostile lines for a node named `node` whose line limit is `limit` bytes. */
export class LineFuzzer {
  readonly #r: () => number;
  readonly #node: string;
  readonly #limit: number;
  readonly #known: string[];
  #n = 0;

  /** `known` are clients the node holds before the first line (WHATSATs name them). */
  constructor(seed: number, node: string, limit: number, known: string[]) {
    this.#r = rng(seed);
    this.#node = node;
    this.#limit = limit;
    this.#known = known;
  }

  #int(n: number): number {
    return Math.floor(this.#r() * n);
  }

  #pick<T>(xs: T[]): T {
    return xs[this.#int(xs.length)];
  }

  #iamat(): string {
    const client = this.#r() < 0.5
      ? this.#pick(this.#known)
      : `fz-${this.#int(1000)}`;
    const lat = (this.#r() * 180 - 90).toFixed(this.#int(7));
    const lng = (this.#r() * 360 - 180).toFixed(this.#int(7));
    const sign = (x: string) => (x.startsWith("-") ? x : "+" + x);
    const time = `${1_500_000_000 + this.#int(200_000_000)}.${this.#int(1e9)}`;
    return `IAMAT ${client} ${sign(lat)}${sign(lng)} ${time}`;
  }

  #whatsat(): string {
    return `WHATSAT ${this.#pick(this.#known)} ${1 + this.#int(50)} ${
      1 + this.#int(20)
    }`;
  }

  /** One to three byte edits: replace, delete, insert, or duplicate a field. */
  #mutate(line: string): string {
    let s = line;
    const edits = 1 + this.#int(3);
    for (let e = 0; e < edits; e++) {
      const at = this.#int(s.length + 1);
      const byte = String.fromCharCode(
        this.#r() < 0.5
          ? this.#pick([32, 43, 45, 46, 48, 57, 9, 13, 0, 255])
          : 1 + this.#int(255),
      ).replace("\n", " ");
      const op = this.#int(4);
      if (op === 0) s = s.slice(0, at) + byte + s.slice(at + 1);
      else if (op === 1) s = s.slice(0, at) + s.slice(at + 1);
      else if (op === 2) s = s.slice(0, at) + byte + s.slice(at);
      else {
        const f = s.split(" ");
        f.splice(this.#int(f.length), 0, this.#pick(f));
        s = f.join(" ");
      }
    }
    return s;
  }

  #random(): string {
    let s = "";
    const n = this.#int(200);
    for (let i = 0; i < n; i++) {
      const c = this.#int(255);
      s += String.fromCharCode(c === 10 ? 11 : c);
    }
    return s;
  }

  /** A line that is not over the limit. */
  next(): FuzzLine {
    this.#n++;
    const k = this.#r();
    let text: string;
    if (k < 0.15) text = this.#iamat();
    else if (k < 0.25) text = this.#whatsat();
    else if (k < 0.45) text = this.#mutate(this.#iamat());
    else if (k < 0.6) text = this.#mutate(this.#whatsat());
    else if (k < 0.7) {
      text = `AT Hamilton +0.${this.#int(1e9)} ${
        this.#pick(this.#known)
      } +34-118 ${1_600_000_000 + this.#int(1000)}.5`;
    } else if (k < 0.75) {
      const f = this.#iamat().split(" ");
      text = this.#pick(BLANKS) +
        f.map((x) => x + this.#pick(BLANKS)).join("");
    } else if (k < 0.78) text = this.#pick(["", " ", "\r", "IAMAT", "WHATSAT"]);
    else text = this.#random();
    return { text, expect: this.expect(text) };
  }

  /** A line of about 64 KiB (one token) that passes the limit: the connection's last. */
  overLong(): FuzzLine {
    const head = this.#pick(["IAMAT ", "WHATSAT ", "AT ", ""]);
    const text = head + "x".repeat(64 * 1024);
    return {
      text,
      expect: { kind: "overflow", reply: `? ${text.slice(0, this.#limit)}\n` },
    };
  }

  /** The reply `text` must get (sent with a `\n` after it). */
  expect(text: string): Expect {
    // The framer drops one CR before the LF.
    const line = text.endsWith("\r") ? text.slice(0, -1) : text;
    const cmd = parseCommand(line);
    const invalid = `? ${line}\n`;
    if (cmd.kind === "IAMAT") {
      return {
        kind: "iamat",
        prefix: `AT ${this.#node} `,
        suffix: ` ${cmd.client} ${cmd.location} ${cmd.time}\n`,
      };
    }
    if (cmd.kind === "WHATSAT") {
      return this.#known.includes(cmd.client)
        ? { kind: "whatsat" }
        : { kind: "whatsat-or-invalid", reply: invalid };
    }
    return { kind: "invalid", reply: invalid };
  }
}

const SKEW = /^[+-]\d+\.\d{9}$/;

/**
 * Checks the reply at the start of `got` against `e`: the number of chars it takes, 0 when
 * more bytes are needed, or an Error describing the mismatch.
 */
export function checkReply(got: string, e: Expect): number | Error {
  const line = () => {
    const i = got.indexOf("\n");
    return i < 0 ? null : got.slice(0, i + 1);
  };
  const fail = (want: string, have: string) =>
    new Error(
      `want ${JSON.stringify(want.slice(0, 200))}, got ${
        JSON.stringify(have.slice(0, 200))
      }`,
    );
  const exact = (want: string) => {
    if (got.length < want.length) {
      return want.startsWith(got) ? 0 : fail(want, got);
    }
    return got.startsWith(want) ? want.length : fail(want, got);
  };
  const whatsat = () => {
    const end = got.indexOf("\n\n");
    if (end < 0) {
      return got.length > 0 && !got.startsWith("AT ") ? fail("AT ...", got) : 0;
    }
    const reply = got.slice(0, end + 2);
    const nl = reply.indexOf("\n");
    return reply.startsWith("AT ") && reply[nl + 1] === "{"
      ? reply.length
      : fail("AT ...\\n{...}\\n\\n", reply);
  };
  switch (e.kind) {
    case "invalid":
    case "overflow":
      return exact(e.reply);
    case "iamat": {
      const l = line();
      if (l === null) return 0;
      const skew = l.slice(e.prefix.length, l.length - e.suffix.length);
      return l.startsWith(e.prefix) && l.endsWith(e.suffix) && SKEW.test(skew)
        ? l.length
        : fail(`${e.prefix}<skew>${e.suffix}`, l);
    }
    case "whatsat":
      return whatsat();
    case "whatsat-or-invalid":
      if (got.length < 2) return 0;
      return got.startsWith("? ") ? exact(e.reply) : whatsat();
  }
}
