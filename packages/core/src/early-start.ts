import type { RunContext } from "./deploy-options.js";
import { type NodropError, toNodropError } from "./errors.js";
import { stopIdleSlots } from "./recovery.js";
import { awaitOlderBackground, runStep } from "./step-executor.js";
import type { PlanPhase, PlanStep } from "./types.js";

/**
 * Surge's pipeline. A phase marked `prepareEarly` starts the steps it leads with on idle slots (put
 * the version in place, start, check) before its turn: once the phase before it has started its own
 * new processes (while that one checks them and swaps), instead of after its swap. Nothing routes to
 * those slots, so users see no difference, and neither the check nor the reload before it holds the
 * next batch up. New processes still start one phase at a time, at most two phases ahead of the one
 * running. What such a step does is the phase's own: a failure surfaces when the phase begins and
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

/** The pipeline's state in a run: the early starts not yet taken over by their phase, and which phases have started their new processes. */
export class SurgePipeline {
  /** Early starts not yet taken over by their phase. */
  readonly #started = new Map<number, EarlyStart>();
  /** Every phase that ever started early: none starts twice, taken over or not. */
  readonly #launched = new Set<number>();
  readonly #prepared = new Set<number>();
  #open = true;

  /** Whether early starts may still run their steps (closed: a phase failed, or batch hooks run). */
  get open(): boolean {
    return this.#open;
  }

  /** The early start of phase `index`, handed over to it (the pipeline keeps none once taken). */
  take(index: number): EarlyStart | undefined {
    const early = this.#started.get(index);
    this.#started.delete(index);
    return early;
  }

  /** Nothing more starts early (a phase failed, or batch hooks must see every batch as planned); what did, in phase order. */
  close(): EarlyStart[] {
    this.#open = false;
    const left = [...this.#started.values()].sort((a, b) => a.phase - b.phase);
    this.#started.clear();
    return left;
  }

  /** Phase `index` has started its new processes (or has none left to start): the one after it may start early. */
  prepared(context: RunContext, phases: readonly PlanPhase[], index: number): void {
    this.#prepared.add(index);
    this.advance(context, phases);
  }

  /**
   * Starts early what may: the next phase once the running one has started its new processes, the
   * one after once that next one has (a phase only after the one before it, so that starts go one
   * phase at a time), never more than two phases ahead of the one running.
   */
  advance(context: RunContext, phases: readonly PlanPhase[]): void {
    const { run } = context;
    for (let index = run.phaseIndex + 1; index <= run.phaseIndex + 2 && this.#open && !run.backgroundFailure; index++) {
      if (!this.#prepared.has(index - 1)) return;
      if (this.#launched.has(index)) continue;
      const early = startEarly(context, phases, index);
      if (!early) return;
      this.#launched.add(index);
      this.#started.set(index, early);
    }
  }
}

/** A step that comes once its phase's new processes are started (their check, or the swap): the next phase may start early from there. */
export const marksPrepared = (step: PlanStep) => step.kind === "route" || (step.kind === "check" && step.slot === "idle");

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
 * of phases older than the one two before it ended (and the run's `extraOverlap` before that): at
 * most three phases run new processes beside old ones, however far ahead the pipeline is, which
 * preflight's memory check counts on (`checkIdleSlots`). From its check on, the phase after it may
 * start early in turn.
 */
function startEarly(context: RunContext, phases: readonly PlanPhase[], index: number): EarlyStart | undefined {
  const phase = phases[index];
  if (!phase?.prepareEarly) return undefined;
  const steps = earlySteps(phase);
  if (steps.length === 0) return undefined;
  const { run } = context;
  const done = (async () => {
    await awaitOlderBackground(context, index - 1);
    // An old process that did not stop is still resident: starting more would pass the memory model.
    // A pipeline closed meanwhile (a phase failed, recovery runs) starts nothing.
    if (run.backgroundFailure || !run.pipeline.open) return { skipped: true as const };
    for (const step of steps) {
      // Closed between steps: what was started stays for abandonEarly to stop, nothing more runs.
      if (!run.pipeline.open) return undefined;
      try {
        if (marksPrepared(step)) run.pipeline.prepared(context, phases, index);
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
