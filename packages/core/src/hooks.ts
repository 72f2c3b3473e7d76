import type { DeployRun } from "./deploy-run.js";
import { NodropError, toNodropError } from "./errors.js";
import type { Executor } from "./executor.js";
import { inertLine, isSafeName } from "./template.js";
import type { PlanPhase } from "./types.js";

/** The hooks a deploy runs, where nodrop runs (in CI: on the runner). */
export const HOOK_NAMES = ["preDeploy", "beforeBatch", "afterBatch", "postDeploy", "onFailure"] as const;
export type HookName = (typeof HOOK_NAMES)[number];

/**
 * The config's hooks: shell commands run with bash on this machine. They get what they need in
 * environment variables (HOOK_ENV documents them), never spliced into the command: a value from a
 * journal or an instance cannot change what a hook runs.
 */
export interface HookSetup {
  readonly commands: Partial<Record<HookName, string>>;
  readonly timeoutMs: number;
  /** Runs the hooks: this machine's executor (the action's shows them in the runner's log). */
  readonly executor: Executor;
  /** The app's name, for NODROP_APP. */
  readonly app: string;
  /** What runs the deploy, for NODROP_COMMAND: deploy (the default), resume or rollback. */
  readonly command?: string | undefined;
}

/** What a hook saw and did, for the report. */
export interface HookRun {
  readonly hook: HookName;
  readonly ok: boolean;
  readonly ms: number;
  /** Exit code; null when ended by a signal or never started. */
  readonly code: number | null;
  /** Why it failed, in a line. */
  readonly error?: string;
}

/** The environment variables every hook gets, by name, and what each holds (docs/hooks.md lists them). */
export const HOOK_ENV = {
  NODROP_HOOK: "the hook's name (preDeploy, beforeBatch, afterBatch, postDeploy, onFailure)",
  NODROP_APP: "the config's app",
  NODROP_COMMAND: "what runs the deploy: deploy, resume or rollback",
  NODROP_DEPLOY_ID: "the deploy's id, as the journal names it",
  NODROP_VERSION: "the version being deployed",
  NODROP_PREVIOUS: "the versions the fleet ran before, space-separated (usually one)",
  NODROP_STRATEGY: "the strategy's name",
  NODROP_HOSTS: "the instances' hosts, space-separated",
  NODROP_INSTANCES: "every instance id, space-separated",
  NODROP_PHASE: "beforeBatch and afterBatch: the phase's name (batch 2/4, half A, ...)",
  NODROP_PHASE_INDEX: "beforeBatch and afterBatch: its position among the batches, from 1",
  NODROP_PHASE_COUNT: "beforeBatch and afterBatch: how many batches the deploy has",
  NODROP_PHASE_INSTANCES: "beforeBatch and afterBatch: the instances it changes, space-separated",
  NODROP_RESULT: "postDeploy and onFailure: succeeded or failed",
  NODROP_ERROR_CODE: "onFailure: the error's code (E_HEALTHCHECK, ...)",
  NODROP_ERROR_STEP: "onFailure: where it failed (batch 2/4: check, preflight, ...)",
} as const;

/** Joins names for an environment variable, each checked (a value from an instance or a journal may be anything). */
const names = (values: readonly (string | undefined)[]) => [...new Set(values.filter((v): v is string => isSafeName(v)))].join(" ");

/** The variables every hook of this run gets. */
export function runEnv(run: DeployRun, setup: Pick<HookSetup, "app" | "command">, strategy: string, hook: HookName): Record<string, string> {
  return {
    NODROP_HOOK: hook,
    NODROP_APP: setup.app,
    NODROP_COMMAND: isSafeName(setup.command) ? setup.command : "deploy",
    NODROP_DEPLOY_ID: run.id,
    NODROP_VERSION: run.version,
    NODROP_PREVIOUS: names(run.observed.map((o) => o.version).filter((v) => v !== run.version)),
    NODROP_STRATEGY: strategy,
    NODROP_HOSTS: names(run.instances.map((i) => i.spec.host)),
    NODROP_INSTANCES: names(run.instances.map((i) => i.spec.id)),
  };
}

/** The variables of a batch hook. */
export function phaseEnv(phase: PlanPhase, index: number, count: number): Record<string, string> {
  return { NODROP_PHASE: inertLine(phase.name, 200), NODROP_PHASE_INDEX: String(index), NODROP_PHASE_COUNT: String(count), NODROP_PHASE_INSTANCES: names(phase.instances) };
}

/**
 * Runs one hook, when the config has it. Its output goes to the log (the `hook` event, each line
 * inert: a hook cannot forge a log line or a workflow command), never into the outputs. Resolves
 * with what happened (the run keeps it for the report); never rejects.
 */
export async function runHook(run: DeployRun, setup: HookSetup, hook: HookName, env: Record<string, string>, signal?: AbortSignal): Promise<HookRun | undefined> {
  const command = setup.commands[hook];
  if (command === undefined) return undefined;
  run.emit({ type: "hook", hook, status: "start" });
  const t0 = performance.now();
  let result: HookRun;
  try {
    const done = await setup.executor.exec(command, { signal, timeoutMs: setup.timeoutMs, env });
    const output = outputLines(done.stdout, done.stderr);
    result = { hook, ok: done.code === 0, ms: performance.now() - t0, code: done.code, ...(done.code === 0 ? {} : { error: `the ${hook} hook exited with ${done.code ?? "a signal"}` }) };
    run.emit({ type: "hook", hook, status: result.ok ? "ok" : "fail", ms: result.ms, output, ...(result.error ? { detail: result.error } : {}) });
  } catch (error) {
    const e = toNodropError(error, "E_HOOK");
    result = { hook, ok: false, ms: performance.now() - t0, code: null, error: `the ${hook} hook could not run to its end: ${e.message.split("\n")[0]}` };
    run.emit({ type: "hook", hook, status: "fail", ms: result.ms, output: [], detail: result.error });
  }
  run.hooks.push(result);
  return result;
}

/**
 * A hook that failed as the deploy's error (E_HOOK; E_ABORTED when an interrupt ended it). No
 * routing in force is claimed: the phase's failure rule restores a pool of healthy instances.
 */
export function hookFailure(result: HookRun | undefined, signal?: AbortSignal): NodropError | undefined {
  if (!result || result.ok) return undefined;
  return new NodropError(signal?.aborted ? "E_ABORTED" : "E_HOOK", result.error ?? `the ${result.hook} hook failed`);
}

/** A hook's output as log lines: the last 200, each made inert. */
function outputLines(stdout: string, stderr: string): string[] {
  return `${stdout}${stdout && !stdout.endsWith("\n") ? "\n" : ""}${stderr}`
    .split("\n")
    .filter((line, i, all) => line !== "" || i < all.length - 1)
    .slice(-200)
    .map((line) => inertLine(line, 1000));
}
