import type { ObservedInstance, PlanStep, ProxyCapabilities, Routing } from "@nodrop/core";
import { schema } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { affinityKey, stickyOptionsSchema } from "./options.js";
import { stickyStrategy } from "./sticky.js";

const caps: ProxyCapabilities = { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true };
const parse = (raw: Record<string, unknown> = {}) => schema.parseOrThrow(stickyOptionsSchema, raw, "strategy");
const fleet = (versions: string[]): ObservedInstance[] =>
  versions.map((version, i) => ({ id: `i${i + 1}`, host: "local", address: "127.0.0.1", port: 8011 + i, version, healthy: true, inPool: true }));
const routes = (steps: readonly PlanStep[]) => steps.filter((s): s is Extract<PlanStep, { kind: "route" }> => s.kind === "route").map((s) => s.routing);

describe("stickyStrategy().plan", () => {
  const plan = (versions: string[], raw: Record<string, unknown> = {}, proxy = caps) => stickyStrategy().plan({ instances: fleet(versions), version: "v2", proxy, options: parse(raw) });

  it("keeps one ring for every pool, pins old clients to old-or-newer and new clients to new", () => {
    const result = plan(["v1", "v1", "v1", "v1"]);
    const all = ["i1", "i2", "i3", "i4"];
    const r = result.phases.map((p) => routes(p.steps)[0]!);
    for (const routing of r) expect(routing.affinity).toEqual({ key: "$remote_addr", ring: all });
    // Batch 1: nobody serves v2 yet; its pin is staged.
    expect(r[0]).toEqual({ pools: { live: ["i2", "i3", "i4"], old: ["i2", "i3", "i4"] }, defaultPool: "old", pins: { v1: "live", v2: "live" }, affinity: { key: "$remote_addr", ring: all } } satisfies Routing);
    // Batch 2: i1 on v2; new clients still go to v1 (25% < 50%).
    expect(r[1]!.pools).toEqual({ live: ["i1", "i3", "i4"], new: ["i1"], old: ["i3", "i4"] });
    expect([r[1]!.defaultPool, r[1]!.pins]).toEqual(["old", { v1: "live", v2: "new" }]);
    // Batch 3: half on v2: new clients go to v2.
    expect(r[2]!.defaultPool).toBe("new");
    // Finish: all on v2.
    expect(r[4]).toMatchObject({ pools: { live: all, new: all }, defaultPool: "new", pins: { v1: "live", v2: "new" } });
  });

  it("newShare decides when new clients move to the new version", () => {
    const r = plan(["v1", "v1", "v1", "v1"], { newShare: 25 }).phases.map((p) => routes(p.steps)[0]!);
    expect(r[1]!.defaultPool).toBe("new");
  });

  it("mode instance: affinity only, no pins; mode version: pins only, no ring", () => {
    const instance = routes(plan(["v1", "v1"], { mode: "instance" }).phases[0]!.steps)[0]!;
    expect(instance.pins).toEqual({});
    expect(instance.defaultPool).toBe("live");
    expect(instance.affinity?.ring).toEqual(["i1", "i2"]);
    const version = routes(plan(["v1", "v1"], { mode: "version" }).phases[0]!.steps)[0]!;
    expect(version.affinity).toBeUndefined();
    expect(version.pins).toEqual({ v1: "live", v2: "live" });
  });

  it("keys by a cookie or a header, and needs its name", () => {
    expect(affinityKey(parse({ key: "cookie", keyName: "session-id" }))).toBe("$cookie_session_id");
    expect(affinityKey(parse({ key: "header", keyName: "X-Session" }))).toBe("$http_x_session");
    expect(() => plan(["v1", "v1"], { key: "cookie" })).toThrow(/strategy.keyName is required/);
  });

  it("refuses a proxy without pinning or affinity", () => {
    expect(() => plan(["v1", "v1"], {}, { ...caps, affinity: false })).toThrow(/needs a proxy with instance affinity/);
    expect(() => plan(["v1", "v1"], { mode: "version" }, { ...caps, versionPinning: false })).toThrow(/pins clients to a version/);
  });

  it("finishes a fleet a stopped deploy left half-way: instances out of the pool go first, all in one batch", () => {
    // i1 and i3 were taken out and stopped (down, version unknown); i4 was updated but not routed back.
    const left = fleet(["v1", "v1", "v1", "v2"]).map((i) => (i.id === "i1" || i.id === "i3" ? { ...i, version: undefined, healthy: false, inPool: false } : i.id === "i4" ? { ...i, inPool: false } : i));
    const result = stickyStrategy().plan({ instances: left, version: "v2", proxy: caps, options: parse() });
    expect(result.phases.map((p) => p.instances)).toEqual([["i1", "i3"], ["i2"], []]);
    const first = routes(result.phases[0]!.steps)[0]!;
    // The first routing keeps the down ones out and brings i4 (healthy on v2) back.
    expect(first.pools.live).toEqual(["i2", "i4"]);
    expect(first.pins).toEqual({ v1: "live", v2: "new" });
    expect(result.notes.join("\n")).toContain("i1, i3 out of the pool: replaced first");
  });

  it("recovery sends clients of a previous version to it or the new one, never by the order of version strings", () => {
    // Git SHAs: the new version (0a1b2c3) sorts before both previous ones; by string order it would look oldest.
    const [newer, old1, old2] = ["0a1b2c3", "f9e8d7c", "c4d5e6f"];
    const healthy = fleet([old1!, newer!, old2!, newer!]);
    const context = { version: newer!, previous: [old1!, old2!], instances: healthy.map((i) => i.id), options: parse() };
    const routing = stickyStrategy().recoveryRouting!(healthy, context);
    expect(routing.defaultPool).toBe("live");
    expect(routing.pools.live).toEqual(["i1", "i2", "i3", "i4"]);
    // Pinned to the new version: only instances on it, so a client that got it never goes back.
    expect(routing.pools[routing.pins[newer!]!]).toEqual(["i2", "i4"]);
    // Pinned to a previous version: that version or the new one, never the other previous one.
    expect(routing.pools[routing.pins[old1!]!]).toEqual(["i1", "i2", "i4"]);
    expect(routing.pools[routing.pins[old2!]!]).toEqual(["i2", "i3", "i4"]);
    // Affinity is kept, over the whole fleet's ring.
    expect(routing.affinity?.ring).toEqual(["i1", "i2", "i3", "i4"]);
  });

  it("recovery keeps the mode: no pins without version pinning, no affinity without it", () => {
    const healthy = fleet(["0aaaaaa", "fffffff"]);
    const context = (mode: string) => ({ version: "0aaaaaa", previous: ["fffffff"], instances: ["i1", "i2"], options: parse({ mode }) });
    expect(stickyStrategy().recoveryRouting!(healthy, context("instance")).pins).toEqual({});
    expect(stickyStrategy().recoveryRouting!(healthy, context("version")).affinity).toBeUndefined();
  });
});

