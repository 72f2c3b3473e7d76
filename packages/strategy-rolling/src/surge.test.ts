import { type DeployOptions, type DeployReport, type HealthCheck, type InstanceControl, type InstanceSpec, type Proxy, type ProxyInstance, type Routing, type SlotInspection, NodropError, deploy, planDeploy, servingInstances } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import type { RollingOptions } from "./options.js";
import { rollingStrategy } from "./rolling.js";

/**
 * The engine running rolling's surge plan against an in-memory fleet whose instances have two
 * slots: what runs on each port, and every command with the port it was for. (The same deploys
 * against real nginx and gunicorn are in examples/wsgi-fleet/test/surge.test.ts.)
 */
class SlotFleet {
  readonly specs: InstanceSpec[];
  /** `${id}:${port}` -> version installed / running. */
  readonly installed = new Map<string, string>();
  readonly running = new Map<string, string>();
  readonly calls: string[] = [];
  readonly broken = new Set<string>();
  failStop = new Set<string>();
  /** A stop of one of these slots waits for its gate, then fails, or succeeds (logged as "stopped <slot>"). */
  readonly gatedStops = new Map<string, { gate: Promise<void>; fail: boolean }>();
  /** A health probe of one of these slots takes this many ms. */
  readonly slowProbe = new Map<string, number>();
  inspection: (id: string) => SlotInspection = () => ({ free: true, liveRssBytes: 50 * 2 ** 20, availableBytes: 8 * 2 ** 30 });

  constructor(count: number, version: string) {
    this.specs = Array.from({ length: count }, (_, i) => ({ id: `web-${8011 + i}`, host: "local", address: "127.0.0.1", port: 8011 + i, slots: [8011 + i, 9011 + i] as const }));
    for (const spec of this.specs) {
      this.installed.set(`${spec.id}:${spec.port}`, version);
      this.running.set(`${spec.id}:${spec.port}`, version);
    }
  }

  /** Makes the stop of `slot` wait until the function returned is called, then fail or succeed. */
  gateStop(slot: string, outcome: "fails" | "succeeds"): () => void {
    let release = () => {};
    this.gatedStops.set(slot, { gate: new Promise<void>((resolve) => (release = resolve)), fail: outcome === "fails" });
    return () => release();
  }

  /** Every live process 300 MiB, the host with `availableMiB` available (the memory tests' fleet). */
  withMemory(availableMiB: number): void {
    this.inspection = () => ({ free: true, liveRssBytes: 300 * 2 ** 20, availableBytes: availableMiB * 2 ** 20 });
  }

