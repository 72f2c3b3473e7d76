import type { RequestRecord } from "@nodrop/loadgen";
import { describe, expect, it } from "vitest";
import { firstAnswers, fleetFigures, servingOverTime } from "./fleet-sampler.js";
import { servedEndpoints } from "./routing-sampler.js";
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

  it("draws instances serving as a step line on an integer right axis, only when given", () => {
    const serving = [
      { atMs: -20, count: 4 },
      { atMs: 1500, count: 3 },
      { atMs: 2500, count: 8 },
      { atMs: 3000, count: 4 },
    ];
    const svg = timelineSvg({ title: "t", records, phases, serving });
    expectWellFormed(svg);
    expect(svg).toContain('data-counts="4,3,8,4"');
    expect(svg).toContain(">instances serving</text>");
    expect(svg).toContain("instances serving (min 3)");
    // Integer ticks one step above the largest count (8, step 2): 0, 2, ..., 10 and nothing in between.
    const ticks = [...(/<g class="serving"[^>]*>([\s\S]*?)<\/g>/.exec(svg)?.[1] ?? "").matchAll(/<text [^>]*>(\d+)<\/text>/g)].map((m) => Number(m[1]));
    expect(ticks).toEqual([0, 2, 4, 6, 8, 10]);
    // Steps: each count holds until the next sample, the last to the chart's end; a sample before the load starts is drawn from 0.
    const points = /class="serving-line"[^>]*points="([^"]*)"/.exec(svg)![1]!.split(" ").map((p) => p.split(",").map(Number));
    expect(points).toHaveLength(8);
    expect(points[0]![0]).toBe(56);
    expect(points[1]![0]).toBe(points[2]![0]);
    expect(points[2]![1]).toBeGreaterThan(points[1]![1]!); // 3 is lower on the chart than 4
    expect(points[4]![1]).toBeLessThan(points[0]![1]!); // 8 above 4

    expect(timelineSvg({ title: "t", records, phases })).not.toContain("instances serving");
    expect(timelineSvg({ title: "t", records, phases, serving: [] })).not.toContain("serving-line");
  });

  it("handles no records and no phases", () => {
    const svg = timelineSvg({ title: "empty", records: [], phases: [] });
    expectWellFormed(svg);
    expect(barCounts(svg)).toEqual({});
    expect(svg).toContain("failed (0)");
  });
});

// The numbers behind the chart's line and the bench table's "min serving" and "fleet memory" columns.
describe("servedEndpoints", () => {
  it("counts each instance once per slot it can be reached on, through the default, a switch target or a held pin", () => {
    const all = ["a", "b", "c", "d"];
    expect(servedEndpoints({ pools: { all }, defaultPool: "all", pins: {} })).toBe(4);
    // Rolling: one out.
    expect(servedEndpoints({ pools: { all: ["a", "b", "c"], spare: ["d"] }, defaultPool: "all", pins: {} })).toBe(3);
    // Surge: one swapped to its spare port, still four.
    expect(servedEndpoints({ pools: { all }, defaultPool: "all", pins: {}, slots: { a: 9001, b: 8002, c: 8003, d: 8004 } })).toBe(4);
    // Blue-green's switch routing: old slots by default, new ones after the instant: both serve meanwhile.
    const slots = { a: 8001, b: 8002, c: 8003, d: 8004 };
    const green = { a: 9001, b: 9002, c: 9003, d: 9004 };
    expect(servedEndpoints({ pools: { blue: all, green: all }, defaultPool: "blue", pins: { v2: "green" }, switchDefault: { to: "green", afterMs: 1500 }, slots, poolSlots: { green } })).toBe(8);
    // Half-split while half A restarts: its pin to v2 carries nobody until v2 has answered someone.
    const halfA = { pools: { b: ["c", "d"], a: ["a", "b"] }, defaultPool: "b", pins: { v2: "a" } };
    expect(servedEndpoints(halfA, () => false)).toBe(2);
    expect(servedEndpoints(halfA)).toBe(4);
    // Its switch: the default flips from half B to half A, both serve until then.
    expect(servedEndpoints({ ...halfA, switchDefault: { to: "a", afterMs: 1500 } }, () => false)).toBe(4);
    // A canary: its split's share reaches the canary pool from the first reload, before anyone holds the pin.
    const canary = { pools: { stable: ["b", "c", "d"], canary: ["a"] }, defaultPool: "stable", pins: { v2: "canary" }, split: { key: "$remote_addr", percent: 25, to: "canary" } };
    expect(servedEndpoints(canary, () => false)).toBe(4);
  });
});

describe("servingOverTime", () => {
  it("counts each routing from when it was seen, and a pin's pool from its version's first answer", () => {
    const all = { pools: { all: ["a", "b", "c", "d"] }, defaultPool: "all", pins: { v2: "all" } };
    const halfA = { pools: { b: ["c", "d"], a: ["a", "b"] }, defaultPool: "b", pins: { v2: "a" } };
    const first = firstAnswers([rec({ end: 50, version: "v1" }), rec({ end: 2500, version: "v2", status: 502 }), rec({ end: 3000, version: "v2" }), rec({ end: 4000, version: "v2" })]);
    expect(first).toEqual(new Map([["v1", 50], ["v2", 3000]]));
    expect(servingOverTime([{ atMs: 0, routing: all }, { atMs: 1000, routing: halfA }, { atMs: 5000, routing: all }], first)).toEqual([
      { atMs: 0, count: 4 },
      { atMs: 1000, count: 2 },
      { atMs: 3000, count: 4 },
    ]);
    expect(servingOverTime([], first)).toEqual([]);
  });
});

describe("fleetFigures", () => {
  const samples = {
    serving: [
      { atMs: 0, count: 4 },
      { atMs: 1200, count: 3 },
      { atMs: 5000, count: 4 },
      { atMs: 9000, count: 2 },
    ],
    memory: [
      { atMs: 900, rssKb: 100 * 1024 },
      { atMs: 1000, rssKb: 110 * 1024 },
      { atMs: 2000, rssKb: 250 * 1024 },
      { atMs: 8000, rssKb: 500 * 1024 },
    ],
  };

  it("takes the count in force when the window opens and every change inside it, memory just before and at its peak inside", () => {
    expect(fleetFigures(samples, 1500, 6000)).toEqual({ minServing: 3, memoryBeforeMb: 110, memoryPeakMb: 250 });
    // A window inside one sample's span still has the count then in force.
    expect(fleetFigures(samples, 5500, 5600)).toEqual({ minServing: 4, memoryBeforeMb: 250, memoryPeakMb: undefined });
  });

  it("says undefined when nothing was sampled", () => {
    expect(fleetFigures({ serving: [], memory: [] }, 0, 1000)).toEqual({ minServing: undefined, memoryBeforeMb: undefined, memoryPeakMb: undefined });
  });
});
