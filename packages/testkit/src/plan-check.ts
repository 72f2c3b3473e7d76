import { type DeployPlan, NodropError, type ObservedInstance, type PlanInput, type Routing, reachesSlot, routedPort, servingInstances, validateRouting } from "@nodrop/core";

/** One problem of a plan, tagged with the property it breaks (the strategy suite reports them per property). */
export interface PlanProblem {
  readonly rule: PlanRule;
  readonly message: string;
}

export type PlanRule =
  /** plan.strategy / plan.version / phase shapes. */
  | "shape"
  /** A route step's routing fails core's validateRouting. */
  | "valid-routing"
  /** A step names an instance that its phase does not declare (or that does not exist). */
  | "phase-instances"
  /** stop or update of an instance a request can still reach. */
  | "stop-reachable"
  /** A request can reach an instance that is down (stopped and not checked since, or unhealthy to begin with). */
  | "route-to-down"
  /** An instance not on the target version is not taken through stop, update, start, check. */
  | "step-order"
  /** After the last step, the routing in force does not serve every instance. */
  | "final-routing"
  /** A fleet already on the target version gets instance steps. */
  | "no-op"
  /** Pins, a default switch, affinity, pool slots, a split or an analysed gate on a proxy without the capability. */
  | "capabilities";

const INSTANCE_STEPS = ["stop", "update", "start", "check"] as const;

/**
 * Walks a plan the way the engine applies it and returns every problem found; empty when the
 * plan is safe. Pure: adapter authors can call it on plans of their own fleets.
 *
 * Who can reach an instance, step by step: the default pool, the pool of a pending default
 * switch, and pools pinned to other versions, of the routing in force (before the first route
 * step: the instances in the pool). The pool pinned to the version being deployed counts once a
 * client can hold that pin, that is once an instance on that version has been reachable (a fleet
 * partly on it already, or an updated instance back in service). stop and update are also held to
 * the engine's own guard, so a plan that passes here never trips it at run time.
 *
 * Instances with two slots (`slots`) are walked per slot: a step with `slot: "idle"` acts on the
 * port the routing in force does not serve it on, a route step's `slots` moves the live one, and
 * each rule asks its question of the slot (core's `reachesSlot`, as the engine's guard does).
 */
