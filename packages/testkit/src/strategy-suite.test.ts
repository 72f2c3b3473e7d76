import { type DeployPlan, NodropError, type PlanPhase, type PlanStep, type Strategy, replaceSteps, singlePool, surgeSteps, swapSlots } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { failed, runSuite } from "./fake-runner.js";
import { fleetOf, slotFleetScenarios, twoSlots } from "./fleet.js";
import { planProblems } from "./plan-check.js";
import { strategySuite } from "./strategy-suite.js";

type Defect =
  | "none"
  | "no-route"
  | "no-finish"
  | "back-before-check"
  | "start-before-update"
  | "async"
  | "counter"
  | "mutates"
  | "plain-error"
  | "pins-always"
  | "undeclared"
  | "empty-pool"
  | "touch-all"
  | "refuse-all"
  | "wrong-name";

/** A correct one-at-a-time strategy, and the same with one defect. */
function sample(defect: Defect = "none"): Strategy<Record<string, never>> {
  let calls = 0;
  return {
    name: "sample",
    plan({ instances, version }): DeployPlan {
      calls += 1;
      if (defect === "refuse-all") throw new NodropError("E_PLAN", "never");
      if (defect === "mutates") (instances as unknown as unknown[]).sort();
      const all = instances.map((i) => i.id);
      const todo = instances.filter((i) => defect === "touch-all" || !i.healthy || i.version !== version).map((i) => i.id);
      const finish: PlanPhase = { name: "finish", instances: [], onFailure: "revert", steps: [{ kind: "route", routing: singlePool(all), why: "all back" }] };
      const strategy = defect === "wrong-name" ? "other" : "sample";
      if (todo.length === 0) return { strategy, version, phases: instances.some((i) => !i.inPool) ? [finish] : [], notes: [] };
      const ready = new Set(instances.filter((i) => i.healthy).map((i) => i.id));
      const phases: PlanPhase[] = [];
      for (const id of todo) {
        const serving = [...ready].filter((r) => r !== id);
        if (serving.length === 0) {
          if (defect === "plain-error") throw new Error("nothing left to serve");
          throw new NodropError("E_PLAN", `nothing would serve while ${id} is out`);
        }
        const routing = singlePool(serving);
        const out = defect === "pins-always" ? { ...routing, pins: { [version]: "all" } } : defect === "empty-pool" ? { ...routing, pools: { ...routing.pools, spare: [] } } : routing;
        let steps: PlanStep[] = replaceSteps([id]);
        if (defect === "start-before-update") steps = [steps[0]!, steps[2]!, steps[1]!, steps[3]!];
        if (defect === "back-before-check") steps = [...steps.slice(0, 3), { kind: "route", routing: singlePool([...serving, id]), why: "back early" }, steps[3]!];
        phases.push({
          name: defect === "counter" ? `${id} (call ${calls})` : id,
          instances: defect === "undeclared" ? [] : [id],
          onFailure: "revert",
          steps: defect === "no-route" ? steps : [{ kind: "route", routing: out, why: `${id} out` }, ...steps],
        });
        ready.add(id);
      }
      if (defect !== "no-finish") phases.push(finish);
      const plan = { strategy, version, phases, notes: [] };
      return defect === "async" ? (Promise.resolve(plan) as unknown as DeployPlan) : plan;
    },
  };
}

const run = (defect: Defect) => runSuite((api) => strategySuite(api, { name: defect, create: () => sample(defect), options: {} }));

