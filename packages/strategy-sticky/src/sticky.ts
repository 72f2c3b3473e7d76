import {
  type DeployPlan,
  NodropError,
  type PlanInput,
  type PlanPhase,
  type Routing,
  type Strategy,
  checkBatchCapacity,
  checkSpares,
  formatDuration,
  oldSlotsPhase,
  replaceSteps,
  retireSteps,
  surgeSteps,
  swapSlots,
} from "@nodrop/core";
import { type StickyOptions, affinityKey, stickyOptionsSchema } from "./options.js";

/**
 * Sticky: a rolling deploy (one batch at a time, drained through nginx) whose routing keeps each
 * client on its instance and never sends it back to an older version.
 *
 * Pools per proxy generation (all over one consistent-hash ring of every instance, so a client's
 * instance only changes while that instance is out):
 * - `live`: every instance in service, old and new: where clients pinned to an old version go
 *   (their version or newer, and their own instance when it returns updated);
 * - `new`: instances already on the new version: where clients pinned to it go;
 * - `old`: instances still on the old version: where new clients go until the new version has
 *   `newShare` percent of the instances, after which they go to `new`.
 * The pin for the new version exists before any instance serves it.
 */
export function stickyStrategy(): Strategy<StickyOptions> & { optionsSchema: typeof stickyOptionsSchema } {
  return {
    name: "sticky",
    optionsSchema: stickyOptionsSchema,
    plan({ instances, version, proxy, options }: PlanInput<StickyOptions>): DeployPlan {
      const mode = options.mode ?? "both";
      const pinning = mode !== "instance";
      const affinity = mode !== "version";
      if (pinning && !proxy.versionPinning) throw new NodropError("E_PLAN", `strategy.mode: ${mode} needs a proxy that pins clients to a version`);
      if (affinity && !proxy.affinity) throw new NodropError("E_PLAN", `strategy.mode: ${mode} needs a proxy with instance affinity`);
      let key: string;
      try {
        key = affinityKey(options);
      } catch (error) {
        throw new NodropError("E_PLAN", (error as Error).message);
      }
      const ring = instances.map((i) => i.id);
      const notes: string[] = [];
      // Instances out of the pool (a deploy that stopped half-way) that do not run the target go
      // first, all in the first batch: they serve nobody, so replacing them costs no capacity, and
      // no later routing may bring them back before they are. One already on the target and
      // healthy rejoins with the first routing.
      const outOld = instances.filter((i) => !i.inPool && i.version !== version).map((i) => i.id);
      const todo = [...outOld, ...instances.filter((i) => i.inPool && i.version !== version).map((i) => i.id)];
      const rejoin = instances.some((i) => !i.inPool && i.version === version && i.healthy);
      const nothingToDo = todo.length === 0 && !rejoin;
      if (nothingToDo && !options.surge) return { strategy: "sticky", version, phases: [], notes: [`all ${ring.length} instances already run ${version}`] };
      const oldVersions = [...new Set(instances.map((i) => i.version).filter((v): v is string => v !== undefined && v !== version))];
      const size = Math.min(options.batchSize ?? 1, Math.max(todo.length, 1));
      const surge = options.surge === true;
      if (surge) checkSpares(instances.filter((i) => todo.includes(i.id) && !outOld.includes(i.id)), "strategy.surge");
      else checkBatchCapacity(size, ring.length, options.minInPool ?? 1);
      const share = options.newShare ?? 50;
      notes.push(
        `${mode === "both" ? "affinity by " + key + " within the client's version or newer" : mode === "instance" ? "affinity by " + key : "version pinning"}; new clients go to ${version} from ${share}% of the instances`,
      );

      const done = new Set(instances.filter((i) => i.version === version).map((i) => i.id));
      const routingFor = (outNow: ReadonlySet<string>): Routing => {
        const live = ring.filter((id) => !outNow.has(id));
        const fresh = live.filter((id) => done.has(id));
        const stale = live.filter((id) => !done.has(id));
        const pools: Record<string, string[]> = { live };
        if (fresh.length > 0) pools.new = fresh;
        if (stale.length > 0) pools.old = stale;
        const newDefault = stale.length === 0 || (fresh.length > 0 && (100 * fresh.length) / ring.length >= share);
        // With surge and affinity, nobody leaves the pool: a client without a version yet goes to its
        // own instance whatever it runs, rather than to another one of the old version (newShare).
        const defaultPool = !pinning || (surge && affinity) ? "live" : newDefault ? "new" : "old";
        const pins: Record<string, string> = {};
        if (pinning) {
          for (const old of oldVersions) pins[old] = "live";
          // Staged before the first new instance serves; until then nobody holds it.
          pins[version] = fresh.length > 0 ? "new" : "live";
        }
        return { pools, defaultPool, pins, ...(affinity ? { affinity: { key, ring } } : {}) };
      };

      if (outOld.length > 0) notes.push(`${outOld.join(", ")} out of the pool: replaced first`);
      const batches: string[][] = [];
      const first = Math.max(size, outOld.length);
      if (todo.length > 0) batches.push(todo.slice(0, first));
      for (let i = first; i < todo.length; i += size) batches.push(todo.slice(i, i + size));
      // With surge: old processes a killed deploy (or a keep window) left on idle slots stop first,
      // after the routing in force is reloaded (it serves the instances in the pool now).
      const outNow = new Set(instances.filter((i) => !i.inPool).map((i) => i.id));
      const phases: PlanPhase[] = surge ? oldSlotsPhase(instances, todo, routingFor(outNow), version) : [];
      if (nothingToDo) return { strategy: "sticky", version, phases, notes: [`all ${ring.length} instances already run ${version}`] };
      if (surge) {
        // Each batch starts beside itself and swaps in: it never leaves the pool, and since the ring
        // is by instance id, its clients stay with it through the swap.
        const keepOld = options.keepOld ?? 0;
        const swapped = new Set<string>();
        for (const [index, batch] of batches.entries()) {
          const outside = batch.filter((id) => outOld.includes(id));
          const inside = batch.filter((id) => !outside.includes(id));
          for (const id of batch) done.add(id);
          for (const id of inside) swapped.add(id);
          phases.push({
            name: `batch ${index + 1}/${batches.length}`,
            instances: batch,
            onFailure: "revert",
            steps: [
              ...(outside.length > 0 ? replaceSteps(outside) : []),
              ...(inside.length > 0 ? surgeSteps(inside, instances, version) : []),
              { kind: "route", routing: swapSlots(routingFor(new Set()), instances, swapped), why: `${batch.join(", ")} on ${version}${inside.length > 0 ? ", swapped to their new slots" : ""}`, background: true },
              ...(inside.length > 0 && keepOld === 0 ? retireSteps(inside) : []),
            ],
          });
        }
        // Nothing to replace, but instances out of the pool on the version rejoin.
        if (batches.length === 0) phases.push({ name: "finish", instances: [], onFailure: "revert", steps: [{ kind: "route", routing: routingFor(new Set()), why: "all instances in the pool" }] });
        notes.push(`surge: every instance stays in the pool; batches of up to ${size} start on their spare ports and swap in`);
        if (keepOld > 0) notes.push(`the old processes are kept for ${formatDuration(keepOld)} after the deploy: \`nodrop rollback\` swaps back in one reload`);
        return { strategy: "sticky", version, phases, notes, ...(keepOld > 0 ? { keepOldMs: keepOld } : {}) };
      }
      for (const [index, batch] of batches.entries()) {
        const previous = index > 0 ? `${batches[index - 1]!.join(", ")} back, ` : "";
        phases.push({
          name: `batch ${index + 1}/${batches.length}`,
          instances: batch,
          onFailure: "revert",
          steps: [
            { kind: "route", routing: routingFor(new Set(batch)), why: `${previous}${batch.join(", ")} out` },
            ...replaceSteps(batch),
          ],
        });
        for (const id of batch) done.add(id);
      }
      phases.push({ name: "finish", instances: [], onFailure: "revert", steps: [{ kind: "route", routing: routingFor(new Set()), why: `all instances on ${version}` }] });
      return { strategy: "sticky", version, phases, notes };
    },
    steadyRouting(ids, options) {
      const affinity = (options.mode ?? "both") !== "version";
      return { pools: { live: [...ids] }, defaultPool: "live", pins: {}, ...(affinity ? { affinity: { key: affinityKey(options), ring: [...ids] } } : {}) };
    },
    recoveryRouting(healthy, { version, previous, instances, options }) {
      // After a failure versions are mixed. Nothing here orders version strings (git SHAs do not
      // sort by age): the deploy's version is the newest, every previous one is older than it.
      // A client pinned to a previous version goes to instances of that version or the new one;
      // a client pinned to the new version only to instances of it, so nobody goes back.
      const mode = options.mode ?? "both";
      const live = healthy.map((i) => i.id);
      const on = (...versions: string[]) => healthy.filter((i) => i.version !== undefined && versions.includes(i.version)).map((i) => i.id);
      const pools: Record<string, string[]> = { live };
      const pins: Record<string, string> = {};
      if (mode !== "instance") {
        const fresh = on(version);
        if (fresh.length > 0) pools.new = fresh;
        pins[version] = fresh.length > 0 ? "new" : "live";
        previous.forEach((old, index) => {
          const own = on(old, version);
          // A version nobody healthy runs any more: its clients may go anywhere (all are newer).
          if (own.length === 0 || own.length === live.length) pins[old] = "live";
          else {
            pools[`prev${index + 1}`] = own;
            pins[old] = `prev${index + 1}`;
          }
        });
      }
      // Affinity stays: the ring is the whole fleet, as in every routing of this deploy.
      const affinity = mode !== "version" ? { affinity: { key: affinityKey(options), ring: [...instances] } } : {};
      return { pools, defaultPool: "live", pins, ...affinity };
    },
  };
}
