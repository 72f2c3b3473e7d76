import {
  type DeployPlan,
  type ObservedInstance,
  type PlanInput,
  type PlanPhase,
  type PlanStep,
  type Strategy,
  checkBatchCapacity,
  checkSpares,
  formatDuration,
  oldSlotsPhase,
  readySlots,
  replaceSteps,
  retireSteps,
  singlePool,
  surgeSteps,
  swapSlots,
} from "@nodrop/core";
import { type RollingOptions, rollingOptionsSchema } from "./options.js";

/** Resolves a batch size ("25%" or a count) against the fleet size; at least 1. */
export function batchCount(batchSize: number | string, fleetSize: number): number {
  if (typeof batchSize === "number") return batchSize;
  return Math.max(1, Math.floor((fleetSize * Number(batchSize.slice(0, -1))) / 100));
}

/** Orders instances host by host in turn (a1, b1, c1, a2, b2, ...), keeping each host's order. */
export function spreadByHost<T extends { host: string }>(instances: readonly T[]): T[] {
  const byHost = new Map<string, T[]>();
  for (const instance of instances) {
    const list = byHost.get(instance.host) ?? [];
    list.push(instance);
    byHost.set(instance.host, list);
  }
  const out: T[] = [];
  const lists = [...byHost.values()];
  for (let round = 0; out.length < instances.length; round++) for (const list of lists) if (round < list.length) out.push(list[round]!);
  return out;
}

/** Splits items into consecutive batches of `size`. */
export function toBatches<T>(items: readonly T[], size: number): T[][] {
  const batches: T[][] = [];
  for (let i = 0; i < items.length; i += size) batches.push(items.slice(i, i + size));
  return batches;
}

/**
 * Rolling deploy: each batch leaves the pool (one reload, then the old nginx generation drains),
 * is stopped, updated, started and checked directly, then rejoins. Without soak, a batch rejoins
 * in the same reload that takes the next batch out: one reload and one drain per batch.
 */
export function rollingStrategy(): Strategy<RollingOptions> & { optionsSchema: typeof rollingOptionsSchema } {
  return {
    name: "rolling",
    optionsSchema: rollingOptionsSchema,
    plan({ instances, version, options }: PlanInput<RollingOptions>): DeployPlan {
      const all = instances.map((i) => i.id);
      const notes: string[] = [];
      // Instances out of the pool (left there by a failed deploy) change first: nothing routes to them.
      const outside = instances.filter((i) => !i.inPool && (i.version !== version || !i.healthy)).map((i) => i.id);
      // Interleaved by host, so that a batch spreads over hosts and each host keeps serving.
      const todo = spreadByHost(instances.filter((i) => i.inPool && i.version !== version)).map((i) => i.id);
      const skipped = all.length - todo.length - outside.length;
      if (skipped > 0) notes.push(`${skipped} instance${skipped === 1 ? "" : "s"} already on ${version}: left as they are`);
      const allIn = singlePool(all);
      const outOfPool = instances.some((i) => !i.inPool);
      if (todo.length === 0 && outside.length === 0) {
        const tidy = options.surge ? oldSlotsPhase(instances, [], singlePool(instances.filter((i) => i.inPool).map((i) => i.id)), version) : [];
        const phases: PlanPhase[] = [...tidy, ...(outOfPool ? [{ name: "finish", instances: [], steps: [{ kind: "route" as const, routing: allIn, why: "all instances in the pool" }], onFailure: "revert" as const }] : [])];
        const what = outOfPool ? "instances out of the pool rejoin it" : tidy.length > 0 ? "old processes left on idle slots are stopped" : "nothing to do";
        return { strategy: "rolling", version, phases, notes: [...notes, what] };
      }
      const phases: PlanPhase[] = [];
      if (outside.length > 0) {
        notes.push(`${outside.join(", ")} out of the pool: updated first, without a proxy change`);
        phases.push({
          name: "out of pool",
          instances: outside,
          onFailure: "isolate",
          steps: replaceSteps(outside),
        });
      }
      if (todo.length === 0) {
        phases.push({ name: "finish", instances: [], steps: [{ kind: "route", routing: allIn, why: "all instances in the pool" }], onFailure: "revert" });
        return { strategy: "rolling", version, phases, notes };
      }

      const size = Math.min(batchCount(options.batchSize ?? 1, all.length), todo.length);
      if (options.surge) {
        const keepOld = options.keepOld ?? 0;
        const surge = surgePhases(instances, todo, size, { soak: options.soak ?? 0, version, keepOld, prepareAhead: options.prepareAhead ?? true });
        phases.push(...surge.phases);
        notes.push(surge.note);
        if (keepOld > 0) notes.push(`the old processes are kept for ${formatDuration(keepOld)} after the deploy: \`nodrop rollback\` swaps back in one reload`);
        return { strategy: "rolling", version, phases, notes, ...(keepOld > 0 ? { keepOldMs: keepOld } : {}) };
      }
      const minInPool = options.minInPool ?? 1;
      checkBatchCapacity(size, all.length, minInPool);
      const batches = toBatches(todo, size);
      notes.push(`${batches.length} batch${batches.length === 1 ? "" : "es"} of up to ${size}; ${all.length - size} of ${all.length} instances serve while a batch is out`);
      const soak = options.soak ?? 0;
      batches.forEach((batch, index) => {
        const out = new Set(batch);
        const previous = index > 0 && soak === 0 ? `${batches[index - 1]!.join(", ")} back, ` : "";
        const steps: PlanStep[] = [
          { kind: "route", routing: singlePool(all.filter((id) => !out.has(id))), why: `${previous}batch ${index + 1} out: ${batch.join(", ")}` },
          ...replaceSteps(batch),
        ];
        if (soak > 0) steps.push({ kind: "route", routing: allIn, why: `batch ${index + 1} back: ${batch.join(", ")}` }, { kind: "soak", ms: soak });
        phases.push({ name: `batch ${index + 1}/${batches.length}`, instances: batch, steps, onFailure: "revert" });
      });
      if (soak === 0) phases.push({ name: "finish", instances: [], steps: [{ kind: "route", routing: allIn, why: "all instances in the pool" }], onFailure: "revert" });
      return { strategy: "rolling", version, phases, notes };
    },
  };
}

