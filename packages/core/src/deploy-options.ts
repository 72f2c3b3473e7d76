import type { DeployRun } from "./deploy-run.js";
import type { DeployListener } from "./events.js";
import type { WaitHealthyOptions } from "./health.js";
import type { Journal } from "./journal.js";
import type { RunListener } from "./run-listener.js";
import type { HookSetup } from "./hooks.js";
import type { ReleaseSetup } from "./release.js";
import type { OverlapBudget } from "./slot-preflight.js";
import type { DeployVerifier, HealthCheck, InstanceControl, Proxy, Strategy } from "./types.js";

export interface DeployOptions<StrategyOptions> {
  version: string;
  instances: readonly InstanceControl[];
  proxy: Proxy;
  strategy: Strategy<StrategyOptions>;
  strategyOptions: StrategyOptions;
  health: HealthCheck;
  healthWait: Omit<WaitHealthyOptions, "signal">;
  /** Most instance commands and checks at once on one host (hosts work side by side). */
  parallel?: number;
  signal?: AbortSignal;
  onEvent?: DeployListener;
  /** Bounds reverting the failed phase's instances after a failure or an abort (default 5 minutes). */
  recoveryTimeoutMs?: number;
  /**
   * Bounds putting the healthy instances back in the pool after reverting, measured from when it
   * starts: a revert that used up its own time never leaves the pool unrestored (default 2 minutes).
   */
  poolRestoreTimeoutMs?: number;
  /**
   * Versions an interrupted deploy staged pins for (the last deploy's, when it did not finish): like
   * the version being deployed, a pin of theirs leads only to instances already running them, since
   * no client can hold it before such an instance served it. Lets `resume` and `rollback` repair an
   * instance a killed deploy stopped behind a staged pin.
   */
  stagedVersions?: readonly string[];
  /**
   * The phases whose gate the deploy being resumed already passed, or that `nodrop promote` let
   * through: the strategy plans them without their gate (PlanInput.passedGates).
   */
  passedGates?: readonly string[];
  /** Records every step before and after it runs; a step whose record cannot be written does not run. */
  journal?: Journal;
  /** Probes the site through the proxy for the whole deploy; crossing its threshold stops the deploy. */
  verify?: DeployVerifier;
  /**
   * When the proxies of a group route differently (a deploy died between their changes): plan from
   * the first one's routing, count every other one's as possibly in force, and put the first one's
   * on all of them before anything else changes. Without it such a deploy is refused. `resume` and
   * `rollback` set it.
   */
  reconcileProxies?: boolean;
  /** What a host must keep free while new processes start on idle slots beside the old ones. */
  overlap?: OverlapBudget;
  /**
   * The release every instance host gets before any instance leaves the pool (an artifact, a
   * prepare command): a phase of its own, first. Without it, the plan is the strategy's alone.
   */
  release?: ReleaseSetup;
  /** The config's hooks (preDeploy, beforeBatch, afterBatch, postDeploy, onFailure), run on this machine. */
  hooks?: HookSetup;
}

/** What the step executor and recovery work with: the options, the run's state and its listeners. */
export interface RunContext<O = unknown> {
  readonly options: DeployOptions<O>;
  readonly run: DeployRun;
  readonly listeners: readonly RunListener[];
  /** Per-host limit on instance commands at once. */
  readonly parallel: number;
}
