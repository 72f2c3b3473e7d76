import type { DeployOptions, RunContext } from "./deploy-options.js";
import { buildReport, type RunOutcome } from "./deploy-report.js";
import { DeployRun } from "./deploy-run.js";
import { type EarlyStart, abandonEarly, leftEarly, marksPrepared } from "./early-start.js";
import { NodropError, toNodropError } from "./errors.js";
import { JournalListener } from "./journal-listener.js";
import { planDeploy } from "./preflight.js";
import { GatePaused } from "./canary-gate.js";
import { type HookName, type HookRun, hookFailure, phaseEnv, runEnv, runHook } from "./hooks.js";
import { instanceHosts, pruneReleases } from "./release.js";
import { inertLine } from "./template.js";
import { inForceClause, readBackRouting, recoverPhase, restorePool, stopIdleSlots } from "./recovery.js";
import type { DeployReport } from "./report.js";
import type { RunListener } from "./run-listener.js";
import { awaitOlderBackground, runStep, settleBackground } from "./step-executor.js";
import type { DeployPlan, PlanPhase, PlanStep } from "./types.js";
import { VerifyListener } from "./verify-listener.js";

export type { DeployOptions } from "./deploy-options.js";
export { observeInstances, planDeploy } from "./preflight.js";

/**
 * Applies a strategy's plan step by step. The failure rules live here, not in strategies:
 * a failed instance step reverts (or isolates) its phase and restores a routing of healthy
 * instances; a failed proxy change stops the deploy where the routing in force is the previous
 * one, recovers where it is the new one, and is read back from the proxy where it is unknown.
 *
 * config → planDeploy (preflight + the strategy's pure plan) → the phases here → the report.
 */
export async function deploy<O>(options: DeployOptions<O>): Promise<DeployReport> {
  const run = new DeployRun(options.version, options.instances, options.onEvent ?? (() => {}), options.stagedVersions);
  const listeners: RunListener[] = [
    // The probe first: a deploy that cannot be watched records nothing.
    ...(options.verify ? [new VerifyListener(options.verify)] : []),
    ...(options.journal ? [new JournalListener(options.journal, options.strategy.name)] : []),
  ];
  const context: RunContext<O> = { options, run, listeners, parallel: options.parallel ?? 8 };

  let plan: DeployPlan;
  try {
    const preflight = await planDeploy(options);
    plan = preflight.plan;
    run.begin(preflight.observed, preflight.routing, preflight.others);
    run.extraOverlap = preflight.extraOverlap;
  } catch (error) {
    // Nothing was touched: report pool membership as the proxy has it.
    run.refusedBefore(await options.proxy.current({ signal: options.signal }).catch(() => undefined));
    return finish(context, { error: toNodropError(error, "E_PREFLIGHT"), step: "preflight" });
  }
  run.emit({ type: "preflight", instances: run.observed });
  run.emit({ type: "plan", plan });
  for (const listener of listeners) {
    try {
      await listener.started?.(run, plan);
    } catch (error) {
      return finish(context, { error: toNodropError(error, "E_PREFLIGHT"), step: listener.name });
    }
  }
  const refused = await preDeploy(context);
  if (refused) return finish(context, refused);
  return finish(context, await runPhases(context, plan), plan.keepOldMs);
}

/** Runs a hook with the run's variables and `env`, when the config has it; what it did. */
function hook(context: RunContext, name: HookName, env: Record<string, string> = {}, signal = context.options.signal): Promise<HookRun | undefined> {
  const hooks = context.options.hooks;
  if (!hooks?.commands[name]) return Promise.resolve(undefined);
  return runHook(context.run, hooks, name, { ...runEnv(context.run, hooks, context.options.strategy.name, name), ...env }, signal);
}

/** The preDeploy hook, once everything is planned and watched and before the first change: a failure touched nothing. */
async function preDeploy(context: RunContext): Promise<RunOutcome | undefined> {
  const failure = hookFailure(await hook(context, "preDeploy"), context.options.signal);
  return failure && { error: failure, step: "preDeploy", recovery: "nothing was touched: the deploy stopped before its first change" };
}

const hasBatchHooks = (context: RunContext) => context.options.hooks?.commands.beforeBatch !== undefined || context.options.hooks?.commands.afterBatch !== undefined;

