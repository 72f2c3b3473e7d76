import { type DeployListener, type DeployReport, NodropError, isSafeName, lastDeploy, sleep } from "@nodrop/core";
import { type LockedDeployment, deploymentJournal, lockedDeployAfter } from "./locked-deploy.js";

export interface RetireKeptSlotsOptions {
  /** The deploy that kept them: its report, with `keptUntil`. */
  readonly report: DeployReport;
  readonly signal?: AbortSignal | undefined;
  /** How long to wait for the deploy lock once the window has ended (default 5 minutes). */
  readonly lockWaitMs?: number;
  readonly onEvent?: DeployListener | undefined;
}

export type RetireOutcome =
  /** `left`: instances whose idle slot may still run a process (the report says why). */
  | { readonly kind: "retired"; readonly report: DeployReport; readonly left: readonly string[] }
  /** Another deploy or a rollback came after: the kept processes are its business now. */
  | { readonly kind: "superseded"; readonly by: string };

/**
 * The end of a keep window (`keepOld`): once `keptUntil` has passed, stops the old processes the
 * deploy kept for an instant rollback. It takes the deploy lock and reads the journal first: when
 * a later deploy (a rollback inside the window, say) is the last one, it does nothing. Otherwise
 * it deploys the same version again, which changes nothing but stops the app's processes on idle
 * slots (every surge plan does that first), journaled and locked like any deploy.
 */
export async function retireKeptSlots(deployment: LockedDeployment, options: RetireKeptSlotsOptions): Promise<RetireOutcome> {
  const { keptUntil: until, id } = options.report;
  if (until === undefined || id === undefined) throw new NodropError("E_ARGS", "internal: the deploy kept no old slots");
  await sleep(Math.max(0, Date.parse(until) - Date.now()), options.signal);
  const journal = deploymentJournal(deployment);
  const last = lastDeploy(await journal.read());
  if (!last || last.id !== id) return { kind: "superseded", by: last ? `${last.version} at ${last.at}` : "nothing (the journal is empty)" };
  if (!isSafeName(last.version)) throw new NodropError("E_JOURNAL", "the journal's last deploy names an unsafe version");
  // The check above runs again under the lock: that read is the one that counts.
  const report = await lockedDeployAfter(deployment, id, {
    version: last.version,
    lockWaitMs: options.lockWaitMs ?? 300_000,
    signal: options.signal,
    // Housekeeping, not a deploy anyone asked for: no hooks (a second "deployed" notice, a migration run again).
    command: "retire",
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
  });
  if (report === undefined) return { kind: "superseded", by: "a deploy that took the lock first" };
  // What the redeploy's report says of each idle slot is the proof, not its success alone.
  return { kind: "retired", report, left: report.instances.filter((i) => i.idle && i.idle.running !== false).map((i) => `${i.id} (port ${i.idle!.port})`) };
}

/**
 * The end of a keep window as the CLI and the action run it: waits, retires the kept processes
 * (retireKeptSlots) and says what came of it, one line, a warning when something was left running.
 * Never throws: whatever goes wrong leaves the processes to the next deploy, which stops them first.
 */
export async function retireAndReport(deployment: LockedDeployment, report: DeployReport, signal: AbortSignal | undefined, say: (level: "info" | "warning", text: string) => void): Promise<void> {
  try {
    const outcome = await retireKeptSlots(deployment, { report, signal });
    if (outcome.kind === "superseded") say("info", `the keep window ended; a later deploy (${outcome.by}) owns the fleet now, nothing stopped`);
    else if (outcome.report.ok && outcome.left.length === 0) say("info", "the keep window ended; the old processes are stopped");
    else if (outcome.report.ok) say("warning", `the keep window ended, but ${outcome.left.join(", ")} may still run on the idle slot; the next deploy stops them`);
    else say("warning", `the keep window ended, but stopping the old processes failed (${outcome.report.error?.message ?? "unknown"}); the next deploy stops them`);
  } catch (error) {
    say("warning", `the old processes were left running (${error instanceof Error ? error.message : String(error)}); the next deploy stops them first`);
  }
}
