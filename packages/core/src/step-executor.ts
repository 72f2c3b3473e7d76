import { forEachLimit, forEachPerHost } from "./concurrency.js";
import type { RunContext } from "./deploy-options.js";
import { sleep } from "./duration.js";
import { NodropError, type RoutingInForce, abortError, toNodropError } from "./errors.js";
import { waitHealthy } from "./health.js";
import { inertLine } from "./template.js";
import type { PendingDrain } from "./deploy-run.js";
import type { RouteReport } from "./report.js";
import type { StepRecord } from "./run-listener.js";
import { routedPort, servingInstances, withSlots } from "./routing.js";
import { releaseOnHost } from "./release.js";
import { runGateStep } from "./canary-gate.js";
import type { InstanceStep, PlanPhase, PlanStep, ReleaseStep, Routing, StepKind } from "./types.js";

/** Announces a step to the listeners (journal first) and then to the caller's listener. */
export async function announce(context: RunContext, record: StepRecord, ms?: number): Promise<void> {
  for (const listener of context.listeners) await listener.step?.(context.run, record);
  context.run.emit({ type: "step", ...record, ...(ms === undefined ? {} : { ms }) });
}

/**
 * Runs one step body, announced before and after: a step whose "start" record cannot be written
 * does not run. Its time lands on the instance it is about. A step about a host instead (a
 * release) names it in its records, and what its body returns is its "ok" record's detail.
 */
export async function timed(context: RunContext, phase: string, kind: StepKind, id: string | undefined, body: () => Promise<void | string>, host?: string): Promise<void> {
  const t0 = performance.now();
  const about = { phase, kind, instance: id, ...(host === undefined ? {} : { host }) };
  try {
    await announce(context, { ...about, status: "start" });
    const detail = await body();
    if (id) context.run.instance(id).steps.push({ kind, ms: performance.now() - t0, ok: true });
    await announce(context, { ...about, status: "ok", ...(typeof detail === "string" ? { detail } : {}) }, performance.now() - t0);
  } catch (error) {
    const ms = performance.now() - t0;
    const e = toNodropError(error, "E_INSTANCE", id ? `${kind} of ${id}` : kind);
    if (id) {
      const t = context.run.instance(id);
      t.steps.push({ kind, ms, ok: false });
      t.error = e.message;
    }
    await announce(context, { ...about, status: "fail", detail: e.message }, ms).catch(() => undefined);
    throw e;
  }
}

/** Puts the release on every host at once; every host finishes (or fails) before the step does. */
async function runReleaseStep(context: RunContext, phase: PlanPhase, step: ReleaseStep): Promise<void> {
  const setup = context.options.release;
  if (!setup) throw new NodropError("E_PLAN", `phase "${phase.name}" has a release step, but the deploy has no release setup`);
  await forEachLimit(step.hosts, step.hosts.length, (host) => timed(context, phase.name, "release", undefined, () => releaseOnHost(context, setup, host), host));
}

/**
 * Puts a routing into effect through the proxy. A failure is rethrown with `routingInForce` saying
 * which routing the proxy left in force (an adapter that does not say: unknown), and the run
 * records it: the new routing when it took effect, either one when unknown. With `background`
 * (and a proxy that can), the old routing drains while the next steps run: see `trackDrain`.
 */
