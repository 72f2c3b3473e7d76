import { describe, expect, it } from "vitest";
import { type DeployOptions, deploy, observeInstances, planDeploy } from "./engine.js";
import { NodropError, abortError } from "./errors.js";
import type { DeployEvent } from "./events.js";
import type { DeployReport, InstanceReport } from "./report.js";
import { servingInstances, singlePool } from "./routing.js";
import { replaceSteps } from "./plan-helpers.js";
import type {
  DeployPlan,
  DeployVerifier,
  FailurePolicy,
  HealthCheck,
  InstanceControl,
  InstanceSpec,
  ObservedInstance,
  PlanPhase,
  PlanStep,
  Proxy,
  Routing,
  Strategy,
} from "./types.js";

/** In-memory fleet: what each instance has installed and runs, and every call made to it. */
class FakeFleet {
  readonly specs: InstanceSpec[];
  readonly installed = new Map<string, string>();
  readonly running = new Map<string, string | undefined>();
  readonly calls: string[] = [];
  /** `${id}@${version}` pairs whose health check never passes. */
  readonly broken = new Set<string>();
  /** Called on every instance command, before it takes effect. */
  onCall: (call: string) => void = () => {};
  probes = 0;

  constructor(versions: Record<string, string>) {
    this.specs = Object.keys(versions).map((id, index) => ({ id, host: "local", address: "127.0.0.1", port: 8011 + index }));
    for (const [id, version] of Object.entries(versions)) {
      this.installed.set(id, version);
      this.running.set(id, version);
    }
  }

  controls(): InstanceControl[] {
    return this.specs.map((spec) => {
      const record = (call: string, signal: AbortSignal | undefined) => {
        this.calls.push(call);
        this.onCall(call);
        if (signal?.aborted) throw abortError(signal);
      };
      return {
        spec,
        stop: async ({ signal }) => {
          record(`stop ${spec.id}`, signal);
          this.running.set(spec.id, undefined);
        },
        update: async ({ version, previous, signal }) => {
          record(`update ${spec.id} ${previous ?? "-"}->${version}`, signal);
          this.installed.set(spec.id, version);
        },
        start: async ({ version, signal }) => {
          record(`start ${spec.id} ${version}`, signal);
          this.running.set(spec.id, this.installed.get(spec.id));
        },
      };
    });
  }

  health(): HealthCheck {
    return {
      probe: async (instance) => {
        this.probes += 1;
        const version = this.running.get(instance.id);
        if (version === undefined) return { ok: false, version: undefined, detail: "connection refused" };
        if (this.broken.has(`${instance.id}@${version}`)) return { ok: false, version, detail: "status 503" };
        return { ok: true, version, detail: "status 200" };
      },
    };
  }

  callsFor(id: string): string[] {
    return this.calls.filter((c) => c.split(" ")[1] === id);
  }
}

class FakeProxy implements Proxy {
  readonly name = "fake";
  readonly capabilities = { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true };
  readonly applied: Routing[] = [];
  checks = 0;
  /** Returns an error to throw instead of applying the nth (0-based) routing. */
  failOn: (routing: Routing, index: number) => Error | undefined = () => undefined;
  private attempts = 0;
  private inForce: Routing | undefined;

  constructor(inForce: Routing | undefined) {
    this.inForce = inForce;
  }

  async check() {
    this.checks += 1;
    return { ok: true, details: ["fake proxy ready"] };
  }

  async apply(routing: Routing) {
    const error = this.failOn(routing, this.attempts++);
    if (error) throw error;
    this.applied.push(routing);
    this.inForce = routing;
    return { generation: String(this.applied.length), confirmMs: 0, drainMs: 0 };
  }

  async current() {
    return this.inForce;
  }

  servingLists(): string[][] {
    return this.applied.map((r) => [...servingInstances(r)].sort());
  }
}

/** A rolling-like strategy: one instance at a time out of the pool, then everyone back. */
function oneByOne(onFailure: FailurePolicy = "revert", extra: Partial<Strategy<null>> = {}): Strategy<null> & { plans: number } {
  const strategy = {
    name: "one-by-one",
    plans: 0,
    plan({ instances, version }: { instances: readonly ObservedInstance[]; version: string }): DeployPlan {
      strategy.plans += 1;
      const all = instances.map((i) => i.id);
      const phases: PlanPhase[] = instances
        .filter((i) => i.version !== version)
        .map((i) => ({
          name: i.id,
          instances: [i.id],
          onFailure,
          steps: [
            { kind: "route", routing: singlePool(all.filter((id) => id !== i.id)), why: `${i.id} out` },
            { kind: "stop", instances: [i.id] },
            { kind: "update", instances: [i.id] },
            { kind: "start", instances: [i.id] },
            { kind: "check", instances: [i.id] },
          ],
        }));
      phases.push({ name: "finish", instances: [], onFailure, steps: [{ kind: "route", routing: singlePool(all), why: "all back" }] });
      return { strategy: "one-by-one", version, phases, notes: [] };
    },
    ...extra,
  };
  return strategy;
}

/** A strategy whose plan is fixed. */
function fixed(phases: PlanPhase[]): Strategy<null> {
  return { name: "fixed", plan: ({ version }) => ({ strategy: "fixed", version, phases, notes: [] }) };
}

interface Setup {
  fleet: FakeFleet;
  proxy: FakeProxy;
  events: DeployEvent[];
  options: DeployOptions<null>;
}

