import { forEachPerHost } from "./concurrency.js";
import type { RunContext } from "./deploy-options.js";
import type { TrackedInstance } from "./deploy-run.js";
import { NodropError, toNodropError } from "./errors.js";
import { waitHealthy } from "./health.js";
import { sameRouting, singlePool, validateRouting } from "./routing.js";
import { applyRouting, timed } from "./step-executor.js";
import type { ObservedInstance, PlanPhase } from "./types.js";

const DEFAULT_REVERT_MS = 300_000;
const DEFAULT_POOL_RESTORE_MS = 120_000;

/**
 * After a failed step: applies the phase's failure rule and says what it did, one clause each.
 * - "revert": the phase's touched instances that no request can reach go back to the version they
 *   ran, are checked, and every healthy instance is routed again;
 * - "isolate": they stay out of the pool and the routing in force is kept.
 * Recovery runs even after an abort: it has deadlines of its own instead of the deploy's signal,
 * one for reverting and one, started afresh, for restoring the pool, so a slow revert can never
 * leave the pool unrestored.
 */
export async function recoverPhase(context: RunContext, phase: PlanPhase, failure: NodropError): Promise<string> {
  const { run } = context;
  run.emit({ type: "recovery", reason: failure.message });
  run.recovering = true;
  const canary = phase.onFailure === "revert" && phase.revertAlso !== undefined;
  // Only a canary's abort takes back instances that ran the new version before this run: elsewhere an instance goes back to what it ran.
  const target = canary ? canaryRevertTarget(run) : (t: TrackedInstance) => t.from;
  const back = canary ? takenBack(context, [...new Set([...phase.instances, ...phase.revertAlso!])], target) : [];
  // A canary instance swapped onto its new slot still has its old process on the other one: it goes back by a swap, so that process is not stopped first.
  const swappable = await aliveToSwapBack(context, back.filter((t) => canSwapBack(t, target)), target);
  const slotLines = await stopIdleSlots(context, phase, phase.instances, new Set(swappable.map((t) => t.control.spec.id)));
  const ids = phase.onFailure === "revert" ? [...new Set([...phase.instances, ...(phase.revertAlso ?? [])])] : phase.instances;
  const touched = ids.map((id) => run.instance(id)).filter((t) => t.touched);
  if (phase.onFailure === "isolate") {
    for (const t of touched) if (t.outcome !== "updated") t.outcome = "failed";
    const left = touched.filter((t) => t.outcome === "failed").map((t) => t.control.spec.id);
    return [...slotLines, ...(left.length > 0 || slotLines.length === 0 ? [`left ${left.join(", ")} out of the pool; the routing in force is kept`] : [])].join("; ");
  }
  const lines = [...slotLines];
  if (!canary) {
    lines.push(...(await revertInstances(context, phase, touched, target)));
    lines.push(await restorePool(context, phase));
    return lines.join("; ");
  }
  // A canary's abort: every client leaves the canary's instances (those swapped back return on
  // their old slots in the same reload), then the others go back in place.
  const leaving = new Set(back.map((t) => t.control.spec.id));
  const routed = back.length > 0 ? await routeOut(context, phase, leaving, swappable, target) : undefined;
  if (routed) lines.push(routed.line);
  const swapped = routed?.swapped ? swappable : [];
  for (const t of swapped) t.outcome = "reverted";
  if (swapped.length > 0) lines.push(...(await stopIdleSlots(context, phase, swapped.map((t) => t.control.spec.id))));
  lines.push(...(await revertInstances(context, phase, back.filter((t) => !swapped.includes(t)), target)));
  lines.push(await restorePool(context, phase));
  return lines.join("; ");
}

/**
 * What a canary's abort takes back: every instance of the phase or an earlier one the deploy
 * touched or that runs the new version, including those that ran it before this run began (a
 * resumed canary's first instances), which nothing here touched.
 */
function takenBack(context: RunContext, ids: readonly string[], target: (t: TrackedInstance) => string | undefined): TrackedInstance[] {
  const { run } = context;
  return ids.map((id) => run.instance(id)).filter((t) => (t.touched || t.version === run.version) && target(t) !== undefined);
}

/**
 * The version a canary's instance goes back to: the one it ran before the deploy, or, for one that
 * already ran the new version then (a resumed canary), the version the old pool serves: the one
 * most healthy instances in the pool ran. A tie names none: such an instance is left as it is.
 */
