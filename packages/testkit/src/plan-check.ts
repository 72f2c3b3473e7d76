import { type DeployPlan, NodropError, type PlanInput, type Routing, servingInstances, validateRouting } from "@nodrop/core";

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
  /** Pins, a default switch or affinity on a proxy without the capability. */
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

  // State of the walk.
  let routing: Routing | undefined;
  const initiallyServing = new Set(input.instances.filter((i) => i.inPool).map((i) => i.id));
  const version = new Map(input.instances.map((i) => [i.id, i.version]));
  // Down: unhealthy to begin with, or stopped and not checked since.
  const down = new Set(input.instances.filter((i) => !i.healthy).map((i) => i.id));
  const sequence = new Map<string, string[]>(ids.map((id) => [id, []]));
  const reportedDown = new Set<string>();

  const routedRegardless = (id: string): boolean => {
    if (!routing) return initiallyServing.has(id);
    const r = routing;
    const pools = [r.defaultPool, ...(r.switchDefault ? [r.switchDefault.to] : [])];
    for (const [v, pool] of Object.entries(r.pins)) if (v !== target) pools.push(pool);
    return pools.some((pool) => Object.hasOwn(r.pools, pool) && (r.pools[pool]?.includes(id) ?? false));
  };
  const inTargetPin = (id: string): boolean => {
    if (!routing) return false;
    const pool = routing.pins[target];
    return pool !== undefined && Object.hasOwn(routing.pools, pool) && (routing.pools[pool]?.includes(id) ?? false);
  };
  // A client can hold the target's pin once an instance on the target was reachable and up.
  let targetServed = false;
  const noteServed = () => {
    if (targetServed) return;
    targetServed = ids.some((id) => version.get(id) === target && !down.has(id) && routedRegardless(id));
  };
  const reachable = (id: string) => routedRegardless(id) || (targetServed && inTargetPin(id));
  noteServed();

  const checkDown = (where: string) => {
    for (const id of down) {
      if (reportedDown.has(id) || !reachable(id)) continue;
      reportedDown.add(id);
      const why = input.instances.find((i) => i.id === id)?.healthy === false && (sequence.get(id)?.length ?? 0) === 0 ? "unhealthy and not yet checked" : "stopped and not checked since";
      add("route-to-down", `${where}: requests can reach ${id}, which is ${why}`);
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
      const where = `${label} step ${s + 1} (${step.kind})`;
      if (step.kind === "route") {
        try {
          validateRouting(step.routing, known);
        } catch (error) {
          add("valid-routing", `${where}: ${NodropError.is(error) ? error.message : String(error)}`);
          return;
        }
        const r = step.routing;
        if (!input.proxy.versionPinning && Object.keys(r.pins).length > 0) add("capabilities", `${where}: pins ${JSON.stringify(r.pins)}, but the proxy cannot pin clients to a version`);
        if (!input.proxy.timedSwitch && r.switchDefault) add("capabilities", `${where}: switchDefault, but the proxy cannot switch at one instant`);
        if (!input.proxy.affinity && r.affinity) add("capabilities", `${where}: affinity, but the proxy has no instance affinity`);
        routing = r;
        checkDown(where);
        noteServed();
        return;
      }
      if (step.kind === "soak") {
        if (typeof step.ms !== "number" || !Number.isFinite(step.ms) || step.ms < 0) add("shape", `${where}: ms ${JSON.stringify(step.ms)} is not a duration`);
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
        sequence.get(id)!.push(step.kind);
        if (step.kind === "stop" || step.kind === "update") {
          // The engine's guard: a pin of the target counts for instances on the target.
          const engineRefuses = routedRegardless(id) || (inTargetPin(id) && version.get(id) === target);
          if (engineRefuses || reachable(id)) {
            add("stop-reachable", `${where}: ${id} can still get requests (${describeReach(routing, id, target, initiallyServing)})`);
          }
        }
        if (step.kind === "stop") down.add(id);
        if (step.kind === "update") version.set(id, target);
        if (step.kind === "check") {
          down.delete(id);
          reportedDown.delete(id);
        }
      }
      if (step.kind === "update") checkDown(where);
      if (step.kind === "check") noteServed();
    });
  });

  for (const instance of input.instances) {
    const kinds = sequence.get(instance.id)!;
    const needsUpdate = instance.version !== target || !instance.healthy;
    if (needsUpdate && kinds.length === 0) {
      add("step-order", `${instance.id} (${instance.version ?? "down"}) is never updated to ${target}`);
      continue;
    }
    if (kinds.length === 0) continue;
    const rounds = kinds.length / 4;
    const expected = Array.from({ length: Math.max(1, Math.ceil(rounds)) }, () => INSTANCE_STEPS).flat();
    if (kinds.join() !== expected.join()) {
      add("step-order", `${instance.id} gets ${kinds.join(" → ")}; expected stop → update → start → check`);
    }
  }

  const finalServing = routing ? servingInstances(routing) : initiallyServing;
  const missing = ids.filter((id) => !finalServing.has(id));
  if (missing.length > 0) add("final-routing", `after the last step the routing in force does not serve ${missing.join(", ")}${routing ? "" : " (no route step: they stay out of the pool)"}`);

  if (input.instances.every((i) => i.healthy && i.version === target)) {
    const touched = ids.filter((id) => sequence.get(id)!.length > 0);
    if (touched.length > 0) add("no-op", `every instance already runs ${target}, yet the plan has steps for ${touched.join(", ")}`);
  }
  return problems;
}

function describeReach(routing: Routing | undefined, id: string, target: string, initiallyServing: ReadonlySet<string>): string {
  if (!routing) return initiallyServing.has(id) ? "it is in the pool and no route step has taken it out" : "pinned";
  const via: string[] = [];
  const has = (pool: string) => Object.hasOwn(routing.pools, pool) && (routing.pools[pool]?.includes(id) ?? false);
  if (has(routing.defaultPool)) via.push(`default pool "${routing.defaultPool}"`);
  if (routing.switchDefault && has(routing.switchDefault.to)) via.push(`switch to "${routing.switchDefault.to}"`);
  for (const [v, pool] of Object.entries(routing.pins)) if (has(pool)) via.push(`pool "${pool}" pinned to ${v}${v === target ? " (clients may hold it already)" : ""}`);
  return `in the routing in force via ${via.join(", ")}`;
}