/**
 * Surge batches: each starts its new version on the idle slots while the old slots serve, swaps
 * them in one reload (the old slots drain with the old nginx generation) and stops the old
 * processes in the background, so the next batch does not wait for them (or keeps them, with
 * keepOld). With prepareAhead, a batch's new processes start while the batch before it swaps.
 * Every routing holds the whole fleet: capacity never drops below it. When every idle
 * slot already runs the version (a rollback inside the keep window), one swap does it all.
 */
function surgePhases(
  instances: readonly ObservedInstance[],
  todo: readonly string[],
  size: number,
  options: { soak: number; version: string; keepOld: number; prepareAhead: boolean },
): { phases: PlanPhase[]; note: string } {
  checkSpares(instances.filter((i) => todo.includes(i.id)), "strategy.surge");
  const all = instances.map((i) => i.id);
  const ready = readySlots(instances.filter((i) => todo.includes(i.id)), options.version);
  const swapAll = ready.length === todo.length;
  const batches = swapAll ? [[...todo]] : toBatches(todo, size);
  const swapped = new Set<string>();
  const phases = batches.map((batch, index): PlanPhase => {
    for (const id of batch) swapped.add(id);
    const routing = swapSlots(singlePool(all), instances, swapped);
    const steps: PlanStep[] = [
      ...surgeSteps(batch, instances, options.version),
      // The old slots drain while the next batch starts: only their stops wait for it.
      { kind: "route", routing, why: `batch ${index + 1} swapped to its new slots: ${batch.join(", ")}`, background: true },
      ...(options.keepOld > 0 ? [] : retireSteps(batch)),
      ...(options.soak > 0 ? [{ kind: "soak" as const, ms: options.soak }] : []),
    ];
    // From the second batch on, its new processes start while the batch before it swaps (not the
    // first: a plan that stops leftovers reloads the routing in force before any idle slot changes).
    const early = options.prepareAhead && options.soak === 0 && index > 0;
    return { name: `batch ${index + 1}/${batches.length}`, instances: batch, steps, onFailure: "revert", ...(early ? { prepareEarly: true } : {}) };
  });
  const note = swapAll
    ? `surge: every idle slot already runs ${options.version}: one swap, no process started`
    : `surge: batches of up to ${size} start on their spare ports while the old processes serve; all ${all.length} instances serve throughout`;
  const serving = singlePool(instances.filter((i) => i.inPool).map((i) => i.id));
  return { phases: [...oldSlotsPhase(instances, todo, serving, options.version), ...phases], note };
}