export function planProblems<O>(input: PlanInput<O>, plan: DeployPlan, strategyName?: string): PlanProblem[] {
  const problems: PlanProblem[] = [];
  const add = (rule: PlanRule, message: string) => problems.push({ rule, message });
  const target = input.version;
  const ids = input.instances.map((i) => i.id);
  const known = new Set(ids);

  if (strategyName !== undefined && plan.strategy !== strategyName) add("shape", `plan.strategy is ${JSON.stringify(plan.strategy)}, not the strategy's name ${JSON.stringify(strategyName)}`);
  if (plan.version !== target) add("shape", `plan.version is ${JSON.stringify(plan.version)}, not the version deployed ${JSON.stringify(target)}`);
  if (!Array.isArray(plan.phases as unknown)) {
    add("shape", "plan.phases is not an array");
    return problems;
  }
  if (!Array.isArray(plan.notes as unknown) || plan.notes.some((n) => typeof n !== "string")) add("shape", "plan.notes is not an array of strings");

  const fleet = new SlotWalk(input.instances, target);
  const reportedDown = new Set<string>();
  const checkDown = (where: string) => {
    for (const slot of fleet.downSlots()) {
      if (reportedDown.has(slot.key) || !fleet.reachable(slot.id, slot.port)) continue;
      reportedDown.add(slot.key);
      const observed = input.instances.find((i) => i.id === slot.id);
      const why = observed?.healthy === false && fleet.sequence(slot.id, slot.port).length === 0 ? "unhealthy and not yet checked" : "stopped and not checked since";
      add("route-to-down", `${where}: requests can reach ${fleet.label(slot.id, slot.port)}, which is ${why}`);
    }
  };

  plan.phases.forEach((phase, p) => {
    const label = `phase ${p + 1} "${phase.name}"`;
    if (typeof phase.name !== "string" || phase.name === "") add("shape", `phase ${p + 1} has no name`);
    if (phase.onFailure !== "revert" && phase.onFailure !== "isolate") add("shape", `${label}: onFailure ${JSON.stringify(phase.onFailure)} is neither "revert" nor "isolate"`);
    const own = new Set(phase.instances);
    if (own.size !== phase.instances.length) add("phase-instances", `${label} declares an instance twice: ${phase.instances.join(", ")}`);
    for (const id of phase.instances) if (!known.has(id)) add("phase-instances", `${label} declares unknown instance "${id}"`);
    phase.steps.forEach((step, s) => {
      const where = `${label} step ${s + 1} (${step.kind}${step.kind !== "route" && step.kind !== "soak" && step.slot === "idle" ? ", idle slot" : ""})`;
      if (step.kind === "route") {
        try {
          validateRouting(step.routing, input.instances);
        } catch (error) {
          add("valid-routing", `${where}: ${NodropError.is(error) ? error.message : String(error)}`);
          return;
        }
        const r = step.routing;
        if (!input.proxy.versionPinning && Object.keys(r.pins).length > 0) add("capabilities", `${where}: pins ${JSON.stringify(r.pins)}, but the proxy cannot pin clients to a version`);
        if (!input.proxy.timedSwitch && r.switchDefault) add("capabilities", `${where}: switchDefault, but the proxy cannot switch at one instant`);
        if (!input.proxy.affinity && r.affinity) add("capabilities", `${where}: affinity, but the proxy has no instance affinity`);
        if (!input.proxy.split && r.split) add("capabilities", `${where}: a weighted split, but the proxy cannot split clients by weight`);
        if (!input.proxy.poolSlots && r.poolSlots && Object.keys(r.poolSlots).length > 0) add("capabilities", `${where}: poolSlots, but the proxy cannot serve one instance on different ports in different pools`);
        fleet.route(r);
        checkDown(where);
        return;
      }
      if (step.kind === "soak") {
        if (typeof step.ms !== "number" || !Number.isFinite(step.ms) || step.ms < 0) add("shape", `${where}: ms ${JSON.stringify(step.ms)} is not a duration`);
        return;
      }
      if (step.kind === "gate") {
        if (typeof step.ms !== "number" || !Number.isFinite(step.ms) || step.ms < 0) add("shape", `${where}: ms ${JSON.stringify(step.ms)} is not a duration`);
        if (step.analysis && !input.proxy.traffic) add("capabilities", `${where}: an analysed gate, but the proxy cannot count traffic`);
        return;
      }
      if (step.kind === "release") {
        add("shape", `${where}: a release step (the engine adds the release phase before the plan; a strategy does not plan one)`);
        return;
      }
      if (!(INSTANCE_STEPS as readonly string[]).includes(step.kind)) {
        add("shape", `${where}: unknown step kind`);
        return;
      }
      for (const id of step.instances) {
        if (!known.has(id)) {
          add("phase-instances", `${where} names unknown instance "${id}"`);
          continue;
        }
        if (!own.has(id)) add("phase-instances", `${where} touches ${id}, which ${label} does not declare (recovery works per phase)`);
        const port = step.slot === "idle" ? fleet.idlePort(id) : fleet.livePort(id);
        if (port === undefined) {
          add("shape", `${where}: ${id} has one port, so it has no idle slot`);
          continue;
        }
        if ((step.kind === "stop" || step.kind === "update") && fleet.guarded(id, port)) {
          add("stop-reachable", `${where}: ${fleet.label(id, port)} can still get requests (${describeReach(fleet.routing, id, target, fleet.initiallyServing)})`);
        }
        fleet.apply(step.kind, id, port);
      }
      if (step.kind === "update") checkDown(where);
      if (step.kind === "check") fleet.noteServed();
    });
  });

  for (const instance of input.instances) orderProblems(fleet, instance, target, add);

  const finalServing = fleet.routing ? servingInstances(fleet.routing) : fleet.initiallyServing;
  const missing = ids.filter((id) => !finalServing.has(id));
  if (missing.length > 0) add("final-routing", `after the last step the routing in force does not serve ${missing.join(", ")}${fleet.routing ? "" : " (no route step: they stay out of the pool)"}`);

  if (input.instances.every((i) => i.healthy && i.version === target)) {
    // Stopping a process the app left on an idle slot (a killed deploy, a keep window) is tidying, not a change.
    const touched = ids.filter((id) => fleet.touchedBeyondLeftovers(id));
    if (touched.length > 0) add("no-op", `every instance already runs ${target}, yet the plan has steps for ${touched.join(", ")}`);
  }
  return problems;
}

