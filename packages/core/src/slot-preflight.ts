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

/** What preflight's check of the idle slots found: lines for the plan's notes, and how far old processes may pile up. */
export interface IdleSlotCheck {
  readonly notes: string[];
  /**
   * How many more earlier phases' old processes may still be stopping in the background when a
   * phase starts its new ones, beyond the one the engine always allows (two with surge's pipeline):
   * as many as every host's memory has room for. 0 when some host's memory was not measured.
   */
  readonly extraOverlap: number;
}

/**
 * Checks a plan that starts processes on idle slots against what each host showed: every such
 * port free, and each host's available memory enough for the peak overlap. A phase's new processes
 * overlap with their old ones, and with the previous phase's while those stop in the background,
 * so the peak is the largest sum of two neighbouring phases (three when a phase starts early, of
 * all of them when old slots are kept). Where memory allows more, more old phases may still be
 * stopping while the next ones start (`extraOverlap`): a graceful stop takes seconds, and waiting
 * for it is what a surge exists to avoid. Throws E_PREFLIGHT naming the host and the port or the
 * shortfall, before anything changed.
 */
export function checkIdleSlots(plan: DeployPlan, observed: readonly ObservedInstance[], seen: ReadonlyMap<string, SlotInspection>, budget: OverlapBudget = DEFAULT_OVERLAP): IdleSlotCheck {
  const starts = idleStarts(plan);
  const used = new Set(starts.flat());
  if (used.size === 0) return { notes: [], extraOverlap: 0 };
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
  const hosts = [...new Set([...used].map((id) => byId.get(id)!.host))].map((host) => hostMemory(host, [...used].filter((id) => byId.get(id)!.host === host), seen));
  const unmeasured = hosts.filter((h) => h.available === undefined);
  const measured = hosts.filter((h): h is HostMemory & { available: number } => h.available !== undefined);
  const needed = (host: HostMemory, extra: number) => Math.ceil(overlapPeak(plan, starts, host.size, budget.growth, extra)) + budget.reserveBytes;
  const shortfalls = measured.filter((h) => needed(h, 0) > h.available);
  if (shortfalls.length > 0) {
    const lines = shortfalls.map((h) => `host ${h.host} has ${mib(h.available)} available, the overlap needs ${mib(needed(h, 0))} (new processes at ${budget.growth}× the old ones' size, ${mib(budget.reserveBytes)} reserve): ${mib(needed(h, 0) - h.available)} short`);
    throw new NodropError("E_PREFLIGHT", `refusing to deploy: ${lines.join("; ")}; use smaller batches, free memory, or lower slots.reserve`);
  }
  // The peak grows with the overlap: the most every measured host has room for, none where one was
  // not measured; past `widest`, every phase overlaps with all before it and nothing grows.
  const widest = Math.max(0, ...starts.map((_, index) => index - baseOverlap(plan, index)));
  let extraOverlap = 0;
  if (unmeasured.length === 0) while (extraOverlap < widest && measured.every((h) => needed(h, extraOverlap + 1) <= h.available)) extraOverlap++;
  const notes = [
    ...unmeasured.map((h) => `memory for the overlap on ${h.host} not measured (nodrop cannot see the processes on the live ports, or /proc/meminfo): not checked`),
    ...measured.map((h) => `memory for the overlap on ${h.host}: ${mib(needed(h, extraOverlap))} needed, ${mib(h.available)} available`),
  ];
  const stopping = (extra: number) => (extra >= widest ? "every earlier batch's" : `up to ${extra + 1} earlier batches'`);
  if (extraOverlap > 0) notes.push(`with that memory, ${stopping(extraOverlap)} old processes may still be stopping while a batch starts its new ones`);
  return { notes, extraOverlap };
}

/** How many phases before phase `index` always may still be stopping old processes when it starts: the engine waits for older ones. */
const baseOverlap = (plan: DeployPlan, index: number) => (plan.phases[index]?.prepareEarly ? 2 : 1);

interface HostMemory {
  readonly host: string;
  /** The resident size of the live processes of the given instances on this host. */
  readonly size: (ids: readonly string[]) => number;
  /** Undefined when the host did not show its memory or some live process's size. */
  readonly available: number | undefined;
}

function hostMemory(host: string, ids: readonly string[], seen: ReadonlyMap<string, SlotInspection>): HostMemory {
  const onHost = new Set(ids);
  const sizes = ids.map((id) => seen.get(id)?.liveRssBytes);
  const available = ids.map((id) => seen.get(id)?.availableBytes).find((b) => b !== undefined);
  return {
    host,
    size: (of) => of.filter((id) => onHost.has(id)).reduce((sum, id) => sum + (seen.get(id)?.liveRssBytes ?? 0), 0),
    available: sizes.some((b) => b === undefined) ? undefined : available,
  };
}

/**
 * The most memory the plan needs on top of what runs before it, on one host. Phase i's new
 * processes overlap with those of the phases whose old processes may still be stopping: the one
 * before it (the engine waits for older ones), the one before that too when phase i starts early
 * (surge's pipeline), and `extra` more. The new processes of every earlier phase have grown past
 * the old ones they replaced. Old slots kept for a rollback never stop: everything adds up.
 */
function overlapPeak(plan: DeployPlan, starts: readonly string[][], size: (ids: readonly string[]) => number, growth: number, extra: number): number {
  let peak = plan.keepOldMs ? size(starts.flat()) * growth : 0;
  // Phases that keep their old processes (a canary's) count them as long as they run: in full.
  const kept = (upTo: number) => starts.slice(0, upTo).filter((_, i) => plan.phases[i]?.keepsOldSlots);
  const gone = (upTo: number) => starts.slice(0, upTo).filter((_, i) => !plan.phases[i]?.keepsOldSlots);
  starts.forEach((ids, index) => {
    const first = Math.max(0, index - baseOverlap(plan, index) - extra);
    peak = Math.max(peak, size(starts.slice(first, index + 1).flat()) * growth + size(gone(first).flat()) * (growth - 1) + size(kept(first).flat()) * growth);
  });
  return peak;
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MiB`;
}
