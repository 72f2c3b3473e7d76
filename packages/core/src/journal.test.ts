import { describe, expect, it } from "vitest";
import { type JournalRecord, lastDeploy } from "./journal.js";

const at = "2026-11-27T18:00:00.000Z";

describe("lastDeploy", () => {
  it("finds the newest deploy, whether it ended, what ran before it and its last step", () => {
    const records: JournalRecord[] = [
      { at, type: "deploy", id: "a", version: "v2", strategy: "rolling", instances: [{ id: "x", from: "v1" }] },
      { at, type: "end", id: "a", ok: true, instances: [{ id: "x", version: "v2", inPool: true, outcome: "updated" }] },
      { at, type: "deploy", id: "b", version: "v3", strategy: "half-split", instances: [{ id: "x", from: "v2" }, { id: "y", from: "v2" }] },
      { at, type: "step", id: "b", phase: "half A", kind: "route", instance: undefined, status: "ok" },
      { at, type: "step", id: "b", phase: "half A", kind: "stop", instance: "x", status: "start" },
    ];
    expect(lastDeploy(records)).toEqual({
      id: "b",
      version: "v3",
      strategy: "half-split",
      at,
      finished: false,
      ok: undefined,
      from: { x: "v2", y: "v2" },
      lastStep: "half A: stop x (start)",
    });
    expect(lastDeploy(records.slice(0, 2))).toMatchObject({ id: "a", finished: true, ok: true });
    expect(lastDeploy([])).toBeUndefined();
  });
});
