import { type DeployPlan, NodropError, type ObservedInstance, type PlanStep, type Routing, schema, servingInstances } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { type RollingOptions, rollingOptionsSchema } from "./options.js";
import { batchCount, rollingStrategy, toBatches } from "./rolling.js";

function fleet(versions: string[]): ObservedInstance[] {
  return versions.map((version, index) => ({ id: `web-${8011 + index}`, host: "local", address: "127.0.0.1", port: 8011 + index, version, healthy: true, inPool: true }));
}

const capabilities = { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true };
const ALL4 = ["web-8011", "web-8012", "web-8013", "web-8014"];

function plan(versions: string[], options: Partial<RollingOptions> = {}): DeployPlan {
  return rollingStrategy().plan({ instances: fleet(versions), version: "v2", proxy: capabilities, options: { batchSize: 1, minInPool: 1, soak: 0, ...options } });
}

function planError(versions: string[], options: Partial<RollingOptions>): NodropError {
  try {
    plan(versions, options);
  } catch (error) {
    expect(NodropError.is(error)).toBe(true);
    expect((error as NodropError).code).toBe("E_PLAN");
    return error as NodropError;
  }
  throw new Error("expected the plan to be refused");
}

const serving = (routing: Routing) => [...servingInstances(routing)].sort();

function routeOf(step: PlanStep | undefined): Routing {
  if (step?.kind !== "route") throw new Error(`expected a route step, got ${step?.kind}`);
  return step.routing;
}

function instancesOf(step: PlanStep | undefined): readonly string[] {
  if (step === undefined || step.kind === "route" || step.kind === "soak") throw new Error(`expected an instance step, got ${step?.kind}`);
  return step.instances;
}

describe("rollingStrategy.plan", () => {
  it("4 instances, batchSize 1: four batch phases and a finish", () => {
    const p = plan(["v1", "v1", "v1", "v1"]);
    expect(p.strategy).toBe("rolling");
    expect(p.version).toBe("v2");
    expect(p.phases.map((ph) => ph.name)).toEqual(["batch 1/4", "batch 2/4", "batch 3/4", "batch 4/4", "finish"]);
    p.phases.slice(0, 4).forEach((phase, index) => {
      const batch = [ALL4[index]!];
      expect(phase.instances).toEqual(batch);
      expect(phase.onFailure).toBe("revert");
      expect(phase.steps.map((s) => s.kind)).toEqual(["route", "stop", "update", "start", "check"]);
      // The first step takes exactly this batch out.
      expect(serving(routeOf(phase.steps[0]))).toEqual(ALL4.filter((id) => !batch.includes(id)));
      for (const step of phase.steps.slice(1)) expect(instancesOf(step)).toEqual(batch);
    });
    const finish = p.phases[4]!;
    expect(finish.instances).toEqual([]);
    expect(finish.steps).toHaveLength(1);
    expect(routeOf(finish.steps[0])).toEqual({ pools: { all: ALL4 }, defaultPool: "all", pins: {} });
    expect(p.notes).toEqual(["4 batches of up to 1; 3 of 4 instances serve while a batch is out"]);
  });

  it('batchSize "50%" of 4: two batches of two', () => {
    const p = plan(["v1", "v1", "v1", "v1"], { batchSize: "50%" });
    expect(p.phases.map((ph) => ph.name)).toEqual(["batch 1/2", "batch 2/2", "finish"]);
    expect(p.phases[0]!.instances).toEqual(["web-8011", "web-8012"]);
    expect(p.phases[1]!.instances).toEqual(["web-8013", "web-8014"]);
    expect(serving(routeOf(p.phases[0]!.steps[0]))).toEqual(["web-8013", "web-8014"]);
    expect(serving(routeOf(p.phases[1]!.steps[0]))).toEqual(["web-8011", "web-8012"]);
    expect(p.notes).toContain("2 batches of up to 2; 2 of 4 instances serve while a batch is out");
  });

  it("a batch of 2 over 3 left to do gives a last batch of 1", () => {
    const p = plan(["v1", "v1", "v1", "v2"], { batchSize: 2 });
    expect(p.phases.map((ph) => ph.instances)).toEqual([["web-8011", "web-8012"], ["web-8013"], []]);
  });

  it("skips instances already on the target version, keeps them serving, and says so", () => {
    const p = plan(["v1", "v2", "v1", "v2"]);
    expect(p.phases.map((ph) => ph.instances)).toEqual([["web-8011"], ["web-8013"], []]);
    for (const phase of p.phases.slice(0, 2)) {
      const routed = serving(routeOf(phase.steps[0]));
      expect(routed).toContain("web-8012");
      expect(routed).toContain("web-8014");
      expect(routed).toHaveLength(3);
    }
    expect(serving(routeOf(p.phases[2]!.steps[0]))).toEqual(ALL4);
    expect(p.notes[0]).toBe("2 instances already on v2: left as they are");
    expect(plan(["v2", "v1"]).notes[0]).toBe("1 instance already on v2: left as they are");
  });

  it("does nothing when every instance is on the target version", () => {
    const p = plan(["v2", "v2", "v2"]);
    expect(p.phases).toHaveLength(0);
    expect(p.notes).toEqual(["3 instances already on v2: left as they are", "nothing to do"]);
  });

  it("refuses a batch that is the whole fleet, naming strategy.batchSize", () => {
    const error = planError(["v1", "v1", "v1", "v1"], { batchSize: 4 });
    expect(error.message).toBe("strategy.batchSize: a batch of 4 out of 4 instances leaves 0 serving, below strategy.minInPool (1)");
    expect(planError(["v1", "v1", "v1", "v1"], { batchSize: "100%" }).message).toContain("strategy.batchSize: a batch of 4 out of 4");
  });

  it("refuses a single-instance fleet", () => {
    expect(planError(["v1"], {}).message).toContain("a fleet of one instance cannot be updated without dropping requests");
  });

  it("refuses a plan below minInPool", () => {
    const error = planError(["v1", "v1", "v1", "v1"], { batchSize: 2, minInPool: 3 });
    expect(error.message).toBe("strategy.batchSize: a batch of 2 out of 4 instances leaves 2 serving, below strategy.minInPool (3)");
    expect(plan(["v1", "v1", "v1", "v1"], { batchSize: 1, minInPool: 3 }).phases).toHaveLength(5);
  });

  it("with soak, each batch rejoins and soaks in its own phase and there is no finish", () => {
    const p = plan(["v1", "v1", "v1"], { soak: 5000 });
    expect(p.phases.map((ph) => ph.name)).toEqual(["batch 1/3", "batch 2/3", "batch 3/3"]);
    for (const phase of p.phases) {
      expect(phase.steps.map((s) => s.kind)).toEqual(["route", "stop", "update", "start", "check", "route", "soak"]);
      expect(serving(routeOf(phase.steps[0]))).toHaveLength(2);
      expect(serving(routeOf(phase.steps[5]))).toEqual(["web-8011", "web-8012", "web-8013"]);
      expect(phase.steps[6]).toEqual({ kind: "soak", ms: 5000 });
    }
  });

  it("never routes to an instance while it is stopped, updated or started", () => {
    for (const options of [{}, { batchSize: 2 }, { batchSize: "50%" }, { soak: 100 }] satisfies Partial<RollingOptions>[]) {
      const p = plan(["v1", "v1", "v1", "v1", "v1"], options);
      let inPool = new Set(fleet(["v1", "v1", "v1", "v1", "v1"]).map((i) => i.id));
      for (const phase of p.phases) {
        for (const step of phase.steps) {
          if (step.kind === "route") inPool = servingInstances(step.routing);
          else if (step.kind === "stop" || step.kind === "update" || step.kind === "start") {
            for (const id of step.instances) expect(inPool.has(id)).toBe(false);
          }
        }
      }
      expect(inPool.size).toBe(5);
    }
  });
});

