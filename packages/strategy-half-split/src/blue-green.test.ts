import { type DeployPlan, NodropError, type ObservedInstance, type PlanStep, type Routing } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { blueGreenStrategy } from "./blue-green.js";

const ALL = { versionPinning: true, timedSwitch: true, affinity: true, poolSlots: true };

function fleet(versions: string[], slots = true): ObservedInstance[] {
  return versions.map((version, index) => ({
    id: `web-${8011 + index}`,
    host: "local",
    address: "127.0.0.1",
    port: 8011 + index,
    version,
    healthy: true,
    inPool: true,
    ...(slots ? { slots: [8011 + index, 9011 + index] as const, livePort: 8011 + index, idle: { port: 9011 + index, free: true } } : {}),
  }));
}

const plan = (instances: ObservedInstance[], proxy = ALL): DeployPlan => blueGreenStrategy().plan({ instances, version: "v2", proxy, options: { switchDelay: 1500 } });
const routes = (p: DeployPlan): Routing[] => p.phases.flatMap((ph) => ph.steps).flatMap((s: PlanStep) => (s.kind === "route" ? [s.routing] : []));

describe("blueGreenStrategy.plan", () => {
  it("starts every green slot while blue serves, then switches at one instant and takes blue out", () => {
    const p = plan(fleet(["v1", "v1", "v1"]));
    expect(p.phases.map((ph) => [ph.name, ph.onFailure, ph.steps.map((s) => (s.kind === "route" || s.kind === "soak" ? s.kind : `${s.kind}${s.slot === "idle" ? "@idle" : ""}${s.background ? "&" : ""}`))])).toEqual([
      ["green", "revert", ["update@idle", "start@idle", "check@idle"]],
      ["switch", "isolate", ["route", "route", "stop@idle&"]],
    ]);
    const [switched, after] = routes(p);
    // Nothing routes to green before the switch: the green phase has no route step at all.
    expect(switched).toEqual({
      pools: { blue: ["web-8011", "web-8012", "web-8013"], green: ["web-8011", "web-8012", "web-8013"] },
      defaultPool: "blue",
      pins: { v2: "green" },
      switchDefault: { to: "green", afterMs: 1500 },
      slots: { "web-8011": 8011, "web-8012": 8012, "web-8013": 8013 },
      poolSlots: { green: { "web-8011": 9011, "web-8012": 9012, "web-8013": 9013 } },
    });
    expect(after).toEqual({ pools: { all: ["web-8011", "web-8012", "web-8013"] }, defaultPool: "all", pins: { v2: "all" }, slots: { "web-8011": 9011, "web-8012": 9012, "web-8013": 9013 } });
  });

  it("without a proxy that can hold both slots of an instance, switches in one reload and says what that costs", () => {
    const p = plan(fleet(["v1", "v1"]), { ...ALL, poolSlots: false });
    expect(routes(p).map((r) => Object.keys(r.pools))).toEqual([["all"]]);
    expect(p.notes.join("\n")).toContain("old workers may still answer with the old version");
  });

  it("refuses a fleet with one port per instance, naming the instances", () => {
    expect(() => plan(fleet(["v1", "v1"], false))).toThrow(NodropError);
    expect(() => plan(fleet(["v1", "v1"], false))).toThrow(/strategy blue-green needs two slots on every instance it replaces: web-8011, web-8012 have one port/);
  });

  it("does nothing on a fleet already on the version, but reloads the routing in force and stops an app process a killed deploy left on an idle slot", () => {
    expect(plan(fleet(["v2", "v2"])).phases).toEqual([]);
    const left = fleet(["v2", "v2"]).map((i, n) => (n === 1 ? { ...i, idle: { port: 9012, free: false, version: "v1" } } : i));
    // The routing in force is reloaded first (a deploy killed between writing nginx's file and the
    // reload leaves its workers on the other slot), then the leftover stops.
    const [tidy] = plan(left).phases;
    expect(tidy?.name).toBe("old slots");
    expect(tidy?.steps.map((s) => s.kind)).toEqual(["route", "stop"]);
    expect(tidy?.steps[1]).toEqual({ kind: "stop", instances: ["web-8012"], slot: "idle" });
  });

  it("an instance already on the version leaves blue at once and serves green on its live slot", () => {
    const [switched] = routes(plan(fleet(["v1", "v2", "v1"])));
    expect(switched?.pools.blue).toEqual(["web-8011", "web-8013"]);
    expect(switched?.poolSlots?.green).toEqual({ "web-8011": 9011, "web-8012": 8012, "web-8013": 9013 });
  });
});
