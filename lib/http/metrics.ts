/**
 * Prometheus text exposition (format 0.0.4), small and allocation-free on the hot path:
 * a counter is a number that the owner increments with `++`, a histogram is an array of
 * bucket counts, and text is produced only when `/metrics` is scraped.
 *
 * Why not `npm:prom-client`: its `Counter.inc()` hashes the label set on every call and
 * keeps a registry at module level (a whole herd runs in one process in tests, so every
 * node would share it). Counting here is a field increment; measured cost on durable
 * IAMAT acks/s is in docs/http.md (below the run-to-run noise of `deno task bench`).
 *
 * @example
 * ```ts
 * const out = new Exposition();
 * out.family("herd_iamat_total", "counter", "IAMAT lines received.");
 * out.sample("herd_iamat_total", 3);
 * out.text(); // "# HELP herd_iamat_total IAMAT lines received.\n# TYPE ...\nherd_iamat_total 3\n"
 * ```
 * @module
 */

/** A Prometheus metric type. */
export type MetricType = "counter" | "gauge" | "histogram";

/** Label names and values of one sample. */
export type Labels = Record<string, string>;

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabel(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`);
}

function formatLabels(labels: Labels | undefined): string {
  if (labels === undefined) return "";
  const parts = Object.entries(labels).map(([k, v]) =>
    `${k}="${escapeLabel(v)}"`
  );
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** A histogram with fixed upper bounds; `observe` is a short loop and two additions. */
export class Histogram {
  readonly bounds: readonly number[];
  /** Non-cumulative counts per bucket; the last one is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Array(bounds.length + 1).fill(0);
  }

  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]) i++;
    this.counts[i]++;
    this.sum += v;
    this.count++;
  }
}

/** Builds one exposition text, family by family. */
export class Exposition {
  #out: string[] = [];

  /** Starts a family: its HELP and TYPE lines. */
  family(name: string, type: MetricType, help: string): this {
    this.#out.push(`# HELP ${name} ${help.replace(/\n/g, " ")}`);
    this.#out.push(`# TYPE ${name} ${type}`);
    return this;
  }

  /** One sample line. */
  sample(name: string, value: number, labels?: Labels): this {
    this.#out.push(`${name}${formatLabels(labels)} ${formatValue(value)}`);
    return this;
  }

  /** A family with one sample. */
  single(name: string, type: MetricType, help: string, value: number): this {
    return this.family(name, type, help).sample(name, value);
  }

  /** A histogram's bucket, sum and count lines. */
  histogram(name: string, h: Histogram, labels: Labels = {}): this {
    let cumulative = 0;
    h.bounds.forEach((b, i) => {
      cumulative += h.counts[i];
      this.sample(`${name}_bucket`, cumulative, { ...labels, le: String(b) });
    });
    cumulative += h.counts[h.bounds.length];
    this.sample(`${name}_bucket`, cumulative, { ...labels, le: "+Inf" });
    this.sample(`${name}_sum`, h.sum, labels);
    return this.sample(`${name}_count`, h.count, labels);
  }

  /** The text, ending in a line feed. */
  text(): string {
    return this.#out.join("\n") + "\n";
  }
}
