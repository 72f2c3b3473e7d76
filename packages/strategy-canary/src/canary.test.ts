import { NodropError, type ObservedInstance, type ProxyCapabilities, type Routing, schema } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { canaryCount, canaryStrategy } from "./canary.js";
import { type CanaryOptions, canaryOptionsSchema } from "./options.js";

const nginx: ProxyCapabilities = { versionPinning: true, timedSwitch: true, affinity: true, split: true, traffic: true };
const fleet = (n: number, version = "v1"): ObservedInstance[] =>
  Array.from({ length: n }, (_, i) => ({ id: `web-${8011 + i}`, host: `h${i % 2}`, address: "127.0.0.1", port: 8011 + i, version, healthy: true, inPool: true }));
const options = (o: Record<string, unknown> = {}): CanaryOptions => schema.parseOrThrow(canaryOptionsSchema, o, "strategy");
const plan = (instances: ObservedInstance[], o: Record<string, unknown> = {}, proxy = nginx) => canaryStrategy().plan({ instances, version: "v2", proxy, options: options(o) });
const routes = (p: ReturnType<typeof plan>): Routing[] => p.phases.flatMap((ph) => ph.steps.flatMap((s) => (s.kind === "route" ? [s.routing] : [])));

describe("canaryStrategy.plan", () => {
  it("grows the share step by step, each with a gate, then promotes to one pool of all on v2", () => {
    const p = plan(fleet(4), { steps: ["5%", "25%", "50%"], gate: "10s" });
    expect(p.phases.map((ph) => ph.name)).toEqual(["canary 5%", "canary 25%", "canary 50%", "promote web-8013", "promote web-8014", "finish"]);
    const gates = p.phases.flatMap((ph) => ph.steps.filter((s) => s.kind === "gate"));
    expect(gates.map((g) => g.kind === "gate" && [g.weight, g.ms, g.analysis !== undefined])).toEqual([
      [5, 10_000, true],
      [25, 10_000, true],
      [50, 10_000, true],
    ]);
    const shares = routes(p).map((r) => r.split?.percent);
    // Never shrinks: no client moves back to v1.
    const defined = shares.filter((s): s is number => s !== undefined);
    expect(defined).toEqual([...defined].sort((a, b) => a - b));
    expect(routes(p).at(-1)).toEqual({ pools: { all: ["web-8011", "web-8012", "web-8013", "web-8014"] }, defaultPool: "all", pins: { v2: "all" } });
    // Every routing from the first one that serves v2 pins v2 clients to v2's pool.
    for (const r of routes(p).slice(1)) expect(r.pools[r.pins.v2!]).toBeDefined();
  });

  it("takes as many instances as the share needs, leaving at least one on the old version", () => {
    expect([1, 5, 25, 26, 50, 99].map((w) => canaryCount(w, 4))).toEqual([1, 1, 1, 2, 2, 3]);
    expect(canaryCount(50, 2)).toBe(1);
  });

  it("moves a step's instances batchSize at a time, so capacity never drops by more than a batch; the share grows with them", () => {
    for (const batchSize of [1, 2]) {
      const p = plan(fleet(8), { steps: ["50%"], batchSize });
      const step = p.phases[0]!;
      expect(step.instances).toHaveLength(4);
      const stepRoutes = step.steps.flatMap((s) => (s.kind === "route" ? [s.routing] : []));
      // Route out, (replace), route in, for each batch; the step's own share last.
      expect(stepRoutes).toHaveLength(4 / batchSize + (4 / batchSize - 1) + 1);
      for (const r of stepRoutes) expect(new Set(Object.values(r.pools).flat()).size, `batchSize ${batchSize}`).toBeGreaterThanOrEqual(8 - batchSize);
      const shares = routes(p).flatMap((r) => (r.split ? [r.split.percent] : []));
      expect(shares).toEqual([...shares].sort((a, b) => a - b));
      expect(Math.max(...stepRoutes.flatMap((r) => (r.split ? [r.split.percent] : [])))).toBe(50);
      // One stop per batch, each of batchSize instances.
      const stops = step.steps.flatMap((s) => (s.kind === "stop" ? [s.instances.length] : []));
      expect(stops).toEqual(Array(4 / batchSize).fill(batchSize));
    }
  });

  it("reverts every canary instance on a failure of a later step (a breach puts every client back)", () => {
    const p = plan(fleet(4), { steps: ["25%", "50%"] });
    expect(p.phases[0]).toMatchObject({ instances: ["web-8011"], onFailure: "revert" });
    // Set though empty: the first step's own instances serve after its route, and go back too.
    expect(p.phases[0]!.revertAlso).toEqual([]);
    expect(p.phases[1]).toMatchObject({ instances: ["web-8012"], revertAlso: ["web-8011"] });
    // Promotion, after the gates: a failed batch goes back alone, as a rolling batch does.
    expect(p.phases[2]).toMatchObject({ name: "promote web-8013", onFailure: "revert" });
    expect(p.phases[2]!.revertAlso).toBeUndefined();
  });

  it("refuses shares that do not grow, or that reach 100%, naming the step", () => {
    for (const [steps, message] of [
      [["50%", "25%"], "strategy.steps[1]: 25% must be more than the step before (50%)"],
      [["10%", "100%"], "strategy.steps[1]: 100% must be above 0% and below 100%"],
    ] as const) {
      expect(() => plan(fleet(4), { steps })).toThrow(message);
    }
  });

  it("refuses a proxy that cannot split, pin or count, saying what to set", () => {
    expect(() => plan(fleet(4), {}, { ...nginx, split: false })).toThrow(/split clients by weight/);
    expect(() => plan(fleet(4), {}, { ...nginx, traffic: false })).toThrow(/proxy.accessLog/);
    expect(() => plan(fleet(4), { analysis: { enabled: false } }, { ...nginx, traffic: false })).not.toThrow();
    expect(() => plan(fleet(1))).toThrow(NodropError);
  });

  it("refuses a split key that is not a client variable", () => {
    expect(() => options({ key: "$request_id" })).toThrow(/strategy.key/);
  });

  it("after an interrupted canary, starts from the instances already on v2 and plans no step below their share", () => {
    const instances = fleet(4).map((i, n) => (n < 2 ? { ...i, version: "v2" } : i));
    const p = plan(instances, { steps: ["5%", "75%"] });
    expect(p.phases[0]!.instances).toEqual([]);
    expect(p.phases[1]!.instances).toEqual(["web-8013"]);
    // 5% is below the capacity already on v2 (2 of 4): the share starts at 50%.
    expect(routes(p)[0]!.split?.percent).toBe(50);
  });

  it("restores the old version alone after a failure, or both with v2 pinned when some serve v2", () => {
    const strategy = canaryStrategy();
    const context = { version: "v2", previous: ["v1"], instances: fleet(3).map((i) => i.id), options: options() };
    expect(strategy.recoveryRouting!(fleet(2), context)).toEqual({ pools: { all: ["web-8011", "web-8012"] }, defaultPool: "all", pins: {} });
    const mixed = [fleet(2)[0]!, { ...fleet(2)[1]!, version: "v2" }];
    expect(strategy.recoveryRouting!(mixed, context)).toEqual({ pools: { stable: ["web-8011"], canary: ["web-8012"] }, defaultPool: "stable", pins: { v2: "canary" } });
  });
});

describe("the first route of a canary", () => {
  it("has no pin for the new version while its first instances are replaced (a cookie from an aborted attempt must not lead there)", () => {
    const p = plan(fleet(4), { steps: ["25%"] });
    const [out, into] = routes(p);
    expect(out).toEqual({ pools: { stable: ["web-8012", "web-8013", "web-8014"] }, defaultPool: "stable", pins: {} });
    expect(into!.pins).toEqual({ v2: "canary" });
    expect(into!.pools.canary).toEqual(["web-8011"]);
  });
});
