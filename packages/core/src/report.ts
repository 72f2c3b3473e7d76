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
  readonly port: number;
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
}

export interface DeployReport {
  readonly ok: boolean;
  readonly strategy: string;
  readonly version: string;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly instances: readonly InstanceReport[];
  readonly routes: readonly RouteReport[];
  readonly error?: {
    readonly code: NodropErrorCode;
    readonly message: string;
    readonly instance?: string;
    readonly step?: string;
  };
  /** Set when a failure was followed by recovery: what it did. */
  readonly recovery?: string;
}
