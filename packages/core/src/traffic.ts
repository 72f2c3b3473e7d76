import type { TrafficCounts } from "./types.js";

/**
 * Upper bounds (ms) of the latency histogram's buckets: 1 ms, then 10% wider each, to two
 * minutes; a last bucket takes the rest. A percentile read from it is at most 10% above the true
 * one, which is finer than any latency ratio worth gating on.
 */
export const LATENCY_BUCKETS_MS: readonly number[] = (() => {
  const bounds: number[] = [];
  for (let b = 1; b < 120_000; b *= 1.1) bounds.push(Math.round(b * 1000) / 1000);
  bounds.push(Number.POSITIVE_INFINITY);
  return bounds;
})();

/** The bucket a latency (ms) falls in. */
export function latencyBucket(ms: number): number {
  let low = 0;
  let high = LATENCY_BUCKETS_MS.length - 1;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (ms <= LATENCY_BUCKETS_MS[mid]!) high = mid;
    else low = mid + 1;
  }
  return low;
}

/** Counts with nothing in them. */
export function emptyCounts(): TrafficCounts {
  return { requests: 0, errors: 0, latency: [] };
}

/** The sum of counts (windows read one after another, or several endpoints of one version). */
export function addCounts(a: TrafficCounts, b: TrafficCounts): TrafficCounts {
  const latency: number[] = [];
  for (let i = 0; i < Math.max(a.latency.length, b.latency.length); i++) latency.push((a.latency[i] ?? 0) + (b.latency[i] ?? 0));
  return { requests: a.requests + b.requests, errors: a.errors + b.errors, latency };
}

/**
 * Whether counts from an adapter (a plugin's, or read back from a journal) are well formed: whole,
 * non-negative numbers, no more errors or latencies than requests, no more buckets than there are.
 */
export function validCounts(counts: unknown): counts is TrafficCounts {
  if (typeof counts !== "object" || counts === null) return false;
  const c = counts as Record<string, unknown>;
  const whole = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
  if (!whole(c.requests) || !whole(c.errors) || c.errors > c.requests) return false;
  if (!Array.isArray(c.latency) || c.latency.length > LATENCY_BUCKETS_MS.length || !c.latency.every(whole)) return false;
  return c.latency.reduce((sum: number, n: number) => sum + n, 0) <= c.requests;
}

/** The latency (ms, a bucket's upper bound) under which a share `q` (0.99) of the counted requests fell. */
export function percentileMs(counts: TrafficCounts, q: number): number | undefined {
  const total = counts.latency.reduce((sum, n) => sum + n, 0);
  if (total === 0) return undefined;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (const [i, n] of counts.latency.entries()) {
    seen += n;
    if (seen >= rank) return LATENCY_BUCKETS_MS[Math.min(i, LATENCY_BUCKETS_MS.length - 2)];
  }
  return LATENCY_BUCKETS_MS.at(-2);
}

/** One version's figures in a window, as the report and the journal show them. */
export interface VersionFigures {
  readonly version: string;
  readonly requests: number;
  readonly errors: number;
  /** errors / requests, 0 without requests. */
  readonly errorRate: number;
  readonly p50Ms?: number | undefined;
  readonly p90Ms?: number | undefined;
  /** The baseline's side of a comparison of p90s: a sampling margin above (see judgeGate). */
  readonly p95Ms?: number | undefined;
  readonly p99Ms?: number | undefined;
}

export function figuresOf(version: string, counts: TrafficCounts): VersionFigures {
  return {
    version,
    requests: counts.requests,
    errors: counts.errors,
    errorRate: counts.requests === 0 ? 0 : counts.errors / counts.requests,
    p50Ms: percentileMs(counts, 0.5),
    p90Ms: percentileMs(counts, 0.9),
    p95Ms: percentileMs(counts, 0.95),
    p99Ms: percentileMs(counts, 0.99),
  };
}

/** "v2: 412 requests, 3 5xx (0.7%), p50 4 ms, p99 21 ms". */
export function formatFigures(f: VersionFigures): string {
  const ms = (v: number | undefined) => (v === undefined ? "-" : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`);
  return `${f.version}: ${f.requests} requests, ${f.errors} 5xx (${(100 * f.errorRate).toFixed(1)}%), p50 ${ms(f.p50Ms)}, p99 ${ms(f.p99Ms)}`;
}
