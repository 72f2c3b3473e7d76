import {
  type CanaryAnalysis,
  type DeployPlan,
  NodropError,
  type ObservedInstance,
  type PlanInput,
  type PlanPhase,
  type PlanStep,
  type Routing,
  type Strategy,
  checkSpares,
  formatDuration,
  leftoverSlots,
  oldSlotsPhase,
  readySlots,
  replaceSteps,
  retireSteps,
  singlePool,
  surgeSteps,
  swapSlots,
} from "@nodrop/core";
import { type CanaryOptions, canaryOptionsSchema } from "./options.js";

/** One step of the canary as planned: the share of clients and how its gate watches it. */
export interface CanaryStep {
  readonly weight: number;
  readonly ms: number;
  readonly analysis: boolean;
  /** Waits for `nodrop promote` instead of a time. */
  readonly manual: boolean;
}

const percentOf = (text: string) => Number(text.slice(0, -1));

/** The steps from the options, checked: growing shares below 100%. */
export function canarySteps(options: CanaryOptions): CanaryStep[] {
  const gate = options.gate ?? 60_000;
  const analyze = options.analysis?.enabled ?? true;
  const steps = (options.steps ?? ["10%", "50%"]).map((s) =>
    typeof s === "string"
      ? { weight: percentOf(s), ms: gate, analysis: analyze, manual: false }
      : { weight: percentOf(s.weight), ms: typeof s.pause === "number" ? s.pause : gate, analysis: analyze && (s.analysis ?? true) && s.pause !== "manual", manual: s.pause === "manual" },
  );
  const problems: string[] = [];
  steps.forEach((s, i) => {
    if (s.weight <= 0 || s.weight >= 100) problems.push(`strategy.steps[${i}]: ${s.weight}% must be above 0% and below 100% (the last step to 100% is the promotion)`);
    if (i > 0 && s.weight <= steps[i - 1]!.weight) problems.push(`strategy.steps[${i}]: ${s.weight}% must be more than the step before (${steps[i - 1]!.weight}%): a share only grows, so no client moves back`);
  });
  if (problems.length > 0) throw new NodropError("E_PLAN", problems.join("; "));
  return steps;
}

/** The gates' thresholds from the options. */
export function canaryAnalysis(options: CanaryOptions): CanaryAnalysis {
  const a = options.analysis;
  return {
    minRequests: a?.minRequests ?? 50,
    maxErrorRateIncrease: percentOf(a?.maxErrorRateIncrease ?? "1%") / 100,
    maxLatencyRatio: a?.maxLatencyRatio ?? 2,
    latencyFloorMs: a?.latencyFloor ?? 25,
    intervalMs: a?.interval ?? 5000,
    extraMs: a?.extraTime ?? 60_000,
  };
}

/** How many instances serve the new version at a share: enough for it (at least one), leaving at least one on the old. */
export function canaryCount(weight: number, fleet: number): number {
  return Math.min(fleet - 1, Math.max(1, Math.ceil((weight * fleet) / 100 - 1e-9)));
}

/** Orders instances host by host in turn (a1, b1, a2, b2, ...), so that a step's instances spread over hosts. */
function spreadByHost(instances: readonly ObservedInstance[]): ObservedInstance[] {
  const byHost = new Map<string, ObservedInstance[]>();
  for (const i of instances) byHost.set(i.host, [...(byHost.get(i.host) ?? []), i]);
  const lists = [...byHost.values()];
  const out: ObservedInstance[] = [];
  for (let round = 0; out.length < instances.length; round++) for (const list of lists) if (round < list.length) out.push(list[round]!);
  return out;
}

/** The routing of a canary under way: the old version's pool takes the default, `percent` of clients and every pinned client go to the new. */
function canaryRouting(stable: readonly string[], canary: readonly string[], version: string, key: string, percent: number | undefined): Routing {
  return { pools: { stable: [...stable], canary: [...canary] }, defaultPool: "stable", pins: { [version]: "canary" }, ...(percent !== undefined ? { split: { key, percent, to: "canary" } } : {}) };
}

/**
 * Before anything serves the new version: only the old version's pool. No pin for the new one
 * yet, since a client may still hold its cookie from an earlier attempt that was aborted, and
 * the pin would send it to instances being replaced; the pin comes with the first instance that
 * serves the version, in the same reload.
 */
function beforeCanary(stable: readonly string[]): Routing {
  return singlePool(stable, "stable");
}

const share = (count: number, fleet: number) => Math.min(99.99, Math.round((10_000 * count) / fleet) / 100);