/**
 * Whether each instance went through its steps in order. One port: stop → update → start →
 * check, in rounds. Two slots: each slot's steps are rounds of [stop →] update → start → check
 * (or a check alone of a slot that already runs the target), possibly ending in a stop; and the
 * slot live at the end runs the target and was checked since it last started.
 */
function orderProblems(fleet: SlotWalk, instance: ObservedInstance, target: string, add: (rule: PlanRule, message: string) => void): void {
  const needsUpdate = instance.version !== target || !instance.healthy;
  if (!instance.slots) {
    const kinds = fleet.sequence(instance.id, instance.port);
    if (needsUpdate && kinds.length === 0) return add("step-order", `${instance.id} (${instance.version ?? "down"}) is never updated to ${target}`);
    if (kinds.length === 0) return;
    const expected = Array.from({ length: Math.max(1, Math.ceil(kinds.length / 4)) }, () => INSTANCE_STEPS).flat();
    if (kinds.join() !== expected.join()) add("step-order", `${instance.id} gets ${kinds.join(" → ")}; expected stop → update → start → check`);
    return;
  }
  for (const port of instance.slots) {
    const kinds = fleet.sequence(instance.id, port);
    if (!SLOT_ORDER.test(kinds.map((k) => `${k},`).join(""))) {
      add("step-order", `${fleet.label(instance.id, port)} gets ${kinds.join(" → ")}; expected [stop →] update → start → check, possibly ending in a stop`);
    }
  }
  const live = fleet.livePort(instance.id)!;
  if (needsUpdate && (fleet.version(instance.id, live) !== target || fleet.isDown(instance.id, live))) {
    add("step-order", `${instance.id} (${instance.version ?? "down"}) ends served by ${fleet.label(instance.id, live)}, which ${fleet.version(instance.id, live) === target ? "was not checked since it started" : `runs ${fleet.version(instance.id, live) ?? "nothing"}, not ${target}`}`);
  }
}

const SLOT_ORDER = /^(?:(?:(?:stop,)?update,start,)?check,)*(?:stop,)?$/;

/** The walk's state, one entry per slot (an instance with one port has one): version, down, steps. */
class SlotWalk {
  routing: Routing | undefined;
  readonly initiallyServing: ReadonlySet<string>;
  private readonly specs: ReadonlyMap<string, ObservedInstance>;
  private readonly target: string;
  private readonly live = new Map<string, number>();
  private readonly versions = new Map<string, string | undefined>();
  private readonly down = new Set<string>();
  private readonly steps = new Map<string, string[]>();
  /** Idle slots where a process of the app ran at the start: stopping one is tidying. */
  private readonly leftovers = new Set<string>();
  /** A client can hold the target's pin once a slot on the target was reachable and up. */
  private targetServed = false;

  constructor(instances: readonly ObservedInstance[], target: string) {
    this.target = target;
    this.specs = new Map(instances.map((i) => [i.id, i]));
    this.initiallyServing = new Set(instances.filter((i) => i.inPool).map((i) => i.id));
    for (const i of instances) {
      const live = i.livePort ?? i.port;
      this.live.set(i.id, live);
      this.versions.set(key(i.id, live), i.version);
      if (!i.healthy) this.down.add(key(i.id, live));
      const idle = this.idlePort(i.id);
      if (idle === undefined) continue;
      const running = i.idle !== undefined && !i.idle.free && i.idle.version !== undefined;
      this.versions.set(key(i.id, idle), running ? i.idle!.version : undefined);
      if (running) this.leftovers.add(key(i.id, idle));
      else this.down.add(key(i.id, idle));
    }
    this.noteServed();
  }

  livePort(id: string): number | undefined {
    return this.live.get(id);
  }

