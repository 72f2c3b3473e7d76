import { type DeployPlan, NodropError, type PlanInput, type PlanPhase, type Routing, type Strategy, readySlots, replaceSteps, retireSteps, schema, singlePool, swapSlots } from "@nodrop/core";

/** No options: an abort has one way to go. */
export const canaryAbortOptionsSchema = schema.object({});

/**
 * `nodrop abort`: a canary goes back at once. One reload sends every client to the instances that
 * run `version` (the one the canary started from), dropping the new version's pin, so no client
 * gets the new version from then on; the canary's instances then drain, go back to `version`, are
 * checked and rejoin. The price of "at once" is capacity: the old instances carry everything
 * while the canary's are replaced.
 */
export function canaryAbortStrategy(): Strategy<Record<string, never>> & { optionsSchema: typeof canaryAbortOptionsSchema } {
  return {
    name: "canary-abort",
    optionsSchema: canaryAbortOptionsSchema,
    plan({ instances, version }: PlanInput<Record<string, never>>): DeployPlan {
      const all = instances.map((i) => i.id);
      const serving = instances.filter((i) => i.version === version && i.healthy).map((i) => i.id);
      const back = instances.filter((i) => !serving.includes(i.id)).map((i) => i.id);
      if (back.length === 0) {
        const out = instances.filter((i) => !i.inPool).map((i) => i.id);
        if (out.length === 0) return { strategy: "canary-abort", version, phases: [], notes: [`all ${all.length} instances already run ${version}`] };
        return { strategy: "canary-abort", version, notes: [`${out.join(", ")} rejoin the pool`], phases: [{ name: "finish", instances: [], onFailure: "isolate", steps: [{ kind: "route", routing: singlePool(all), why: `${out.join(", ")} back` }] }] };
      }
      if (serving.length === 0) throw new NodropError("E_PLAN", `no healthy instance runs ${version} to take every client: nothing to abort to (\`nodrop rollback --to\` replaces them one batch at a time)`);
      // A surge canary kept the old processes on the idle slots: those instances go back by a swap in the same reload, restarting nothing.
      const swap = readySlots(instances.filter((i) => back.includes(i.id) && i.inPool), version);
      const inPlace = back.filter((id) => !swap.includes(id));
      const swapped = (routing: Routing) => (swap.length > 0 ? swapSlots(routing, instances, swap) : routing);
      const phases: PlanPhase[] = [
        {
          name: "abort",
          instances: back,
          onFailure: "revert",
          steps: [
            { kind: "route", routing: swapped(singlePool([...serving, ...swap])), why: `every client back to ${version} on ${[...serving, ...swap].join(", ")}${swap.length > 0 ? ` (${swap.join(", ")} on the old processes they kept)` : ""}` },
            ...(inPlace.length > 0 ? replaceSteps(inPlace) : []),
            ...(swap.length > 0 ? retireSteps(swap) : []),
          ],
        },
        { name: "finish", instances: [], onFailure: "isolate", steps: [{ kind: "route", routing: swapped(singlePool(all)), why: `all instances on ${version}` }] },
      ];
      const how = [...(swap.length > 0 ? [`${swap.join(", ")} swap back to the ${version} processes they kept`] : []), ...(inPlace.length > 0 ? [`${inPlace.join(", ")} go back to ${version}`] : [])].join("; ");
      return { strategy: "canary-abort", version, phases, notes: [`every client goes to ${version} at once; ${how}`] };
    },
  };
}