/** Whether a phase is a batch: the strategy's, and it changes instances (a closing route-only phase does not). */
const isBatch = (phase: PlanPhase) => !phase.added && phase.instances.length > 0;

/** A batch hook for phase `index` when it is a batch; the error when the hook failed. */
async function batchHook(context: RunContext, name: "beforeBatch" | "afterBatch", plan: DeployPlan, index: number): Promise<NodropError | undefined> {
  const phase = plan.phases[index]!;
  if (!isBatch(phase)) return undefined;
  const batches = plan.phases.filter(isBatch);
  return hookFailure(await hook(context, name, phaseEnv(phase, batches.indexOf(phase) + 1, batches.length)), context.options.signal);
}

/**
 * After a deploy that succeeded, each instance host keeps `release.keep` releases. Under the lock
 * still (nothing else uses the releases meanwhile), and never one that is running, that ran before
 * (the rollback target) or that an instance still runs on a kept slot.
 */
async function afterSuccess(context: RunContext, outcome: RunOutcome): Promise<RunOutcome> {
  const setup = context.options.release;
  if (outcome.error || outcome.paused || !setup?.keep) return outcome;
  const { run } = context;
  const protect = new Set<string>([run.version]);
  if (setup.rollbackTarget && run.observed.every((o) => o.version === run.version)) protect.add(setup.rollbackTarget);
  // What ran before (the observed versions), and what runs now on either slot.
  for (const o of run.observed) for (const v of [o.version, o.idle?.version]) if (v) protect.add(v);
  for (const t of run.tracked.values()) for (const v of [t.version, t.idle?.version]) if (v) protect.add(v);
  const { pruned, warnings } = await pruneReleases(context, { ...setup, keep: setup.keep }, instanceHosts(context.options.instances), protect);
  return { ...outcome, releases: pruned, ...(warnings.length ? { warnings } : {}) };
}

/**
 * Runs the plan's phases in order; the first failure ends it, after its phase's failure rule. A
 * background step (an old slot's stop) that failed ends it at the next phase boundary; the
 * instance it was about already serves from its new slot, so there is nothing to recover.
 */
async function runPhases(context: RunContext, plan: DeployPlan): Promise<RunOutcome> {
  const { run } = context;
  // Batch hooks see each batch start and end as planned: no batch starts early around them.
  if (hasBatchHooks(context)) run.pipeline.close();
  for (const [index, phase] of plan.phases.entries()) {
    const early = run.pipeline.take(index);
    // A phase whose new processes started early starts none now: the early start waited for the
    // old processes to stop that the memory check counts on. Its steps end first (one it skipped
    // because a background step had failed leaves that failure for the check below).
    const earlyFailure = early ? await early.done : undefined;
    if (!early) await awaitOlderBackground(context, index);
    if (run.backgroundFailure) {
      const later = run.pipeline.close();
      const failure = await settleBackground(context);
      return withClauses(backgroundOutcome(failure, plan.phases.slice(index).map((p) => p.name)), await abandonAll(context, plan.phases, [...(early ? [early] : []), ...later]));
    }
    run.phaseIndex = index;
    run.emit({ type: "phase", phase: phase.name, index, total: plan.phases.length });
    const phaseStart = performance.now();
    const endPhase = (ok: boolean) => run.phases.push({ name: phase.name, startMs: phaseStart - run.started, ms: performance.now() - phaseStart, ok });
    let current: PlanStep | undefined;
    try {
      // Before anything of the batch changes; a failure is the phase's own, with the routing before it in force.
      const before = await batchHook(context, "beforeBatch", plan, index);
      if (before) throw before;
      // This phase's first steps already ran while the one before it swapped: their outcome is this phase's.
      if (earlyFailure && "error" in earlyFailure) {
        current = earlyFailure.step;
        throw earlyFailure.error;
      }
      // The phase after the next may start early now, if the next one has started its processes.
      run.pipeline.advance(context, plan.phases);
      for (const step of phase.steps.slice(early && earlyFailure === undefined ? early.steps : 0)) {
        current = step;
        if (marksPrepared(step)) run.pipeline.prepared(context, plan.phases, index);
        await runStep(context, phase, step);
      }
      endPhase(true);
    } catch (error) {
      if (error instanceof GatePaused) {
        // Not a failure: the deploy stops where it is, serving, for a person to promote or abort
        // (no idle slot left running that nothing routes to: what started early is stopped).
        const later = run.pipeline.close();
        await settleBackground(context);
        const abandoned = await abandonAll(context, plan.phases, later);
        endPhase(true);
        return { paused: { phase: error.phase, gate: error.gate }, ...(abandoned.length > 0 ? { recovery: abandoned.join("; ") } : {}) };
      }
      const failure = toNodropError(error, "E_INSTANCE");
      // Nothing more starts early while recovery runs; what did is stopped after it.
      const later = run.pipeline.close();
      // Recovery works on a settled fleet: no stop of an old slot still in progress.
      await settleBackground(context);
      const outcome = await afterFailure(context, phase, failure, `${phase.name}: ${current?.kind ?? (failure.code === "E_HOOK" ? "beforeBatch" : "?")}`);
      // With the lock taken over, the deploy that holds it now may already use a slot started early: left as it is.
      const abandoned = failure.code === "E_LOCK" ? await leftAll(context, plan.phases, later) : await abandonAll(context, plan.phases, later);
      endPhase(false);
      // A drain that failed in the background meanwhile is part of what the report must say.
      const drain = failedDrain(run);
      const also = drain && drain.error !== failure && drain.error !== failure.cause ? [`also, ${DRAIN_FAILED} (${drain.step}: ${drain.error.message.split("\n")[0]})`] : [];
      return withClauses(outcome, [...abandoned, ...also]);
    }
    const after = await batchHook(context, "afterBatch", plan, index);
    if (after) return afterBatchFailed(context, plan, index, after);
  }
  return backgroundOutcome(await settleBackground(context), []);
}

