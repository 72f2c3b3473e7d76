import { describe, expect, it } from "vitest";
import { DeployRun } from "./deploy-run.js";
import { singlePool } from "./routing.js";
import type { InstanceControl, ObservedInstance } from "./types.js";

const ids = ["web-1", "web-2", "web-3"];
const controls: InstanceControl[] = ids.map((id, i) => ({
  spec: { id, host: "local", address: "127.0.0.1", port: 8011 + i },
  stop: async () => {},
  update: async () => {},
  start: async () => {},
}));
const observed = (inPool: (id: string) => boolean): ObservedInstance[] => controls.map((c) => ({ ...c.spec, version: "v1", healthy: true, inPool: inPool(c.spec.id) }));

describe("DeployRun.begin with routings other proxies have in force", () => {
  it("an instance only another proxy routes to counts as reachable, until a change is applied on all of them", () => {
    const run = new DeployRun("v2", controls, () => {});
    // lb1 (what preflight planned from) routes web-1 and web-3; lb2 still routes web-2 and web-3.
    run.begin(observed((id) => id !== "web-2"), singlePool(["web-1", "web-3"]), [singlePool(["web-2", "web-3"])]);
    expect(run.reachable("web-2")).toBe(true);
    expect(run.routingKnown).toBe(false);
    expect([...run.serving()].sort()).toEqual(ids);
    // The first change (the reconcile phase's) is confirmed on every proxy: only it is in force.
    run.routingApplied(singlePool(["web-1", "web-3"]));
    expect(run.reachable("web-2")).toBe(false);
    expect(run.routingKnown).toBe(true);
  });

  it("without other routings, only the one read is in force", () => {
    const run = new DeployRun("v2", controls, () => {});
    run.begin(observed((id) => id !== "web-2"), singlePool(["web-1", "web-3"]));
    expect(run.reachable("web-2")).toBe(false);
  });
});
