import type { DeployEvent, DeployPlan, DeployReport } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { formatReport, progressReporter } from "./reporter.js";

const plan: DeployPlan = {
  strategy: "rolling",
  version: "v2",
  notes: [],
  phases: [1, 2].map((n) => ({ name: `batch ${n}/2`, instances: [`web-${n}`], onFailure: "revert" as const, steps: [] })),
};

function lines(events: DeployEvent[]): string[] {
  const written: string[] = [];
  const report = progressReporter({ isTTY: false, write: (text) => written.push(text) });
  for (const event of events) report(event);
  return written
    .join("")
    .split("\n")
    .filter(Boolean)
    .map((l) => l.replace(/^\[[^\]]*\] /, "").trimEnd());
}

describe("progressReporter in a log", () => {
  it("says which phase a step that started early belongs to, and nothing for the phase's own steps, an earlier phase's background stop or recovery's steps", () => {
    const out = lines([
      { type: "plan", plan },
      { type: "phase", phase: "batch 1/2", index: 0, total: 2 },
      { type: "step", phase: "batch 1/2", kind: "start", instance: "web-1", status: "ok", ms: 10 },
      { type: "step", phase: "batch 2/2", kind: "start", instance: "web-2", status: "ok", ms: 10 },
      { type: "phase", phase: "batch 2/2", index: 1, total: 2 },
      { type: "step", phase: "batch 2/2", kind: "check", instance: "web-2", status: "ok", ms: 10 },
      { type: "step", phase: "batch 1/2", kind: "stop", instance: "web-1", status: "ok", ms: 10 },
      { type: "step", phase: "batch 2/2 (revert)", kind: "stop", instance: "web-2", status: "ok", ms: 10 },
    ]);
    expect(out.filter((l) => l.startsWith("  "))).toEqual([
      "  start web-1 ok 10ms",
      "  start web-2 ok 10ms (for batch 2/2, started early)",
      "  check web-2 ok 10ms",
      "  stop web-1 ok 10ms",
      "  stop web-2 ok 10ms",
    ]);
  });
});

describe("a proxy's warnings", () => {
  const warning = "nginx on lb2: the previous worker generation was seen closed 12ms after the switch instant";

  it("are printed under the change in the log, and in the report's summary naming the generation", () => {
    const out = lines([{ type: "route", why: "switch", generation: "7+4", confirmMs: 40, drainMs: 0, serving: ["a"], background: true, warnings: [warning] }]);
    expect(out).toEqual(["  proxy generation 7+4: switch (confirmed in 40ms, draining in the background)", `  warning: ${warning}`]);
    const report = {
      id: "x",
      ok: true,
      strategy: "half-split",
      version: "v2",
      startedAt: "2026-12-03T00:00:00.000Z",
      durationMs: 1000,
      phases: [],
      instances: [],
      routes: [{ why: "switch", generation: "7+4", confirmMs: 40, drainMs: 0, cut: 0, warnings: [warning] }],
    } as unknown as DeployReport;
    expect(formatReport(report).split("\n")).toContain(`warning: proxy generation 7+4: ${warning}`);
  });
});