function setup(versions: Record<string, string>, strategy: Strategy<null>, initial?: Routing | null): Setup {
  const fleet = new FakeFleet(versions);
  const proxy = new FakeProxy(initial === null ? undefined : (initial ?? singlePool(Object.keys(versions))));
  const events: DeployEvent[] = [];
  const options: DeployOptions<null> = {
    version: "v2",
    instances: fleet.controls(),
    proxy,
    strategy,
    strategyOptions: null,
    health: fleet.health(),
    // One good probe suffices, so a healthy check never races the short deadline; a check that
    // cannot pass probes until the deadline.
    healthWait: { successes: 1, intervalMs: 1, deadlineMs: 25 },
    parallel: 4,
    onEvent: (e) => events.push(e),
  };
  return { fleet, proxy, events, options };
}

const V1 = { a: "v1", b: "v1", c: "v1" };

function byId(report: DeployReport): Record<string, InstanceReport> {
  return Object.fromEntries(report.instances.map((i) => [i.id, i]));
}

describe("deploy: every step succeeds", () => {
  it("updates every instance and applies the routings in plan order", async () => {
    const { fleet, proxy, events, options } = setup(V1, oneByOne());
    const report = await deploy(options);

    expect(report.ok).toBe(true);
    expect(report.error).toBeUndefined();
    expect(report.recovery).toBeUndefined();
    expect(report.strategy).toBe("one-by-one");
    expect(report.version).toBe("v2");
    for (const i of report.instances) {
      expect(i).toMatchObject({ from: "v1", version: "v2", outcome: "updated", inPool: true });
      expect(i.steps.map((s) => `${s.kind}:${s.ok}`)).toEqual(["stop:true", "update:true", "start:true", "check:true"]);
    }
    expect(proxy.servingLists()).toEqual([["b", "c"], ["a", "c"], ["a", "b"], ["a", "b", "c"]]);
    expect(proxy.applied.at(-1)).toEqual(singlePool(["a", "b", "c"]));
    expect(report.routes.map((r) => r.generation)).toEqual(["1", "2", "3", "4"]);
    expect(report.routes.map((r) => r.why)).toEqual(["a out", "b out", "c out", "all back"]);
    expect(fleet.calls).toEqual([
      "stop a", "update a v1->v2", "start a v2",
      "stop b", "update b v1->v2", "start b v2",
      "stop c", "update c v1->v2", "start c v2",
    ]);
    expect([...fleet.running.values()]).toEqual(["v2", "v2", "v2"]);
    expect(proxy.checks).toBe(1);
    expect(events.filter((e) => e.type === "phase").map((e) => (e.type === "phase" ? `${e.index}/${e.total}` : ""))).toEqual(["0/4", "1/4", "2/4", "3/4"]);
    expect(events.filter((e) => e.type === "done")).toHaveLength(1);
    expect(events.filter((e) => e.type === "step" && e.status === "fail")).toHaveLength(0);
    expect(report.phases.map((p) => [p.name, p.ok])).toEqual([["a", true], ["b", true], ["c", true], ["finish", true]]);
    // Phases follow one another within the deploy.
    for (const [i, p] of report.phases.entries()) {
      expect(p.startMs).toBeGreaterThanOrEqual(i === 0 ? 0 : report.phases[i - 1]!.startMs + report.phases[i - 1]!.ms);
      expect(p.startMs + p.ms).toBeLessThanOrEqual(report.durationMs);
    }
  });

  it("leaves instances already on the target version unchanged", async () => {
    const { fleet, proxy, options } = setup({ a: "v1", b: "v2", c: "v1" }, oneByOne());
    const report = await deploy(options);
    expect(report.ok).toBe(true);
    const r = byId(report);
    expect(r.b).toMatchObject({ from: "v2", version: "v2", outcome: "unchanged", inPool: true, steps: [] });
    expect(r.a?.outcome).toBe("updated");
    expect(r.c?.outcome).toBe("updated");
    expect(fleet.callsFor("b")).toEqual([]);
    expect(proxy.applied).toHaveLength(3);
  });

  it("may stop an instance the routing in force already left out", async () => {
    const strategy = fixed([
      {
        name: "rejoin",
        instances: ["a"],
        onFailure: "revert",
        steps: [
          { kind: "stop", instances: ["a"] },
          { kind: "update", instances: ["a"] },
          { kind: "start", instances: ["a"] },
          { kind: "check", instances: ["a"] },
          { kind: "route", routing: singlePool(["a", "b"]), why: "a back" },
        ],
      },
    ]);
    const { fleet, proxy, options } = setup({ a: "v1", b: "v2" }, strategy, singlePool(["b"]));
    const report = await deploy(options);
    expect(report.ok).toBe(true);
    expect(fleet.calls).toEqual(["stop a", "update a v1->v2", "start a v2"]);
    expect(proxy.servingLists()).toEqual([["a", "b"]]);
  });
});

