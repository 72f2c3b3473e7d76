// The proxy and instance suites against in-memory fakes: a correct one passes, and each
// deliberate defect fails the check meant to catch it. (The executor suite runs real commands;
// its defects are tested in test/suites-catch-defects.test.ts.)
import { type HealthCheck, type InstanceControl, NodropError, type Proxy, type ProxyInstance, type Routing, validateRouting } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { failed, runSuite } from "./fake-runner.js";
import { instanceSuite } from "./instance-suite.js";
import { proxySuite } from "./proxy-suite.js";

type ProxyDefect =
  | "none"
  | "background"
  | "lags"
  | "accepts-unknown"
  | "stale-current"
  | "undefined-capability"
  | "not-ok"
  | "same-generation"
  | "drops-one"
  | "drained-without-capability"
  | "drain-rejects"
  | "drains-early";

function fakeProxy(defect: ProxyDefect) {
  const instances: ProxyInstance[] = [1, 2, 3].map((n) => ({ id: `i${n}`, host: "local", address: "127.0.0.1", port: 9000 + n }));
  let inForce: Routing = { pools: { all: instances.map((i) => i.id) }, defaultPool: "all", pins: {} };
  let written: Routing | undefined;
  let pending: { routing: Routing; requests: number } | undefined;
  let generation = 0;
  let turn = 0;
  let inFlight = 0;
  const proxy: Proxy = {
    name: "fake",
    capabilities: {
      versionPinning: false,
      drainsOldRouting: true,
      timedSwitch: false,
      affinity: (defect === "undefined-capability" ? undefined : false) as boolean,
      ...(defect === "background" || defect === "drain-rejects" || defect === "drains-early" ? { backgroundDrain: true } : {}),
    },
    async check() {
      return { ok: defect !== "not-ok", details: ["fake proxy"] };
    },
    async apply(routing, known, context = {}) {
      if (defect !== "accepts-unknown") {
        try {
          validateRouting(routing, new Set(known.map((i) => i.id)));
        } catch (error) {
          throw new NodropError("E_PROXY_RENDER", (error as Error).message);
        }
      }
      // "lags": resolves before the new routing is in force everywhere (an undrained old worker).
      if (defect === "lags") pending = { routing, requests: 5 };
      else inForce = routing;
      written = routing;
      if (defect !== "same-generation") generation += 1;
      const result = { generation: String(generation), confirmMs: 1, drainMs: 0 };
      if (!context.backgroundDrain || !["background", "drained-without-capability", "drain-rejects", "drains-early"].includes(defect)) return result;
      // Drained once no request held at the change is in flight ("drains-early": at once).
      const untilIdle = async () => {
        while (defect !== "drains-early" && inFlight > 0) await new Promise((resolve) => setTimeout(resolve, 5));
        return { drainMs: 5 };
      };
      const drained = defect === "drain-rejects" ? Promise.reject(new NodropError("E_PROXY_DRAIN", "old workers still running")) : untilIdle();
      drained.catch(() => undefined);
      return { ...result, drained };
    },
    async current() {
      return defect === "stale-current" ? { pools: { all: ["i1", "i2", "i3"] }, defaultPool: "all", pins: {} } : written;
    },
  };
  const request = async (): Promise<string | undefined> => {
    if (pending && pending.requests-- <= 0) {
      inForce = pending.routing;
      pending = undefined;
    }
    const pool = inForce.pools[inForce.defaultPool] ?? [];
    const id = pool[turn++ % pool.length];
    if (defect === "drops-one" && turn % 17 === 0) return undefined;
    return id;
  };
  const slowRequest = async (ms: number): Promise<string | undefined> => {
    inFlight += 1;
    const id = await request();
    await new Promise((resolve) => setTimeout(resolve, ms));
    inFlight -= 1;
    return id;
  };
  return { proxy, instances, request, slowRequest, cleanup: async () => undefined };
}

type InstanceDefect = "none" | "lazy-stop" | "ignores-update" | "stop-not-idempotent" | "unreachable";

