import type { GateReport } from "./canary-gate.js";
import type { HookName } from "./hooks.js";
import type { DeployReport } from "./report.js";
import type { DeployPlan, ObservedInstance, StepKind } from "./types.js";

/** What the engine tells reporters (CLI progress, the action's log groups) as it goes. */
export type DeployEvent =
  | { readonly type: "preflight"; readonly instances: readonly ObservedInstance[] }
  | { readonly type: "plan"; readonly plan: DeployPlan }
  | { readonly type: "phase"; readonly phase: string; readonly index: number; readonly total: number }
  | {
      readonly type: "step";
      readonly phase: string;
      readonly kind: StepKind;
      readonly instance: string | undefined;
      /** The host a step is about when it is about a host, not an instance (a release). */
      readonly host?: string;
      readonly status: "start" | "ok" | "fail" | "paused";
      readonly ms?: number;
      readonly detail?: string;
    }
  /** An artifact on its way to a host (a few events per upload, the last when it has all arrived). */
  | { readonly type: "upload"; readonly host: string; readonly sentBytes: number; readonly totalBytes: number }
  /** A hook ran (preDeploy, ...): its output's lines, each inert, come with its end. */
  | { readonly type: "hook"; readonly hook: HookName; readonly status: "start" | "ok" | "fail"; readonly ms?: number; readonly output?: readonly string[]; readonly detail?: string }
  | {
      readonly type: "route";
      readonly why: string;
      readonly generation: string;
      readonly confirmMs: number;
      readonly drainMs: number;
      readonly serving: readonly string[];
      /** The old routing drains in the background (`drainMs` is 0 then): a "drained" event follows. */
      readonly background?: boolean;
      /** What the proxy warned of though the change succeeded. */
      readonly warnings?: readonly string[];
    }
  /** A background drain ended (or failed: `error`). */
  | { readonly type: "drained"; readonly why: string; readonly generation: string; readonly drainMs: number; readonly error?: string }
  | { readonly type: "recovery"; readonly reason: string }
  | ({ readonly type: "gate" } & GateReport)
  | { readonly type: "done"; readonly report: DeployReport };

export type DeployListener = (event: DeployEvent) => void;
