import { describe, expect, it } from "vitest";
import { binomialTail, judgeGate } from "./canary-gate.js";
import { LATENCY_BUCKETS_MS, addCounts, figuresOf, latencyBucket, percentileMs, validCounts } from "./traffic.js";
import type { CanaryAnalysis, TrafficCounts } from "./types.js";

/** Counts of `latencies` (ms), `errors` of them 5xx. */
function counts(latencies: readonly number[], errors = 0): TrafficCounts {
  const latency: number[] = [];
  for (const ms of latencies) {
    const b = latencyBucket(ms);
    while (latency.length <= b) latency.push(0);
    latency[b]! += 1;
  }
  return { requests: latencies.length, errors, latency };
}

const analysis: CanaryAnalysis = { minRequests: 50, maxErrorRateIncrease: 0.01, maxLatencyRatio: 2, latencyFloorMs: 25, intervalMs: 1000, extraMs: 10_000 };
const many = (n: number, ms: number) => Array.from({ length: n }, () => ms);

describe("latency histogram", () => {
  it("puts a latency in the first bucket whose bound is at least it, and reads percentiles at most 10% high", () => {
    expect(latencyBucket(0)).toBe(0);
    expect(latencyBucket(1)).toBe(0);
    expect(LATENCY_BUCKETS_MS[latencyBucket(1.05)]).toBeGreaterThanOrEqual(1.05);
    for (const ms of [3, 17, 250, 4999, 61_000]) {
      const p = percentileMs(counts([ms]), 0.5)!;
      expect(p).toBeGreaterThanOrEqual(ms);
      expect(p).toBeLessThanOrEqual(ms * 1.1 + 0.001);
    }
    expect(latencyBucket(10_000_000)).toBe(LATENCY_BUCKETS_MS.length - 1);
  });

  it("p50 and p99 of a known distribution: 98 fast requests and 2 slow ones", () => {
    const c = counts([...many(98, 5), 800, 900]);
    expect(percentileMs(c, 0.5)).toBeLessThan(6);
    expect(percentileMs(c, 0.99)).toBeGreaterThanOrEqual(800);
    expect(percentileMs({ requests: 0, errors: 0, latency: [] }, 0.5)).toBeUndefined();
  });

  it("adds counts bucket by bucket", () => {
    const sum = addCounts(counts([5, 5], 1), counts([900]));
    expect(sum.requests).toBe(3);
    expect(sum.errors).toBe(1);
    expect(sum.latency.reduce((a, b) => a + b, 0)).toBe(3);
  });

  it("refuses malformed counts from an adapter: negative, fractional, more errors than requests, too many buckets", () => {
    expect(validCounts(counts([1, 2, 3], 1))).toBe(true);
    for (const bad of [
      null,
      { requests: -1, errors: 0, latency: [] },
      { requests: 1.5, errors: 0, latency: [] },
      { requests: 1, errors: 2, latency: [] },
      { requests: 1, errors: 0, latency: [5] },
      { requests: 1, errors: 0, latency: "x" },
      { requests: 1, errors: 0, latency: new Array(LATENCY_BUCKETS_MS.length + 1).fill(0) },
    ]) {
      expect(validCounts(bad)).toBe(false);
    }
  });
});