describe("deploy: a health check fails in the second batch", () => {
  it("reverts that batch, keeps the first and restores a pool of every healthy instance", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    fleet.broken.add("b@v2");
    const report = await deploy(options);

    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_HEALTHCHECK");
    expect(report.error?.instance).toBe("b");
    expect(report.phases.map((p) => [p.name, p.ok])).toEqual([["a", true], ["b", false]]);
    expect(report.error?.step).toBe("b: check");
    expect(report.error?.message).toContain("did not report v2 healthy 1x");
    expect(report.error?.message).toContain("status 503");

    const r = byId(report);
    expect(r.a).toMatchObject({ from: "v1", version: "v2", outcome: "updated", inPool: true });
    expect(r.b).toMatchObject({ from: "v1", version: "v1", outcome: "reverted", inPool: true });
    expect(r.b?.error).toContain("did not report v2 healthy");
    expect(r.c).toMatchObject({ from: "v1", version: "v1", outcome: "not-reached", inPool: true });
    expect(r.b?.steps.map((s) => `${s.kind}:${s.ok}`)).toEqual([
      "stop:true", "update:true", "start:true", "check:false",
      "stop:true", "update:true", "start:true", "check:true",
    ]);

    expect(proxy.servingLists()).toEqual([["b", "c"], ["a", "c"], ["a", "b", "c"]]);
    expect(fleet.callsFor("b")).toEqual(["stop b", "update b v1->v2", "start b v2", "stop b", "update b v2->v1", "start b v1"]);
    expect(fleet.callsFor("c")).toEqual([]);
    expect(fleet.running.get("b")).toBe("v1");
    expect(report.recovery).toContain("reverted b to their previous version");
    expect(report.recovery).toContain("pool restored: ");
  });

  it("leaves an instance that cannot be reverted out of the pool", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    fleet.broken.add("b@v2");
    // v1 breaks too once b was updated (say, a migration it cannot undo), so the revert's check fails.
    fleet.onCall = (call) => {
      if (call === "start b v2") fleet.broken.add("b@v1");
    };
    const report = await deploy(options);
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_HEALTHCHECK");
    const r = byId(report);
    expect(r.b).toMatchObject({ outcome: "failed", inPool: false, version: "v1" });
    expect(r.a).toMatchObject({ outcome: "updated", inPool: true });
    expect(proxy.servingLists().at(-1)).toEqual(["a", "c"]);
    expect(report.recovery).toContain("could not revert b: left out of the pool");
  });

  it("with the isolate policy keeps the failed instance out and the routing in force", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne("isolate"));
    fleet.broken.add("b@v2");
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_HEALTHCHECK");
    const r = byId(report);
    expect(r.b).toMatchObject({ outcome: "failed", inPool: false, version: "v2" });
    expect(fleet.callsFor("b")).toEqual(["stop b", "update b v1->v2", "start b v2"]);
    expect(proxy.servingLists()).toEqual([["b", "c"], ["a", "c"]]);
    expect(report.recovery).toContain("left b out of the pool");
  });

  it("asks the strategy for the recovery routing, with the versions instances run now", async () => {
    const seen: string[] = [];
    const strategy = oneByOne("revert", {
      recoveryRouting(healthy) {
        seen.push(...healthy.map((h) => `${h.id}@${h.version}`));
        return { pools: { old: ["b", "c"], new: ["a"] }, defaultPool: "old", pins: { v2: "new" } };
      },
    });
    const { fleet, proxy, options } = setup(V1, strategy);
    fleet.broken.add("b@v2");
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_HEALTHCHECK");
    expect(seen).toEqual(["a@v2", "b@v1", "c@v1"]);
    expect(proxy.applied.at(-1)).toEqual({ pools: { old: ["b", "c"], new: ["a"] }, defaultPool: "old", pins: { v2: "new" } });
    expect(report.instances.every((i) => i.inPool)).toBe(true);
  });
});

describe("deploy: the proxy refuses a change", () => {
  it("stops at once when the first route fails its test, touching no instance", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    let attempts = 0;
    proxy.failOn = () => {
      attempts += 1;
      return new NodropError("E_PROXY_TEST", "nginx -t failed: emerg");
    };
    const report = await deploy(options);
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_PROXY_TEST");
    expect(report.error?.step).toBe("a: route");
    expect(report.recovery).toContain("the proxy kept its previous config");
    expect(attempts).toBe(1);
    expect(proxy.applied).toHaveLength(0);
    expect(fleet.calls).toEqual([]);
    expect(report.routes).toHaveLength(0);
    for (const i of report.instances) expect(i).toMatchObject({ outcome: "not-reached", version: "v1", inPool: true });
  });

  it("a failed recovery routing is reported, not thrown", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    fleet.broken.add("b@v2");
    proxy.failOn = (_routing, index) => (index === 2 ? new NodropError("E_PROXY_RELOAD", "reload failed", { routingInForce: "previous" }) : undefined);
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_HEALTHCHECK");
    expect(report.recovery).toContain("could not restore the pool (reload failed); the previous proxy config is in force");
    expect(proxy.servingLists()).toEqual([["b", "c"], ["a", "c"]]);
    expect(byId(report).b).toMatchObject({ outcome: "reverted", inPool: false });
  });
});