  idlePort(id: string): number | undefined {
    const spec = this.specs.get(id);
    const live = this.live.get(id);
    return spec?.slots?.find((port) => port !== live);
  }

  label(id: string, port: number): string {
    return this.specs.get(id)?.slots ? `${id} on ${port}` : id;
  }

  version(id: string, port: number): string | undefined {
    return this.versions.get(key(id, port));
  }

  isDown(id: string, port: number): boolean {
    return this.down.has(key(id, port));
  }

  sequence(id: string, port: number): string[] {
    return this.steps.get(key(id, port)) ?? [];
  }

  *downSlots(): Iterable<{ key: string; id: string; port: number }> {
    for (const k of this.down) {
      const at = k.lastIndexOf(":");
      yield { key: k, id: k.slice(0, at), port: Number(k.slice(at + 1)) };
    }
  }

  /** Requests can reach the slot: the routing in force leads there, the target's pin once a client can hold it. */
  reachable(id: string, port: number): boolean {
    const spec = this.specs.get(id)!;
    if (!this.routing) return this.initiallyServing.has(id) && port === this.live.get(id);
    return reachesSlot(this.routing, this.targetServed ? [] : [this.target], spec, port, undefined, this.live.get(id));
  }

  /** What the engine's guard refuses to stop or update, and what the walk knows can be reached. */
  guarded(id: string, port: number): boolean {
    if (this.reachable(id, port)) return true;
    if (!this.routing) return false;
    return reachesSlot(this.routing, [this.target], this.specs.get(id)!, port, this.version(id, port), this.live.get(id));
  }

  route(routing: Routing): void {
    this.routing = routing;
    for (const [id, spec] of this.specs) if (spec.slots) this.live.set(id, routedPort(routing, spec, this.live.get(id)));
    this.noteServed();
  }

  apply(kind: (typeof INSTANCE_STEPS)[number], id: string, port: number): void {
    const k = key(id, port);
    this.steps.set(k, [...(this.steps.get(k) ?? []), kind]);
    if (kind === "stop") this.down.add(k);
    if (kind === "update") this.versions.set(k, this.target);
    if (kind === "check") this.down.delete(k);
  }

  noteServed(): void {
    if (this.targetServed) return;
    for (const [id] of this.specs) {
      for (const port of this.specs.get(id)!.slots ?? [this.specs.get(id)!.port]) {
        if (this.version(id, port) === this.target && !this.isDown(id, port) && this.routedRegardless(id, port)) this.targetServed = true;
      }
    }
  }

  touchedBeyondLeftovers(id: string): boolean {
    const spec = this.specs.get(id)!;
    return (spec.slots ?? [spec.port]).some((port) => {
      const kinds = this.sequence(id, port);
      return kinds.length > 0 && !(this.leftovers.has(key(id, port)) && kinds.every((k) => k === "stop"));
    });
  }

  private routedRegardless(id: string, port: number): boolean {
    if (!this.routing) return this.initiallyServing.has(id) && port === this.live.get(id);
    return reachesSlot(this.routing, [this.target], this.specs.get(id)!, port, undefined, this.live.get(id));
  }
}

const key = (id: string, port: number) => `${id}:${port}`;

function describeReach(routing: Routing | undefined, id: string, target: string, initiallyServing: ReadonlySet<string>): string {
  if (!routing) return initiallyServing.has(id) ? "it is in the pool and no route step has taken it out" : "pinned";
  const via: string[] = [];
  const has = (pool: string) => Object.hasOwn(routing.pools, pool) && (routing.pools[pool]?.includes(id) ?? false);
  if (has(routing.defaultPool)) via.push(`default pool "${routing.defaultPool}"`);
  if (routing.switchDefault && has(routing.switchDefault.to)) via.push(`switch to "${routing.switchDefault.to}"`);
  if (routing.split && has(routing.split.to)) via.push(`split to "${routing.split.to}"`);
  for (const [v, pool] of Object.entries(routing.pins)) if (has(pool)) via.push(`pool "${pool}" pinned to ${v}${v === target ? " (clients may hold it already)" : ""}`);
  return `in the routing in force via ${via.join(", ")}`;
}
