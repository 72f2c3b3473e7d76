import type { RequestRecord } from "@nodrop/loadgen";
import { describe, expect, it } from "vitest";
import { timelineSvg } from "./timeline.js";

function rec(partial: Partial<RequestRecord> & Pick<RequestRecord, "end">): RequestRecord {
  return { client: 0, kind: "get", start: Math.max(0, partial.end - 5), status: 200, retried: false, ...partial };
}

/** Checks what an XML parser would: one root <svg>, every tag closed in order, no raw & or < in text. */
function expectWellFormed(svg: string): void {
  expect(svg.startsWith("<svg ")).toBe(true);
  expect(svg.trimEnd().endsWith("</svg>")).toBe(true);
  const stack: string[] = [];
  let roots = 0;
  for (const [tag, close, name, , selfClose] of svg.matchAll(/<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g)) {
    if (close) expect(stack.pop(), tag).toBe(name);
    else if (!selfClose) {
      if (stack.length === 0) roots++;
      stack.push(name!);
    }
  }
  expect(stack).toEqual([]);
  expect(roots).toBe(1);
  // Whatever the tag regex did not consume must be text: no stray markup, only known entities.
  const text = svg.replace(/<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g, "");
  expect(text).not.toMatch(/[<>]/);
  expect(text.replace(/&(amp|lt|gt|quot|apos);/g, "")).not.toContain("&");
}

/** Sums data-count of the bar segments, by data-version. */
function barCounts(svg: string): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const m of svg.matchAll(/<rect class="bar[^"]*" data-version="([^"]*)" data-count="(\d+)"/g)) sums[m[1]!] = (sums[m[1]!] ?? 0) + Number(m[2]);
  return sums;
}

describe("timelineSvg", () => {
  // 4 s of load: v1 answers, then v1 and v10 and v2 (natural order puts v10 last), a few failures.
  const records: RequestRecord[] = [];
  for (let t = 0; t < 4000; t += 10) records.push(rec({ end: t, version: t < 2000 ? "v1" : t % 30 === 0 ? "v10" : "v2" }));
  records.push(rec({ end: 1510, status: 502 }), rec({ end: 1520, status: 0, error: "ECONNRESET" }), rec({ end: 3100, status: 500, version: "v2" }));
  const phases = [
    { name: "drain web-8011", startMs: 1000, endMs: 1500 },
    { name: "restart web-8011", startMs: 1500, endMs: 2500 },
    { name: "undrain", startMs: 2500, endMs: 3000 },
  ];

  it("is well-formed SVG with the title escaped", () => {
    const svg = timelineSvg({ title: `v1 -> v2 <rolling> & "friends"`, records, phases });
    expectWellFormed(svg);
    expect(svg).toContain("v1 -&gt; v2 &lt;rolling&gt; &amp; &quot;friends&quot;");
    expect(svg).not.toContain("<rolling>");
    expect(svg).not.toMatch(/https?:\/\/(?!www\.w3\.org\/2000\/svg)/); // self-contained: no fonts or scripts fetched
  });

  it("draws every request once: per-version totals and failures equal the input", () => {
    const svg = timelineSvg({ title: "t", records, phases, bucketMs: 500 });
    const failed = records.filter((r) => r.error !== undefined || r.status < 200 || r.status > 299);
    const ok = records.filter((r) => !failed.includes(r));
    expect(barCounts(svg)).toEqual({
      v1: ok.filter((r) => r.version === "v1").length,
      v2: ok.filter((r) => r.version === "v2").length,
      v10: ok.filter((r) => r.version === "v10").length,
      failed: 3,
    });
    // Failures: red bar segments and red ticks under the axis; the legend lists versions in natural order.
    expect(svg.match(/class="bar failed"[^>]*fill="#d62728"/g)).toHaveLength(2); // buckets 1500-2000 and 3000-3500
    const ticks = [...svg.matchAll(/<line data-count="(\d+)"/g)].map((m) => Number(m[1]));
    expect(ticks.reduce((a, b) => a + b, 0)).toBe(3);
    const legend = [...svg.matchAll(/<text [^>]*>(v\d+) \((\d+)\)<\/text>/g)].map((m) => m[1]);
    expect(legend).toEqual(["v1", "v2", "v10"]);
    expect(svg).toContain("failed (3)");
  });

  it("keeps a version's colour across charts and y in requests per second", () => {
    const a = timelineSvg({ title: "a", records: [rec({ end: 10, version: "v2" })], phases: [], bucketMs: 100 });
    const b = timelineSvg({ title: "b", records: [rec({ end: 10, version: "v2" }), rec({ end: 20, version: "v3" })], phases: [], bucketMs: 100 });
    const fill = (svg: string) => /data-version="v2"[^>]*fill="(#[0-9a-f]+)"/.exec(svg)?.[1];
    expect(fill(a)).toBeDefined();
    expect(fill(a)).toBe(fill(b));
    // One request in a 100 ms bucket is 10 requests/s.
    expect(a).toContain("v2: 1 requests (10/s)");
  });

  it("shades phases as alternating labelled bands and drops labels that do not fit", () => {
    const svg = timelineSvg({ title: "t", records, phases });
    const bands = [...svg.matchAll(/<rect class="phase" data-phase="([^"]*)"[^>]*fill="(#[0-9a-f]+)"/g)];
    expect(bands.map((m) => m[1])).toEqual(phases.map((p) => p.name));
    expect(bands[0]![2]).not.toBe(bands[1]![2]);
    expect(bands[0]![2]).toBe(bands[2]![2]);
    for (const p of phases) expect(svg).toContain(`>${p.name}</text>`);

    // A band narrower than its label but wider than a line of text gets the label rotated.
    const narrow = timelineSvg({ title: "t", records, phases: [{ name: "restart web-8011", startMs: 1000, endMs: 1200 }] });
    expect(narrow).toMatch(/<text [^>]*transform="rotate\(90 [^>]*>restart web-8011<\/text>/);

    // 200 phases of 20 ms on a 600 px chart: bands too narrow for any label, each keeps a tooltip.
    const many = Array.from({ length: 200 }, (_, i) => ({ name: `step ${i}`, startMs: i * 20, endMs: i * 20 + 20 }));
    const crowded = timelineSvg({ title: "t", records, phases: many, width: 600 });
    expectWellFormed(crowded);
    expect(crowded.match(/<rect class="phase"/g)).toHaveLength(200);
    expect(crowded).not.toMatch(/>step \d+<\/text>/);
    expect(crowded).toContain("<title>step 199: 3.98–4 s</title>");
  });

  it("handles no records and no phases", () => {
    const svg = timelineSvg({ title: "empty", records: [], phases: [] });
    expectWellFormed(svg);
    expect(barCounts(svg)).toEqual({});
    expect(svg).toContain("failed (0)");
  });
});