describe("deploy: which routing a failed proxy change left in force", () => {
  it("previous: stops with no instance changed after the failure", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    proxy.failOn = (_routing, index) => (index === 1 ? new NodropError("E_PROXY_RELOAD", "reload refused", { routingInForce: "previous" }) : undefined);
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_PROXY_RELOAD");
    expect(report.recovery).toContain("the proxy kept its previous config");
    // a was done before the failure, and stays out: the routing that would have put it back did not take.
    expect(fleet.callsFor("b")).toEqual([]);
    expect(byId(report).a).toMatchObject({ outcome: "updated", inPool: false });
    expect(byId(report).b).toMatchObject({ outcome: "not-reached", inPool: true });
  });

  it("new: the routing counts as in force and the phase's failure rule applies", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    // The change took effect, then the adapter lost its connection before it could confirm the drain.
    proxy.failOn = (routing, index) => {
      if (index !== 0) return undefined;
      proxy.applied.push(routing);
      return new NodropError("E_SSH_DROPPED", "connection to the proxy host dropped while polling workers", { routingInForce: "new" });
    };
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_SSH_DROPPED");
    expect(report.recovery).toContain("pool restored: a, b, c");
    expect(fleet.calls).toEqual([]);
    expect(proxy.servingLists()).toEqual([["b", "c"], ["a", "b", "c"]]);
  });

  it("unknown: reads the routing back before touching any instance, and finds the previous one", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    let failed = false;
    let readBacks = 0;
    const current = proxy.current.bind(proxy);
    proxy.current = async () => {
      if (failed) readBacks += 1;
      return current();
    };
    // A plugin's plain Error says nothing about what is in force: unknown.
    proxy.failOn = (_routing, index) => {
      if (index !== 0) return undefined;
      failed = true;
      return new Error("socket hang up");
    };
    const report = await deploy(options);
    expect(readBacks).toBe(1);
    expect(report.error?.code).toBe("E_PROXY_RELOAD");
    expect(report.error?.message).toContain("socket hang up");
    expect(report.recovery).toContain("the proxy kept its previous config");
    expect(fleet.calls).toEqual([]);
    expect(report.instances.every((i) => i.inPool)).toBe(true);
  });

  it("unknown: finds the new routing in force by reading it back, and recovers", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    proxy.failOn = (routing, index) => {
      if (index !== 0) return undefined;
      proxy.applied.push(routing);
      (proxy as unknown as { inForce: Routing }).inForce = routing;
      return new NodropError("E_TIMEOUT", "nginx -s reload: no answer within 60s", { routingInForce: "unknown" });
    };
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_TIMEOUT");
    expect(report.recovery).toContain("pool restored");
    expect(fleet.calls).toEqual([]);
    expect(proxy.servingLists().at(-1)).toEqual(["a", "b", "c"]);
  });

  it("unknown and unreadable: changes no instance, and counts every instance either routing reaches as in the pool", async () => {
    const strategy = fixed([
      {
        name: "swap",
        instances: ["a"],
        onFailure: "revert",
        steps: [
          { kind: "route", routing: singlePool(["b"]), why: "a out" },
          { kind: "stop", instances: ["a"] },
        ],
      },
    ]);
    const { fleet, proxy, options } = setup({ a: "v1", b: "v1" }, strategy, singlePool(["a", "b"]));
    let failing = false;
    const current = proxy.current.bind(proxy);
    proxy.current = async () => {
      if (failing) throw new NodropError("E_SSH_CONNECT", "cannot connect to the proxy host");
      return current();
    };
    proxy.failOn = () => {
      failing = true;
      return new NodropError("E_SSH_DROPPED", "connection dropped during nginx -t", { routingInForce: "unknown" });
    };
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_SSH_DROPPED");
    expect(report.recovery).toContain("which routing the proxy has in force is unknown");
    expect(report.recovery).toContain("no instance was changed after the failure");
    expect(fleet.calls).toEqual([]);
    // The previous routing may still be in force: a may still get requests.
    expect(byId(report).a).toMatchObject({ inPool: true, outcome: "not-reached" });
  });
});

describe("deploy: the lock taken over", () => {
  it("stops without recovering: the deploy that holds the lock now owns the fleet", async () => {
    const controller = new AbortController();
    const { fleet, proxy, options } = setup(V1, oneByOne());
    fleet.onCall = (call) => {
      if (call === "update a v1->v2") controller.abort(new NodropError("E_LOCK", "the deploy lock on local was taken over by ci@runner; stopping"));
    };
    const report = await deploy({ ...options, signal: controller.signal });
    expect(report.error?.code).toBe("E_LOCK");
    expect(report.recovery).toContain("the deploy lock was taken over");
    // No revert of a and no pool restore: the new holder's routing is left alone.
    expect(fleet.callsFor("a")).toEqual(["stop a", "update a v1->v2"]);
    expect(proxy.servingLists()).toEqual([["b", "c"]]);
  });
});

