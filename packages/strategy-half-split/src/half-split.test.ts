import type { ObservedInstance, PlanStep, ProxyCapabilities, Routing } from "@nodrop/core";
import { NodropError, schema } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { halfSplitStrategy, splitHalves } from "./half-split.js";
import { DEFAULT_SWITCH_DELAY, halfSplitOptionsSchema } from "./options.js";

const caps: ProxyCapabilities = { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true };
const options = schema.parseOrThrow(halfSplitOptionsSchema, {}, "strategy");

function fleet(spec: [host: string, count: number][], version = "v1"): ObservedInstance[] {
  return spec.flatMap(([host, count]) =>
    Array.from({ length: count }, (_, i) => ({ id: `${host}-${8011 + i}`, host, address: "10.0.0.1", port: 8011 + i, version, healthy: true, inPool: true })),
  );
}

const routes = (steps: readonly PlanStep[]) => steps.filter((s): s is Extract<PlanStep, { kind: "route" }> => s.kind === "route").map((s) => s.routing);

describe("splitHalves", () => {
  it("balanced: each half keeps instances on every host", () => {
    const { a, b } = splitHalves(fleet([["web1", 2], ["web2", 2], ["web3", 2]]), options);
    expect(a).toEqual(["web1-8011", "web2-8011", "web3-8011"]);
    expect(b).toEqual(["web1-8012", "web2-8012", "web3-8012"]);
  });

  it("balanced with odd counts gives the extra instance to the smaller half", () => {
    const { a, b } = splitHalves(fleet([["web1", 1], ["web2", 1], ["web3", 1]]), options);
    expect([a.length, b.length]).toEqual([2, 1]);
    expect(new Set([...a, ...b]).size).toBe(3);
  });

  it("by-host: each half is whole machines", () => {
    const { a, b } = splitHalves(fleet([["web1", 2], ["web2", 2], ["web3", 2], ["web4", 2]]), { ...options, split: "by-host" });
    expect(a).toEqual(["web1-8011", "web1-8012", "web2-8011", "web2-8012"]);
    expect(b).toEqual(["web3-8011", "web3-8012", "web4-8011", "web4-8012"]);
  });

  it("by-host needs two hosts; explicit lists must cover every instance once", () => {
    expect(() => splitHalves(fleet([["web1", 4]]), { ...options, split: "by-host" })).toThrow(/at least two hosts/);
    const instances = fleet([["web1", 3]]);
    const explicit = (a: string[], b: string[]) => () => splitHalves(instances, { ...options, split: "explicit", a, b });
    expect(explicit(["web1-8011"], ["web1-8012", "web1-8013"])()).toEqual({ a: ["web1-8011"], b: ["web1-8012", "web1-8013"] });
    expect(explicit(["web1-8011"], ["web1-8012"])).toThrow(/web1-8013 in neither half/);
    expect(explicit(["web1-8011", "web1-8012"], ["web1-8012", "web1-8013"])).toThrow(/both list web1-8012/);
    expect(explicit(["nope"], ["web1-8012", "web1-8013", "web1-8011"])).toThrow(/unknown instance "nope"/);
  });
});