  controls(): InstanceControl[] {
    return this.specs.map((spec) => ({
      spec,
      stop: async ({ port = spec.port }) => {
        this.calls.push(`stop ${spec.id}:${port}`);
        const gated = this.gatedStops.get(`${spec.id}:${port}`);
        if (gated) await gated.gate;
        if (gated?.fail || this.failStop.has(`${spec.id}:${port}`)) throw new NodropError("E_INSTANCE", `stop of ${spec.id} on ${port} failed`, { instance: spec.id });
        if (gated) this.calls.push(`stopped ${spec.id}:${port}`);
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
      inspect: async () => this.inspection(spec.id),
    }));
  }

  health(): HealthCheck {
    return {
      probe: async (instance) => {
        const delay = this.slowProbe.get(`${instance.id}:${instance.port}`);
        if (delay) await new Promise((resolve) => setTimeout(resolve, delay));
        const version = this.running.get(`${instance.id}:${instance.port}`);
        if (version === undefined) return { ok: false, version: undefined, detail: "connection refused" };
        return this.broken.has(`${instance.id}:${instance.port}`) ? { ok: false, version, detail: "status 503" } : { ok: true, version, detail: "status 200" };
      },
    };
  }
}

class RecordingProxy implements Proxy {
  readonly name = "recording";
  readonly capabilities = { versionPinning: true, timedSwitch: true, affinity: true };
  readonly applied: { routing: Routing; instances: readonly ProxyInstance[] }[] = [];
  inForce: Routing | undefined;
  async check() {
    return { ok: true, details: [] };
  }
  async apply(routing: Routing, instances: readonly ProxyInstance[]) {
    this.applied.push({ routing, instances });
    this.inForce = routing;
    return { generation: String(this.applied.length), confirmMs: 0, drainMs: 0 };
  }
  async current() {
    return this.inForce;
  }
}

/**
 * A proxy that drains in the background (capability backgroundDrain): apply() returns at once and
 * each drain settles when the test says, written into the fleet's call log so that the order of
 * drains and instance commands can be read off one list.
 */
class DrainingProxy extends RecordingProxy {
  override readonly capabilities = { versionPinning: true, timedSwitch: true, affinity: true, backgroundDrain: true };
  readonly drains: { generation: string; finish: (failure?: Error) => void }[] = [];
  readonly asked: boolean[] = [];
  private readonly log: string[];
  constructor(log: string[]) {
    super();
    this.log = log;
  }
  override async apply(routing: Routing, instances: readonly ProxyInstance[], context: { backgroundDrain?: boolean } = {}) {
    const result = await super.apply(routing, instances);
    this.asked.push(context.backgroundDrain === true);
    if (!context.backgroundDrain) return result;
    const drained = new Promise<{ drainMs: number }>((resolve, reject) => {
      this.drains.push({
        generation: result.generation,
        finish: (failure) => {
          this.log.push(`drained ${result.generation}${failure ? " (failed)" : ""}`);
          if (failure) reject(failure);
          else resolve({ drainMs: 42 });
        },
      });
    });
    return { ...result, drained };
  }
}

function options(fleet: SlotFleet, proxy: RecordingProxy, version: string, strategy: Partial<RollingOptions> = {}): DeployOptions<RollingOptions> {
  return {
    version,
    instances: fleet.controls(),
    proxy,
    strategy: rollingStrategy(),
    strategyOptions: { batchSize: 1, surge: true, ...strategy },
    health: fleet.health(),
    healthWait: { successes: 1, intervalMs: 1, deadlineMs: 20 },
  };
}

const byId = (report: DeployReport, id: string) => report.instances.find((i) => i.id === id)!;

describe("surge rolling through the engine", () => {
  it("starts each batch on its spare port, swaps it in with the whole fleet in the pool, and stops the old slot after the swap", async () => {
    const fleet = new SlotFleet(4, "v1");
    const proxy = new RecordingProxy();
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.ok).toBe(true);
    // Capacity: every routing the proxy got serves all four instances.
    expect(proxy.applied.map((a) => servingInstances(a.routing).size)).toEqual([4, 4, 4, 4]);
    // One swap per batch, each recorded in the routing (the others stay where they are).
    expect(proxy.applied.map((a) => a.routing.slots)).toEqual([
      { "web-8011": 9011, "web-8012": 8012, "web-8013": 8013, "web-8014": 8014 },
      { "web-8011": 9011, "web-8012": 9012, "web-8013": 8013, "web-8014": 8014 },
      { "web-8011": 9011, "web-8012": 9012, "web-8013": 9013, "web-8014": 8014 },
      { "web-8011": 9011, "web-8012": 9012, "web-8013": 9013, "web-8014": 9014 },
    ]);
    // The proxy is told the port each instance is served on and the version that slot runs.
    expect(proxy.applied[0]!.instances.map((i) => `${i.id}@${i.port}=${i.version}`)).toEqual(["web-8011@9011=v2", "web-8012@8012=v1", "web-8013@8013=v1", "web-8014@8014=v1"]);
    // Per instance: the new slot is ready before the swap; the old one stops only after it.
    const order = fleet.calls.filter((c) => c.includes("web-8012"));
    expect(order).toEqual(["update web-8012:9012 v2", "start web-8012:9012", "stop web-8012:8012"]);
    expect([...fleet.running.entries()].sort()).toEqual([
      ["web-8011:9011", "v2"],
      ["web-8012:9012", "v2"],
      ["web-8013:9013", "v2"],
      ["web-8014:9014", "v2"],
    ]);
    for (const spec of fleet.specs) {
      const instance = byId(report, spec.id);
      expect(instance).toMatchObject({ port: spec.port + 1000, version: "v2", outcome: "updated", inPool: true, idle: { port: spec.port, running: false } });
    }
  });

  it("a second surge swaps back to the first slots, from the routing the proxy holds", async () => {
    const fleet = new SlotFleet(2, "v1");
    const proxy = new RecordingProxy();
    expect((await deploy(options(fleet, proxy, "v2"))).ok).toBe(true);
    const report = await deploy(options(fleet, proxy, "v3"));
    expect(report.ok).toBe(true);
    expect(proxy.inForce?.slots).toEqual({ "web-8011": 8011, "web-8012": 8012 });
    expect([...fleet.running.entries()].sort()).toEqual([
      ["web-8011:8011", "v3"],
      ["web-8012:8012", "v3"],
    ]);
    expect(byId(report, "web-8011")).toMatchObject({ from: "v2", port: 8011, idle: { port: 9011, running: false } });
  });

  it("a new slot that fails its check is stopped, and its instance never left the pool nor changed slot", async () => {
    const fleet = new SlotFleet(3, "v1");
    fleet.broken.add("web-8012:9012");
    const proxy = new RecordingProxy();
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.ok).toBe(false);
    expect(report.error).toMatchObject({ code: "E_HEALTHCHECK", instance: "web-8012" });
    // Only batch 1's swap ever reached the proxy: web-8012 was served on 8012 throughout.
    expect(proxy.applied.map((a) => a.routing.slots?.["web-8012"])).toEqual([8012]);
    expect(proxy.applied.every((a) => servingInstances(a.routing).size === 3)).toBe(true);
    expect(fleet.running.get("web-8012:8012")).toBe("v1");
    expect(fleet.running.has("web-8012:9012")).toBe(false);
    expect(byId(report, "web-8012")).toMatchObject({ port: 8012, version: "v1", outcome: "reverted", inPool: true, idle: { port: 9012, running: false } });
    expect(byId(report, "web-8011")).toMatchObject({ port: 9011, version: "v2", outcome: "updated" });
    // Batch 3's new slot had started while batch 2's was checked (the pipeline): stopped again, nothing routed to it.
    expect(byId(report, "web-8013")).toMatchObject({ port: 8013, version: "v1", inPool: true, idle: { port: 9013, running: false } });
    expect(fleet.running.get("web-8013:8013")).toBe("v1");
    expect(fleet.running.has("web-8013:9013")).toBe(false);
    expect(proxy.applied.map((a) => a.routing.slots?.["web-8013"])).toEqual([8013]);
    expect(report.recovery).toContain("stopped the idle slots of web-8012 (port 9012)");
    expect(report.recovery).toContain("batch 3/3, started early: stopped the idle slots of web-8013 (port 9013)");
  });

