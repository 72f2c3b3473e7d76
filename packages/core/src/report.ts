import type { GateReport } from "./canary-gate.js";
import type { NodropErrorCode } from "./errors.js";
import type { StepKind } from "./types.js";

export type InstanceOutcome =
  /** Was already on the target version; nothing was done. */
  | "unchanged"
  /** Runs the target version and serves. */
  | "updated"
  /** Went back to the version it ran before, after a failure. */
  | "reverted"
  /** Not touched because the deploy stopped first. */
  | "not-reached"
  /** Out of the pool after a failure; see `error`. */
  | "failed";

export interface StepTiming {
  readonly kind: StepKind;
  readonly ms: number;
  readonly ok: boolean;
}

export interface InstanceReport {
  readonly id: string;
  readonly host: string;
  readonly address: string;
  /** The port it is served on (with slots: the live slot's). */
  readonly port: number;
  /** With slots: the idle slot, and whether a process still runs there (undefined: not known). */
  readonly idle?: { readonly port: number; readonly running: boolean | undefined; readonly version?: string | undefined };
  /** Version before the deploy. */
  readonly from: string | undefined;
  /** Version it runs now, as last seen by nodrop. */
  readonly version: string | undefined;
  readonly inPool: boolean;
  readonly outcome: InstanceOutcome;
  readonly steps: readonly StepTiming[];
  readonly error?: string;
}

export interface RouteReport {
  readonly why: string;
  readonly generation: string;
  readonly confirmMs: number;
  readonly drainMs: number;
  /** Long-lived connections still open at the drain ceiling, cut when their instance stopped. */
  readonly cut: number;
  /** The drain ran in the background, while the steps after this change went on (off the critical path). */
  readonly background?: boolean;
  /** A background drain that failed: why (`drainMs` is how long it ran). The slots the old routing served were left running. */
  readonly drainFailed?: string;
  /** What the proxy warned of though the change succeeded (ProxyApplyResult.warnings). */
  readonly warnings?: readonly string[];
}

export interface PhaseReport {
  readonly name: string;
  /** When the phase began, in ms since the deploy started. */
  readonly startMs: number;
  readonly ms: number;
  readonly ok: boolean;
}

export interface DeployReport {
  /** The deploy's id, as its journal records name it. */
  readonly id?: string;
  readonly ok: boolean;
  readonly strategy: string;
  readonly version: string;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly instances: readonly InstanceReport[];
  readonly routes: readonly RouteReport[];
  /** The plan's phases that ran, with their timing (recovery counts as part of the failed phase). */
  readonly phases: readonly PhaseReport[];
  readonly error?: {
    readonly code: NodropErrorCode;
    readonly message: string;
    readonly instance?: string;
    readonly step?: string;
  };
  /** Set when a failure was followed by recovery: what it did. */
  readonly recovery?: string;
  /** What the verify probe saw through the proxy during the deploy, when one was configured. */
  readonly verify?: VerifyReport;
  /**
   * What went wrong around the deploy without changing its outcome, e.g. a deploy lock that could
   * not be released (each says what state it left and what to do).
   */
  readonly warnings?: readonly string[];
  /** When the plan kept old slots running for an instant rollback: until when (ISO time). */
  readonly keptUntil?: string;
  /** The hooks that ran, in order; a failed postDeploy or onFailure leaves the outcome as it was, but the CLI exits 1. */
  readonly hooks?: readonly { readonly hook: string; readonly ok: boolean; readonly ms: number; readonly code: number | null; readonly error?: string }[];
  /**
   * Set when the deploy stopped at a manual gate (a canary's pause): nothing failed, the journal's
   * deploy is left open, and `nodrop promote` goes on from here (`nodrop abort` goes back).
   */
  readonly paused?: { readonly phase: string; readonly gate: string; readonly since: string };
  /** A canary's gates, in order: each one's share, decision, reason and figures. */
  readonly gates?: readonly GateReport[];
  /** Each instance host's releases after a successful deploy pruned them to `release.keep`. */
  readonly releases?: readonly { readonly host: string; readonly kept: readonly string[]; readonly removed: readonly string[] }[];
}

/** The verify probe's counts for one deploy. */
export interface VerifyReport {
  /** The page probed (origin and path; the query string is left out). */
  readonly url: string;
  readonly requests: number;
  /** Answered 2xx or 3xx. */
  readonly ok: number;
  /** No complete answer, or 4xx/5xx, after the one resend a browser makes on a stale connection. */
  readonly failed: number;
  /** Sent again once because the proxy closed an idle keep-alive connection first (as browsers do). */
  readonly resent: number;
  /** Answers from another version after the deployed version had answered. */
  readonly regressions: number;
  /** Successful answers by the version that gave them ("unknown" without the version header). */
  readonly byVersion: Readonly<Record<string, number>>;
  /** Failures by kind: an error code or http_<status>. */
  readonly errors: Readonly<Record<string, number>>;
  readonly durationMs: number;
  readonly maxFailed: number;
  readonly maxRegressions?: number;
  /** Whether the thresholds could stop the deploy (false: counted only, as during a rollback). */
  readonly enforced: boolean;
  /** Set when a threshold was crossed: the deploy failed because of it. */
  readonly breach?: string;
}