function canaryRevertTarget(run: RunContext["run"]): (t: TrackedInstance) => string | undefined {
  const counts = new Map<string, number>();
  for (const o of run.observed) if (o.healthy && o.inPool && o.version !== undefined && o.version !== run.version) counts.set(o.version, (counts.get(o.version) ?? 0) + 1);
  const [first, second] = [...counts.entries()].sort((a, b) => b[1] - a[1]);
  const baseline = first && (!second || second[1] < first[1]) ? first[0] : undefined;
  return (t) => (t.from !== undefined && t.from !== run.version ? t.from : baseline);
}

/**
 * The candidates whose old process answers its health check with the version it goes back to,
 * now: one may have died during a long gate (a surge doubles memory), and a swap back to it would
 * route clients to a port where nothing listens. The others go back in place.
 */
async function aliveToSwapBack(context: RunContext, candidates: readonly TrackedInstance[], target: (t: TrackedInstance) => string | undefined): Promise<TrackedInstance[]> {
  const { options } = context;
  const wait = { ...options.healthWait, successes: 1, deadlineMs: Math.min(options.healthWait.deadlineMs, 5000), signal: AbortSignal.timeout(10_000) };
  const alive = await Promise.all(
    candidates.map((t) =>
      waitHealthy(options.health, { ...t.control.spec, port: t.idle!.port }, target(t)!, wait).then(
        () => true,
        () => false,
      ),
    ),
  );
  return candidates.filter((_, i) => alive[i]);
}

/** A swapped instance whose old slot still runs the version it goes back to, untouched by a command on its live slot. */
function canSwapBack(t: TrackedInstance, target: (t: TrackedInstance) => string | undefined): boolean {
  return !t.touched && t.idle !== undefined && t.idle.running !== false && t.idle.version !== undefined && t.idle.version === target(t);
}

/**
 * Stops the processes this deploy started or left on idle slots of the phase's instances (a new
 * version that failed its check, or an old one a swap took out) when nothing routes to them and no
 * failed proxy change may still be draining on them; otherwise the next deploy stops them first. The live slots are
 * not touched; an instance whose new slot was stopped still serves the version it ran.
 */
export async function stopIdleSlots(context: RunContext, phase: PlanPhase, ids: readonly string[] = phase.instances, except: ReadonlySet<string> = new Set()): Promise<string[]> {
  const { run } = context;
  const signal = AbortSignal.timeout(context.options.recoveryTimeoutMs ?? DEFAULT_REVERT_MS);
  const name = `${phase.name} (revert)`;
  const owned = ids.filter((id) => !except.has(id)).map((id) => run.instance(id)).filter((t) => t.idle?.ours && t.idle.running !== false);
  const stopped: string[] = [];
  const kept: string[] = [];
  const reachable: string[] = [];
  const draining: string[] = [];
  await forEachPerHost(owned, (t) => t.control.spec.host, context.parallel, async (t) => {
    const idle = t.idle!;
    const label = `${t.control.spec.id} (port ${idle.port})`;
    if (run.reachable(t.control.spec.id, idle.port)) return void reachable.push(label);
    // A failed proxy change may have left a generation draining on it: the next deploy stops it.
    if (!run.drained && run.routedSlots.has(`${t.control.spec.id}:${idle.port}`)) return void draining.push(label);
    // A routing that served it may still be draining in the background.
    if (run.drainsServing(t.control.spec.id, idle.port).some((d) => !d.settled)) return void draining.push(label);
    try {
      await timed(context, name, "stop", t.control.spec.id, () => t.control.stop({ version: idle.version, port: idle.port, signal }));
      idle.running = false;
      stopped.push(label);
      if (!t.touched && t.version === t.from && idle.version === run.version) t.outcome = "reverted";
    } catch {
      kept.push(label);
    }
  });
  return [
    ...(stopped.length ? [`stopped the idle slots of ${stopped.join(", ")}`] : []),
    ...(reachable.length ? [`kept ${reachable.join(", ")} running: the routing in force may still reach ${reachable.length === 1 ? "it" : "them"}`] : []),
    ...(draining.length ? [`left ${draining.join(", ")} running: after the failed proxy change, nginx may still be draining requests on ${draining.length === 1 ? "it" : "them"} (the next deploy stops ${draining.length === 1 ? "it" : "them"})`] : []),
    ...(kept.length ? [`could not stop the idle slots of ${kept.join(", ")}: they may still run, out of the pool`] : []),
  ];
}

