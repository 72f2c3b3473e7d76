import type { DeployEvent, DeployPlan } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { progressReporter } from "./reporter.js";

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
  return written.map((l) => l.replace(/^\[[^\]]*\] /, "").trimEnd());
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