describe("batchCount and toBatches", () => {
  it("resolves counts and percentages against the fleet size, at least 1", () => {
    expect(batchCount(3, 10)).toBe(3);
    expect(batchCount("25%", 10)).toBe(2);
    expect(batchCount("50%", 4)).toBe(2);
    expect(batchCount("1%", 4)).toBe(1);
    expect(batchCount("100%", 7)).toBe(7);
  });

  it("splits into consecutive batches", () => {
    expect(toBatches([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    expect(toBatches([], 3)).toEqual([]);
  });
});

describe("rollingOptionsSchema", () => {
  const parse = (value: unknown) => schema.parseOrThrow(rollingOptionsSchema, value, "strategy");

  function issues(value: unknown): NodropError {
    try {
      parse(value);
    } catch (error) {
      expect(NodropError.is(error)).toBe(true);
      expect((error as NodropError).code).toBe("E_CONFIG");
      return error as NodropError;
    }
    throw new Error("expected a parse error");
  }

  it("fills in defaults", () => {
    expect(parse({})).toEqual({ batchSize: 1, minInPool: 1, soak: 0, surge: false, prepareAhead: true, keepOld: 0 });
    expect(parse({ batchSize: "25%", soak: "30s", minInPool: 2 })).toEqual({ batchSize: "25%", minInPool: 2, soak: 30_000, surge: false, prepareAhead: true, keepOld: 0 });
  });

  it.each(["0%", 0, "101%", "50", -1, 1.5, "05%"])("batchSize %j is an error naming strategy.batchSize", (batchSize) => {
    const error = issues({ batchSize });
    expect(error.message).toContain("strategy.batchSize: expected a count (1) or a percentage of the fleet");
    expect(error.issues.map((i) => i.path)).toEqual(["strategy.batchSize"]);
  });

  it("names every other bad option", () => {
    const error = issues({ minInPool: 0, soak: "a while", batchsize: 2 });
    expect(error.issues.map((i) => i.path)).toEqual(["strategy.batchsize", "strategy.minInPool", "strategy.soak"]);
  });
});

describe("spreadByHost", () => {
  it("interleaves hosts so each batch spreads over them, keeping each host's order", async () => {
    const { spreadByHost } = await import("./rolling.js");
    const order = spreadByHost([
      { id: "a1", host: "a" },
      { id: "a2", host: "a" },
      { id: "b1", host: "b" },
      { id: "c1", host: "c" },
      { id: "b2", host: "b" },
    ]).map((i) => i.id);
    expect(order).toEqual(["a1", "b1", "c1", "a2", "b2"]);
  });
});