describe("stickyStrategy().plan with surge", () => {
  const slotted = (versions: string[]): ObservedInstance[] => fleet(versions).map((i) => ({ ...i, slots: [i.port, i.port + 1000] as const, livePort: i.port, idle: { port: i.port + 1000, free: true } }));

  it("never takes an instance out: each batch starts on its spare port and swaps in, clients without a version go to their own instance", () => {
    const result = stickyStrategy().plan({ instances: slotted(["v1", "v1", "v1"]), version: "v2", proxy: caps, options: parse({ surge: true }) });
    const r = result.phases.map((p) => routes(p.steps));
    expect(r.map((list) => list.length)).toEqual([1, 1, 1]);
    for (const [routing] of r) {
      expect(routing!.pools.live).toEqual(["i1", "i2", "i3"]);
      expect(routing!.defaultPool).toBe("live");
    }
    expect(r.map(([routing]) => routing!.slots)).toEqual([{ i1: 9011 }, { i1: 9011, i2: 9012 }, { i1: 9011, i2: 9012, i3: 9013 }]);
    // Clients pinned to v2 only reach instances on it.
    expect(r[0]![0]!.pools.new).toEqual(["i1"]);
    expect(r[0]![0]!.pins).toEqual({ v1: "live", v2: "new" });
    expect(result.phases[0]!.steps.map((s) => `${s.kind}${s.kind !== "route" && s.kind !== "soak" && s.slot === "idle" ? "@idle" : ""}`)).toEqual(["update@idle", "start@idle", "check@idle", "route", "stop@idle"]);
  });

  it("refuses a surge on instances with one port", () => {
    expect(() => stickyStrategy().plan({ instances: fleet(["v1", "v1"]), version: "v2", proxy: caps, options: parse({ surge: true }) })).toThrow(/strategy.surge needs two slots/);
  });
});