describe("deploy: recovery budgets", () => {
  it("restoring the pool has a budget of its own: a revert that used up its time does not starve it", async () => {
    // b and c out together; c reverts, b's revert hangs: restoring the pool must bring c back.
    const pair: PlanPhase = { name: "pair", instances: ["b", "c"], onFailure: "revert", steps: [{ kind: "route", routing: singlePool(["a"]), why: "b, c out" }, ...replaceSteps(["b", "c"])] };
    const { fleet, proxy, options } = setup(V1, fixed([pair]));
    fleet.broken.add("b@v2");
    const controls = options.instances.map((control) =>
      control.spec.id !== "b"
        ? control
        : {
            ...control,
            // The revert's stop hangs until recovery's own deadline aborts it.
            stop: async (context: Parameters<typeof control.stop>[0]) => {
              if (context.version !== "v2") return control.stop(context);
              await new Promise((resolve) => context.signal?.addEventListener("abort", resolve, { once: true }));
              throw abortError(context.signal);
            },
          },
    );
    const signals: (AbortSignal | undefined)[] = [];
    const apply = proxy.apply.bind(proxy);
    (proxy as Proxy).apply = async (routing: Routing, _instances: unknown, context?: { signal?: AbortSignal | undefined }) => {
      signals.push(context?.signal);
      return apply(routing);
    };
    const report = await deploy({ ...options, instances: controls, recoveryTimeoutMs: 30 });
    expect(report.error?.code).toBe("E_HEALTHCHECK");
    expect(byId(report).b).toMatchObject({ outcome: "failed", inPool: false });
    expect(report.recovery).toContain("could not revert b");
    expect(report.recovery).toContain("pool restored: a, c");
    expect(signals.at(-1)?.aborted).toBe(false);
    expect(proxy.servingLists().at(-1)).toEqual(["a", "c"]);
  });

  it("tells the strategy the deploy's version and the previous ones, unordered", async () => {
    const contexts: unknown[] = [];
    const strategy = oneByOne("revert", {
      recoveryRouting(healthy, context) {
        contexts.push(context);
        return singlePool(healthy.map((h) => h.id));
      },
    });
    const { fleet, options } = setup({ a: "f00d", b: "beef", c: "f00d" }, strategy);
    fleet.broken.add("b@0a1");
    const report = await deploy({ ...options, version: "0a1" });
    expect(report.error?.code).toBe("E_HEALTHCHECK");
    expect(contexts).toEqual([{ version: "0a1", previous: ["f00d", "beef"], instances: ["a", "b", "c"], options: null }]);
  });
});

describe("deploy: preflight", () => {
  it("refuses when an instance is unhealthy, before any proxy change or command", async () => {
    const strategy = oneByOne();
    const { fleet, proxy, options } = setup(V1, strategy);
    fleet.broken.add("b@v1");
    const report = await deploy(options);
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_PREFLIGHT");
    expect(report.error?.instance).toBe("b");
    expect(report.error?.step).toBe("preflight");
    expect(report.error?.message).toContain("b (127.0.0.1:8012) in the pool but not healthy");
    expect(report.error?.message).not.toContain("a (");
    expect(proxy.applied).toHaveLength(0);
    expect(fleet.calls).toEqual([]);
    expect(strategy.plans).toBe(0);
    expect(report.instances.every((i) => i.outcome === "not-reached")).toBe(true);
  });

  it("an instance only the new version's pin leads to is out of the pool: a stopped deploy's half can be repaired", async () => {
    // A half-split deploy of v2 was killed after it stopped b, which sat in the pool pinned to v2
    // (staged: no client holds that pin before an instance on v2 served it).
    const strategy = oneByOne();
    const { fleet, options } = setup(V1, strategy, { pools: { a: ["b"], live: ["a", "c"] }, defaultPool: "live", pins: { v1: "live", v2: "a" } });
    fleet.running.set("b", undefined);
    const preflight = await planDeploy(options);
    expect(preflight.observed.map((o) => [o.id, o.inPool, o.healthy])).toEqual([["a", true, true], ["b", false, false], ["c", true, true]]);
    // Once b runs v2, the pin does lead to it.
    fleet.running.set("b", "v2");
    expect((await planDeploy(options)).observed.find((o) => o.id === "b")?.inPool).toBe(true);
  });

  it("refuses when the proxy is not set up", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    proxy.check = async () => ({ ok: false, details: ["include missing"] });
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_PROXY_SETUP");
    expect(report.error?.message).toContain("include missing");
    expect(fleet.probes).toBe(0);
    expect(fleet.calls).toEqual([]);
  });

  it("refuses a plan with an invalid routing or an unknown instance before changing anything", async () => {
    for (const step of [
      { kind: "route", routing: singlePool(["a", "ghost"]), why: "bad" },
      { kind: "stop", instances: ["ghost"] },
    ] satisfies PlanStep[]) {
      const { fleet, proxy, options } = setup(V1, fixed([{ name: "p", instances: ["a"], onFailure: "revert", steps: [step] }]));
      const report = await deploy(options);
      expect(report.error?.code).toBe("E_PLAN");
      expect(report.error?.step).toBe("preflight");
      expect(report.error?.message).toContain("ghost");
      expect(proxy.applied).toHaveLength(0);
      expect(fleet.calls).toEqual([]);
    }
  });

  it("planDeploy and observeInstances touch nothing", async () => {
    const { fleet, proxy, options } = setup({ a: "v1", b: "v2" }, oneByOne());
    const observed = await observeInstances(options.instances, options.health);
    expect(observed.map((o) => `${o.id}@${o.version}:${o.healthy}`)).toEqual(["a@v1:true", "b@v2:true"]);
    const { plan } = await planDeploy(options);
    expect(plan.phases.map((p) => p.name)).toEqual(["a", "finish"]);
    expect(proxy.applied).toHaveLength(0);
    expect(fleet.calls).toEqual([]);
  });
});

