/**
 * Reading the Prometheus text exposition format (version 0.0.4), pure: the samples of a
 * `/metrics` body as name, labels and value. Comments (`# HELP`, `# TYPE`) and lines that
 * do not parse are skipped, so a node that adds families, or a format detail this reader
 * does not know, never breaks `status`; the families it needs are looked up by name.
 *
 * @example
 * ```ts
 * const s = parseMetrics('herd_peer_up{peer="Ball"} 1\nherd_clients 3\n');
 * metricValue(s, "herd_clients"); // 3
 * metricValue(s, "herd_peer_up", { peer: "Ball" }); // 1
 * ```
 * @module
 */

/** One sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** Parses an exposition body into samples, skipping what is not a sample. */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const s = parseSample(line);
    if (s !== null) samples.push(s);
  }
  return samples;
}

function parseSample(line: string): Sample | null {
  const m = NAME.exec(line);
  if (m === null) return null;
  const name = m[0];
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === "{") {
    i++;
    for (;;) {
      while (line[i] === " " || line[i] === ",") i++;
      if (line[i] === "}") {
        i++;
        break;
      }
      const l = LABEL_NAME.exec(line.slice(i));
      if (l === null) return null;
      i += l[0].length;
      while (line[i] === " ") i++;
      if (line[i] !== "=") return null;
      i++;
      while (line[i] === " ") i++;
      if (line[i] !== '"') return null;
      i++;
      let value = "";
      for (;;) {
        if (i >= line.length) return null;
        const c = line[i++];
        if (c === '"') break;
        if (c === "\\") {
          const e = line[i++];
          value += e === "n" ? "\n" : e;
        } else value += c;
      }
      labels[l[0]] = value;
    }
  }
  const rest = line.slice(i).trim().split(/\s+/);
  if (rest.length < 1 || rest.length > 2 || rest[0] === "") return null;
  const value = parseValue(rest[0]);
  if (value === null) return null;
  return { name, labels, value };
}

function parseValue(text: string): number | null {
  if (text === "NaN") return NaN;
  if (text === "+Inf" || text === "Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  const v = Number(text);
  return text !== "" && Number.isFinite(v) ? v : null;
}

/**
 * The value of the first sample of `name` whose labels include `labels`, or undefined when
 * there is none.
 */
export function metricValue(
  samples: Sample[],
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) {
      return s.value;
    }
  }
  return undefined;
}

/** The sum over every sample of `name` (e.g. a counter with a `peer` label); undefined if none. */
export function metricSum(samples: Sample[], name: string): number | undefined {
  let sum: number | undefined;
  for (const s of samples) if (s.name === name) sum = (sum ?? 0) + s.value;
  return sum;
}

/** `label` value -> sample value for every sample of `name` (e.g. peer -> up). */
export function metricByLabel(
  samples: Sample[],
  name: string,
  label: string,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples) {
    if (s.name === name && s.labels[label] !== undefined) {
      out.set(s.labels[label], s.value);
    }
  }
  return out;
}
