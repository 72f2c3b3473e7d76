import { isDeepStrictEqual } from "node:util";
import { type DeployPlan, NodropError, type ObservedInstance, type PlanInput, type Strategy, servingInstances, validateRouting } from "@nodrop/core";
import { type SuiteOptions, type TestApi, registerSuite } from "./api.js";
import { Problems, describeError, show } from "./assert.js";
import { ALL_CAPABILITIES, type FleetScenario, fleetOf, fleetScenarios, twoSlots } from "./fleet.js";
import { type PlanRule, planProblems } from "./plan-check.js";

export interface StrategySuiteOptions<O> extends SuiteOptions {
  /** A fresh strategy. Called per fleet, so one plan cannot leak state into the next. */
  readonly create: () => Strategy<O>;
  /** The strategy's options, as its config section would parse (defaults filled in). */
  readonly options: O;
  /** The version deployed (default "v2"); fleets run "v1" and "v0". */
  readonly version?: string;
  /** The fleets planned (default: fleetScenarios(), 52 fleets of 1, 2, 4 and 7 instances). */
  readonly scenarios?: readonly FleetScenario[];
}

type Outcome = { readonly kind: "plan"; readonly plan: DeployPlan } | { readonly kind: "refused"; readonly error: NodropError } | { readonly kind: "broken"; readonly problem: string };

interface Planned {
  readonly scenario: FleetScenario;
  readonly input: PlanInput<unknown>;
  readonly outcome: Outcome;
  /** Problems of the determinism and purity checks. */
  readonly purity: readonly string[];
}

/**
 * Pure checks of a strategy over many generated fleets: the properties the engine relies on to
 * deploy without dropping a request, and that a plan can be shown (`nodrop plan`) before
 * anything is touched. A plan may be refused (NodropError E_PLAN: a fleet of one, a proxy
 * without a capability the strategy needs); every plan that is made must be safe.
 */
