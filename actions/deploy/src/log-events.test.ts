import type { DeployEvent } from "@nodrop/core";
import { afterEach, describe, expect, it, vi } from "vitest";
import { logEvents } from "./main.js";

/** What the action writes to the runner's log (workflow commands go to stdout). */
function logged(events: DeployEvent[]): string[] {
  const written: string[] = [];
  vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => (written.push(String(chunk)), true));
  const log = logEvents();
  for (const event of events) log(event);
  vi.restoreAllMocks();
  return written.join("").split(/\r?\n/).filter(Boolean);
}

afterEach(() => vi.restoreAllMocks());

describe("the action's log", () => {
  it("a proxy's warning on a change is a ::warning:: annotation naming the generation, its text made inert by core", () => {
    const lines = logged([
      { type: "phase", phase: "switch", index: 0, total: 1 },
      { type: "route", why: "switch", generation: "7+4", confirmMs: 40, drainMs: 0, serving: ["a"], warnings: ["nginx on lb2: the previous worker generation was seen closed 12ms after the switch instant"] },
      { type: "drained", why: "switch", generation: "7+4", drainMs: 300, error: "workers of the previous generation still running" },
    ]);
    expect(lines).toContain("::warning::nginx generation 7+4: nginx on lb2: the previous worker generation was seen closed 12ms after the switch instant");
    expect(lines).toContain("::warning::nginx generation 7+4: the background drain failed after 300ms: workers of the previous generation still running");
  });

  it("a step that started early says which batch it is for", () => {
    const lines = logged([
      { type: "plan", plan: { strategy: "rolling", version: "v2", notes: [], phases: [1, 2].map((n) => ({ name: `batch ${n}/2`, instances: [], steps: [], onFailure: "revert" as const })) } },
      { type: "phase", phase: "batch 1/2", index: 0, total: 2 },
      { type: "step", phase: "batch 2/2", kind: "start", instance: "web-2", status: "ok", ms: 5 },
    ]);
    expect(lines).toContain("start web-2: ok in 5ms (for batch 2/2, started early)");
  });

  it("a hook's output: every line under the hook's name, so none is read as a workflow command; a failed hook is a warning", () => {
    const lines = logged([
      { type: "hook", hook: "postDeploy", status: "start" },
      { type: "hook", hook: "postDeploy", status: "fail", ms: 12, output: ["::error::forged", "::set-output name=result::x"], detail: "the postDeploy hook exited with 3" },
      { type: "step", phase: "release", kind: "release", instance: undefined, host: "web1", status: "ok", ms: 30, detail: "uploaded 1 KiB in 3 ms, sha256 verified on the host" },
    ]);
    expect(lines).toEqual([
      "hook postDeploy: FAILED in 12ms (the postDeploy hook exited with 3)",
      "  postDeploy | ::error::forged",
      "  postDeploy | ::set-output name=result::x",
      "::warning::nodrop: the postDeploy hook exited with 3",
      "release web1: ok in 30ms (uploaded 1 KiB in 3 ms, sha256 verified on the host)",
    ]);
  });
});