describe("deploy: abort", () => {
  it("an abort during an instance step stops the deploy and recovery still restores the routing", async () => {
    const controller = new AbortController();
    const { fleet, proxy, options } = setup(V1, oneByOne());
    fleet.onCall = (call) => {
      if (call === "stop a") controller.abort("operator pressed ctrl-c");
    };
    const report = await deploy({ ...options, signal: controller.signal });
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_ABORTED");
    expect(report.error?.message).toContain("operator pressed ctrl-c");
    expect(report.error?.step).toBe("a: stop");
    // Recovery runs on its own signal: a goes back to v1 and rejoins.
    expect(fleet.callsFor("a")).toEqual(["stop a", "stop a", "update a v2->v1", "start a v1"]);
    expect(fleet.calls.filter((c) => c.includes("->v2"))).toEqual([]);
    expect(fleet.callsFor("b")).toEqual([]);
    expect(proxy.servingLists()).toEqual([["b", "c"], ["a", "b", "c"]]);
    const r = byId(report);
    expect(r.a).toMatchObject({ outcome: "reverted", version: "v1", inPool: true });
    expect(r.b).toMatchObject({ outcome: "not-reached", inPool: true });
  });

  it("an abort while soaking stops before the next step", async () => {
    const controller = new AbortController();
    const strategy = fixed([
      {
        name: "soak",
        instances: [],
        onFailure: "revert",
        steps: [
          { kind: "soak", ms: 600_000 },
          { kind: "route", routing: singlePool(["a"]), why: "never" },
        ],
      },
    ]);
    const { proxy, events, options } = setup({ a: "v1", b: "v1" }, strategy);
    const report = await deploy({
      ...options,
      signal: controller.signal,
      onEvent: (e) => {
        events.push(e);
        if (e.type === "step" && e.kind === "soak" && e.status === "start") queueMicrotask(() => controller.abort());
      },
    });
    expect(report.error?.code).toBe("E_ABORTED");
    expect(report.error?.step).toBe("soak: soak");
    // The route after the soak never ran; recovery found everyone in the pool and left it so (a
    // reload that changes nothing would still close idle keep-alive connections).
    expect(proxy.servingLists()).toEqual([]);
    expect(report.recovery).toContain("pool kept: a, b");
    expect(proxy.applied.some((r) => r.pools.all?.length === 1)).toBe(false);
  });
});

describe("deploy: the engine's own guard", () => {
  it("refuses a plan that stops an instance still in the pool", async () => {
    const strategy = fixed([
      {
        name: "reckless",
        instances: ["a"],
        onFailure: "revert",
        steps: [
          { kind: "stop", instances: ["a"] },
          { kind: "update", instances: ["a"] },
          { kind: "start", instances: ["a"] },
        ],
      },
    ]);
    const { fleet, options } = setup(V1, strategy);
    const report = await deploy(options);
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_PLAN");
    expect(report.error?.instance).toBe("a");
    expect(report.error?.message).toContain("plan would stop a while it is in the pool");
    expect(fleet.calls).toEqual([]);
    expect(byId(report).a).toMatchObject({ outcome: "not-reached", version: "v1", inPool: true });
  });

  it("refuses to update an instance a route just put back", async () => {
    const strategy = fixed([
      {
        name: "p",
        instances: ["a"],
        onFailure: "revert",
        steps: [
          { kind: "route", routing: singlePool(["b"]), why: "a out" },
          { kind: "stop", instances: ["a"] },
          { kind: "route", routing: singlePool(["a", "b"]), why: "a back too early" },
          { kind: "update", instances: ["a"] },
        ],
      },
    ]);
    const { fleet, options } = setup({ a: "v1", b: "v1" }, strategy);
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_PLAN");
    expect(report.error?.message).toContain("plan would update a while it is in the pool");
    expect(fleet.calls).toEqual(["stop a"]);
  });
});

describe("deploy: known defects", () => {
  // Bug: after a preflight refusal nothing was changed and every instance still serves, but the
  // report says inPool: false for all of them (`serving` is still the empty initial Set), so the
  // CLI table shows "in pool: no" for an untouched fleet.
  it("a preflight refusal reports the untouched instances as still in the pool", async () => {
    const { fleet, options } = setup(V1, oneByOne());
    fleet.broken.add("b@v1");
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_PREFLIGHT");
    expect(report.instances.map((i) => i.inPool)).toEqual([true, true, true]);
  });

  // Bug: planDeploy checks the ids in steps but not phase.instances; recover() then does
  // tracked.get(id)! on an unknown id and deploy() rejects with a TypeError instead of returning
  // a report, leaving the routing unrestored.
  it("a plan whose phase names an unknown instance is refused at preflight", async () => {
    const strategy = fixed([
      {
        name: "p",
        instances: ["a", "ghost"],
        onFailure: "revert",
        steps: [
          { kind: "route", routing: singlePool(["b"]), why: "a out" },
          { kind: "stop", instances: ["a"] },
          { kind: "update", instances: ["a"] },
          { kind: "start", instances: ["a"] },
          { kind: "check", instances: ["a"] },
        ],
      },
    ]);
    const { fleet, proxy, options } = setup({ a: "v1", b: "v1" }, strategy);
    fleet.broken.add("a@v2");
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_PLAN");
    expect(report.error?.step).toBe("preflight");
    expect(proxy.applied).toHaveLength(0);
  });
});

