import { NodropError } from "./errors.js";
import type { ObservedInstance, PlanPhase, PlanStep, Routing } from "./types.js";

/** The steps that change instances that nothing routes to: stop, put the version in place, start, check. */
export function replaceSteps(ids: readonly string[]): PlanStep[] {
  return [
    { kind: "stop", instances: ids },
    { kind: "update", instances: ids },
    { kind: "start", instances: ids },
    { kind: "check", instances: ids },
  ];
}

/** Refuses a batch size that would leave fewer than `minInPool` instances serving (or a fleet of one). */
export function checkBatchCapacity(size: number, fleet: number, minInPool: number): void {
  if (fleet - size >= minInPool) return;
  throw new NodropError(
    "E_PLAN",
    fleet === 1
      ? "strategy.batchSize: a fleet of one instance cannot be updated without dropping requests; add a second instance"
      : `strategy.batchSize: a batch of ${size} out of ${fleet} instances leaves ${fleet - size} serving, below strategy.minInPool (${minInPool})`,
  );
}

/**
 * The steps that start a version beside the running one: put it in place on each instance's idle
 * slot, start it there and check it directly, while the live slot keeps serving. An idle slot where
 * a process of the app still runs (a deploy killed mid-surge left it, or old slots kept for a
 * rollback) is stopped first, unless it runs `version`: then it is only checked and used as it is,
 * so a rollback inside the keep window starts no process.
 */
export function surgeSteps(ids: readonly string[], instances: readonly ObservedInstance[] = [], version?: string): PlanStep[] {
  const mine = instances.filter((i) => ids.includes(i.id));
  const ready = new Set(readySlots(mine, version));
  const fresh = ids.filter((id) => !ready.has(id));
  const stale = leftoverSlots(mine).filter((id) => !ready.has(id));
  return [
    ...(stale.length > 0 ? [{ kind: "stop" as const, instances: stale, slot: "idle" as const }] : []),
    ...(fresh.length > 0
      ? [
          { kind: "update" as const, instances: fresh, slot: "idle" as const },
          { kind: "start" as const, instances: fresh, slot: "idle" as const },
        ]
      : []),
    { kind: "check", instances: ids, slot: "idle" },
  ];
}

/** Instances whose idle slot already runs `version` (it answered the health check with it at preflight). */
export function readySlots(instances: readonly ObservedInstance[], version: string | undefined): string[] {
  return version === undefined ? [] : instances.filter((i) => i.idle && !i.idle.free && i.idle.version === version).map((i) => i.id);
}

/** After a swap: the old slots (idle now, drained) stop without holding up what comes next. */
export function retireSteps(ids: readonly string[]): PlanStep[] {
  return [{ kind: "stop", instances: ids, slot: "idle", background: true }];
}

/** The routing with these instances served on their idle slots (as preflight saw them). */
export function swapSlots(routing: Routing, instances: readonly ObservedInstance[], ids: Iterable<string>): Routing {
  const slots: Record<string, number> = { ...routing.slots };
  for (const id of ids) {
    const idle = instances.find((i) => i.id === id)?.idle;
    if (idle) slots[id] = idle.port;
  }
  return { ...routing, slots };
}

/** Refuses a surge on instances without a spare port, naming them. */
export function checkSpares(instances: readonly ObservedInstance[], field: string): void {
  const single = instances.filter((i) => !i.idle).map((i) => i.id);
  if (single.length === 0) return;
  throw new NodropError("E_PLAN", `${field} needs two slots on every instance it replaces: ${single.join(", ")} ${single.length === 1 ? "has" : "have"} one port (give each a spare port: instances[].spare, or slots.offset)`);
}

/** Instances whose idle slot runs a process of the app (it answered the health check at preflight). */
export function leftoverSlots(instances: readonly ObservedInstance[]): string[] {
  return instances.filter((i) => i.idle && !i.idle.free && i.idle.version !== undefined).map((i) => i.id);
}

/**
 * What a surge plan does first when a process of the app runs on some idle slot (a deploy killed
 * mid-surge left it, or old slots were kept): put `routing` (the fleet as it serves now) into effect
 * again, so that nginx's workers surely route by the file that says which slot is live (a deploy
 * killed between writing it and the reload leaves them on the other one), and once that has drained,
 * stop the leftovers of instances the plan does not replace (`exclude`: those it does, whose
 * leftovers its own steps handle).
 */
export function oldSlotsPhase(instances: readonly ObservedInstance[], exclude: readonly string[], routing: Routing, version?: string): PlanPhase[] {
  const all = leftoverSlots(instances);
  if (all.length === 0) return [];
  const ready = new Set(readySlots(instances.filter((i) => exclude.includes(i.id)), version));
  const stop = all.filter((id) => !exclude.includes(id));
  if (stop.length === 0 && all.every((id) => ready.has(id))) return [];
  return [
    {
      name: "old slots",
      instances: stop,
      onFailure: "isolate",
      steps: [
        { kind: "route", routing, why: "the routing in force, reloaded before anything stops on an idle slot" },
        ...(stop.length > 0 ? [{ kind: "stop" as const, instances: stop, slot: "idle" as const }] : []),
      ],
    },
  ];
}