/**
 * Canary: a growing share of clients on the new version. At each step, the instances the share
 * needs are taken out of the old version's pool (drained), replaced and checked, and join the
 * canary pool; nginx's split_clients sends that share of clients to it, and the version cookie pins
 * every client the new version served. A step ends with its gate: the engine compares the new
 * version's 5xx rate and latency with the old one's in the same window, and a breach puts every
 * client and every canary instance back on the old version. After the last step, the rest of the
 * fleet is promoted batch by batch, the share following capacity, to 100%.
 */
export function canaryStrategy(): Strategy<CanaryOptions> & { optionsSchema: typeof canaryOptionsSchema } {
  return {
    name: "canary",
    optionsSchema: canaryOptionsSchema,
    plan({ instances, version, proxy, options, passedGates = [] }: PlanInput<CanaryOptions>): DeployPlan {
      const all = instances.map((i) => i.id);
      const steps = canarySteps(options);
      if (!proxy.split) throw new NodropError("E_PLAN", "strategy: canary needs a proxy that can split clients by weight (nginx); this proxy cannot");
      if (!proxy.versionPinning) throw new NodropError("E_PLAN", "strategy: canary needs a proxy that pins clients to a version (the version cookie); this proxy cannot");
      const analyzed = steps.some((s) => s.analysis);
      if (analyzed && !proxy.traffic) {
        throw new NodropError("E_PLAN", "strategy.analysis: the gates read each version's figures from the proxy, and this one cannot count traffic: set proxy.accessLog (nginx), or strategy.analysis.enabled: false");
      }
      const done = instances.filter((i) => i.version === version && i.healthy);
      const stable = spreadByHost(instances.filter((i) => i.version !== version && i.healthy && i.inPool));
      const outside = instances.filter((i) => !done.includes(i) && !stable.includes(i)).map((i) => i.id);
      if (done.length === all.length) {
        const out = instances.filter((i) => !i.inPool).map((i) => i.id);
        if (out.length === 0) return { strategy: "canary", version, phases: [], notes: [`all ${all.length} instances already run ${version}`] };
        const rejoin: PlanPhase = { name: "rejoin", instances: [], onFailure: "isolate", steps: [{ kind: "route", routing: singlePool(all, "all", { [version]: "all" }), why: `${out.join(", ")} back: all instances on ${version}` }] };
        return { strategy: "canary", version, phases: [rejoin], notes: [`all ${all.length} instances already run ${version}; ${out.join(", ")} rejoin the pool`] };
      }
      if (stable.length < 2 && done.length === 0) throw new NodropError("E_PLAN", `strategy: a canary needs at least two healthy instances serving the old version (${stable.length} do)`);

      const key = options.key ?? "$remote_addr$http_user_agent";
      const analysis = canaryAnalysis(options);
      const notes: string[] = [];
      const phases: PlanPhase[] = [];
      let canary = done.map((i) => i.id);
      let old = stable.map((i) => i.id);
      // A resumed canary (instances already on the version) never offers them less than their share of capacity.
      const floor = done.length > 0 ? share(done.length, all.length) : 0;
      let weight: number | undefined = done.length > 0 ? floor : undefined;
      if (done.length > 0) notes.push(`${canary.join(", ")} already run ${version}: they start as the canary`);
      const surge = options.surge ? new Surge(instances, version) : undefined;
      if (surge) {
        checkSpares(stable, "strategy.surge");
        // A resumed canary's instances keep the old processes an earlier run kept for them: an abort swaps back to them.
        const ready = readySlots(done, version);
        for (const id of leftoverSlots(done)) if (!ready.includes(id)) surge.kept.add(id);
        // Other processes left on idle slots (a killed deploy) stop first, after the routing in force is reloaded as it is.
        const inForce = done.length > 0 ? canaryRouting(old, canary, version, key, floor) : singlePool(instances.filter((i) => i.inPool).map((i) => i.id), "stable");
        phases.push(...oldSlotsPhase(instances, [...old, ...surge.kept], inForce, version));
      }

      for (const step of steps) {
        const target = Math.max(canary.length, canaryCount(step.weight, all.length));
        const batch = old.slice(0, Math.max(0, Math.min(target - canary.length, old.length - 1)));
        const rest = old.filter((id) => !batch.includes(id));
        const intake = stepIntake({ old, batch, canary, version, key, weight, target: step.weight, fleet: all.length, size: options.batchSize ?? 1, surge });
        const phaseSteps: PlanStep[] = [...intake.steps];
        const joined = [...canary, ...batch];
        const percent = Math.max(step.weight, floor, intake.weight ?? 0);
        phaseSteps.push({ kind: "route", routing: slotted(surge, canaryRouting(rest, joined, version, key, percent)), why: `${percent}% of clients to ${version} on ${joined.join(", ")}` });
        const name = `canary ${step.weight}%`;
        // A resumed canary (or one `nodrop promote` let on) does not hold a passed gate again: its share is restored, and it goes on.
        if (!passedGates.includes(name)) phaseSteps.push({ kind: "gate", name: `${step.weight}%`, weight: step.weight, ms: step.ms, instances: [], ...(step.analysis ? { analysis } : {}), ...(step.manual ? { manual: true } : {}) });
        // With surge, the old processes keep running beside the canary until its gates are passed: an abort swaps back to them.
        phases.push({ name, instances: batch, steps: phaseSteps, onFailure: "revert", revertAlso: canary, ...(surge ? { keepsOldSlots: true } : {}) });
        canary = joined;
        old = rest;
        weight = percent;
      }
      phases.push(...promotion({ old, outside, canary, version, key, weight: weight!, fleet: all.length, size: options.batchSize ?? 1, surge }));
      const last = steps.at(-1)!;
      notes.push(
        `steps: ${steps.map((s) => `${s.weight}% (${passedGates.includes(`canary ${s.weight}%`) ? "passed" : s.manual ? "paused until `nodrop promote`" : `${s.analysis ? "analysed" : "watched"} for ${formatDuration(s.ms)}`})`).join(", ")}, then ${version} is promoted to every instance`,
        `clients are split by ${key}; the version cookie keeps every client ${version} served on it`,
        ...(analyzed ? [`a gate fails on more than ${100 * analysis.maxErrorRateIncrease}% more 5xx, or a p99 over ${analysis.maxLatencyRatio}x the old version's, after at least ${analysis.minRequests} requests; then every client and instance goes back`] : []),
        ...(outside.length > 0 ? [`${outside.join(", ")} out of the pool or unhealthy: replaced at the promotion`] : []),
        ...(surge ? [`surge: each instance starts ${version} on its spare port while its old process serves, and keeps that process until the gates are passed (an abort swaps back to it in one reload); all ${all.length} instances serve throughout`] : []),
      );
      if (last.weight < 50) notes.push(`the last step gives ${version} ${last.weight}% of clients; the promotion after it is not gated`);
      return { strategy: "canary", version, phases, notes };
    },
    recoveryRouting(healthy, context) {
      // After a failure: a canary's abort routes everyone to the old version before it reverts the
      // canary instances; what serves then is one version's pool, or both with the new one pinned.
      const fresh = healthy.filter((i) => i.version === context.version).map((i) => i.id);
      const older = healthy.filter((i) => i.version !== context.version).map((i) => i.id);
      if (older.length === 0) return singlePool(fresh, "all", { [context.version]: "all" });
      if (fresh.length === 0) return singlePool(older);
      return { pools: { stable: older, canary: fresh }, defaultPool: "stable", pins: { [context.version]: "canary" } };
    },
  };
}