/** A verifier whose counts the test scripts: it crosses its threshold when `crossAt` says so. */
function scriptedVerifier(crossAt: (calls: readonly string[]) => boolean, fleet: FakeFleet, startError?: Error) {
  const seen = { started: 0, stopped: 0 };
  let crossed: string | undefined;
  const verifier: DeployVerifier = {
    url: "http://127.0.0.1:1/",
    async start() {
      seen.started += 1;
      if (startError) throw startError;
    },
    breach() {
      if (crossed === undefined && crossAt(fleet.calls)) crossed = "verify: 3 of 40 requests to http://127.0.0.1:1/ failed (allowed: 0; http_500 3)";
      return crossed;
    },
    async stop() {
      seen.stopped += 1;
      verifier.breach();
      return { url: verifier.url, requests: 40, ok: crossed ? 37 : 40, failed: crossed ? 3 : 0, resent: 0, regressions: 0, byVersion: {}, errors: {}, durationMs: 1, maxFailed: 0, enforced: true, ...(crossed ? { breach: crossed } : {}) };
    },
  };
  return { verifier, seen };
}

describe("deploy: the verify probe", () => {
  it("runs for the whole deploy and its counts land in the report", async () => {
    const { fleet, options } = setup(V1, oneByOne());
    const { verifier, seen } = scriptedVerifier(() => false, fleet);
    const report = await deploy({ ...options, verify: verifier });
    expect(report.ok).toBe(true);
    expect(seen).toEqual({ started: 1, stopped: 1 });
    expect(report.verify).toMatchObject({ requests: 40, failed: 0 });
    expect(report.verify?.breach).toBeUndefined();
  });

  it("a crossed threshold stops the deploy at the next step and applies the phase's failure rule", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    // Crossed once b is updated: b's phase is reverted and c is never touched.
    const { verifier, seen } = scriptedVerifier((calls) => calls.includes("start b v2"), fleet);
    const report = await deploy({ ...options, verify: verifier });
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_VERIFY");
    expect(report.error?.message).toContain("3 of 40 requests");
    expect(report.error?.message).toContain("nodrop rollback");
    expect(report.error?.step).toBe("b: check");
    const r = byId(report);
    expect(r.a).toMatchObject({ version: "v2", outcome: "updated", inPool: true });
    expect(r.b).toMatchObject({ version: "v1", outcome: "reverted", inPool: true });
    expect(r.c).toMatchObject({ version: "v1", outcome: "not-reached", inPool: true });
    expect(fleet.callsFor("c")).toEqual([]);
    expect(proxy.servingLists().at(-1)).toEqual(["a", "b", "c"]);
    expect(report.verify?.breach).toContain("3 of 40");
    expect(seen.stopped).toBe(1);
  });

  it("a threshold crossed after the last step fails the deploy with every instance done", async () => {
    const { fleet, options } = setup(V1, oneByOne());
    let finished = false;
    const { verifier } = scriptedVerifier(() => finished, fleet);
    const report = await deploy({ ...options, verify: verifier, onEvent: (e) => { if (e.type === "route" && e.why === "all back") finished = true; } });
    // Nothing was crossed between steps; stop(), after the last step, sees it.
    expect(report.ok).toBe(false);
    expect(report.error).toMatchObject({ code: "E_VERIFY", step: "verify" });
    expect(report.instances.every((i) => i.version === "v2" && i.inPool)).toBe(true);
  });

  it("a site that does not answer before the deploy changes nothing", async () => {
    const { fleet, proxy, options } = setup(V1, oneByOne());
    const { verifier, seen } = scriptedVerifier(() => false, fleet, new NodropError("E_VERIFY", "verify: http://127.0.0.1:1/ does not answer before the deploy (ECONNREFUSED); nothing was changed"));
    const report = await deploy({ ...options, verify: verifier });
    expect(report.ok).toBe(false);
    expect(report.error).toMatchObject({ code: "E_VERIFY", step: "verify" });
    expect(fleet.calls).toEqual([]);
    expect(proxy.applied).toEqual([]);
    expect(seen.stopped).toBe(0);
    expect(report.verify).toBeUndefined();
  });
});