function fakeInstance(defect: InstanceDefect) {
  const spec = { id: "i1", host: "local", address: "127.0.0.1", port: 9001 };
  let running = true;
  let installed = "v1";
  let serving = "v1";
  let lingering = false;
  const control: InstanceControl = {
    spec,
    async stop() {
      if (!running && !lingering && defect === "stop-not-idempotent") throw new NodropError("E_INSTANCE", "not running");
      running = false;
      // "lazy-stop": resolves while the process still answers (it exits later, at the next start).
      lingering = defect === "lazy-stop";
    },
    async update({ version }) {
      if (defect !== "ignores-update") installed = version;
    },
    async start() {
      lingering = false;
      running = true;
      serving = installed;
    },
    async reach() {
      if (defect === "unreachable") throw new NodropError("E_SSH_CONNECT", "host down");
    },
  };
  const health: HealthCheck = {
    async probe() {
      return running || lingering ? { ok: true, version: serving, detail: `status 200, ${serving}` } : { ok: false, version: undefined, detail: "connection refused" };
    },
  };
  return { control, health, versions: ["v1", "v2"] as const, cleanup: async () => undefined };
}

const BACKGROUND_TITLE = "apply() asked to drain in the background: the new routing is in force when it resolves; `drained` settles (capability backgroundDrain) or is absent";

describe("proxySuite", () => {
  const run = (defect: ProxyDefect) => runSuite((api) => proxySuite(api, { name: defect, setup: async () => fakeProxy(defect) }));

  it.each(["none", "background"] as const)("passes a correct proxy (%s drains)", async (defect) => {
    const results = await run(defect);
    expect(results.length).toBe(8);
    expect(failed(results)).toEqual([]);
  });

  it.each([
    ["lags", "apply(a pool without one instance): once it resolves, no request reaches that instance"],
    ["accepts-unknown", "apply() of a routing naming an unknown instance rejects with a NodropError; the previous routing stays in force"],
    ["stale-current", "current() returns the routing in force (when the adapter reads it back)"],
    ["undefined-capability", "name and capabilities: a string and four booleans"],
    ["not-ok", "check() is ok and says what it checked, with and without the fleet"],
    ["same-generation", "apply(a pool without one instance): once it resolves, no request reaches that instance"],
    ["drops-one", "apply(one pool of every instance): requests reach only the pool, and each of its instances"],
    ["drained-without-capability", BACKGROUND_TITLE],
    ["drain-rejects", BACKGROUND_TITLE],
    ["drains-early", BACKGROUND_TITLE],
  ] as const)("fails a proxy with defect %s on: %s", async (defect, title) => {
    expect(failed(await run(defect))).toContain(title);
  });

  it("without beforeAll and afterAll, sets up on first use and cleans up in a last check", async () => {
    let cleaned = 0;
    const results = await runSuite(
      (api) =>
        proxySuite(api, {
          name: "hookless",
          setup: async () => ({ ...fakeProxy("none"), cleanup: async () => void (cleaned += 1) }),
        }),
      { withoutHooks: true },
    );
    expect(failed(results)).toEqual([]);
    expect(results.at(-1)!.title).toBe("cleanup");
    expect(cleaned).toBe(1);
  });
});

describe("instanceSuite", () => {
  const run = (defect: InstanceDefect) => runSuite((api) => instanceSuite(api, { name: defect, setup: async () => fakeInstance(defect), healthWait: { deadlineMs: 300, intervalMs: 10 } }));

  it("passes a correct instance adapter", async () => {
    const results = await run("none");
    expect(results.length).toBe(6);
    expect(failed(results)).toEqual([]);
  });

  it.each([
    ["lazy-stop", "after stop() resolves, a health probe is not ok"],
    ["ignores-update", "update() to the second version and start(): the health check reports it"],
    ["stop-not-idempotent", "stop() of an instance that is already stopped resolves"],
    ["unreachable", "reach() resolves (when the adapter has it)"],
  ] as const)("fails an instance adapter with defect %s on: %s", async (defect, title) => {
    expect(failed(await run(defect))).toContain(title);
  });
});