export function strategySuite<O>(api: TestApi, options: StrategySuiteOptions<O>): void {
  registerSuite(api, "nodrop strategy conformance", options, ({ test }) => {
    const version = options.version ?? "v2";
    const scenarios = options.scenarios ?? fleetScenarios({ target: version });
    let planned: Planned[] | undefined;
    // Pure and synchronous: planned once, on first use, and shared by every check.
    const all = () => (planned ??= scenarios.map((scenario) => planScenario(options, scenario, version)));
    const plans = () => all().filter((p): p is Planned & { outcome: { kind: "plan"; plan: DeployPlan } } => p.outcome.kind === "plan");

    /** Runs one rule of planProblems over every plan made. */
    const rule = (title: string, rules: readonly PlanRule[]) =>
      test(title, async () => {
        const problems = new Problems();
        for (const p of plans()) {
          for (const problem of planProblems(p.input, p.outcome.plan, options.create().name)) {
            if (rules.includes(problem.rule)) problems.add(p.scenario.name, problem.message);
          }
        }
        problems.throwIfAny(title);
      });

    test("plan() is synchronous, returns the same plan for the same input and leaves its input unchanged", async () => {
      const problems = new Problems();
      for (const p of all()) for (const problem of p.purity) problems.add(p.scenario.name, problem);
      problems.throwIfAny("plan() must be a pure function of its input: the engine plans before it touches anything, and `nodrop plan` shows the same plan");
    });

    test("refuses a fleet only with a NodropError E_PLAN, and plans an ordinary fleet", async () => {
      const problems = new Problems();
      for (const p of all()) if (p.outcome.kind === "broken") problems.add(p.scenario.name, p.outcome.problem);
      // Fleets with two slots per instance get an ordinary fleet with them (a surge needs them).
      const slotted = scenarios.length > 0 && scenarios.every((s) => s.instances.every((i) => i.slots !== undefined));
      const plain = fleetOf(["v1", "v1", "v1", "v1"], { hosts: 2 });
      const ordinary: FleetScenario = slotted
        ? { name: "4 instances on 2 hosts, two slots each, all on v1, a proxy with every capability", instances: twoSlots(plain), proxy: { ...ALL_CAPABILITIES, poolSlots: true } }
        : { name: "4 instances on 2 hosts, all on v1, a proxy with every capability", instances: plain, proxy: ALL_CAPABILITIES };
      const outcome = planScenario(options, ordinary, version).outcome;
      if (outcome.kind === "refused") problems.add(ordinary.name, `refused: ${outcome.error.message}`);
      problems.throwIfAny("a strategy refuses what it cannot do with E_PLAN (the engine reports it before anything changes) and must plan a fleet anyone would deploy");
    });

    rule("names its strategy and the version deployed; phases have a name and a failure policy", ["shape"]);
    rule("every route step's routing passes validateRouting", ["valid-routing"]);
    rule("steps only touch instances their phase declares", ["phase-instances"]);
    rule("never stops or updates an instance a request can still reach", ["stop-reachable"]);
    rule("never routes requests to an instance that is down (stopped and not checked since, or unhealthy)", ["route-to-down"]);
    rule("takes every instance not on the target through stop → update → start → check, in that order", ["step-order"]);
    rule("the routing in force after the last step serves every instance", ["final-routing"]);
    rule("plans no instance steps for a fleet already on the target version", ["no-op"]);
    rule("uses no pins, default switch or affinity that the proxy cannot do", ["capabilities"]);

    const probe = options.create();
    if (probe.recoveryRouting) {
      test("recoveryRouting() routes to exactly the healthy instances it is given, with a valid routing, and sends no pinned client back", async () => {
        const problems = new Problems();
        for (const [name, fleet, healthy] of recoverySets(version)) {
          const known = new Set(fleet.map((i) => i.id));
          const wanted = healthy.map((i) => i.id).sort();
          const previous = [...new Set(fleet.map((i) => i.version!).filter((v) => v !== version))];
          try {
            const routing = options.create().recoveryRouting!(healthy, { version, previous, instances: [...known], options: options.options });
            validateRouting(routing, known);
            const serving = [...servingInstances(routing)].sort();
            if (!isDeepStrictEqual(serving, wanted)) problems.add(name, `serves ${serving.join(", ")}; expected ${wanted.join(", ")}`);
            // Nobody goes back: a pinned client reaches only its own version or the deploy's.
            for (const [pinned, pool] of Object.entries(routing.pins)) {
              const allowed = new Set(healthy.filter((i) => i.version === pinned || i.version === version).map((i) => i.id));
              if (allowed.size === 0) continue;
              const back = (routing.pools[pool] ?? []).filter((id) => !allowed.has(id));
              if (back.length > 0) problems.add(name, `clients pinned to ${pinned} can reach ${back.join(", ")}, on another version than ${pinned === version ? version : `${pinned} or ${version}`}`);
            }
          } catch (error) {
            problems.add(name, describeError(error));
          }
        }
        problems.throwIfAny("after a failure the engine restores this routing: it must be valid, route to every healthy instance and to nothing else, and never send a pinned client to another version than its own or the deploy's");
      });
    }
    if (probe.steadyRouting) {
      test("steadyRouting() routes to every instance, with a valid routing", async () => {
        const problems = new Problems();
        for (const n of [1, 2, 4, 7]) {
          const ids = fleetOf(Array(n).fill("v1")).map((i) => i.id);
          try {
            const routing = options.create().steadyRouting!(ids, options.options);
            validateRouting(routing, new Set(ids));
            const serving = [...servingInstances(routing)].sort();
            if (!isDeepStrictEqual(serving, [...ids].sort())) problems.add(`${n} instances`, `serves ${serving.join(", ")}; expected all of ${ids.join(", ")}`);
          } catch (error) {
            problems.add(`${n} instances`, describeError(error));
          }
        }
        problems.throwIfAny("`nodrop init` writes this routing for a fleet at rest");
      });
    }
  });
}

