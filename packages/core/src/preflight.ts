import { checkProxyClocks } from "./clock.js";
import { forEachPerHost } from "./concurrency.js";
import type { DeployOptions } from "./deploy-options.js";
import { NodropError } from "./errors.js";
import type { HealthCheck, InstanceControl, ObservedInstance, DeployPlan, PlanPhase, Routing, SlotInspection } from "./types.js";
import { type ReleaseSetup, instanceHosts, releasePhase } from "./release.js";
import { reachesInstance, routedPort, routingSlotProblem, validateRouting } from "./routing.js";
import { type RoutingRead, readRoutingInForce } from "./proxy-reconcile.js";
import { checkIdleSlots, idleStarts } from "./slot-preflight.js";
import { formatBytes } from "./upload.js";
import { isSafeName } from "./template.js";

/** What preflight found: the plan, the instances as they were, and the routing the proxy had in force. */
export interface Preflight {
  readonly plan: DeployPlan;
  readonly observed: ObservedInstance[];
  /** Undefined when the proxy holds no routing of nodrop's (every instance then counts as serving). */
  readonly routing: Routing | undefined;
  /** Routings other proxies of a group have in force, when they disagreed and the deploy reconciles them. */
  readonly others: readonly Routing[];
  /** How many more phases' old processes may still be stopping while a phase starts (`checkIdleSlots`). */
  readonly extraOverlap: number;
}

/** Probes every instance directly: which version it runs and whether it is healthy. */
export async function observeInstances(
  instances: readonly InstanceControl[],
  health: HealthCheck,
  options: {
    parallel?: number;
    signal?: AbortSignal | undefined;
    /** Instances the proxy routes to; without it (and without `routing`), everything counts as serving. */
    serving?: ReadonlySet<string> | undefined;
    /**
     * The routing in force and the staged versions (the one about to be deployed, and any an
     * interrupted deploy staged): an instance is in the pool when a request can reach it (a pool
     * only a staged version's pin leads to counts for instances already on that version; nobody
     * else can hold the pin).
     */
    routing?: { readonly routing: Routing; readonly staged: string | readonly string[] } | undefined;
  } = {},
): Promise<ObservedInstance[]> {
  const observed = new Map<string, ObservedInstance>();
  await forEachPerHost(instances, (i) => i.spec.host, options.parallel ?? 8, async (instance) => {
    const spec = instance.spec;
    // An instance with slots answers on the one the routing in force serves.
    const livePort = options.routing ? routedPort(options.routing.routing, spec) : spec.port;
    const probe = await health.probe({ ...spec, port: livePort }, options.signal);
    // The version comes from the instance (through a health check that may be a plugin's): one that
    // is not a safe version string is unknown, so it never becomes `from`, `{previous}` or a pin.
    const version = probe.ok && isSafeName(probe.version) ? probe.version : undefined;
    const idlePort = spec.slots?.find((port) => port !== livePort);
    observed.set(instance.spec.id, {
      ...instance.spec,
      ...(spec.slots ? { livePort, ...(idlePort === undefined ? {} : { idle: { port: idlePort, free: true } }) } : {}),
      version,
      healthy: probe.ok && version !== undefined,
      inPool: options.routing
        ? reachesInstance(options.routing.routing, options.routing.staged, instance.spec.id, version)
        : options.serving
          ? options.serving.has(instance.spec.id)
          : true,
    });
  });
  return instances.map((i) => observed.get(i.spec.id)!);
}