async function revertInstances(context: RunContext, phase: PlanPhase, touched: readonly TrackedInstance[], target: (t: TrackedInstance) => string | undefined): Promise<string[]> {
  const { run, options } = context;
  const signal = AbortSignal.timeout(options.recoveryTimeoutMs ?? DEFAULT_REVERT_MS);
  const name = `${phase.name} (revert)`;
  await forEachPerHost(touched, (t) => t.control.spec.host, context.parallel, async (t) => {
    const id = t.control.spec.id;
    const previous = target(t);
    if (previous === undefined) {
      t.outcome = "failed";
      return;
    }
    // Requests can reach it (serving as it is, or checked healthy on the new version): reverting
    // it would mean draining it first. It stays as it is. So does an instance this run never
    // touched (a resumed canary's) that a pin still reaches, or that an old nginx generation may
    // still be draining on after a failed proxy change.
    if (run.routedRegardless(id) || ((t.outcome === "updated" || !t.touched) && run.reachable(id)) || (!t.touched && !run.drained)) return;
    // On the slot it is live on: with two slots, that need not be its first port.
    const port = t.port;
    try {
      await timed(context, name, "stop", id, () => t.control.stop({ version: t.version, port, signal }));
      await timed(context, name, "update", id, () => t.control.update({ version: previous, previous: options.version, port, signal }));
      t.version = previous;
      await timed(context, name, "start", id, () => t.control.start({ version: previous, port, signal }));
      await timed(context, name, "check", id, () => waitHealthy(options.health, { ...t.control.spec, port }, previous, { ...options.healthWait, signal }).then(() => undefined));
      t.outcome = "reverted";
    } catch {
      t.outcome = "failed";
    }
  });
  const reverted = touched.filter((t) => t.outcome === "reverted").map((t) => t.control.spec.id);
  const failed = touched.filter((t) => t.outcome === "failed").map((t) => t.control.spec.id);
  return [...(reverted.length ? [`reverted ${reverted.join(", ")} to their previous version`] : []), ...(failed.length ? [`could not revert ${failed.join(", ")}: left out of the pool`] : [])];
}

/**
 * Routes every client to the healthy instances outside `leaving` (a canary's abort: the old
 * version's), so that those can be reverted once the old routing drained. Instances in
 * `swapping` come back in the same reload on their idle slot, which still runs the version they
 * go back to: their abort is that reload. With no instance to route to, the routing in force is
 * kept and the instances stay as they are.
 */
async function routeOut(context: RunContext, phase: PlanPhase, leaving: ReadonlySet<string>, swapping: readonly TrackedInstance[], target: (t: TrackedInstance) => string | undefined): Promise<{ line: string; swapped: boolean }> {
  const { run, options } = context;
  const returning = swapping.map((t) => ({ ...run.observed.find((o) => o.id === t.control.spec.id)!, version: target(t), healthy: true }));
  const staying = [...healthyInstances(context).filter((o) => !leaving.has(o.id)), ...returning];
  if (staying.length === 0) return { line: `no healthy instance outside ${[...leaving].join(", ")} to route to: they keep serving`, swapped: false };
  const planned = recoveryRoutingOf(context, staying);
  const routing = swapping.length > 0 ? { ...planned, slots: { ...planned.slots, ...Object.fromEntries(swapping.map((t) => [t.control.spec.id, t.idle!.port])) } } : planned;
  const back = swapping.map((t) => t.control.spec.id);
  try {
    validateRouting(routing, run.observed);
    await applyRouting(context, routing, `recovery: every client back, ${[...leaving].join(", ")} out${back.length > 0 ? ` (${back.join(", ")} back on their old slots)` : ""}`, `${phase.name} (revert)`, AbortSignal.timeout(options.poolRestoreTimeoutMs ?? DEFAULT_POOL_RESTORE_MS));
    const line = `every client routed to ${staying.map((o) => o.id).join(", ")}`;
    return { line: back.length > 0 ? `${line}; ${back.join(", ")} swapped back to the old process on ${back.length === 1 ? "its" : "their"} other slot` : line, swapped: true };
  } catch (error) {
    return { line: `could not route clients away from ${[...leaving].join(", ")} (${toNodropError(error, "E_PROXY_RELOAD").message.split("\n")[0]}); they keep serving`, swapped: false };
  }
}

