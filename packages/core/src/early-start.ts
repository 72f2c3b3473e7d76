import type { RunContext } from "./deploy-options.js";
import { type NodropError, toNodropError } from "./errors.js";
import { stopIdleSlots } from "./recovery.js";
import { awaitOlderBackground, runStep } from "./step-executor.js";
import type { PlanPhase, PlanStep } from "./types.js";

/**
 * Surge's pipeline. A phase marked `prepareEarly` starts the steps it leads with on idle slots (put
 * the version in place, start, check) while the phase before it swaps, instead of after: nothing
 * routes to those slots, so users see no difference, and the swap's reload no longer holds the next
 * batch up. What such a step does is the phase's own: a failure surfaces when the phase begins and
 * follows its failure rule; a phase before it that fails stops what was started early.
 */
export interface EarlyStart {
  /** The index of the phase whose steps started early. */
  readonly phase: number;
  /** How many of its leading steps run early. */
  readonly steps: number;
  /**
   * Settles (never rejects) when they ended: the first failure, with the step it happened in; or
   * `skipped` when a background step had failed by the time they could start (the deploy ends at
   * the next phase boundary, and nothing more is started).
   */
  readonly done: Promise<{ error: NodropError; step: PlanStep } | { skipped: true } | undefined>;
}

/** The steps a phase leads with that touch only idle slots, in the foreground: those may start early. */
export function earlySteps(phase: PlanPhase): PlanStep[] {
  const lead: PlanStep[] = [];
  for (const step of phase.steps) {
    if (step.kind === "route" || step.kind === "soak" || step.kind === "release" || step.kind === "gate" || step.slot !== "idle" || step.background) break;
    lead.push(step);
  }
  return lead;
}

/**
 * Starts the early steps of phase `index` (when it is marked and has any), once the background steps
 * of phases older than the one before it ended (and the run's `extraOverlap` before that): one more
 * phase's processes overlap than without the pipeline, which preflight's memory check counts on
 * (`checkIdleSlots`).
 */
export function startEarly(context: RunContext, phases: readonly PlanPhase[], index: number): EarlyStart | undefined {
  const phase = phases[index];
  if (!phase?.prepareEarly) return undefined;
  const steps = earlySteps(phase);
  if (steps.length === 0) return undefined;
  const done = (async () => {
    await awaitOlderBackground(context, index - 1);
    // An old process that did not stop is still resident: starting more would pass the memory model.
    if (context.run.backgroundFailure) return { skipped: true as const };
    for (const step of steps) {
      try {
        await runStep(context, phase, step);
      } catch (error) {
        return { error: toNodropError(error, "E_INSTANCE"), step };
      }
    }
    return undefined;
  })();
  return { phase: index, steps: steps.length, done };
}

/**
 * After the phase before it failed: waits for the early steps to end, then stops the processes they
 * started (nothing routes to them). The clauses for the report.
 */
export async function abandonEarly(context: RunContext, phases: readonly PlanPhase[], early: EarlyStart | undefined): Promise<string[]> {
  if (!early) return [];
  if ("skipped" in ((await early.done) ?? {})) return [];
  const phase = phases[early.phase]!;
  const lines = await stopIdleSlots(context, { ...phase, name: `${phase.name} (started early)` });
  return lines.length > 0 ? [`${phase.name}, started early: ${lines.join("; ")}`] : [];
}

/** After the lock was taken over: waits for the early steps to end and says what they left running, stopping nothing. */
export async function leftEarly(context: RunContext, phases: readonly PlanPhase[], early: EarlyStart | undefined): Promise<string[]> {
  if (!early || "skipped" in ((await early.done) ?? {})) return [];
  const phase = phases[early.phase]!;
  const running = phase.instances.filter((id) => context.run.instance(id).idle?.ours && context.run.instance(id).idle?.running !== false);
  return running.length > 0 ? [`${phase.name}, started early: the idle slots of ${running.join(", ")} were left running for the deploy that holds the lock now`] : [];
}