function planScenario<O>(options: StrategySuiteOptions<O>, scenario: FleetScenario, version: string): Planned {
  const purity: string[] = [];
  const input: PlanInput<O> = deepFreeze({ instances: structuredClone(scenario.instances), version, proxy: { ...scenario.proxy }, options: cloneOptions(options.options) });
  const pristine = structuredClone({ instances: input.instances, version, proxy: input.proxy });
  const strategy = options.create();
  const first = attempt(() => strategy.plan(input));
  const second = attempt(() => strategy.plan(input));
  const fresh = attempt(() => options.create().plan(input));
  if (!isDeepStrictEqual(structuredClone({ instances: input.instances, version: input.version, proxy: input.proxy }), pristine)) purity.push("plan() changed its input");

  let outcome: Outcome;
  if (first.threw) {
    const error = first.error;
    if (NodropError.is(error) && error.code === "E_PLAN") outcome = { kind: "refused", error };
    else if (error instanceof TypeError && /read.only|frozen|not extensible/i.test(error.message)) {
      outcome = { kind: "broken", problem: `plan() writes to its input (frozen here): ${error.message}` };
      purity.push(`plan() writes to its input: ${error.message}`);
    } else outcome = { kind: "broken", problem: `plan() threw ${describeError(error)}; a refusal must be a NodropError with code E_PLAN` };
  } else if (isThenable(first.value)) {
    outcome = { kind: "broken", problem: "plan() returned a promise" };
    purity.push("plan() returned a promise: it must plan synchronously, without I/O");
  } else outcome = { kind: "plan", plan: first.value };

  for (const [label, other] of [["a second plan() call", second], ["plan() of a fresh strategy", fresh]] as const) {
    if (first.threw !== other.threw) {
      purity.push(`${label} ${other.threw ? `threw ${describeError(other.error)}` : "returned a plan"}, the first call ${first.threw ? `threw ${describeError(first.error)}` : "returned a plan"}`);
    } else if (first.threw && other.threw) {
      const [a, b] = [first.error, other.error];
      if (describeError(a) !== describeError(b)) purity.push(`${label} threw ${describeError(b)}, the first call ${describeError(a)}`);
    } else if (!first.threw && !other.threw && !isThenable(first.value) && !isDeepStrictEqual(first.value, other.value)) {
      purity.push(`${label} returned a different plan: ${firstDifference(first.value, other.value)}`);
    }
  }
  return { scenario, input: input as PlanInput<unknown>, outcome, purity };
}

type Attempt<T> = { threw: false; value: T } | { threw: true; error: unknown };

function attempt<T>(fn: () => T): Attempt<T> {
  try {
    return { threw: false, value: fn() };
  } catch (error) {
    return { threw: true, error };
  }
}

function isThenable(value: unknown): boolean {
  return typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function";
}

function cloneOptions<O>(value: O): O {
  try {
    return structuredClone(value);
  } catch {
    // Options holding functions cannot be cloned; they are frozen as they are.
    return value;
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Reflect.ownKeys(value)) deepFreeze((value as Record<PropertyKey, unknown>)[key]);
  }
  return value;
}

/** The first path at which two values differ, for a message that points at it. */
function firstDifference(a: unknown, b: unknown, path = "plan"): string {
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null) {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const x = (a as Record<string, unknown>)[key];
      const y = (b as Record<string, unknown>)[key];
      if (!isDeepStrictEqual(x, y)) return firstDifference(x, y, Array.isArray(a) ? `${path}[${key}]` : `${path}.${key}`);
    }
  }
  return `${path}: ${show(a)} then ${show(b)}`;
}

/** Fleets after a failure, and which of their instances are healthy (the last one is down). */
function recoverySets(target: string): [string, ObservedInstance[], ObservedInstance[]][] {
  const withDown = (name: string, fleet: ObservedInstance[]): [string, ObservedInstance[], ObservedInstance[]] => [name, fleet, fleet.slice(0, -1)];
  return [
    withDown("4 healthy instances on v1", fleetOf(["v1", "v1", "v1", "v1", "v1"])),
    withDown(`3 healthy instances, v1 and ${target}`, fleetOf(["v1", target, "v1", "v1"])),
    withDown(`3 healthy instances, v0, v1 and ${target}`, fleetOf(["v0", "v1", target, "v1"], { hosts: 2 })),
    // Names are not an order (git SHAs): previous versions whose names sort after the deploy's, so
    // anything that orders version strings gets the direction backwards.
    withDown(`4 healthy instances, previous versions named to sort after ${target}`, fleetOf([`${target}a`, target, `${target}.1`, target, `${target}a`])),
    withDown("1 healthy instance", fleetOf(["v1", "v1"])),
  ];
}
