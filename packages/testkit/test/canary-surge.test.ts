// The engine running the canary's surge plan (strategy.surge: true) against an in-memory fleet
// whose instances have two slots: the fleet keeps its full capacity, and a failed gate swaps the
// canary back to the old processes it kept, without starting anything. (The plans themselves go
// through the conformance suite in strategies.test.ts; real nginx and gunicorn in
// examples/wsgi-fleet/test/canary.test.ts.)
import { type DeployEvent, type DeployOptions, type DeployVerifier, type InstanceControl, type InstanceSpec, type Proxy, type Routing, deploy, schema, servingInstances } from "@nodrop/core";
import { type CanaryOptions, canaryAbortStrategy, canaryOptionsSchema, canaryStrategy } from "@nodrop/strategy-canary";
import { describe, expect, it } from "vitest";

/** Four instances on ports 8011.. with spares on 9011..: what runs on each `id:port`, and every command with its port. */
class SlotFleet {
  readonly specs: InstanceSpec[] = [0, 1, 2, 3].map((i) => ({ id: `web-${8011 + i}`, host: "local", address: "127.0.0.1", port: 8011 + i, slots: [8011 + i, 9011 + i] as const }));
  readonly installed = new Map<string, string>();
  readonly running = new Map<string, string>();
  readonly calls: string[] = [];

  constructor() {
    for (const spec of this.specs) this.installed.set(`${spec.id}:${spec.port}`, "v1");
    for (const spec of this.specs) this.running.set(`${spec.id}:${spec.port}`, "v1");
  }

  controls(): InstanceControl[] {
    return this.specs.map((spec) => ({
      spec,
      stop: async ({ port = spec.port }) => {
        this.calls.push(`stop ${spec.id}:${port}`);
        this.running.delete(`${spec.id}:${port}`);
      },
      update: async ({ version, port = spec.port }) => {
        this.calls.push(`update ${spec.id}:${port} ${version}`);
        this.installed.set(`${spec.id}:${port}`, version);
      },
      start: async ({ port = spec.port }) => {
        this.calls.push(`start ${spec.id}:${port}`);
        this.running.set(`${spec.id}:${port}`, this.installed.get(`${spec.id}:${port}`)!);
      },
      // Something listens on the idle port when a process of this fleet runs there.
      inspect: async ({ idlePort }) => ({ free: !this.running.has(`${spec.id}:${idlePort}`), liveRssBytes: 50 * 2 ** 20, availableBytes: 8 * 2 ** 30 }),
    }));
  }
}

/** Records every routing; can split and pin, cannot count traffic (the gates here only watch the probe). */
class RecordingProxy implements Proxy {
  readonly name = "recording";
  readonly capabilities = { versionPinning: true, timedSwitch: true, affinity: true, split: true };
  readonly applied: Routing[] = [];
  inForce: Routing | undefined;
  async check() {
    return { ok: true, details: [] };
  }
  async apply(routing: Routing) {
    this.applied.push(routing);
    this.inForce = routing;
    return { generation: String(this.applied.length), confirmMs: 0, drainMs: 0 };
  }
  async current() {
    return this.inForce;
  }
}

/** A probe whose threshold is crossed once `crossed()` says so. */
function probe(crossed: () => boolean): DeployVerifier {
  const breach = () => (crossed() ? "verify: 3 of 40 requests failed (allowed: 0)" : undefined);
  return {
    url: "http://127.0.0.1:1/",
    start: async () => {},
    breach,
    stop: async () => ({ url: "http://127.0.0.1:1/", requests: 40, ok: 37, failed: 3, resent: 0, regressions: 0, byVersion: {}, errors: {}, durationMs: 1, maxFailed: 0, enforced: true, ...(breach() ? { breach: breach()! } : {}) }),
  };
}

