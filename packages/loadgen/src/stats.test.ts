import { describe, expect, it } from "vitest";
import { mulberry32 } from "./prng.js";
import { formatStats, summarize } from "./stats.js";
import type { RequestRecord } from "./types.js";
import { compareVersions } from "./version.js";

function rec(partial: Partial<RequestRecord> & Pick<RequestRecord, "start" | "end">): RequestRecord {
  return { client: 0, kind: "get", status: 200, retried: false, ...partial };
}

describe("compareVersions", () => {
  it("compares digit runs numerically", () => {
    expect(compareVersions("v10", "v9")).toBeGreaterThan(0);
    expect(compareVersions("v9", "v2")).toBeGreaterThan(0);
    expect(compareVersions("v2", "v10")).toBeLessThan(0);
    expect(compareVersions("1.10.0", "1.9.3")).toBeGreaterThan(0);
    expect(compareVersions("release-2", "release-2")).toBe(0);
    expect(compareVersions("v1", "v1.1")).toBeLessThan(0);
    expect(["v10", "v2", "v9", "v1"].sort(compareVersions)).toEqual(["v1", "v2", "v9", "v10"]);
  });
});

describe("mulberry32", () => {
  it("is deterministic per seed", () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const xs = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
    expect(mulberry32(43)()).not.toBe(xs[0]);
  });
});

describe("summarize", () => {
  it("counts failures as users see them, raw failures and retries", () => {
    const stats = summarize(
      [
        rec({ start: 0, end: 1 }),
        rec({ start: 1, end: 2, retried: true }), // recovered by the retry
        rec({ start: 2, end: 3, retried: true, status: 0, error: "ECONNRESET" }), // retried, still failed
        rec({ start: 3, end: 4, kind: "post", status: 0, error: "ECONNRESET" }),
        rec({ start: 4, end: 5, status: 502 }),
        rec({ start: 5, end: 6, status: 304 }),
      ],
      2000,
    );
    expect(stats).toMatchObject({ requests: 6, ok: 2, failed: 4, rawFailed: 5, retried: 2, rps: 3 });
    expect(stats.errors).toEqual({ ECONNRESET: 2, http_502: 1, http_304: 1 });
    expect(stats.byStatus).toEqual({ "0": 2, "200": 2, "304": 1, "502": 1 });
  });

  it("detects version regressions per client and late old-version responses", () => {
    const stats = summarize(
      [
        rec({ client: 0, start: 0, end: 10, version: "v10" }),
        rec({ client: 0, start: 5, end: 15, version: "v9" }), // overlapping: not a regression
        rec({ client: 0, start: 20, end: 25, version: "v9" }), // regression + lateOld
        rec({ client: 0, start: 26, end: 27, version: "v10" }),
        rec({ client: 1, start: 0, end: 30, version: "v9" }), // started before v10 was seen
        rec({ client: 1, start: 40, end: 50, version: "v9" }), // lateOld, but client 1 never saw v10
        rec({ client: 1, start: 51, end: 52, status: 502 }), // no version header
      ],
      100,
    );
    expect(stats.versionRegressions).toBe(1);
    expect(stats.lateOld).toBe(2);
    expect(stats.firstNewAt).toBe(10);
    expect(stats.lastOldAt).toBe(50);
    expect(stats.byVersion).toEqual({ v10: 2, v9: 4 });
  });

  it("counts instance switches between consecutive successful responses", () => {
    const stats = summarize(
      [
        rec({ client: 0, start: 0, end: 1, instance: "a" }),
        rec({ client: 0, start: 2, end: 3, instance: "a" }),
        rec({ client: 0, start: 4, end: 5, instance: "b", status: 500 }), // failed: ignored
        rec({ client: 0, start: 6, end: 7, instance: "b" }),
        rec({ client: 0, start: 8, end: 9, instance: "a" }),
        rec({ client: 1, start: 0, end: 1, instance: "b" }),
      ],
      10,
      3,
    );
    expect(stats.switchesPerClient).toEqual([2, 0, 0]);
  });

  it("handles an empty run and formats stats", () => {
    const stats = summarize([], 0);
    expect(stats).toMatchObject({ requests: 0, ok: 0, failed: 0, rps: 0, versionRegressions: 0, lateOld: 0 });
    expect(stats.firstNewAt).toBeUndefined();
    const text = formatStats(summarize([rec({ start: 0, end: 1, version: "v1" })], 1000));
    expect(text).toContain("requests: 1");
    expect(text).toContain("failed: 0 (without the resend of stale keep-alive requests: 0; resending GETs only, like Go: 0), resent: 0 (POST 0)");
    expect(text).toContain("by version: v1=1");
  });
});