  it("an old slot that does not stop ends the deploy at the next batch, with its instance serving from its new slot", async () => {
    const fleet = new SlotFleet(2, "v1");
    fleet.failStop.add("web-8011:8011");
    const proxy = new RecordingProxy();
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.ok).toBe(false);
    expect(report.error?.instance).toBe("web-8011");
    expect(report.error?.step).toMatch(/\(background\)$/);
    expect(byId(report, "web-8011")).toMatchObject({ port: 9011, version: "v2", outcome: "updated", idle: { port: 8011, running: true } });
    // Batch 2's new slot started while batch 1 swapped (the pipeline); the failure stopped the deploy
    // at the phase boundary, before batch 2's swap, and that slot was stopped again.
    expect(fleet.calls.filter((c) => c.includes("web-8012"))).toEqual(["update web-8012:9012 v2", "start web-8012:9012", "stop web-8012:9012"]);
    expect(byId(report, "web-8012")).toMatchObject({ port: 8012, version: "v1", inPool: true, idle: { port: 9012, running: false } });
    expect(fleet.running.get("web-8012:8012")).toBe("v1");
    expect(fleet.running.has("web-8012:9012")).toBe(false);
    expect(report.recovery).toContain("the deploy stopped before phase batch 2/2");
    expect(report.recovery).toContain("batch 2/2, started early: stopped the idle slots of web-8012 (port 9012)");
  });

  it("without prepareAhead, a batch starts nothing before the one before it has swapped", async () => {
    const fleet = new SlotFleet(2, "v1");
    fleet.failStop.add("web-8011:8011");
    const report = await deploy(options(fleet, new RecordingProxy(), "v2", { prepareAhead: false }));
    expect(report.error?.step).toMatch(/\(background\)$/);
    expect(fleet.calls.filter((c) => c.includes("web-8012"))).toEqual([]);
    expect(byId(report, "web-8012")).toMatchObject({ port: 8012, version: "v1", outcome: "not-reached", inPool: true });
  });

  it("with prepareAhead, a batch's new slot starts once the batch before it has started its own, before that one's swap ends, and is swapped in only after it was checked", async () => {
    const fleet = new SlotFleet(4, "v1");
    // Batch 1's new slot takes a while to pass its check.
    fleet.slowProbe.set("web-8011:9011", 30);
    const log = fleet.calls;
    const proxy = new RecordingProxy();
    const apply = proxy.apply.bind(proxy);
    // Each swap takes a while, and says in the log when it begins and ends.
    proxy.apply = async (routing, instances) => {
      log.push(`swap ${proxy.applied.length + 1} begins`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      const result = await apply(routing, instances);
      log.push(`swap ${proxy.applied.length} ends`);
      return result;
    };
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.ok).toBe(true);
    const at = (entry: string) => log.indexOf(entry);
    // One start at a time, each after the one before it, and before the swap of the batch before it
    // ends: web-8012 (batch 2) before swap 1 ends, web-8013 (batch 3) before swap 2 ends.
    expect(at("start web-8012:9012")).toBeGreaterThan(at("start web-8011:9011"));
    expect(at("start web-8012:9012")).toBeLessThan(at("swap 1 ends"));
    expect(at("start web-8013:9013")).toBeGreaterThan(at("start web-8012:9012"));
    expect(at("start web-8013:9013")).toBeLessThan(at("swap 2 ends"));
    // Never more than two batches ahead of the one running: batch 4 waits for batch 1's phase to end.
    expect(at("start web-8014:9014")).toBeGreaterThan(at("start web-8013:9013"));
    expect(at("start web-8014:9014")).toBeGreaterThan(at("swap 1 ends"));
    // The first batch waits for nothing before it; every routing holds the whole fleet.
    expect(at("start web-8011:9011")).toBeLessThan(at("swap 1 begins"));
    // Batch 2 starts while batch 1's new slot is checked, before batch 1's swap: the check holds nothing up.
    expect(at("start web-8012:9012")).toBeLessThan(at("swap 1 begins"));
    expect(proxy.applied.map((a) => servingInstances(a.routing).size)).toEqual([4, 4, 4, 4]);
    expect(report.phases.map((p) => p.ok)).toEqual([true, true, true, true]);
  });

  it("with prepareAhead and memory for three batches only, batch 1's old slot that fails to stop (still resident) keeps batch 4 from starting early", async () => {
    const fleet = new SlotFleet(4, "v1");
    // 300 MiB instances: three batches overlapping need 1328 MiB, all four 1628 MiB (see the refusal test below).
    fleet.withMemory(1400);
    const release = fleet.gateStop("web-8011:8011", "fails");
    const proxy = new RecordingProxy();
    const apply = proxy.apply.bind(proxy);
    // Batch 1's old slot fails to stop while batch 3 swaps: batch 4's early start waits for that stop.
    proxy.apply = async (routing, instances) => {
      if (proxy.applied.length === 2) {
        release();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return apply(routing, instances);
    };
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.ok).toBe(false);
    expect(report.error?.step).toBe("batch 1/4: stop (background)");
    // Batches 2 and 3 swapped (batch 3 started during batch 2's swap, as the model allows); batch 4 started nothing.
    expect(proxy.applied).toHaveLength(3);
    expect(fleet.calls.filter((c) => c.includes("web-8014"))).toEqual([]);
    expect(report.recovery).toContain("the deploy stopped before phase batch 4/4");
    expect(byId(report, "web-8013")).toMatchObject({ port: 9013, version: "v2", outcome: "updated" });
    expect(byId(report, "web-8011")).toMatchObject({ port: 9011, idle: { port: 8011, running: true } });
  });

  it("with memory for the whole overlap, batch 4 starts while batch 1's old slot is still stopping: a slow stop holds nothing up", async () => {
    const fleet = new SlotFleet(4, "v1");
    const release = fleet.gateStop("web-8011:8011", "succeeds");
    // Were batch 4 waiting for that stop, the stop would end first: released after 300 ms at the latest.
    const fallback = setTimeout(() => release(), 300);
    const proxy = new RecordingProxy();
    const apply = proxy.apply.bind(proxy);
    proxy.apply = async (routing, instances) => {
      const result = await apply(routing, instances);
      if (proxy.applied.length === 4) release();
      return result;
    };
    const plan = await planDeploy(options(fleet, proxy, "v2"));
    expect(plan.plan.notes).toContain("with that memory, every earlier batch's old processes may still be stopping while a batch starts its new ones");
    const report = await deploy(options(fleet, proxy, "v2"));
    clearTimeout(fallback);
    expect(report.ok).toBe(true);
    expect(fleet.calls.indexOf("start web-8014:9014")).toBeGreaterThan(-1);
    expect(fleet.calls.indexOf("start web-8014:9014")).toBeLessThan(fleet.calls.indexOf("stopped web-8011:8011"));
    // The deploy still ends only once that stop has: the report says every old slot is down.
    for (const id of ["web-8011", "web-8012", "web-8013", "web-8014"]) expect(byId(report, id).idle).toMatchObject({ running: false });
    expect(proxy.applied.map((a) => servingInstances(a.routing).size)).toEqual([4, 4, 4, 4]);
  });

  it("with prepareAhead, a next batch's new slot that fails its check fails that batch: stopped, and its instance never left its old slot", async () => {
    const fleet = new SlotFleet(3, "v1");
    fleet.broken.add("web-8012:9012");
    const proxy = new RecordingProxy();
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.ok).toBe(false);
    expect(report.error).toMatchObject({ code: "E_HEALTHCHECK", instance: "web-8012", step: "batch 2/3: check" });
    // Batch 1 swapped; batch 2 never did; batch 3's new slot, started while batch 2's was checked, was stopped again.
    expect(proxy.applied).toHaveLength(1);
    expect(fleet.running.has("web-8012:9012")).toBe(false);
    expect(fleet.running.get("web-8012:8012")).toBe("v1");
    expect(fleet.calls.filter((c) => c.includes("web-8013"))).toEqual(["update web-8013:9013 v2", "start web-8013:9013", "stop web-8013:9013"]);
    expect(fleet.running.get("web-8013:8013")).toBe("v1");
    expect(byId(report, "web-8011")).toMatchObject({ port: 9011, version: "v2", outcome: "updated" });
    expect(byId(report, "web-8012")).toMatchObject({ port: 8012, version: "v1", inPool: true });
  });

  it("a swap that fails with two batches started ahead of it stops both, and nothing more starts", async () => {
    const fleet = new SlotFleet(4, "v1");
    const proxy = new RecordingProxy();
    // Batch 1's swap takes a while (batches 2 and 3 start meanwhile), then fails with the old routing in force.
    proxy.apply = async () => {
      await new Promise((resolve) => setTimeout(resolve, 30));
      throw new NodropError("E_PROXY_RELOAD", "nginx -t failed on local", { routingInForce: "previous" });
    };
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.ok).toBe(false);
    expect(report.error).toMatchObject({ code: "E_PROXY_RELOAD", step: "batch 1/4: route" });
    for (const id of ["web-8012", "web-8013"]) {
      const port = Number(id.slice(4));
      expect(fleet.calls.filter((c) => c.includes(id))).toEqual([`update ${id}:${port + 1000} v2`, `start ${id}:${port + 1000}`, `stop ${id}:${port + 1000}`]);
      expect(byId(report, id)).toMatchObject({ port, version: "v1", inPool: true, idle: { port: port + 1000, running: false } });
    }
    expect(report.recovery).toContain("batch 2/4, started early: stopped the idle slots of web-8012 (port 9012)");
    expect(report.recovery).toContain("batch 3/4, started early: stopped the idle slots of web-8013 (port 9013)");
    // Batch 4 is three ahead of batch 1: it never started.
    expect(fleet.calls.filter((c) => c.includes("web-8014"))).toEqual([]);
    // Batch 1's own new slot is left, as after any failed proxy change (nginx may still route to it), and the report says so.
    expect(report.recovery).toContain("left web-8011 (port 9011) running");
    expect([...fleet.running.keys()].sort()).toEqual(["web-8011:8011", "web-8011:9011", "web-8012:8012", "web-8013:8013", "web-8014:8014"]);
  });

  it("an early start taken over by its phase before it reached its check runs once: no batch starts twice", async () => {
    const fleet = new SlotFleet(5, "v1");
    // Memory for three batches only: batch 4's early start waits for batch 1's old slot, which stops slowly.
    fleet.withMemory(1500);
    const release = fleet.gateStop("web-8011:8011", "succeeds");
    const proxy = new RecordingProxy();
    const apply = proxy.apply.bind(proxy);
    // Released once batch 3 has swapped: by then batch 4's phase is next and takes its early start over, still waiting.
    proxy.apply = async (routing, instances) => {
      const result = await apply(routing, instances);
      if (proxy.applied.length === 3) setTimeout(() => release(), 20);
      return result;
    };
    const report = await deploy(options(fleet, proxy, "v2"));
expect(report.ok).toBe(true);
    for (const id of ["web-8011", "web-8012", "web-8013", "web-8014", "web-8015"]) {
      const port = Number(id.slice(4)) + 1000;
      expect(fleet.calls.filter((c) => c === `start ${id}:${port}`)).toHaveLength(1);
      expect(fleet.calls.filter((c) => c.startsWith(`update ${id}:${port}`))).toHaveLength(1);
    }
    expect(proxy.applied.map((a) => servingInstances(a.routing).size)).toEqual([5, 5, 5, 5, 5]);
  });

  it("a batch that fails while a later batch's early start still waits for memory: that one starts nothing", async () => {
    const fleet = new SlotFleet(4, "v1");
    fleet.withMemory(1400);
    // Batch 4's early start waits for batch 1's old slot to stop; batch 3's new slot fails its check meanwhile.
    const release = fleet.gateStop("web-8011:8011", "succeeds");
    const fallback = setTimeout(() => release(), 100);
    fleet.broken.add("web-8013:9013");
    const report = await deploy(options(fleet, new RecordingProxy(), "v2"));
    clearTimeout(fallback);
    expect(report.ok).toBe(false);
    expect(report.error).toMatchObject({ code: "E_HEALTHCHECK", instance: "web-8013", step: "batch 3/4: check" });
    // Released by recovery's wait for the background stop, batch 4's early start found the pipeline closed.
    expect(fleet.calls.filter((c) => c.includes("web-8014"))).toEqual([]);
    expect(fleet.running.has("web-8013:9013")).toBe(false);
    expect(byId(report, "web-8014")).toMatchObject({ port: 8014, version: "v1", outcome: "not-reached", inPool: true });
  });

  it("refuses before anything runs when an idle port is taken, naming the host and the port", async () => {
    const fleet = new SlotFleet(2, "v1");
    fleet.inspection = (id) => (id === "web-8012" ? { free: false, listener: "127.0.0.1:9012 (python3 4242)" } : { free: true });
    const proxy = new RecordingProxy();
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.error?.code).toBe("E_PREFLIGHT");
    expect(report.error?.message).toContain("port 9012 on host local (the idle slot of web-8012) is taken: 127.0.0.1:9012 (python3 4242)");
    expect(fleet.calls).toEqual([]);
    expect(proxy.applied).toEqual([]);
  });

  it("refuses when a host lacks the memory for the overlap, and says by how much", async () => {
    const fleet = new SlotFleet(4, "v1");
    // 4 instances of 300 MiB, batches of 2: two batches overlap while the first one's old slots stop.
    fleet.withMemory(1100);
    const proxy = new RecordingProxy();
    const report = await deploy(options(fleet, proxy, "v2", { batchSize: 2 }));
    expect(report.error?.code).toBe("E_PREFLIGHT");
    // 4 × 300 MiB × 1.25 + 128 MiB = 1628 MiB against 1100 MiB.
    expect(report.error?.message).toContain("host local has 1100 MiB available, the overlap needs 1628 MiB");
    expect(report.error?.message).toContain("528 MiB short");
    expect(fleet.calls).toEqual([]);
    // With batches of 1 and no pipeline, the peak is in the last batch: two instances overlapping
    // (750 MiB) and the two swapped before them grown by a quarter (150 MiB), + 128 MiB: 1028 MiB fits.
    const plan = await planDeploy(options(fleet, proxy, "v2", { batchSize: 1, prepareAhead: false }));
    expect(plan.plan.notes).toContain("memory for the overlap on local: 1028 MiB needed, 1100 MiB available");
    // With the pipeline (the default), three batches overlap: 3 × 375 + 75 + 128 = 1328 MiB.
    const pipelined = await deploy(options(fleet, proxy, "v2", { batchSize: 1 }));
    expect(pipelined.error?.message).toContain("the overlap needs 1328 MiB");
    expect(fleet.calls).toEqual([]);
  });

  it("after a deploy killed mid-surge, stops the app's old processes left on idle slots and uses a new one as it is", async () => {
    const fleet = new SlotFleet(3, "v1");
    // web-8011 was swapped to 9011 (v2) but its old slot still runs; web-8012's new slot was started, not swapped.
    fleet.running.set("web-8011:9011", "v2");
    fleet.installed.set("web-8012:9012", "v2");
    fleet.running.set("web-8012:9012", "v2");
    const listening = (id: string, port: number) => fleet.running.has(`${id}:${port}`);
    fleet.inspection = (id) => {
      const spec = fleet.specs.find((s) => s.id === id)!;
      const idle = id === "web-8011" ? spec.port : spec.port + 1000;
      return listening(id, idle) ? { free: false, listener: `127.0.0.1:${idle} (gunicorn 1)` } : { free: true };
    };
    const proxy = new RecordingProxy();
    proxy.inForce = { pools: { all: ["web-8011", "web-8012", "web-8013"] }, defaultPool: "all", pins: {}, slots: { "web-8011": 9011, "web-8012": 8012, "web-8013": 8013 } };
    const plan = await planDeploy(options(fleet, proxy, "v2"));
    expect(plan.plan.phases.map((p) => p.name)).toEqual(["old slots", "batch 1/2", "batch 2/2"]);
    // A process of another version on the idle slot is stopped before the new one goes there.
    fleet.running.set("web-8013:9013", "v0");
    const stale = await planDeploy(options(fleet, proxy, "v2"));
    expect(stale.plan.phases[2]?.steps.slice(0, 3)).toEqual([
      { kind: "stop", instances: ["web-8013"], slot: "idle" },
      { kind: "update", instances: ["web-8013"], slot: "idle" },
      { kind: "start", instances: ["web-8013"], slot: "idle" },
    ]);
    fleet.running.delete("web-8013:9013");
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.ok).toBe(true);
    // web-8011's old slot is stopped; web-8012's new slot already runs v2: checked and swapped in as it is.
    expect(fleet.calls.filter((c) => c.includes("web-8011") || c.includes("web-8012"))).toEqual(["stop web-8011:8011", "stop web-8012:8012"]);
    expect([...fleet.running.keys()].sort()).toEqual(["web-8011:9011", "web-8012:9012", "web-8013:9013"]);
    expect(proxy.applied.every((a) => servingInstances(a.routing).size === 3)).toBe(true);
  });

  it("keepOld keeps the old slots; a rollback inside the window swaps back in one reload without starting a process", async () => {
    const fleet = new SlotFleet(3, "v1");
    // What listens on each instance's other slot, as ss would show it.
    fleet.inspection = (id) => {
      const spec = fleet.specs.find((s) => s.id === id)!;
      const busy = [spec.port, spec.port + 1000].filter((port) => fleet.running.has(`${id}:${port}`)).length === 2;
      return busy ? { free: false, listener: "127.0.0.1 (gunicorn 1)" } : { free: true };
    };
    const proxy = new RecordingProxy();
    const deployed = await deploy(options(fleet, proxy, "v2", { keepOld: 300_000 }));
    expect(deployed.ok).toBe(true);
    expect(Date.parse(deployed.keptUntil!) - Date.now()).toBeGreaterThan(290_000);
    expect(deployed.instances.map((i) => [i.port, i.version, i.idle])).toEqual([
      [9011, "v2", { port: 8011, running: true, version: "v1" }],
      [9012, "v2", { port: 8012, running: true, version: "v1" }],
      [9013, "v2", { port: 8013, running: true, version: "v1" }],
    ]);
    expect(fleet.calls.filter((c) => c.startsWith("stop"))).toEqual([]);

    fleet.calls.length = 0;
    const applied = proxy.applied.length;
    const rollback = await deploy(options(fleet, proxy, "v1"));
    expect(rollback.ok).toBe(true);
    // One reload for all three, no update and no start: the kept processes serve again.
    expect(proxy.applied.length - applied).toBe(1);
    expect(proxy.inForce?.slots).toEqual({ "web-8011": 8011, "web-8012": 8012, "web-8013": 8013 });
    expect(fleet.calls.filter((c) => !c.startsWith("stop")).sort()).toEqual([]);
    // The new version's processes stop once the swap has drained.
    expect(fleet.calls.sort()).toEqual(["stop web-8011:9011", "stop web-8012:9012", "stop web-8013:9013"]);
    expect(rollback.keptUntil).toBeUndefined();
  });

  it("a process of another user or program on an idle port is refused even when it answers the health check with the version", async () => {
    const fleet = new SlotFleet(2, "v1");
    // Something that looks like the app from outside: it answers /health with v2.
    fleet.running.set("web-8012:9012", "v2");
    fleet.inspection = (id) => (id === "web-8012" ? { free: false, listener: "127.0.0.1:9012 (python3 4242)", listenerOwner: "1000:python3", liveOwner: "998:gunicorn" } : { free: true });
    const proxy = new RecordingProxy();
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.error?.code).toBe("E_PREFLIGHT");
    expect(report.error?.message).toContain("port 9012 on host local (the idle slot of web-8012) is taken: 127.0.0.1:9012 (python3 4242)");
    expect(fleet.calls).toEqual([]);
    // The same process run by the live slot's user and program is the app's: checked and used as it is.
    fleet.inspection = (id) => (id === "web-8012" ? { free: false, listener: "127.0.0.1:9012 (gunicorn 4242)", listenerOwner: "998:gunicorn", liveOwner: "998:gunicorn" } : { free: true });
    expect((await deploy(options(fleet, proxy, "v2"))).ok).toBe(true);
    expect(fleet.calls.filter((c) => c.includes("web-8012"))).toEqual(["stop web-8012:8012"]);
  });

  it("refuses a routing in force whose slots are not the instances' ports (the include file is anyone's to edit on the proxy host)", async () => {
    const fleet = new SlotFleet(2, "v1");
    const proxy = new RecordingProxy();
    proxy.inForce = { pools: { all: ["web-8011", "web-8012"] }, defaultPool: "all", pins: {}, slots: { "web-8011": 22, "web-8012": 8012 } };
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.error?.code).toBe("E_PREFLIGHT");
    expect(report.error?.message).toContain('slot 22 of "web-8011" is not one of its ports (8011, 9011)');
    expect(fleet.calls).toEqual([]);
    expect(proxy.applied).toEqual([]);
  });

  it("refuses a surge on instances with one port", async () => {
    const fleet = new SlotFleet(2, "v1");
    const single = fleet.controls().map((c) => ({ ...c, spec: { ...c.spec, slots: undefined } }));
    const proxy = new RecordingProxy();
    const report = await deploy({ ...options(fleet, proxy, "v2"), instances: single });
    expect(report.error?.code).toBe("E_PLAN");
    expect(report.error?.message).toContain("strategy.surge needs two slots on every instance it replaces: web-8011, web-8012 have one port");
  });

  it("with a proxy that drains in the background, the next batch starts before the old slots drain; an old slot stops only after the drains of the routings that served it", async () => {
    const fleet = new SlotFleet(3, "v1");
    const proxy = new DrainingProxy(fleet.calls);
    // Drains end on a timer, so the engine runs on while they are pending.
    const finishLater = setInterval(() => {
      for (const drain of proxy.drains.splice(0)) setTimeout(() => drain.finish(), 5);
    }, 2);
    const report = await deploy(options(fleet, proxy, "v2")).finally(() => clearInterval(finishLater));
    expect(report.ok).toBe(true);
    expect(proxy.asked).toEqual([true, true, true]);
    const at = (call: string) => {
      const index = fleet.calls.indexOf(call);
      expect(index, call).toBeGreaterThanOrEqual(0);
      return index;
    };
    // Batch 2 started while batch 1's old slot was still draining...
    expect(at("start web-8012:9012")).toBeLessThan(at("drained 1"));
    // ...and every old slot stopped only after the drain of each routing that served it.
    expect(at("stop web-8011:8011")).toBeGreaterThan(at("drained 1"));
    expect(at("stop web-8012:8012")).toBeGreaterThan(Math.max(at("drained 1"), at("drained 2")));
    expect(at("stop web-8013:8013")).toBeGreaterThan(Math.max(at("drained 2"), at("drained 3")));
    // The deploy ends after the last drain, and the report has each drain's time, marked background.
    expect(report.routes.map((r) => [r.background, r.drainMs])).toEqual([
      [true, 42],
      [true, 42],
      [true, 42],
    ]);
    expect([...fleet.running.keys()].sort()).toEqual(["web-8011:9011", "web-8012:9012", "web-8013:9013"]);
  });

  it("a background drain that fails ends the deploy at the next phase and leaves running every slot the drained routing served", async () => {
    const fleet = new SlotFleet(3, "v1");
    const proxy = new DrainingProxy(fleet.calls);
    // Batch 1's drain fails while batch 2 swaps; the others drain normally.
    const apply = proxy.apply.bind(proxy);
    proxy.apply = async (routing, instances, context) => {
      const result = await apply(routing, instances, context);
      const first = proxy.drains.findIndex((d) => d.generation === "1");
      if (proxy.applied.length === 2 && first >= 0) proxy.drains.splice(first, 1)[0]!.finish(new NodropError("E_PROXY_DRAIN", "nginx on local: workers of the previous generation still running", { routingInForce: "new" }));
      return result;
    };
    // The other drains end on a timer; batch 1's is left for the override above.
    const finish = setInterval(() => {
      for (const drain of proxy.drains.filter((d) => d.generation !== "1")) {
        proxy.drains.splice(proxy.drains.indexOf(drain), 1);
        drain.finish();
      }
    }, 2);
    const report = await deploy(options(fleet, proxy, "v2")).finally(() => clearInterval(finish));
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_PROXY_DRAIN");
    expect(report.error?.step).toBe("batch 1/3: drain (background)");
    // Batch 2 had swapped when the failure came; batch 3 never started.
    expect(proxy.applied).toHaveLength(2);
    expect(report.recovery).toContain("a background drain failed: the routing that replaced it is in force, and the slots the old one served were left running");
    expect(report.recovery).toContain("the deploy stopped before phase batch 3/3");
    // Batch 3's new slot, started during batch 2's swap, was stopped again: nothing routed to it.
    expect(report.recovery).toContain("batch 3/3, started early: stopped the idle slots of web-8013 (port 9013)");
    expect(fleet.running.has("web-8013:9013")).toBe(false);
    expect(report.routes[0]).toMatchObject({ background: true, drainFailed: "nginx on local: workers of the previous generation still running" });
    // Neither old slot that routing served was stopped: nginx may still be draining requests on them.
    expect(fleet.calls.filter((c) => /^stop .*:80\d\d$/.test(c))).toEqual([]);
    expect(fleet.running.get("web-8011:8011")).toBe("v1");
    expect(fleet.running.get("web-8012:8012")).toBe("v1");
    expect(byId(report, "web-8011")).toMatchObject({ port: 9011, version: "v2", idle: { port: 8011, running: true } });
    // Its new slot was started early and stopped again: back where it was, hence "reverted".
    expect(byId(report, "web-8013")).toMatchObject({ port: 8013, version: "v1", outcome: "reverted" });
    // The routing in force holds the whole fleet, each instance on a slot that runs.
    expect(servingInstances(proxy.inForce!).size).toBe(3);
    for (const [id, port] of Object.entries(proxy.inForce!.slots!)) expect(fleet.running.has(`${id}:${port}`), `${id}:${port}`).toBe(true);
  });

  it("keeps at most two older generations draining while the next swap starts", async () => {
    const fleet = new SlotFleet(4, "v1");
    // Memory for every batch's overlap: only the drain limit holds a swap back, not the old processes.
    fleet.withMemory(1700);
    const proxy = new DrainingProxy(fleet.calls);
    let mostOpen = 0;
    const apply = proxy.apply.bind(proxy);
    proxy.apply = async (routing, instances, context) => {
      mostOpen = Math.max(mostOpen, proxy.drains.length);
      return apply(routing, instances, context);
    };
    // Nothing waits for these drains but the engine itself (keepOld: no old slot is stopped).
    // A drain ends only once three are open (or every swap is done): a limit of one would never get
    // there and hang; no limit would let a swap start beside three.
    const finish = setInterval(() => (proxy.drains.length >= 3 || proxy.applied.length === 4 ? proxy.drains.shift()?.finish() : undefined), 5);
    const report = await deploy(options(fleet, proxy, "v2", { keepOld: 60_000 })).finally(() => clearInterval(finish));
    expect(report.ok).toBe(true);
    expect(proxy.applied).toHaveLength(4);
    expect(mostOpen).toBe(2);
  });

  it("a proxy without the capability is never asked to drain in the background, and reports its drains inline", async () => {
    const fleet = new SlotFleet(2, "v1");
    const proxy = new RecordingProxy();
    const contexts: unknown[] = [];
    const apply = proxy.apply.bind(proxy);
    proxy.apply = async (routing, instances, context?: unknown) => {
      contexts.push(context);
      return apply(routing, instances);
    };
    const report = await deploy(options(fleet, proxy, "v2"));
    expect(report.ok).toBe(true);
    expect(contexts.length).toBe(2);
    for (const context of contexts) expect(context).not.toHaveProperty("backgroundDrain");
    expect(report.routes.every((r) => r.background === undefined)).toBe(true);
  });
});