/** Preflight and plan, touching nothing: what `nodrop plan` shows. */
export async function planDeploy<O>(options: Omit<DeployOptions<O>, "onEvent">): Promise<Preflight> {
  const read = await proxyAndHosts(options);
  const routing = read.routing;
  // The routing in force comes from a file on the proxy host: the slots it names must be the
  // instances' own ports before any probe or command uses them.
  const slotProblem = routing ? routingSlotProblem(routing, options.instances.map((i) => i.spec)) : undefined;
  if (slotProblem) throw new NodropError("E_PREFLIGHT", `refusing to deploy: on proxy ${options.proxy.name}, ${slotProblem}`);
  const observed = await observeInstances(options.instances, options.health, { ...options, routing: routing ? { routing, staged: [options.version, ...(options.stagedVersions ?? [])] } : undefined });
  // An unhealthy instance out of the pool (a failed earlier deploy) is fine: the deploy repairs it.
  // One in the pool is a problem nodrop did not cause and must not hide.
  const unhealthy = observed.filter((i) => !i.healthy && i.inPool);
  if (unhealthy.length > 0) {
    throw new NodropError(
      "E_PREFLIGHT",
      `refusing to deploy: ${unhealthy.map((i) => `${i.id} (${i.address}:${i.livePort ?? i.port})`).join(", ")} in the pool but not healthy before the deploy; fix or remove ${unhealthy.length === 1 ? "it" : "them"} first`,
      { instance: unhealthy[0]!.id },
    );
  }
  if (!observed.some((i) => i.healthy && i.inPool)) {
    throw new NodropError("E_PREFLIGHT", "refusing to deploy: no instance is healthy and in the pool, so there is nothing to keep serving while others change");
  }
  const inspections = await inspectIdleSlots(options, observed);
  const seenObserved = await Promise.all(observed.map((o) => withIdleSlot(options, o, inspections.get(o.id))));
  const planned = options.strategy.plan({
    instances: seenObserved,
    version: options.version,
    proxy: options.proxy.capabilities,
    options: options.strategyOptions,
    ...(options.passedGates?.length ? { passedGates: options.passedGates } : {}),
  });
  // The engine puts the release first itself: in a strategy's plan, it could come after a change.
  const planning = planned.phases.find((p) => p.steps.some((step) => step.kind === "release"));
  if (planning) throw new NodropError("E_PLAN", `phase "${planning.name}" has a release step: the engine adds the release phase, a strategy does not plan one`);
  const plan = checkPlanShape(withEnginePhases(planned, read.reconcile, options), seenObserved);
  const slots = checkIdleSlots(plan, seenObserved, inspections, options.overlap);
  const clockNotes = await checkProxyClocks(options.proxy, plan, options.signal);
  const notes = [...slots.notes, ...clockNotes];
  return { plan: notes.length > 0 ? { ...plan, notes: [...plan.notes, ...notes] } : plan, observed: seenObserved, routing, others: read.others, extraOverlap: slots.extraOverlap };
}

/**
 * The proxy checked, every host reached and the routing in force read: three reads that touch
 * nothing and need nothing of each other, so they go at once (over SSH, each is a login or a round
 * trip to another host). A failure is reported in that order, whichever came first.
 */
async function proxyAndHosts(options: Omit<DeployOptions<unknown>, "onEvent">): Promise<RoutingRead> {
  // Every host must be reachable (SSH host key, credentials) before the first proxy change. Once
  // per host: a host's instances share its executor, and a busy host pays for every login shell.
  const onePerHost = [...new Map(options.instances.map((i) => [i.spec.host, i] as const)).values()];
  const [check, reached, read] = await Promise.allSettled([
    options.proxy.check({ signal: options.signal, instances: options.instances.map((i) => i.spec) }),
    Promise.all(onePerHost.map((instance) => instance.reach?.({ signal: options.signal }))),
    readRoutingInForce(options),
  ]);
  if (check.status === "rejected") throw check.reason;
  if (!check.value.ok) throw new NodropError("E_PROXY_SETUP", `proxy ${options.proxy.name} is not set up for nodrop:\n  ${check.value.details.join("\n  ")}`);
  if (reached.status === "rejected") throw reached.reason;
  if (read.status === "rejected") throw read.reason;
  return read.value;
}

/** What each instance's host shows of its idle slot (one command per instance, per host in turn). */
async function inspectIdleSlots(options: Omit<DeployOptions<unknown>, "onEvent">, observed: readonly ObservedInstance[]): Promise<Map<string, SlotInspection>> {
  const seen = new Map<string, SlotInspection>();
  const withIdle = observed.filter((o) => o.idle);
  await forEachPerHost(withIdle, (o) => o.host, options.parallel ?? 8, async (o) => {
    const control = options.instances.find((i) => i.spec.id === o.id);
    if (!control?.inspect) return;
    seen.set(o.id, await control.inspect({ idlePort: o.idle!.port, livePort: o.livePort ?? o.port, signal: options.signal }));
  });
  return seen;
}