describe("deploy: a canary's gates (revertAlso, the verify probe, a manual pause)", () => {
  // a becomes the canary in phase 1, b joins it in phase 2; c stays on v1.
  const canaryPhases = (gate: PlanStep): PlanPhase[] => [
    {
      name: "canary a",
      instances: ["a"],
      onFailure: "revert",
      revertAlso: [],
      steps: [{ kind: "route", routing: singlePool(["b", "c"], "stable"), why: "a out" }, ...replaceSteps(["a"]), { kind: "route", routing: { pools: { stable: ["b", "c"], canary: ["a"] }, defaultPool: "stable", pins: { v2: "canary" } }, why: "a in" }],
    },
    {
      name: "canary b",
      instances: ["b"],
      onFailure: "revert",
      revertAlso: ["a"],
      steps: [
        { kind: "route", routing: { pools: { stable: ["c"], canary: ["a"] }, defaultPool: "stable", pins: { v2: "canary" } }, why: "b out" },
        ...replaceSteps(["b"]),
        { kind: "route", routing: { pools: { stable: ["c"], canary: ["a", "b"] }, defaultPool: "stable", pins: { v2: "canary" } }, why: "b in" },
        gate,
      ],
    },
  ];
  const waitGate: PlanStep = { kind: "gate", name: "50%", weight: 50, ms: 30, instances: [] };

  it("a verify threshold crossed during a gate fails it at once: every client goes to c first, then a and b (an earlier phase's) go back", async () => {
    const { fleet, proxy, options } = setup(V1, fixed(canaryPhases({ ...waitGate, ms: 60_000 })));
    // Crossed once the gate runs: only the gate can notice it before its minute is up.
    let gateRunning = false;
    const { verifier } = scriptedVerifier(() => gateRunning, fleet);
    const started = performance.now();
    const onEvent = (e: DeployEvent) => {
      if (e.type === "step" && e.kind === "gate" && e.status === "start") gateRunning = true;
    };
    const report = await deploy({ ...options, verify: verifier, onEvent });
    // Not after the gate's minute: at its first look at the probe.
    expect(performance.now() - started).toBeLessThan(30_000);
    expect(report.error).toMatchObject({ code: "E_CANARY", step: "canary b: gate" });
    expect(report.gates).toEqual([expect.objectContaining({ gate: "50%", decision: "failed", reason: expect.stringContaining("3 of 40") })]);
    // The routing that sent every client to c came before any stop of a or b in the recovery.
    const lists = proxy.servingLists();
    expect(lists).toContainEqual(["c"]);
    expect(fleet.callsFor("a").slice(-3)).toEqual(["stop a", "update a v2->v1", "start a v1"]);
    const r = byId(report);
    expect(r.a).toMatchObject({ version: "v1", outcome: "reverted", inPool: true });
    expect(r.b).toMatchObject({ version: "v1", outcome: "reverted", inPool: true });
    expect(lists.at(-1)).toEqual(["a", "b", "c"]);
  });

  it("a resumed canary's failed gate takes back the instances that were on v2 before the resume too: every client to c, a and b back to v1", async () => {
    // a ran v2 when this run started (a killed canary, resumed): in force, the canary's routing.
    const resumed = { pools: { stable: ["b", "c"], canary: ["a"] }, defaultPool: "stable", pins: { v2: "canary" } };
    const { fleet, proxy, options } = setup({ a: "v2", b: "v1", c: "v1" }, fixed([canaryPhases({ ...waitGate, ms: 60_000 })[1]!]), resumed);
    let gateRunning = false;
    const { verifier } = scriptedVerifier(() => gateRunning, fleet);
    const onEvent = (e: DeployEvent) => {
      if (e.type === "step" && e.kind === "gate" && e.status === "start") gateRunning = true;
    };
    const report = await deploy({ ...options, verify: verifier, onEvent });
    expect(report.error).toMatchObject({ code: "E_CANARY" });
    expect(proxy.servingLists()).toContainEqual(["c"]);
    expect(fleet.callsFor("a")).toEqual(["stop a", "update a v2->v1", "start a v1"]);
    const r = byId(report);
    expect(r.a).toMatchObject({ version: "v1", outcome: "reverted", inPool: true });
    expect(r.b).toMatchObject({ version: "v1", outcome: "reverted", inPool: true });
    // Nothing routes v2's pin any more: the last routing is the old version's alone.
    expect(proxy.applied.at(-1)?.pins).toEqual({});
  });

  it("a resumed canary's instance that the proxy could not route away from keeps serving: never stopped while its pin reaches it", async () => {
    const resumed = { pools: { stable: ["b", "c"], canary: ["a"] }, defaultPool: "stable", pins: { v2: "canary" } };
    const { fleet, proxy, options } = setup({ a: "v2", b: "v1", c: "v1" }, fixed([canaryPhases({ ...waitGate, ms: 60_000 })[1]!]), resumed);
    let gateRunning = false;
    const { verifier } = scriptedVerifier(() => gateRunning, fleet);
    // Every proxy change from the gate on fails: the routing before it (a, b pinned) stays in force.
    proxy.failOn = () => (gateRunning ? new NodropError("E_PROXY_RELOAD", "nginx -t failed: no space left on device", { routingInForce: "previous" }) : undefined);
    const onEvent = (e: DeployEvent) => {
      if (e.type === "step" && e.kind === "gate" && e.status === "start") gateRunning = true;
    };
    const report = await deploy({ ...options, verify: verifier, onEvent });
    expect(report.error).toMatchObject({ code: "E_CANARY" });
    expect(report.recovery).toContain("could not route clients away");
    expect(fleet.callsFor("a")).toEqual([]);
    expect(fleet.running.get("a")).toBe("v2");
  });

  it("a manual gate ends the deploy paused, with no recovery and no end: the canary keeps serving", async () => {
    const { proxy, options } = setup(V1, fixed(canaryPhases({ ...waitGate, manual: true })));
    const report = await deploy(options);
    expect(report.paused).toMatchObject({ phase: "canary b", gate: "50%" });
    expect(report.error).toBeUndefined();
    expect(report.recovery).toBeUndefined();
    expect(report.gates).toEqual([expect.objectContaining({ decision: "paused" })]);
    expect(proxy.servingLists().at(-1)?.slice().sort()).toEqual(["a", "b", "c"]);
    expect(byId(report).a).toMatchObject({ version: "v2", inPool: true });
  });

  it("an analysed gate on a proxy that cannot count traffic is refused with what to set", async () => {
    const analysis = { minRequests: 1, maxErrorRateIncrease: 0.01, maxLatencyRatio: 2, latencyFloorMs: 25, intervalMs: 10, extraMs: 10 };
    const { options } = setup(V1, fixed(canaryPhases({ ...waitGate, analysis })));
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_PLAN");
    expect(report.error?.message).toContain("proxy.accessLog");
  });
});