/**
 * A surge canary's slots as the plan goes: which instances it has swapped onto their spare port so
 * far, so that every routing after a swap serves them there.
 */
class Surge {
  readonly instances: readonly ObservedInstance[];
  readonly version: string;
  readonly swapped = new Set<string>();
  /** Instances already on the version whose old process still runs on the idle slot (kept by the run this one resumes). */
  readonly kept = new Set<string>();

  constructor(instances: readonly ObservedInstance[], version: string) {
    this.instances = instances;
    this.version = version;
  }

  /** Starts and checks the new version on these instances' idle slots, while their live slots serve; they serve there from the next route. */
  start(ids: readonly string[]): PlanStep[] {
    for (const id of ids) this.swapped.add(id);
    return surgeSteps(ids, this.instances, this.version);
  }
}

/** The routing with every instance swapped so far served on its new slot. */
function slotted(surge: Surge | undefined, routing: Routing): Routing {
  return surge && surge.swapped.size > 0 ? swapSlots(routing, surge.instances, surge.swapped) : routing;
}

/** What every part of a canary's plan works from: the fleet's two sides and how it moves. */
interface CanaryMove {
  /** The old version's instances serving when this part begins. */
  readonly old: readonly string[];
  /** The instances on the new version so far. */
  readonly canary: readonly string[];
  readonly version: string;
  readonly key: string;
  readonly fleet: number;
  /** At most this many instances out of the pool at once (batchSize); with surge, started on idle slots at once. */
  readonly size: number;
  readonly surge: Surge | undefined;
}

interface StepIntake extends CanaryMove {
  /** The old version's instances this step moves to the canary. */
  readonly batch: readonly string[];
  /** The canary's share before the step (undefined: nothing served the new version yet). */
  readonly weight: number | undefined;
  /** The step's share. */
  readonly target: number;
}

/**
 * A step's instances move to the canary batchSize at a time: each batch out of the old version's
 * pool (drained), replaced and checked, then into the canary's before the next leaves, so a step
 * that needs several instances never takes more than a batch of capacity away. The share grows
 * with the canary's capacity on the way, never past the step's; the step's own route comes last.
 * Before anything serves the new version there is no pin (beforeCanary).
 */