describe("strategySuite", () => {
  it("passes a correct strategy", async () => {
    const results = await run("none");
    expect(results.length).toBe(11);
    expect(failed(results)).toEqual([]);
  });

  it.each([
    ["no-route", "never stops or updates an instance a request can still reach"],
    ["no-finish", "the routing in force after the last step serves every instance"],
    ["back-before-check", "never routes requests to an instance that is down (stopped and not checked since, or unhealthy)"],
    ["start-before-update", "takes every instance not on the target through stop → update → start → check, in that order"],
    ["async", "plan() is synchronous, returns the same plan for the same input and leaves its input unchanged"],
    ["counter", "plan() is synchronous, returns the same plan for the same input and leaves its input unchanged"],
    ["mutates", "plan() is synchronous, returns the same plan for the same input and leaves its input unchanged"],
    ["plain-error", "refuses a fleet only with a NodropError E_PLAN, and plans an ordinary fleet"],
    ["refuse-all", "refuses a fleet only with a NodropError E_PLAN, and plans an ordinary fleet"],
    ["pins-always", "uses no pins, default switch or affinity that the proxy cannot do"],
    ["undeclared", "steps only touch instances their phase declares"],
    ["empty-pool", "every route step's routing passes validateRouting"],
    ["touch-all", "plans no instance steps for a fleet already on the target version"],
    ["wrong-name", "names its strategy and the version deployed; phases have a name and a failure policy"],
  ] as const)("fails a strategy with defect %s on: %s", async (defect, title) => {
    const results = await run(defect);
    expect(failed(results)).toContain(title);
  });

  it("names the fleet and the step in its messages", async () => {
    const results = await run("no-route");
    const error = results.find((r) => r.title === "never stops or updates an instance a request can still reach")!.error!;
    expect(error).toContain("2 instances, all on v1, a proxy with every capability: phase 1 \"web-1\" step 1 (stop): web-1 can still get requests");
  });
});

type SlotDefect = "none" | "stops-live" | "swaps-unchecked" | "swaps-unstarted" | "no-swap";

/** A correct one-at-a-time surge on two slots (start beside, check, swap, stop the old slot), and the same with one defect. */
function surgeSample(defect: SlotDefect = "none"): Strategy<Record<string, never>> {
  return {
    name: "surge-sample",
    plan({ instances, version }): DeployPlan {
      const all = instances.map((i) => i.id);
      const todo = instances.filter((i) => !i.healthy || i.version !== version).map((i) => i.id);
      const swapped = new Set<string>();
      const phases: PlanPhase[] = [];
      // Leftover processes on idle slots: the routing in force reloaded, then they stop (or, with the defect, they are left).
      const leftovers = instances.filter((i) => i.idle && !i.idle.free && !todo.includes(i.id)).map((i) => i.id);
      if (leftovers.length > 0) {
        phases.push({ name: "old slots", instances: leftovers, onFailure: "isolate", steps: [{ kind: "route", routing: singlePool(instances.filter((i) => i.inPool).map((i) => i.id)), why: "in force" }, { kind: "stop", instances: leftovers, slot: "idle" }] });
      }
      for (const id of todo) {
        swapped.add(id);
        let steps: PlanStep[] = surgeSteps([id], instances, version);
        if (defect === "swaps-unchecked") steps = steps.filter((step) => step.kind !== "check");
        if (defect === "swaps-unstarted") steps = steps.filter((step) => step.kind !== "start");
        // Served: every healthy instance, and those swapped to a checked new slot.
        const pool = all.filter((other) => swapped.has(other) || instances.find((i) => i.id === other)!.healthy);
        const swap: PlanStep = { kind: "route", routing: swapSlots(singlePool(pool), instances, defect === "no-swap" ? [] : swapped), why: `${id} swapped` };
        const retire: PlanStep = { kind: "stop", instances: [id], slot: "idle", background: true };
        const stopLive: PlanStep = { kind: "stop", instances: [id] };
        phases.push({ name: id, instances: [id], onFailure: "revert", steps: defect === "stops-live" ? [stopLive, ...steps, swap] : [...steps, swap, retire] });
      }
      if (todo.length === 0 && instances.some((i) => !i.inPool)) phases.push({ name: "finish", instances: [], onFailure: "revert", steps: [{ kind: "route", routing: singlePool(all), why: "all back" }] });
      return { strategy: "surge-sample", version, phases, notes: [] };
    },
  };
}