export async function applyRouting(context: RunContext, planned: Routing, why: string, phase: string, signal: AbortSignal | undefined, background = false): Promise<void> {
  const { run, options } = context;
  // Instances with slots that the routing leaves out stay on the slot they are live on, and the
  // proxy records every one: what it reads back then says which slot serves.
  const live = (id: string) => run.tracked.get(id)?.port;
  const routing = withSlots(planned, options.instances.map((i) => i.spec), live);
  const backgroundDrain = background && options.proxy.capabilities.backgroundDrain === true;
  await timed(context, phase, "route", undefined, async () => {
    const instances = options.instances.map((i) => {
      if (!run.tracked.has(i.spec.id)) return { ...i.spec, version: undefined };
      const t = run.instance(i.spec.id);
      const port = routedPort(routing, i.spec, t.port);
      // Both slots' versions: a routing may serve the instance on the other one in some pool (blue-green's switch).
      const versions = t.idle ? Object.fromEntries([[t.port, t.version], [t.idle.port, t.idle.version]].filter(([, v]) => v !== undefined)) : undefined;
      return { ...i.spec, port, version: run.versionAt(i.spec.id, port), ...(versions ? { versions } : {}) };
    });
    // What may have been in force before this change, each slot pinned down now (the live ports move with the swap).
    const replaced = run.possibleRoutings.map((r) => withSlots(r, options.instances.map((i) => i.spec), live));
    // Old generations must not pile up (each keeps its workers, and polling them costs the proxy
    // host), even where nothing else waits for them: a change starts once at most
    // DRAINS_WHILE_CHANGING older ones still drain.
    if (backgroundDrain) await Promise.all(openDrains(run).slice(0, -DRAINS_WHILE_CHANGING).map((d) => d.done));
    let result;
    run.routingAttempted(routing);
    try {
      result = await options.proxy.apply(routing, instances, { signal, ...(backgroundDrain ? { backgroundDrain } : {}) });
    } catch (error) {
      run.drained = false;
      throw proxyFailure(context, routing, error);
    }
    run.drained = !run.backgroundDrainFailed;
    run.routingApplied(routing);
    const warnings = proxyWarnings(result.warnings);
    const report = { why, generation: result.generation, confirmMs: result.confirmMs, drainMs: result.drainMs, cut: result.cut ?? 0, ...warnings };
    if (result.drained) trackDrain(context, phase, replaced, result.drained, report);
    else run.routes.push(report);
    run.emit({ type: "route", why, generation: result.generation, confirmMs: result.confirmMs, drainMs: result.drainMs, serving: [...servingInstances(routing)], ...(result.drained ? { background: true } : {}), ...warnings });
  });
}

/** An adapter's warnings as they may be printed: a few lines, each inert (the adapter is a plugin). */
function proxyWarnings(warnings: unknown): { warnings?: string[] } {
  if (!Array.isArray(warnings) || warnings.length === 0) return {};
  return { warnings: warnings.slice(0, 5).map((w) => inertLine(w)) };
}

/**
 * How many background drains a change may start beside. A drain lasts as long as the slowest
 * request in flight at its change (500 ms ones in the bench's load): with one, each surge batch's
 * swap waited for the drain of the swap two batches back, and the batches went at the pace of
 * drains, not of starts. With two, at most three generations of old workers shut down at once.
 */
const DRAINS_WHILE_CHANGING = 2;

/** Background drains still running, oldest first. */
function openDrains(run: RunContext["run"]): PendingDrain[] {
  return [...run.draining].filter((d) => !d.settled);
}

/**
 * A drain left running by the proxy: the route's report fills in when it ends. Until then a stop
 * or update of a slot the replaced routing served waits for it (`DeployRun.drainsServing`), and the
 * deploy ends after it. A failed drain ends the deploy at the next phase, like a failed background
 * stop; the slots the old routing served are then kept running (`drained` false).
 */
