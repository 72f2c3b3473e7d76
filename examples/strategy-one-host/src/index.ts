// A nodrop strategy plugin: the hosts are updated one at a time. All of a host's instances leave
// the pool together (one proxy change), unless that would leave fewer than `minInPool` serving:
// then the host goes in batches that keep `minInPool` in the pool. Instances left out of the pool
// by an earlier deploy are updated first: nothing routes to them.
import { type DeployPlan, type PlanInput, type PlanPhase, NodropError, defineStrategy, replaceSteps, schema, singlePool } from "@nodrop/core";

export const oneHostOptionsSchema = schema.object({
  minInPool: schema.optional(schema.int({ min: 1, doc: "Fewest instances left serving while a host (or part of it) is out." }), 2),
});

export type OneHostOptions = schema.Infer<typeof oneHostOptionsSchema>;

/** The plan: pure, from what preflight observed. The engine applies it, and undoes a failed phase. */
export function planOneHost({ instances, version, options }: PlanInput<OneHostOptions>): DeployPlan {
  const all = instances.map((i) => i.id);
  const stale = instances.filter((i) => i.version !== version || !i.healthy);
  const outside = stale.filter((i) => !i.inPool).map((i) => i.id);
  const inside = stale.filter((i) => i.inPool);
  const phases: PlanPhase[] = [];
  if (outside.length > 0) phases.push({ name: "out of pool", instances: outside, onFailure: "isolate", steps: replaceSteps(outside) });

  const spare = all.length - options.minInPool;
  if (inside.length > 0 && spare < 1) {
    throw new NodropError("E_PLAN", `strategy.minInPool: ${options.minInPool} of ${all.length} instances must keep serving, so none can leave the pool; add an instance or lower minInPool`);
  }
  const hosts = new Map<string, string[]>();
  for (const i of inside) hosts.set(i.host, [...(hosts.get(i.host) ?? []), i.id]);
  for (const [host, ids] of hosts) {
    for (let start = 0; start < ids.length; start += spare) {
      const batch = ids.slice(start, start + spare);
      const out = new Set([...batch, ...outside]);
      phases.push({
        name: ids.length > spare ? `${host} (${start / spare + 1}/${Math.ceil(ids.length / spare)})` : host,
        instances: batch,
        onFailure: "revert",
        steps: [{ kind: "route", routing: singlePool(all.filter((id) => !out.has(id))), why: `${batch.join(", ")} out` }, ...replaceSteps(batch)],
      });
    }
  }
  const outOfPool = instances.some((i) => !i.inPool);
  if (phases.length > 0 || outOfPool) phases.push({ name: "finish", instances: [], onFailure: "revert", steps: [{ kind: "route", routing: singlePool(all), why: "all instances in the pool" }] });
  const notes = phases.length === 0 ? [`nothing to do: every instance runs ${version}`] : [`${hosts.size} host${hosts.size === 1 ? "" : "s"}, one at a time; at least ${options.minInPool} of ${all.length} instances serve throughout`];
  return { strategy: "one-host", version, phases, notes };
}

// What `strategy: { use: nodrop-strategy-one-host }` loads: the default export, made by defineStrategy.
export default defineStrategy<OneHostOptions>({
  name: "one-host",
  optionsSchema: oneHostOptionsSchema,
  create: () => ({ name: "one-host", plan: planOneHost }),
});