/**
 * The instance with what its idle slot showed. Something listening there that runs as the same
 * user and program as the live slot (when the host shows them) and answers the health check with a
 * safe version is this app's process, left by a deploy that did not finish (killed
 * between starting a new slot and stopping the old one): a surge plan stops it before it starts
 * anything there. Anything else listening there makes a plan that starts on the slot refuse.
 */
async function withIdleSlot(options: Omit<DeployOptions<unknown>, "onEvent">, o: ObservedInstance, seen: SlotInspection | undefined): Promise<ObservedInstance> {
  if (!o.idle || !seen) return o;
  if (seen.free) return { ...o, idle: { port: o.idle.port, free: true } };
  // Another user's or another program's process (as far as the host shows) is not the app's,
  // whatever it answers: any local user can bind a port above 1024.
  if ((seen.listenerOwner !== undefined || seen.liveOwner !== undefined) && seen.listenerOwner !== seen.liveOwner) return { ...o, idle: { port: o.idle.port, free: false } };
  const probe = await options.health.probe({ ...o, port: o.idle.port }, options.signal);
  const version = probe.ok && isSafeName(probe.version) ? probe.version : undefined;
  return { ...o, idle: { port: o.idle.port, free: false, ...(version === undefined ? {} : { version }) } };
}

/**
 * The phases the engine adds before the strategy's: the release on every instance host (nothing
 * leaves the pool until every host has it), then bringing disagreeing proxies together.
 */
function withEnginePhases(plan: DeployPlan, reconcile: { phase: PlanPhase; note: string } | undefined, options: Pick<DeployOptions<unknown>, "release" | "instances">): DeployPlan {
  const hosts = instanceHosts(options.instances);
  const release = options.release ? [releasePhase(hosts)] : [];
  const releaseNote = options.release ? [releaseNoteOf(options.release, hosts)] : [];
  return { ...plan, phases: [...release, ...(reconcile ? [reconcile.phase] : []), ...plan.phases], notes: [...releaseNote, ...(reconcile ? [reconcile.note] : []), ...plan.notes] };
}

function releaseNoteOf(setup: ReleaseSetup, hosts: readonly string[]): string {
  const on = `${hosts.length === 1 ? "host" : `each of ${hosts.length} hosts`} (${hosts.join(", ")})`;
  if (setup.mode === "existing") return `release: the one already on ${on} is used${setup.prepare ? ", prepared there if it is not yet" : ""}`;
  const sent = setup.artifact ? `${setup.artifact.name} (${formatBytes(setup.artifact.bytes)}, sha256 ${setup.artifact.sha256.slice(0, 12)}…) goes once to ${on} unless it is there` : `made on ${on} unless it is there`;
  return `release: ${sent}${setup.prepare ? ", then prepared once per host" : ""}, before any instance leaves the pool`;
}

/** Refuses a plan that names unknown instances, an invalid routing, or a step outside its phase. */
function checkPlanShape(plan: DeployPlan, observed: readonly ObservedInstance[]): DeployPlan {
  const known = new Set(observed.map((i) => i.id));
  for (const phase of plan.phases) {
    for (const id of [...phase.instances, ...(phase.revertAlso ?? [])]) if (!known.has(id)) throw new NodropError("E_PLAN", `phase "${phase.name}" names unknown instance "${id}"`);
    const own = new Set(phase.instances);
    for (const step of phase.steps) {
      if (step.kind === "route") validateRouting(step.routing, observed);
      else if (step.kind !== "soak" && step.kind !== "release" && step.kind !== "gate") {
        // Recovery works per phase: a step may only touch the instances its phase declares.
        for (const id of step.instances) if (!own.has(id)) throw new NodropError("E_PLAN", `phase "${phase.name}" ${step.kind}s "${id}", which is not one of its instances`);
      }
    }
  }
  const id = idleStarts(plan).flat().find((i) => !observed.find((o) => o.id === i)?.idle);
  if (id !== undefined) {
    throw new NodropError("E_PLAN", `the plan starts ${id} on an idle slot, but ${id} has one port: give every instance a spare port (instances[].spare, or slots.offset)`, { instance: id });
  }
  return plan;
}