describe("strategySuite on two-slot fleets", () => {
  const runSlots = (defect: SlotDefect) => runSuite((api) => strategySuite(api, { name: defect, create: () => surgeSample(defect), options: {}, scenarios: slotFleetScenarios() }));

  it("passes a correct surge", async () => {
    const results = await runSlots("none");
    expect(results.filter((r) => r.error).map((r) => r.error)).toEqual([]);
  });

  it.each([
    ["stops-live", "never stops or updates an instance a request can still reach"],
    ["swaps-unchecked", "never routes requests to an instance that is down (stopped and not checked since, or unhealthy)"],
    ["swaps-unstarted", "takes every instance not on the target through stop → update → start → check, in that order"],
    ["no-swap", "takes every instance not on the target through stop → update → start → check, in that order"],
  ] as const)("fails a surge with defect %s on: %s", async (defect, title) => {
    expect(failed(await runSlots(defect))).toContain(title);
  });

  it("names the slot in its messages", async () => {
    const results = await runSlots("stops-live");
    const error = results.find((r) => r.title === "never stops or updates an instance a request can still reach")!.error!;
    // web-2 of a fleet is live on its second slot (9011), web-1 on its first.
    expect(error).toContain("phase 1 \"web-1\" step 1 (stop): web-1 on 8011 can still get requests");
  });

  it("an idle-slot step on an instance with one port is a shape problem", () => {
    const input = { instances: fleetOf(["v1", "v1"]), version: "v2", proxy: { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true }, options: {} };
    const plan: DeployPlan = { strategy: "x", version: "v2", notes: [], phases: [{ name: "a", instances: ["web-1"], onFailure: "revert", steps: [{ kind: "update", instances: ["web-1"], slot: "idle" }] }] };
    expect(planProblems(input, plan).map((p) => p.message)).toContain('phase 1 "a" step 1 (update, idle slot): web-1 has one port, so it has no idle slot');
  });

  it("a leftover process on an idle slot may be stopped on a fleet already on the target, nothing else", () => {
    const instances = twoSlots(fleetOf(["v2", "v2"]), (index) => (index === 0 ? "v1" : undefined));
    const input = { instances, version: "v2", proxy: { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true }, options: {} };
    expect(planProblems(input, surgeSample().plan(input))).toEqual([]);
    const restart: DeployPlan = { strategy: "x", version: "v2", notes: [], phases: [{ name: "a", instances: ["web-2"], onFailure: "revert", steps: [{ kind: "start", instances: ["web-2"], slot: "idle" }] }] };
    expect(planProblems(input, restart).map((p) => p.rule)).toContain("no-op");
  });
});

describe("planProblems", () => {
  const input = { instances: fleetOf(["v1", "v1", "v1"]), version: "v2", proxy: { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true }, options: {} };

  it("finds nothing wrong with a plan of the sample strategy", () => {
    expect(planProblems(input, sample().plan(input), "sample")).toEqual([]);
  });

  it("a pin of the version deployed makes its pool reachable once an instance on that version served", () => {
    const fleet = fleetOf(["v1", "v2", "v1"]);
    const routing = { pools: { a: ["web-1"], b: ["web-2", "web-3"] }, defaultPool: "b", pins: { v2: "a" } };
    const plan: DeployPlan = {
      strategy: "x",
      version: "v2",
      notes: [],
      phases: [{ name: "a", instances: ["web-1"], onFailure: "revert", steps: [{ kind: "route", routing, why: "" }, ...replaceSteps(["web-1"])] }],
    };
    const rules = planProblems({ ...input, instances: fleet }, plan).map((p) => p.rule);
    // web-2 serves v2, so clients may hold the v2 pin that leads to web-1 while it is stopped.
    expect(rules).toContain("stop-reachable");
    // With no instance on v2 yet, nobody holds the pin: the same plan is safe.
    expect(planProblems(input, plan).filter((p) => p.rule === "stop-reachable")).toEqual([]);
  });
});

describe("knownFailures and hooks", () => {
  it("a known failure passes while it fails and fails once it passes", async () => {
    const stillBroken = await runSuite((api) =>
      strategySuite(api, { name: "x", create: () => sample("no-finish"), options: {}, knownFailures: { "the routing in force after the last step serves every instance": "issue 1" } }),
    );
    expect(failed(stillBroken)).toEqual([]);
    expect(stillBroken.map((r) => r.title)).toContain("the routing in force after the last step serves every instance [known failure: issue 1]");
    const fixed = await runSuite((api) =>
      strategySuite(api, { name: "x", create: () => sample(), options: {}, knownFailures: { "the routing in force after the last step serves every instance": "issue 1" } }),
    );
    expect(failed(fixed)).toEqual(["the routing in force after the last step serves every instance [known failure: issue 1]"]);
    expect(fixed.find((r) => r.error)!.error).toContain("remove it from knownFailures");
  });

  it("a knownFailures title that matches no check is refused", async () => {
    await expect(runSuite((api) => strategySuite(api, { name: "x", create: () => sample(), options: {}, knownFailures: { "no such check": "?" } }))).rejects.toThrow(
      /knownFailures names no check of this suite: "no such check"/,
    );
  });
});
