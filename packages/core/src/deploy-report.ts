import type { DeployRun } from "./deploy-run.js";
import type { NodropError } from "./errors.js";
import type { PrunedReleases } from "./release.js";
import type { DeployReport, InstanceReport } from "./report.js";

/** How a deploy ended, as the report states it. */
export interface RunOutcome {
  readonly error?: NodropError | undefined;
  /** Where it failed: "preflight", "verify", "journal", or "<phase>: <step kind>". */
  readonly step?: string | undefined;
  /** What recovery did, or why there was none. */
  readonly recovery?: string | undefined;
  /** What went wrong after the deploy succeeded, without changing that (old releases not removed). */
  readonly warnings?: readonly string[] | undefined;
  /** The deploy stopped at a manual gate, its journal left open for `nodrop promote` or `nodrop abort`. */
  readonly paused?: { readonly phase: string; readonly gate: string } | undefined;
  /** Each host's releases after pruning, when releases were kept to a number. */
  readonly releases?: readonly PrunedReleases[] | undefined;
}

/** The report of a run, built from its state alone. */
export function buildReport(run: DeployRun, strategy: string, outcome: RunOutcome, keepOldMs = 0): DeployReport {
  const { error, step, recovery } = outcome;
  const serving = run.serving();
  return {
    id: run.id,
    ok: error === undefined,
    strategy,
    version: run.version,
    startedAt: run.startedAt.toISOString(),
    durationMs: performance.now() - run.started,
    routes: run.routes,
    phases: run.phases,
    instances: run.instances.map((control): InstanceReport => {
      const base = { id: control.spec.id, host: control.spec.host, address: control.spec.address, port: control.spec.port, inPool: serving.has(control.spec.id) };
      const t = run.tracked.get(control.spec.id);
      if (!t) return { ...base, from: undefined, version: undefined, outcome: "not-reached", steps: [] };
      const idle = t.idle ? { idle: { port: t.idle.port, running: t.idle.running, ...(t.idle.running !== false && t.idle.version ? { version: t.idle.version } : {}) } } : {};
      return { ...base, port: t.port, ...idle, from: t.from, version: t.version, outcome: t.outcome, steps: t.steps, ...(t.error === undefined ? {} : { error: t.error }) };
    }),
    ...(error ? { error: { code: error.code, message: error.message, ...(error.instance ? { instance: error.instance } : {}), ...(step ? { step } : {}) } } : {}),
    ...(recovery ? { recovery } : {}),
    ...(outcome.warnings?.length ? { warnings: outcome.warnings } : {}),
    ...(outcome.releases ? { releases: outcome.releases } : {}),
    ...(run.hooks.length > 0 ? { hooks: run.hooks } : {}),
    ...(run.gates.length > 0 ? { gates: run.gates } : {}),
    ...(outcome.paused ? { paused: { ...outcome.paused, since: new Date().toISOString() } } : {}),
    ...(run.verify ? { verify: run.verify } : {}),
    ...(keepOldMs > 0 && [...run.tracked.values()].some((t) => t.idle?.running !== false) ? { keptUntil: new Date(Date.now() + keepOldMs).toISOString() } : {}),
  };
}