function trackDrain(context: RunContext, phase: string, replaced: Routing[], drained: Promise<{ drainMs: number; cut?: number }>, report: RouteReport): void {
  const { run } = context;
  const entry: { -readonly [K in keyof RouteReport]: RouteReport[K] } = { ...report, background: true };
  run.routes.push(entry);
  const t0 = performance.now();
  const pending: PendingDrain = {
    replaced,
    settled: false,
    done: drained.then(
      (result) => {
        entry.drainMs = result.drainMs;
        entry.cut = result.cut ?? 0;
        pending.settled = true;
        run.draining.delete(pending);
        run.emit({ type: "drained", why: report.why, generation: report.generation, drainMs: result.drainMs });
      },
      (error: unknown) => {
        // Kept in `draining`: the slots it served must not be stopped in this deploy.
        const failure = toNodropError(error, "E_PROXY_DRAIN", `proxy ${context.options.proxy.name}`);
        pending.failure = failure;
        pending.settled = true;
        entry.drainMs = performance.now() - t0;
        entry.drainFailed = failure.message.split("\n")[0]!;
        run.drained = false;
        run.backgroundDrainFailed = true;
        run.backgroundFailure ??= { error: failure, step: `${phase}: drain (background)`, drain: true };
        run.emit({ type: "drained", why: report.why, generation: report.generation, drainMs: entry.drainMs, error: entry.drainFailed });
      },
    ),
  };
  run.draining.add(pending);
}

function proxyFailure(context: RunContext, routing: Routing, error: unknown): NodropError {
  // A proxy failure must stop the deploy as one, whatever the adapter threw.
  const e = toNodropError(error, "E_PROXY_RELOAD", `proxy ${context.options.proxy.name}`);
  // A drain that ran out of time comes after the new routing took effect, whoever wrote the adapter.
  const inForce: RoutingInForce = e.routingInForce ?? (e.code === "E_PROXY_DRAIN" ? "new" : "unknown");
  if (inForce === "new") context.run.routingApplied(routing);
  else if (inForce === "unknown") context.run.routingUncertain(routing);
  return new NodropError(e.code, e.message, { cause: e.cause ?? error, instance: e.instance, routingInForce: inForce });
}

/** Runs one step of the plan, after the listeners' check (the verify probe's threshold). */
export async function runStep(context: RunContext, phase: PlanPhase, step: PlanStep): Promise<void> {
  const { options, run } = context;
  const signal = options.signal;
  if (signal?.aborted) throw abortError(signal);
  for (const listener of context.listeners) listener.beforeStep?.(run);
  switch (step.kind) {
    case "route":
      return applyRouting(context, step.routing, step.why, phase.name, signal, step.background === true);
    case "soak":
      return timed(context, phase.name, "soak", undefined, () => sleep(step.ms, signal).catch(() => Promise.reject(abortError(signal))));
    case "release":
      return runReleaseStep(context, phase, step);
    case "gate":
      return runGateStep(context, phase, step);
    default:
      return forEachPerHost(step.instances, (id) => run.instance(id).control.spec.host, context.parallel, async (id) => {
        // An instance's own steps stay in order: a background stop ends before its next step.
        await run.background.get(id)?.task;
        if (!step.background) return runInstanceStep(context, phase, step, id);
        const task = runInstanceStep(context, phase, step, id).catch((error: unknown) => {
          run.backgroundFailure ??= { error: error as Error, step: `${phase.name}: ${step.kind} (background)` };
        });
        run.background.set(id, { task, phase: run.phaseIndex });
      });
  }
}

/**
 * Before a phase starts: waits for the background steps of phases older than the one before it
 * (and the `extraOverlap` before that, which preflight found memory for), so that no more phases'
 * old processes overlap with new ones than preflight's memory check counted, however slowly an
 * old process stops.
 */
export async function awaitOlderBackground(context: RunContext, index: number): Promise<void> {
  const oldest = index - 1 - context.run.extraOverlap;
  await Promise.all([...context.run.background.values()].filter((b) => b.phase < oldest).map((b) => b.task));
}

/** Waits for every background step; the first failure, if any, as the deploy's outcome. */
export async function settleBackground(context: RunContext): Promise<{ error: NodropError; step: string; drain?: boolean } | undefined> {
  const { run } = context;
  await Promise.all([...run.background.values()].map((b) => b.task));
  while (openDrains(run).length > 0) await Promise.all(openDrains(run).map((d) => d.done));
  run.background.clear();
  const failure = run.backgroundFailure;
  return failure && { error: toNodropError(failure.error, "E_INSTANCE"), step: failure.step, ...(failure.drain ? { drain: true } : {}) };
}