describe("judgeGate", () => {
  const baseline = figuresOf("v1", counts(many(500, 8), 1));

  it("waits while the gate's time runs, then passes with enough requests within the thresholds", () => {
    const canary = figuresOf("v2", counts(many(60, 9)));
    expect(judgeGate(canary, baseline, analysis, 1000, 5000).decision).toBe("wait");
    expect(judgeGate(canary, baseline, analysis, 5000, 5000)).toMatchObject({ decision: "pass" });
  });

  it("fails as soon as enough requests show a 5xx rate above the old one's by more than allowed", () => {
    const canary = figuresOf("v2", counts(many(60, 9), 6));
    const verdict = judgeGate(canary, baseline, analysis, 1000, 5000);
    expect(verdict.decision).toBe("fail");
    expect(verdict.reason).toContain("5xx rate 10%");
  });

  it("does not judge errors on fewer than minRequests, and an equal rate on both sides passes", () => {
    expect(judgeGate(figuresOf("v2", counts(many(10, 9), 5)), baseline, analysis, 1000, 5000).decision).toBe("wait");
    const bad = figuresOf("v1", counts(many(500, 8), 50));
    expect(judgeGate(figuresOf("v2", counts(many(100, 9), 10)), bad, analysis, 5000, 5000).decision).toBe("pass");
  });

  it("fails a p99 over the ratio, but not one under the floor (a few ms either way is noise)", () => {
    expect(judgeGate(figuresOf("v2", counts(many(300, 300))), baseline, analysis, 1000, 5000)).toMatchObject({ decision: "fail", reason: expect.stringContaining("p99 latency") });
    // 8 ms against 20 ms: 2.5x, under the 25 ms floor's 2x (50 ms).
    expect(judgeGate(figuresOf("v2", counts(many(300, 20))), baseline, analysis, 5000, 5000).decision).toBe("pass");
    // Under a few hundred requests on a side, p90s are compared: over fewer, p99 is just the slowest one.
    const fewOld = figuresOf("v1", counts(many(150, 8)));
    expect(judgeGate(figuresOf("v2", counts(many(300, 300))), fewOld, analysis, 5000, 5000)).toMatchObject({ decision: "fail", reason: expect.stringContaining("p90 latency") });
    expect(judgeGate(figuresOf("v2", counts([...many(99, 5), 60])), baseline, analysis, 5000, 5000).decision).toBe("pass");
    // A thin old side (under minRequests): no latency verdict.
    expect(judgeGate(figuresOf("v2", counts(many(300, 300))), figuresOf("v1", counts(many(10, 8))), analysis, 5000, 5000).decision).toBe("pass");
  });

  it("does not fail a good release whose p90 falls on the slow tenth by chance: the old version's p95 is its match under a few hundred requests", () => {
    // As the load makes it: a tenth of the requests take 500 ms on both versions. 150 on v2, 12% slow by chance; 400 on v1, 9% slow.
    const v2 = figuresOf("v2", counts([...many(132, 1), ...many(18, 520)]));
    const v1 = figuresOf("v1", counts([...many(364, 1), ...many(36, 520)]));
    expect(v2.p90Ms).toBeGreaterThan(400);
    expect(v1.p90Ms).toBeLessThan(10);
    expect(judgeGate(v2, v1, analysis, 5000, 5000)).toMatchObject({ decision: "pass" });
    // A release slower on every page still fails: its p90 is far above the old p95 too.
    const slow = figuresOf("v2", counts(many(150, 300)));
    const fast = figuresOf("v1", counts(many(400, 1)));
    expect(judgeGate(slow, fast, analysis, 5000, 5000)).toMatchObject({ decision: "fail", reason: expect.stringContaining("(its p95)") });
  });

  it("does not fail on one unlucky 5xx among few requests, nor let a thin, failing baseline mask a failing canary", () => {
    // 1 in 50 (2%) against 0.2%: above the allowance, but likely for a version at 1.2%.
    expect(judgeGate(figuresOf("v2", counts(many(50, 9), 1)), baseline, analysis, 5000, 5000).decision).toBe("pass");
    // 30% failing against a baseline of 3 requests, one failed: the baseline counts as 0%.
    const thin = figuresOf("v1", counts(many(3, 8), 1));
    expect(judgeGate(figuresOf("v2", counts(many(100, 9), 30)), thin, analysis, 1000, 5000).decision).toBe("fail");
  });

  it("fails on 5xx the proxy could not attribute (a pool with no live server)", () => {
    expect(judgeGate(figuresOf("v2", counts(many(60, 9))), baseline, analysis, 1000, 5000, 3)).toMatchObject({ decision: "fail", reason: expect.stringContaining("could not attribute") });
  });

  it("binomial tails: exact on small cases, stable on large ones", () => {
    expect(binomialTail(0, 10, 0.5)).toBe(1);
    expect(binomialTail(1, 2, 0.5)).toBeCloseTo(0.75, 10);
    expect(binomialTail(2, 2, 0.5)).toBeCloseTo(0.25, 10);
    expect(binomialTail(11, 10, 0.5)).toBe(0);
    // 300 5xx of 10,000 at a true 1%: far out in the tail; 100 of 10,000: about half.
    expect(binomialTail(300, 10_000, 0.01)).toBeLessThan(1e-12);
    expect(binomialTail(100, 10_000, 0.01)).toBeGreaterThan(0.4);
    expect(binomialTail(100, 10_000, 0.01)).toBeLessThan(0.6);
  });

  it("waits up to extraMs for minRequests, then fails as inconclusive", () => {
    const few = figuresOf("v2", counts(many(10, 9)));
    expect(judgeGate(few, baseline, analysis, 9000, 5000).decision).toBe("wait");
    expect(judgeGate(few, baseline, analysis, 15_001, 5000)).toMatchObject({ decision: "fail", reason: expect.stringContaining("inconclusive") });
  });
});