/** The instances nodrop knows are healthy now (updated, reverted, or untouched and healthy before), with the versions they run. */
function healthyInstances(context: RunContext): ObservedInstance[] {
  const { run } = context;
  return run.observed
    .filter((o) => {
      const t = run.instance(o.id);
      return t.outcome === "updated" || t.outcome === "reverted" || (!t.touched && (t.outcome === "not-reached" || t.outcome === "unchanged") && o.healthy);
    })
    .map((o) => ({ ...o, version: run.instance(o.id).version }));
}

/** The strategy's routing for these healthy instances (one pool of them by default). */
function recoveryRoutingOf(context: RunContext, healthy: readonly ObservedInstance[]) {
  const { run, options } = context;
  const previous = [...new Set(run.observed.map((o) => o.version).filter((v): v is string => v !== undefined && v !== run.version))];
  return (
    options.strategy.recoveryRouting?.(healthy, { version: run.version, previous, instances: run.observed.map((o) => o.id), options: options.strategyOptions }) ??
    singlePool(healthy.map((o) => o.id))
  );
}

/** Routes every instance nodrop checked healthy (updated, reverted, or untouched and healthy before). */
export async function restorePool(context: RunContext, phase: PlanPhase): Promise<string> {
  const { run, options } = context;
  const healthy = healthyInstances(context);
  if (healthy.length === 0) return "no healthy instance to route to; the proxy config in force was kept";
  const routing = recoveryRoutingOf(context, healthy);
  try {
    validateRouting(routing, run.observed);
    // The routing in force already serves exactly the healthy instances (a phase that failed before
    // it changed the routing, as a surge's new slot failing its check): keep it. A reload that
    // changes nothing users see would still close their idle keep-alive connections.
    const ids = new Set(healthy.map((o) => o.id));
    if (run.routing && run.observed.every((o) => run.reachable(o.id) === ids.has(o.id))) return `pool kept: ${[...run.serving()].join(", ")}`;
    await applyRouting(context, routing, "recovery: healthy instances back in the pool", `${phase.name} (revert)`, AbortSignal.timeout(options.poolRestoreTimeoutMs ?? DEFAULT_POOL_RESTORE_MS));
    return `pool restored: ${[...run.serving()].join(", ")}`;
  } catch (error) {
    let e = toNodropError(error, "E_PROXY_RELOAD");
    if (e.routingInForce === "unknown") {
      // For the report's pool column: ask the proxy what it has now.
      const inForce = await readBackRouting(context);
      e = new NodropError(e.code, e.message, { cause: e.cause, routingInForce: inForce });
    }
    if (e.routingInForce === "new") return `pool restored: ${[...run.serving()].join(", ")} (the proxy then reported: ${e.message})`;
    return `could not restore the pool (${e.message}); ${inForceClause(e)}`;
  }
}

/**
 * After a proxy change whose outcome is unknown, asks the proxy which routing is in force before
 * any instance is touched: the previous one, the new one, or still unknown (it cannot say, or it
 * has neither).
 */
export async function readBackRouting(context: RunContext): Promise<"previous" | "new" | "unknown"> {
  const { run, options } = context;
  const candidates = run.possibleRoutings;
  const attempted = candidates.at(-1);
  const routing = await options.proxy.current({ signal: AbortSignal.timeout(options.poolRestoreTimeoutMs ?? DEFAULT_POOL_RESTORE_MS) }).catch(() => undefined);
  if (!routing) return "unknown";
  const match = candidates.find((candidate) => sameRouting(candidate, routing));
  if (!match) {
    // Neither: a third routing may be in force (someone else's change); it counts too.
    run.routingUncertain(routing);
    return "unknown";
  }
  run.routingApplied(match);
  return match === attempted ? "new" : "previous";
}

/** What a failed proxy change left in force, as a report clause. */
export function inForceClause(error: NodropError): string {
  switch (error.routingInForce) {
    case "new":
      return "the proxy put the new routing in force before the failure";
    case "unknown":
      return "which routing the proxy has in force is unknown: check it with `nodrop status` before the next deploy";
    default:
      return "the previous proxy config is in force";
  }
}
