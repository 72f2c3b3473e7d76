import { NodropError } from "./errors.js";
import type { DeployPlan, ObservedInstance, SlotInspection } from "./types.js";

/** What a host must keep for the overlap of old and new processes (docs/guides/slots.md explains it). */
export interface OverlapBudget {
  /** Memory left available on top of the overlap (default 128 MiB). */
  readonly reserveBytes: number;
  /** The new process's size as a multiple of the old one's (default 1.25: it grows as it warms up). */
  readonly growth: number;
}

export const DEFAULT_OVERLAP: OverlapBudget = { reserveBytes: 128 * 1024 * 1024, growth: 1.25 };

/** The instances each phase starts on an idle slot, in phase order. */
export function idleStarts(plan: DeployPlan): string[][] {
  return plan.phases.map((phase) => [...new Set(phase.steps.flatMap((step) => (step.kind === "start" && step.slot === "idle" ? step.instances : [])))]);
}

/**
 * Checks a plan that starts processes on idle slots against what each host showed: every such
 * port free, and each host's available memory enough for the peak overlap. A phase's new processes
 * overlap with their old ones, and with the previous phase's while those stop in the background,
 * so the peak is the largest sum of two neighbouring phases (three when a phase starts early, of
 * all of them when old slots are kept). Throws E_PREFLIGHT naming the host and
 * the port or the shortfall, before anything changed; returns lines for the plan's notes.
 */
export function checkIdleSlots(plan: DeployPlan, observed: readonly ObservedInstance[], seen: ReadonlyMap<string, SlotInspection>, budget: OverlapBudget = DEFAULT_OVERLAP): string[] {
  const starts = idleStarts(plan);
  const used = new Set(starts.flat());
  if (used.size === 0) return [];
  const byId = new Map(observed.map((o) => [o.id, o]));
  const taken = [...used].flatMap((id) => {
    const o = byId.get(id)!;
    const inspection = seen.get(id);
    // A process of the app (it answered the health check) is stopped by the plan; anything else is in the way.
    return o.idle && inspection && !inspection.free && o.idle.version === undefined ? [{ id, line: `port ${o.idle.port} on host ${o.host} (the idle slot of ${id}) is taken: ${inspection.listener ?? "something listens there"}` }] : [];
  });
  if (taken.length > 0) {
    throw new NodropError("E_PREFLIGHT", `refusing to deploy: ${taken.map((t) => t.line).join("; ")}; stop what runs there, or pick another spare port`, { instance: taken[0]!.id });
  }
  const notes: string[] = [];
  const shortfalls: string[] = [];
  for (const host of [...new Set([...used].map((id) => byId.get(id)!.host))]) {
    const onHost = (ids: readonly string[]) => ids.filter((id) => byId.get(id)!.host === host);
    const sizes = onHost([...used]).map((id) => seen.get(id)?.liveRssBytes);
    const available = onHost([...used]).map((id) => seen.get(id)?.availableBytes).find((b) => b !== undefined);
    if (sizes.some((b) => b === undefined) || available === undefined) {
      notes.push(`memory for the overlap on ${host} not measured (nodrop cannot see the processes on the live ports, or /proc/meminfo): not checked`);
      continue;
    }
    const size = (ids: readonly string[]) => onHost(ids).reduce((sum, id) => sum + (seen.get(id)?.liveRssBytes ?? 0), 0);
    // Phase i overlaps its new processes with the previous phase's while those old ones stop (the
    // engine waits for older ones), and with the one before that too when phase i starts early
    // (surge's pipeline); the new processes of every earlier phase have grown past the old ones
    // they replaced. Old slots kept for a rollback never stop: everything adds up.
    const growth = budget.growth;
    let peak = plan.keepOldMs ? size(starts.flat()) * growth : 0;
    // Phases that keep their old processes (a canary's) count them as long as they run: in full.
    const kept = (upTo: number) => starts.slice(0, upTo).filter((_, i) => plan.phases[i]?.keepsOldSlots);
    const gone = (upTo: number) => starts.slice(0, upTo).filter((_, i) => !plan.phases[i]?.keepsOldSlots);
    starts.forEach((ids, index) => {
      const first = Math.max(0, index - (plan.phases[index]?.prepareEarly ? 2 : 1));
      peak = Math.max(peak, size(starts.slice(first, index + 1).flat()) * growth + size(gone(first).flat()) * (growth - 1) + size(kept(first).flat()) * growth);
    });
    const needed = Math.ceil(peak) + budget.reserveBytes;
    if (needed > available) shortfalls.push(`host ${host} has ${mib(available)} available, the overlap needs ${mib(needed)} (new processes at ${growth}× the old ones' size, ${mib(budget.reserveBytes)} reserve): ${mib(needed - available)} short`);
    else notes.push(`memory for the overlap on ${host}: ${mib(needed)} needed, ${mib(available)} available`);
  }
  if (shortfalls.length > 0) throw new NodropError("E_PREFLIGHT", `refusing to deploy: ${shortfalls.join("; ")}; use smaller batches, free memory, or lower slots.reserve`);
  return notes;
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MiB`;
}