/**
 * An afterBatch hook failed: the batch is done and healthy, and goes back in the pool with every
 * healthy instance (a rolling batch would otherwise wait for the next batch's reload); the deploy
 * stops before the next phase.
 */
async function afterBatchFailed(context: RunContext, plan: DeployPlan, index: number, error: NodropError): Promise<RunOutcome> {
  const phase = plan.phases[index]!;
  await settleBackground(context);
  context.run.recovering = true;
  const pool = await restorePool(context, phase);
  const rest = plan.phases.slice(index + 1).map((p) => p.name);
  const next = rest.length > 0 ? `the deploy stopped before ${rest.join(", ")} (\`nodrop resume\` goes on without running this hook again, \`nodrop rollback\` goes back)` : "every phase had run";
  return { error, step: `${phase.name}: afterBatch`, recovery: `${phase.name} finished on the new version; ${pool}; ${next}` };
}

/** Stops what each early start left running, in phase order; the clauses for the report. */
async function abandonAll(context: RunContext, phases: readonly PlanPhase[], starts: readonly EarlyStart[]): Promise<string[]> {
  const clauses: string[] = [];
  for (const early of starts) clauses.push(...(await abandonEarly(context, phases, early)));
  return clauses;
}

/** Says what each early start left running for the deploy that took the lock over, stopping nothing. */
async function leftAll(context: RunContext, phases: readonly PlanPhase[], starts: readonly EarlyStart[]): Promise<string[]> {
  const clauses: string[] = [];
  for (const early of starts) clauses.push(...(await leftEarly(context, phases, early)));
  return clauses;
}

/** The outcome with more clauses in its recovery. */
function withClauses(outcome: RunOutcome, clauses: readonly string[]): RunOutcome {
  if (clauses.length === 0) return outcome;
  return { ...outcome, recovery: [outcome.recovery, ...clauses].filter(Boolean).join("; ") };
}

/** The outcome of a background step or drain that failed; `notRun` are the phases it kept from starting. */
function backgroundOutcome(failure: { error: NodropError; step: string; drain?: boolean } | undefined, notRun: readonly string[]): RunOutcome {
  if (!failure) return {};
  const rest = notRun.length > 0 ? `the deploy stopped before ${notRun.length === 1 ? "phase" : "phases"} ${notRun.join(", ")}` : "every phase had run";
  if (failure.drain) return { error: failure.error, step: failure.step, recovery: `${DRAIN_FAILED}; ${rest}` };
  const id = failure.error.instance;
  return {
    error: failure.error,
    step: failure.step,
    recovery: `${id ?? "the instance"} serves from its new slot; its old slot's process may still run, out of the pool (the next deploy stops it first); ${rest}`,
  };
}

