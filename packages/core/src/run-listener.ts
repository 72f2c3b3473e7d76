import type { DeployRun } from "./deploy-run.js";
import type { DeployReport } from "./report.js";
import type { DeployPlan, StepKind } from "./types.js";

/** One step's record, as the engine announces it: before it runs, and when it has passed or failed. */
export interface StepRecord {
  readonly phase: string;
  readonly kind: StepKind;
  readonly instance: string | undefined;
  /** The host a step is about when it is about a host, not an instance (a release). */
  readonly host?: string | undefined;
  readonly status: "start" | "ok" | "fail" | "paused";
  readonly detail?: string;
}

/**
 * Something that follows a deploy from inside the engine: the journal and the verify probe. Every
 * hook is awaited in order. A rejection from `started` stops the deploy with nothing changed, from
 * `beforeStep` fails that step of the plan before it runs, and from `step` with status "start" (or
 * "ok") fails the step (so a step whose record cannot be written does not run). Recovery's steps
 * are announced too, with `run.recovering` set.
 */
export interface RunListener {
  /** Names the listener in a report's `error.step` when `started` rejects ("journal", "verify"). */
  readonly name: string;
  /** After the plan, before the first change. */
  started?(run: DeployRun, plan: DeployPlan): Promise<void>;
  /** Before each step of the plan (not recovery's): throws to stop the deploy there. */
  beforeStep?(run: DeployRun): void;
  step?(run: DeployRun, record: StepRecord): Promise<void>;
  /** Before the report is built: a listener adds what it measured to the run. */
  stopping?(run: DeployRun): Promise<void>;
  /** With the finished report, before anyone else sees it. */
  finished?(run: DeployRun, report: DeployReport): Promise<void>;
}