function stepIntake({ old, batch, canary, version, key, weight, target, fleet, size, surge }: StepIntake): { steps: PlanStep[]; weight: number | undefined } {
  const steps: PlanStep[] = [];
  let serving = [...old];
  let joined = [...canary];
  let current = weight;
  for (let start = 0; start < batch.length; start += size) {
    const chunk = batch.slice(start, start + size);
    serving = serving.filter((id) => !chunk.includes(id));
    // With surge, the old process serves until the route that swaps the new one in: nothing leaves the pool.
    if (surge) steps.push(...surge.start(chunk));
    else {
      steps.push({ kind: "route", routing: joined.length > 0 ? canaryRouting(serving, joined, version, key, current) : beforeCanary(serving), why: `${chunk.join(", ")} out of the old version's pool` });
      steps.push(...replaceSteps(chunk));
    }
    joined = [...joined, ...chunk];
    if (start + size < batch.length) {
      current = Math.max(current ?? 0, Math.min(target, share(joined.length, fleet)));
      steps.push({ kind: "route", routing: slotted(surge, canaryRouting(serving, joined, version, key, current)), why: `${chunk.join(", ")} join the canary: ${current}% of clients to ${version}` });
    }
  }
  return { steps, weight: current };
}

interface Promotion extends CanaryMove {
  /** Out of the pool or unhealthy: replaced last. */
  readonly outside: readonly string[];
  /** The canary's share after the last step. */
  readonly weight: number;
}

/**
 * After the last step: the old version's instances go batch by batch, each out of its pool,
 * replaced and into the canary's, the share following the canary's capacity; the last batch goes
 * with every client on the new version. Then one pool of all, still pinned. The gates are behind:
 * a batch that fails goes back alone (as a rolling batch does), and the canary keeps serving.
 * Instances that were out of the pool or unhealthy go last, left out if they fail again. With
 * surge, the old processes the canary kept stop in the background as the promotion begins, and
 * each batch starts on its idle slots and swaps in one reload.
 */
function promotion({ old, outside, canary, version, key, weight, fleet, size, surge }: Promotion): PlanPhase[] {
  const phases: PlanPhase[] = [];
  let serving = [...old];
  let joined = [...canary];
  let percent = weight;
  // The gates are passed: the old processes the canary's swaps kept (an abort's way back) stop, off the critical path.
  const kept = surge ? [...new Set([...surge.kept, ...surge.swapped])] : [];
  if (kept.length > 0) phases.push({ name: "canary: old processes", instances: kept, onFailure: "isolate", steps: retireSteps(kept) });
  while (serving.length > 0) {
    const batch = serving.slice(0, size);
    const rest = serving.filter((id) => !batch.includes(id));
    // The share once this batch serves the new version: it follows the canary's capacity.
    const grown = Math.max(percent, share(joined.length + batch.length, fleet));
    let steps: PlanStep[];
    if (surge) {
      const starts = surge.start(batch);
      const routing = rest.length > 0 ? canaryRouting(rest, [...joined, ...batch], version, key, grown) : singlePool([...joined, ...batch], "canary", { [version]: "canary" });
      steps = [...starts, { kind: "route", routing: slotted(surge, routing), why: rest.length > 0 ? `promote: ${batch.join(", ")} swapped in, ${grown}% of clients to ${version}` : `promote: every client to ${version}` }, ...retireSteps(batch)];
    } else if (rest.length > 0) {
      steps = [
        { kind: "route", routing: canaryRouting(rest, joined, version, key, percent), why: `promote: ${batch.join(", ")} out of the old version's pool` },
        ...replaceSteps(batch),
        { kind: "route", routing: canaryRouting(rest, [...joined, ...batch], version, key, grown), why: `promote: ${grown}% of clients to ${version}` },
      ];
    } else steps = [{ kind: "route", routing: singlePool(joined, "canary", { [version]: "canary" }), why: `promote: every client to ${version}` }, ...replaceSteps(batch)];
    phases.push({ name: `promote ${batch.join(", ")}`, instances: batch, steps, onFailure: "revert" });
    joined = [...joined, ...batch];
    serving = rest;
    if (rest.length > 0) percent = grown;
  }
  if (outside.length > 0) phases.push({ name: "promote: out of pool", instances: [...outside], steps: replaceSteps(outside), onFailure: "isolate" });
  const all = [...joined, ...outside.filter((id) => !joined.includes(id))];
  phases.push({ name: "finish", instances: [], onFailure: "isolate", steps: [{ kind: "route", routing: slotted(surge, singlePool(all, "all", { [version]: "all" })), why: `all instances on ${version}` }] });
  return phases;
}