function setup(strategy: Record<string, unknown>) {
  const fleet = new SlotFleet();
  const proxy = new RecordingProxy();
  const options: DeployOptions<CanaryOptions> = {
    version: "v2",
    instances: fleet.controls(),
    proxy,
    strategy: canaryStrategy(),
    strategyOptions: schema.parseOrThrow(canaryOptionsSchema, { surge: true, gate: "1s", analysis: { enabled: false }, ...strategy }, "strategy"),
    health: {
      probe: async (instance) => {
        const version = fleet.running.get(`${instance.id}:${instance.port}`);
        return version === undefined ? { ok: false, version: undefined, detail: "connection refused" } : { ok: true, version, detail: "status 200" };
      },
    },
    healthWait: { successes: 1, intervalMs: 1, deadlineMs: 20 },
  };
  return { fleet, proxy, options };
}

/** Which port each instance is served on in a routing (its first one unless the routing names a slot). */
const portsOf = (routing: Routing, fleet: SlotFleet) => Object.fromEntries(fleet.specs.map((s) => [s.id, routing.slots?.[s.id] ?? s.port]));

describe("canary with surge (spare slots)", () => {
  it("goes through its steps to 100% with every instance serving in every routing, and stops each old process once", async () => {
    const { fleet, proxy, options } = setup({ steps: ["25%", "50%"] });
    const report = await deploy(options);
    expect(report.error).toBeUndefined();
    for (const routing of proxy.applied) expect(servingInstances(routing).size).toBe(4);
    // No live slot was stopped while it served: each old process stopped after its swap, once.
    for (const spec of fleet.specs) expect(fleet.calls.filter((c) => c === `stop ${spec.id}:${spec.port}`)).toHaveLength(1);
    expect(portsOf(proxy.applied.at(-1)!, fleet)).toEqual({ "web-8011": 9011, "web-8012": 9012, "web-8013": 9013, "web-8014": 9014 });
    expect(report.instances.every((i) => i.version === "v2" && i.inPool)).toBe(true);
  });

  it("a gate that fails swaps the canary back to the old processes it kept, in one reload: nothing is started on the old slots, and the new processes stop", async () => {
    const { fleet, proxy, options } = setup({ steps: ["25%", "50%"] });
    let gates = 0;
    const onEvent = (e: DeployEvent) => {
      if (e.type === "step" && e.kind === "gate" && e.status === "start") gates += 1;
    };
    // The second gate (50%: web-8011 and web-8012 on v2) fails.
    const report = await deploy({ ...options, onEvent, verify: probe(() => gates >= 2) });
    expect(report.error).toMatchObject({ code: "E_CANARY", step: "canary 50%: gate" });
    for (const routing of proxy.applied) expect(servingInstances(routing).size).toBe(4);
    // The old processes on 8011 and 8012 were never stopped, updated or started again.
    expect(fleet.calls.filter((c) => / web-801[12]:801[12]/.test(c))).toEqual([]);
    expect(fleet.running.get("web-8011:8011")).toBe("v1");
    expect(fleet.running.get("web-8012:8012")).toBe("v1");
    // The new ones stopped after the swap back.
    expect(fleet.calls.slice(-2).sort()).toEqual(["stop web-8011:9011", "stop web-8012:9012"]);
    const last = proxy.applied.at(-1)!;
    expect(last.pins).toEqual({});
    expect(portsOf(last, fleet)).toEqual({ "web-8011": 8011, "web-8012": 8012, "web-8013": 8013, "web-8014": 8014 });
    expect(report.recovery).toMatch(/(web-8011, web-8012|web-8012, web-8011) swapped back to the old process on their other slot/);
    for (const id of ["web-8011", "web-8012"]) expect(report.instances.find((i) => i.id === id)).toMatchObject({ version: "v1", outcome: "reverted", inPool: true });
  });

  it("a kept old process that died during the gate is not swapped back to: that instance goes back in place, the others by a swap", async () => {
    const { fleet, proxy, options } = setup({ steps: ["25%", "50%"] });
    let gates = 0;
    const onEvent = (e: DeployEvent) => {
      if (e.type === "step" && e.kind === "gate" && e.status === "start") {
        gates += 1;
        // The old process of web-8011 dies (out of memory) while the second gate runs.
        if (gates === 2) fleet.running.delete("web-8011:8011");
      }
    };
    const report = await deploy({ ...options, onEvent, verify: probe(() => gates >= 2) });
    expect(report.error?.code).toBe("E_CANARY");
    // Never routed to the dead port: every routing after the gate serves web-8011 on 9011 or not at all, until it is back.
    const afterGate = proxy.applied.slice(-2);
    expect(portsOf(afterGate[0]!, fleet)["web-8012"]).toBe(8012);
    expect(servingInstances(afterGate[0]!).has("web-8011")).toBe(false);
    // web-8011 went back in place, on the port it was live on (9011); web-8012 by the swap.
    expect(fleet.calls.filter((c) => c.startsWith("stop web-8011") || c.startsWith("update web-8011:9011 v1") || c.startsWith("start web-8011")).slice(-3)).toEqual(["stop web-8011:9011", "update web-8011:9011 v1", "start web-8011:9011"]);
    expect(fleet.running.get("web-8011:9011")).toBe("v1");
    expect(report.instances.find((i) => i.id === "web-8011")).toMatchObject({ version: "v1", outcome: "reverted", inPool: true });
    expect(report.instances.find((i) => i.id === "web-8012")).toMatchObject({ version: "v1", outcome: "reverted", inPool: true });
  });

  describe("paused at a manual gate, then a later run", () => {
    /** web-8011 and web-8012 on v2 on their spare ports, their v1 processes kept; the deploy paused. */
    async function paused() {
      const s = setup({ steps: [{ weight: "50%", pause: "manual" }, "75%"] });
      const report = await deploy(s.options);
      expect(report.paused).toMatchObject({ phase: "canary 50%" });
      expect(s.fleet.running.get("web-8011:8011")).toBe("v1");
      s.fleet.calls.length = 0;
      return s;
    }

    it("`nodrop abort` (canary-abort) swaps them back to the kept processes in one reload, starting nothing, and stops the new ones", async () => {
      const { fleet, proxy, options } = await paused();
      const report = await deploy({ ...options, version: "v1", strategy: canaryAbortStrategy() as never, strategyOptions: {} as never });
      expect(report.error).toBeUndefined();
      expect(fleet.calls.filter((c) => c.startsWith("start") || c.startsWith("update"))).toEqual([]);
      expect(fleet.calls.sort()).toEqual(["stop web-8011:9011", "stop web-8012:9012"]);
      for (const routing of proxy.applied.slice(-2)) expect(servingInstances(routing).size).toBe(4);
      expect(portsOf(proxy.applied.at(-1)!, fleet)).toEqual({ "web-8011": 8011, "web-8012": 8012, "web-8013": 8013, "web-8014": 8014 });
      expect(report.instances.every((i) => i.version === "v1" && i.inPool)).toBe(true);
    });

    it("a promote (a resume past the gate) keeps those processes, and its failed gate swaps back to them", async () => {
      const { fleet, options } = await paused();
      let gate = false;
      const onEvent = (e: DeployEvent) => {
        if (e.type === "step" && e.kind === "gate" && e.status === "start") gate = true;
      };
      const report = await deploy({ ...options, passedGates: ["canary 50%"], onEvent, verify: probe(() => gate) });
      expect(report.error).toMatchObject({ code: "E_CANARY", step: "canary 75%: gate" });
      // The v1 processes the first run kept on 8011 and 8012 were never stopped nor started again.
      expect(fleet.calls.filter((c) => / web-801[12]:801[12]/.test(c))).toEqual([]);
      expect(fleet.running.get("web-8011:8011")).toBe("v1");
      expect(report.instances.every((i) => i.version === "v1" && i.inPool)).toBe(true);
      expect(report.recovery).toContain("swapped back to the old process");
    });
  });

  it("a new slot that fails its check changes nothing for users: the old process never left the pool", async () => {
    const { fleet, proxy, options } = setup({ steps: ["25%"] });
    const probeHealth = options.health;
    const report = await deploy({
      ...options,
      health: { probe: async (instance) => (instance.port === 9011 ? { ok: false, version: "v2", detail: "status 503" } : probeHealth.probe(instance)) },
    });
    expect(report.error?.code).toBe("E_HEALTHCHECK");
    // Nothing was routed: the routing in force before the deploy still serves every instance on its first port.
    expect(proxy.applied).toEqual([]);
    expect(fleet.running.get("web-8011:8011")).toBe("v1");
    expect(fleet.calls).toContain("stop web-8011:9011");
  });
});