async function runInstanceStep(context: RunContext, phase: PlanPhase, step: InstanceStep, id: string): Promise<void> {
  const { options, run } = context;
  const signal = options.signal;
  const { kind } = step;
  const t = run.instance(id);
  // A slot that a routing still draining serves is left alone until that drain ends; the step
  // starts after it, so that its record and its time are the step's own. A failed drain fails it.
  const slotPort = step.slot === "idle" ? t.idle?.port : t.port;
  const drainFailure = (kind === "stop" || kind === "update") && slotPort !== undefined && run.draining.size > 0 ? await drainsEnded(run, id, slotPort) : undefined;
  await timed(context, phase.name, kind, id, async () => {
    if (drainFailure) throw drainFailure;
    if (step.slot === "idle") return runIdleSlotStep(context, kind, id);
    if ((kind === "stop" || kind === "update") && run.reachable(id)) {
      // The engine's own guard: a strategy must never stop an instance that can still get requests.
      throw new NodropError("E_PLAN", `plan would ${kind} ${id} while it is in the pool`, { instance: id });
    }
    t.touched = true;
    const port = t.port;
    if (kind === "stop") await t.control.stop({ version: t.version, port, signal });
    else if (kind === "update") {
      await t.control.update({ version: options.version, previous: t.from, port, signal });
      t.version = options.version;
    } else if (kind === "start") await t.control.start({ version: options.version, port, signal });
    else {
      await waitHealthy(options.health, { ...t.control.spec, port }, options.version, { ...options.healthWait, signal });
      t.outcome = "updated";
    }
  });
}

/**
 * Waits until no drain whose old routing served the slot is running (asked again after each wait:
 * a change made meanwhile may have left another one); the error a step on the slot fails with
 * when one of them failed.
 */
async function drainsEnded(run: RunContext["run"], id: string, port: number): Promise<NodropError | undefined> {
  for (let open = run.drainsServing(id, port).filter((d) => !d.settled); open.length > 0; open = run.drainsServing(id, port).filter((d) => !d.settled)) {
    await Promise.all(open.map((d) => d.done));
  }
  const failed = run.drainsServing(id, port).find((d) => d.failure)?.failure;
  if (!failed) return undefined;
  return new NodropError("E_PROXY_DRAIN", `slot ${port} of ${id} left running: the drain of the routing that served it failed (${failed.message.split("\n")[0]})`, { instance: id, cause: failed });
}

/**
 * A step on the slot nothing routes to (a surge: the new version starts there while the live slot
 * serves). Its version counts only once a routing swaps the slots.
 */
async function runIdleSlotStep(context: RunContext, kind: InstanceStep["kind"], id: string): Promise<void> {
  const { options, run } = context;
  const signal = options.signal;
  const t = run.instance(id);
  const idle = t.idle;
  if (!idle) throw new NodropError("E_PLAN", `plan would ${kind} the idle slot of ${id}, which has one port (give it a spare port)`, { instance: id });
  if ((kind === "stop" || kind === "update") && run.reachable(id, idle.port)) {
    throw new NodropError("E_PLAN", `plan would ${kind} slot ${idle.port} of ${id} while the proxy routes to it`, { instance: id });
  }
  idle.ours = true;
  const port = idle.port;
  if (kind === "stop") {
    await t.control.stop({ version: idle.version, port, signal });
    idle.running = false;
  } else if (kind === "update") {
    await t.control.update({ version: options.version, previous: t.version, port, signal });
    idle.version = options.version;
  } else if (kind === "start") {
    idle.running = undefined;
    await t.control.start({ version: options.version, port, signal });
    idle.running = true;
  } else await waitHealthy(options.health, { ...t.control.spec, port }, options.version, { ...options.healthWait, signal });
}
