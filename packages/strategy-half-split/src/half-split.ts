import { type DeployPlan, NodropError, type ObservedInstance, type PlanInput, type PlanPhase, type Routing, type Strategy, replaceSteps, singlePool } from "@nodrop/core";
import { DEFAULT_SWITCH_DELAY, type HalfSplitOptions, halfSplitOptionsSchema } from "./options.js";

export interface Halves {
  readonly a: readonly string[];
  readonly b: readonly string[];
}

/** Splits instances into two halves: balanced across hosts, by whole hosts, or as listed. */
export function splitHalves(instances: readonly ObservedInstance[], options: HalfSplitOptions): Halves {
  const ids = new Set(instances.map((i) => i.id));
  if (options.split === "explicit") {
    const a = options.a ?? [];
    const b = options.b ?? [];
    const problems: string[] = [];
    if (a.length === 0 || b.length === 0) problems.push("strategy.a and strategy.b are both required with split: explicit");
    for (const [key, list] of [["a", a], ["b", b]] as const) for (const id of list) if (!ids.has(id)) problems.push(`strategy.${key}: unknown instance "${id}"`);
    const both = a.filter((id) => b.includes(id));
    if (both.length) problems.push(`strategy.a and strategy.b both list ${both.join(", ")}`);
    const missing = [...ids].filter((id) => !a.includes(id) && !b.includes(id));
    if (missing.length) problems.push(`strategy.a/b: ${missing.join(", ")} in neither half`);
    if (problems.length) throw new NodropError("E_PLAN", problems.join("; "));
    return { a, b };
  }
  const byHost = new Map<string, string[]>();
  for (const i of instances) byHost.set(i.host, [...(byHost.get(i.host) ?? []), i.id]);
  if (options.split === "by-host") {
    const hosts = [...byHost.keys()];
    if (hosts.length < 2) throw new NodropError("E_PLAN", "strategy.split: by-host needs instances on at least two hosts");
    // Whole hosts, filling A until it holds about half of the instances.
    const a: string[] = [];
    const b: string[] = [];
    for (const host of hosts) (a.length < instances.length / 2 ? a : b).push(...byHost.get(host)!);
    if (b.length === 0) b.push(...a.splice(-(byHost.get(hosts.at(-1)!)!.length)));
    return { a, b };
  }
  // Balanced: each host gives half of its instances to each half; an odd one goes to the smaller half.
  const a: string[] = [];
  const b: string[] = [];
  for (const list of byHost.values()) {
    const cut = Math.floor(list.length / 2) + (list.length % 2 === 1 && a.length <= b.length ? 1 : 0);
    a.push(...list.slice(0, cut));
    b.push(...list.slice(cut));
  }
  return { a, b };
}

/**
 * Half-split: at no moment do both versions take new requests.
 * 1. Half A leaves the pool (the pin for the new version is staged now, before anything serves it),
 *    is stopped, updated, started and checked directly. Half B serves alone.
 * 2. The switch: one reload makes every nginx worker flip the default pool to A at one instant
 *    (workers of the previous generation included); then B drains.
 * 3. B is updated and checked, and rejoins: pool = A + B.
 * If A fails its checks, A goes back to the old version and nothing ever served the new one. If B
 * fails after the switch, the new version keeps serving from A and B stays out of the pool; running
 * the deploy again repairs B.
 */
