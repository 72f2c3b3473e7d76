import { type DeployPlan, type PlanInput, type PlanPhase, type Routing, type Strategy, checkSpares, formatDuration, oldSlotsPhase, readySlots, retireSteps, singlePool, surgeSteps } from "@nodrop/core";
import { type BlueGreenOptions, DEFAULT_SWITCH_DELAY, blueGreenOptionsSchema } from "./options.js";

/**
 * Blue-green: half-split without the half. Every instance has two slots; the whole old fleet
 * (blue, the live slots) keeps serving while the new version starts on every idle slot (green)
 * and is checked directly. Then one reload makes every nginx worker flip new requests from blue to
 * green at one instant (the timed switch), the next one takes blue out once that has drained, and
 * the old processes stop. Nothing serves the new version before the switch: a green slot that
 * fails its check is stopped and blue never left the pool.
 */
export function blueGreenStrategy(): Strategy<BlueGreenOptions> & { optionsSchema: typeof blueGreenOptionsSchema } {
  return {
    name: "blue-green",
    optionsSchema: blueGreenOptionsSchema,
    plan({ instances, version, proxy, options }: PlanInput<BlueGreenOptions>): DeployPlan {
      const all = instances.map((i) => i.id);
      const pins = (pool: string): Record<string, string> => (proxy.versionPinning ? { [version]: pool } : {});
      // Out of the pool but healthy on the version already (a failed deploy left it out): it rejoins on its live slot.
      const todo = instances.filter((i) => i.version !== version || !i.healthy).map((i) => i.id);
      const rejoin = instances.some((i) => !i.inPool && i.version === version && i.healthy);
      // Old processes a killed deploy (or a keep window) left on idle slots: the routing in force reloaded, then they stop.
      const serving = instances.filter((i) => i.inPool).map((i) => i.id);
      const tidy = serving.length > 0 ? oldSlotsPhase(instances, todo, singlePool(serving, "all", pins("all")), version) : [];
      if (todo.length === 0) {
        const back: PlanPhase[] = rejoin ? [{ name: "finish", instances: [], onFailure: "revert", steps: [{ kind: "route", routing: singlePool(all, "all", pins("all")), why: "all instances in the pool" }] }] : [];
        return { strategy: "blue-green", version, phases: [...tidy, ...back], notes: [`all ${all.length} instances already run ${version}${rejoin ? "; those out of the pool rejoin it" : ""}`] };
      }
      checkSpares(instances, "strategy blue-green");

      const notes = [`green: ${version} starts on the idle slot of all ${all.length} instances while every live slot serves; full capacity throughout`];
      const live = (id: string) => instances.find((i) => i.id === id)!.livePort ?? instances.find((i) => i.id === id)!.port;
      const idle = (id: string) => instances.find((i) => i.id === id)!.idle!.port;
      const on = (port: (id: string) => number, ids: readonly string[]) => Object.fromEntries(ids.map((id) => [id, port(id)]));
      const after: Routing = { ...singlePool(all, "all", pins("all")), slots: { ...on(live, all), ...on(idle, todo) } };
      // Blue: the instances serving the old version now. Those already on the version (a fleet an
      // earlier deploy left mixed) join green on the slot they are live on, and leave blue at once.
      const blue = instances.filter((i) => i.version !== version && i.healthy && i.inPool).map((i) => i.id);
      // Every idle slot already runs the version (a rollback inside the keep window): one plain swap.
      const swapBack = readySlots(instances.filter((i) => todo.includes(i.id)), version).length === todo.length;
      // The switch stays timed when the green slots already run (resume, a redeploy inside a keep
      // window): no process starts, but blue's clients still flip at one instant.
      const timed = proxy.timedSwitch && proxy.poolSlots === true && blue.length > 0;
      const keepOld = options.keepOld ?? 0;
      // The switch routing: blue on the live slots, green on the idle ones, the default flipping at one instant.
      const switched: Routing = {
        pools: { blue, green: all },
        defaultPool: "blue",
        pins: pins("green"),
        switchDefault: { to: "green", afterMs: options.switchDelay ?? DEFAULT_SWITCH_DELAY },
        slots: on(live, all),
        poolSlots: { green: { ...on(live, all), ...on(idle, todo) } },
      };
      if (swapBack) notes.push(`every idle slot already runs ${version}: checked and switched to, no process started`);
      else if (!timed && blue.length > 0) notes.push("the proxy cannot switch between slots at one instant: the switch is one reload, during which old workers may still answer with the old version");
      const phases: PlanPhase[] = [
        ...tidy,
        { name: "green", instances: todo, onFailure: "revert", steps: surgeSteps(todo, instances, version) },
        {
          name: "switch",
          instances: todo,
          onFailure: "isolate",
          steps: [
            // Both drains run in the background: the old slots' stops wait for them, nothing else does.
            ...(timed ? [{ kind: "route" as const, routing: switched, why: `switch: every new request to the new slots (${version}) at one instant`, background: true }] : []),
            { kind: "route", routing: after, why: timed ? "old slots out" : `switch: every instance to its ${swapBack ? "other" : "new"} slot (${version})`, background: true },
            ...(keepOld > 0 ? [] : retireSteps(todo)),
          ],
        },
      ];
      if (keepOld > 0) notes.push(`the old processes are kept for ${formatDuration(keepOld)} after the switch: \`nodrop rollback\` swaps back in one reload`);
      return { strategy: "blue-green", version, phases, notes, ...(keepOld > 0 ? { keepOldMs: keepOld } : {}) };
    },
    recoveryRouting(healthy, { version }) {
      // Clients holding the new version's cookie stay on instances that run it; the pin never leads to others.
      const all = healthy.map((i) => i.id);
      const onVersion = healthy.filter((i) => i.version === version).map((i) => i.id);
      if (onVersion.length === 0) return singlePool(all);
      if (onVersion.length === all.length) return singlePool(all, "all", { [version]: "all" });
      return { pools: { all, new: onVersion }, defaultPool: "all", pins: { [version]: "new" } };
    },
  };
}
