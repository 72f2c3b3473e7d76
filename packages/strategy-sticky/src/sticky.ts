import { type DeployPlan, NodropError, type PlanInput, type PlanPhase, type Routing, type Strategy, checkBatchCapacity, replaceSteps } from "@nodrop/core";
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
      const out = instances.filter((i) => !i.inPool);
      if (out.length > 0) throw new NodropError("E_PLAN", `sticky: ${out.map((i) => i.id).join(", ")} out of the pool; run a rolling deploy to repair them first`);
      const todo = instances.filter((i) => i.version !== version).map((i) => i.id);
      if (todo.length === 0) return { strategy: "sticky", version, phases: [], notes: [`all ${ring.length} instances already run ${version}`] };
      const oldVersions = [...new Set(instances.filter((i) => i.version !== version).map((i) => i.version!))];
      const size = Math.min(options.batchSize ?? 1, todo.length);
      checkBatchCapacity(size, ring.length, options.minInPool ?? 1);
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
        const defaultPool = !pinning ? "live" : newDefault ? "new" : "old";
        const pins: Record<string, string> = {};
        if (pinning) {
          for (const old of oldVersions) pins[old] = "live";
          // Staged before the first new instance serves; until then nobody holds it.
          pins[version] = fresh.length > 0 ? "new" : "live";
        }
        return { pools, defaultPool, pins, ...(affinity ? { affinity: { key, ring } } : {}) };
      };

      const phases: PlanPhase[] = [];
      for (let i = 0; i < todo.length; i += size) {
        const batch = todo.slice(i, i + size);
        const previous = i > 0 ? `${todo.slice(i - size, i).join(", ")} back, ` : "";
        phases.push({
          name: `batch ${i / size + 1}/${Math.ceil(todo.length / size)}`,
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
    recoveryRouting(healthy) {
      // After a failure versions may be mixed: a client pinned to a version goes to instances of
      // that version or newer, so nobody goes back.
      const ids = healthy.map((i) => i.id);
      const versions = [...new Set(healthy.map((i) => i.version).filter((v): v is string => v !== undefined))].sort(compareVersions);
      const pools: Record<string, string[]> = { live: ids };
      const pins: Record<string, string> = {};
      versions.forEach((v, index) => {
        if (index === 0) {
          pins[v] = "live";
          return;
        }
        const pool = `newer${index}`;
        pools[pool] = healthy.filter((i) => i.version !== undefined && compareVersions(i.version, v) >= 0).map((i) => i.id);
        pins[v] = pool;
      });
      return { pools, defaultPool: "live", pins };
    },
  };
}

/** Natural order of version strings: "v2" < "v10", "1.9.3" < "1.10.0". */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string) => v.split(/(\d+)/).filter(Boolean);
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = Number(x);
    const ny = Number(y);
    const d = Number.isNaN(nx) || Number.isNaN(ny) ? x.localeCompare(y) : nx - ny;
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}