export function halfSplitStrategy(): Strategy<HalfSplitOptions> & { optionsSchema: typeof halfSplitOptionsSchema } {
  return {
    name: "half-split",
    optionsSchema: halfSplitOptionsSchema,
    plan({ instances, version, proxy, options }: PlanInput<HalfSplitOptions>): DeployPlan {
      const all = instances.map((i) => i.id);
      const notes: string[] = [];
      const pinned = proxy.versionPinning;
      const pins = (pool: string): Record<string, string> => (pinned ? { [version]: pool } : {});
      const todo = instances.filter((i) => i.version !== version || !i.healthy);
      if (todo.length === 0) {
        const out = instances.filter((i) => !i.inPool).map((i) => i.id);
        if (out.length === 0) return { strategy: "half-split", version, phases: [], notes: [`all ${all.length} instances already run ${version}`] };
        // Every instance runs the version and is healthy; some were left out (a repaired half B): bring them back.
        return {
          strategy: "half-split",
          version,
          notes: [`all ${all.length} instances already run ${version}; ${out.join(", ")} rejoin the pool`],
          phases: [{ name: "rejoin", instances: [], onFailure: "isolate", steps: [{ kind: "route", routing: singlePool(all, "all", pins("all")), why: `${out.join(", ")} back: all instances on ${version}` }] }],
        };
      }

      // Repair: the instances left out (a failed half B) are the only ones not on the version yet.
      const serving = instances.filter((i) => i.inPool);
      if (serving.length > 0 && serving.every((i) => i.version === version && i.healthy)) {
        const ids = todo.map((i) => i.id);
        notes.push(`${serving.length} instances already serve ${version}; updating the ${ids.length} left out: ${ids.join(", ")}`);
        return {
          strategy: "half-split",
          version,
          notes,
          phases: [
            {
              name: "repair",
              instances: ids,
              onFailure: "isolate",
              steps: [
                ...replaceSteps(ids),
                { kind: "route", routing: singlePool(all, "all", pins("all")), why: `${ids.join(", ")} back: all instances on ${version}` },
              ],
            },
          ],
        };
      }

      // A fleet a failed deploy left mixed: instances that already run the version healthy are not
      // replaced. They leave the default pool with half A (so one version takes new requests from
      // the first reload on), keep their pinned clients, and join A at the switch.
      const done = instances.filter((i) => i.version === version && i.healthy).map((i) => i.id);
      const rest = instances.filter((i) => !done.includes(i.id));
      let { a, b } = splitHalves(rest, options.split === "explicit" ? { ...options, a: (options.a ?? []).filter((id) => !done.includes(id)), b: (options.b ?? []).filter((id) => !done.includes(id)) } : options);
      // Half B carries every new request while A is replaced: only its healthy members in the pool can.
      const canServe = (id: string) => rest.some((i) => i.id === id && i.healthy && i.inPool);
      if (!b.some(canServe) && a.some(canServe)) [a, b] = [b, a];
      const bServing = b.filter(canServe);
      if (bServing.length === 0 && all.length >= 2) {
        throw new NodropError("E_PLAN", `strategy: no healthy instance in the pool on the old version to serve while half A is updated (half B: ${b.join(", ") || "empty"})`);
      }
      if (done.length > 0) notes.push(`${done.join(", ")} already run ${version}: not replaced; they rejoin with half A at the switch`);
      const minHalf = options.minHalf ?? 1;
      // Each side carries all traffic alone at some point: B while A is replaced, A (with the
      // instances already on the version) after the switch.
      const newSide = a.length + done.length;
      if (all.length < 2 || bServing.length < minHalf || newSide < minHalf) {
        throw new NodropError(
          "E_PLAN",
          all.length < 2
            ? "strategy: half-split needs at least two instances"
            : `strategy.minHalf: halves of ${newSide} and ${bServing.length} serving instances; each must have at least ${minHalf}, as it carries all traffic alone`,
        );
      }
      notes.push(`half A (${a.length}): ${a.join(", ")}; half B (${b.length}): ${b.join(", ")}`);
      notes.push(`capacity while half A is updated: ${b.length} of ${all.length} instances (${Math.round((100 * b.length) / all.length)}%); after the switch: ${a.length} of ${all.length}`);
      if (!pinned) notes.push("the proxy cannot pin clients to a version: clients of the new version are not protected during the drain");
      if (!proxy.timedSwitch) notes.push("the proxy cannot switch at one instant: during the switch reload, old workers may still answer with the old version");

      // Pools list only instances that can take requests: A is stopped during phase 1, so the pin
      // points at A (nobody holds it yet) or, in a mixed fleet, at the instances already on it.
      const newHalf = [...a, ...done];
      const phase1: Routing =
        done.length > 0 ? { pools: { b: bServing, ...(pinned ? { n: done } : {}) }, defaultPool: "b", pins: pins("n") } : { pools: { a, b: bServing }, defaultPool: "b", pins: pins("a") };
      const switched: Routing = proxy.timedSwitch
        ? { pools: { a: newHalf, b: bServing }, defaultPool: "b", pins: pins("a"), switchDefault: { to: "a", afterMs: options.switchDelay ?? DEFAULT_SWITCH_DELAY } }
        : { pools: { a: newHalf }, defaultPool: "a", pins: pins("a") };
      const phases: PlanPhase[] = [
        {
          name: "half A",
          instances: a,
          onFailure: "revert",
          steps: [
            { kind: "route", routing: phase1, why: `half A out (${a.join(", ") || "none"}); ${version} pinned to ${done.length > 0 ? done.join(", ") : "it before it serves"}` },
            ...(a.length > 0 ? replaceSteps(a) : []),
          ],
        },
        {
          name: "switch, half B",
          instances: b,
          onFailure: "isolate",
          steps: [
            { kind: "route", routing: switched, why: `switch: every new request to half A (${version})` },
            // After the instant, a plain routing to A; waiting for its drain means nothing routes to B.
            ...(proxy.timedSwitch ? [{ kind: "route" as const, routing: { pools: { a: newHalf }, defaultPool: "a", pins: pins("a") }, why: `half B out (${b.join(", ")})` }] : []),
            ...replaceSteps(b),
          ],
        },
        {
          name: "finish",
          instances: [],
          onFailure: "isolate",
          steps: [{ kind: "route", routing: singlePool(all, "all", pins("all")), why: `half B back: all instances on ${version}` }],
        },
      ];
      return { strategy: "half-split", version, phases, notes };
    },
  };
}