describe("halfSplitStrategy().plan", () => {
  const plan = (instances: ObservedInstance[], o = options, proxy = caps) => halfSplitStrategy().plan({ instances, version: "v2", proxy, options: o });

  it("stages the pin before A serves, switches at one instant, drains B, then rejoins all", () => {
    const result = plan(fleet([["local", 4]]));
    expect(result.phases.map((p) => [p.name, p.onFailure])).toEqual([
      ["half A", "revert"],
      ["switch, half B", "isolate"],
      ["finish", "isolate"],
    ]);
    const [phase1, phase2, phase3] = result.phases;
    const a = ["local-8011", "local-8012"];
    const b = ["local-8013", "local-8014"];
    expect(phase1!.steps.map((s) => s.kind)).toEqual(["route", "stop", "update", "start", "check"]);
    expect(routes(phase1!.steps)).toEqual([{ pools: { a, b }, defaultPool: "b", pins: { v2: "a" } } satisfies Routing]);
    expect(phase2!.steps.map((s) => s.kind)).toEqual(["route", "route", "stop", "update", "start", "check"]);
    expect(routes(phase2!.steps)).toEqual([
      { pools: { a, b }, defaultPool: "b", pins: { v2: "a" }, switchDefault: { to: "a", afterMs: DEFAULT_SWITCH_DELAY } },
      { pools: { a }, defaultPool: "a", pins: { v2: "a" } },
    ]);
    expect(routes(phase3!.steps)).toEqual([{ pools: { all: [...a, ...b] }, defaultPool: "all", pins: { v2: "all" } }]);
    expect(result.notes.join("\n")).toContain("capacity while half A is updated: 2 of 4 instances (50%)");
  });

  it("without a timed switch, switches in the reload (and says what that costs)", () => {
    const result = plan(fleet([["local", 4]]), options, { ...caps, timedSwitch: false });
    expect(routes(result.phases[1]!.steps)).toEqual([{ pools: { a: ["local-8011", "local-8012"] }, defaultPool: "a", pins: { v2: "a" } }]);
    expect(result.notes.join("\n")).toContain("cannot switch at one instant");
  });

  it("refuses halves below minHalf and fleets of one", () => {
    const small = () => plan(fleet([["local", 3]]), { ...options, minHalf: 2 });
    expect(small).toThrow(NodropError);
    expect(small).toThrow(/strategy.minHalf: halves of 2 and 1 serving instances/);
    expect(() => plan(fleet([["local", 1]]))).toThrow(/at least two instances/);
  });

  it("repairs the instances left out of the pool when the rest already serve the version", () => {
    const instances = fleet([["local", 4]], "v2").map((i, index) => (index >= 2 ? { ...i, version: "v1", inPool: false, healthy: index === 2 } : i));
    const result = plan(instances);
    expect(result.phases).toHaveLength(1);
    expect(result.phases[0]!.instances).toEqual(["local-8013", "local-8014"]);
    expect(result.phases[0]!.steps.map((s) => s.kind)).toEqual(["stop", "update", "start", "check", "route"]);
  });

  it("plans nothing when every instance already runs the version", () => {
    expect(plan(fleet([["local", 4]], "v2")).phases).toHaveLength(0);
  });

  it("brings back instances left out when every instance already runs the version", () => {
    const instances = fleet([["local", 4]], "v2").map((i, index) => (index === 3 ? { ...i, inPool: false } : i));
    const result = plan(instances);
    expect(result.phases.map((p) => p.name)).toEqual(["rejoin"]);
    expect(routes(result.phases[0]!.steps)).toEqual([{ pools: { all: ["local-8011", "local-8012", "local-8013", "local-8014"] }, defaultPool: "all", pins: { v2: "all" } }]);
  });

  it("a mixed fleet: instances already on the version are not replaced, keep their pinned clients and join A at the switch", () => {
    // local-8012 and local-8014 run v2 already (a deploy stopped halfway), all in the pool.
    const instances = fleet([["local", 4]]).map((i, index) => (index % 2 === 1 ? { ...i, version: "v2" } : i));
    const result = plan(instances);
    const replaced = result.phases.flatMap((p) => p.steps.filter((s) => s.kind === "stop").flatMap((s) => ("instances" in s ? s.instances : [])));
    expect(replaced.sort()).toEqual(["local-8011", "local-8013"]);
    const [phase1, switched] = routes(result.phases.flatMap((p) => p.steps));
    // From the first reload on, one version takes new requests; v2 clients stay on v2 instances.
    expect(phase1).toEqual({ pools: { b: ["local-8013"], n: ["local-8012", "local-8014"] }, defaultPool: "b", pins: { v2: "n" } });
    expect(switched?.switchDefault).toEqual({ to: "a", afterMs: DEFAULT_SWITCH_DELAY });
    expect(switched?.pools.a).toEqual(["local-8011", "local-8012", "local-8014"]);
  });

  it("never serves from an instance that is down: it is replaced with half A, B serves from healthy instances", () => {
    const instances = fleet([["local", 4]]).map((i, index) => (index === 3 ? { ...i, healthy: false, inPool: false, version: undefined } : i));
    const result = plan(instances);
    const [phase1] = routes(result.phases[0]!.steps);
    expect(phase1!.pools[phase1!.defaultPool]).not.toContain("local-8014");
    expect(phase1!.pools[phase1!.defaultPool]!.length).toBeGreaterThan(0);
    expect(result.phases.flatMap((p) => p.instances)).toContain("local-8014");
  });
});