/** The background drain that failed in this run, if one did (read through a call: the loop's narrowing does not see it change). */
function failedDrain(run: RunContext["run"]): { error: Error; step: string } | undefined {
  return run.backgroundFailure?.drain ? run.backgroundFailure : undefined;
}

const DRAIN_FAILED =
  "a background drain failed: the routing that replaced it is in force, and the slots the old one served were left running, out of the pool, since the proxy may still be draining requests on them (the next deploy stops them first)";

/** The failure rule: decided by which routing a failed proxy change left in force, if it was one. */
async function afterFailure(context: RunContext, phase: PlanPhase, failure: NodropError, step: string): Promise<RunOutcome> {
  if (failure.code === "E_LOCK") {
    // Another deploy holds the fleet now (it judged this one dead): recovering would fight it.
    return { error: failure, step, recovery: "the deploy lock was taken over, so this deploy changed nothing more: the deploy that holds it now owns the fleet (`nodrop status` shows where it stands)" };
  }
  let inForce = failure.routingInForce;
  if (inForce === "unknown") inForce = await readBackRouting(context);
  if (inForce === "previous") {
    // Nothing changed; another proxy change would likely fail the same way. New slots started for
    // the swap are stopped unless a proxy generation may have loaded it (stopIdleSlots decides).
    const slots = await stopIdleSlots(context, phase);
    return { error: failure, step, recovery: ["the proxy kept its previous config; no serving instance was changed after the failure", ...slots].join("; ") };
  }
  if (inForce === "unknown") {
    return { error: failure, step, recovery: `${inForceClause(failure)}; no instance was changed after the failure, and instances either routing reaches are counted in the pool` };
  }
  return { error: failure, step, recovery: await recoverPhase(context, phase, failure) };
}

/**
 * postDeploy after a deploy that succeeded, onFailure after one that did not (whatever stopped it,
 * an interrupt included: it runs on its own timeout). Its failure is in the report's hooks; the
 * outcome stays what it was.
 */
async function postHook(context: RunContext, outcome: RunOutcome): Promise<void> {
  // A paused canary has not ended: the run that promotes it to the end runs postDeploy.
  if (outcome.paused) return;
  const env: Record<string, string> = { NODROP_RESULT: outcome.error ? "failed" : "succeeded" };
  if (outcome.error) {
    env.NODROP_ERROR_CODE = outcome.error.code;
    env.NODROP_ERROR_STEP = inertLine(outcome.step ?? "", 200);
  }
  // An interrupt that ended the deploy does not end its onFailure hook (which has its own timeout); a later one does.
  const signal = context.options.signal?.aborted ? undefined : context.options.signal;
  await hook(context, outcome.error ? "onFailure" : "postDeploy", env, signal);
}

/** Lets the listeners finish (the verify counts, the journal's end), then builds and announces the report. */
async function finish(context: RunContext, outcome: RunOutcome, keepOldMs?: number): Promise<DeployReport> {
  const { run, listeners, options } = context;
  for (const listener of listeners) await listener.stopping?.(run).catch(() => undefined);
  if (!outcome.error && run.verify?.breach) {
    // Crossed after the last step: every instance is done, but the deploy did not meet its bar.
    outcome = { error: new NodropError("E_VERIFY", run.verify.breach), step: "verify" };
  }
  // Only a deploy that met its bar prunes releases (the verify verdict is in by now).
  outcome = await afterSuccess(context, outcome);
  run.recovering = true;
  const built = buildReport(run, options.strategy.name, outcome, outcome.error ? 0 : keepOldMs);
  for (const listener of listeners) await listener.finished?.(run, built).catch(() => undefined);
  // After the journal's end record: a hook killed or hung there leaves a deploy the journal calls finished.
  await postHook(context, outcome);
  const report = run.hooks.length > 0 ? { ...built, hooks: [...run.hooks] } : built;
  run.emit({ type: "done", report });
  return report;
}
