import { type DeployReport, type JournalRecord, NodropError, isSafeName, lastDeploy } from "@nodrop/core";
import { type LockedDeployOptions, type LockedDeployment, lockedDeployAfter, resumedGates } from "./locked-deploy.js";
import { rollbackTarget } from "./rollback-target.js";

/** What `promote` or `abort` does, read from the journal: the deploy it acts on, the version it deploys and what it says first. */
export interface CanaryCommand {
  readonly command: "promote" | "abort";
  /** The journal's last deploy when it was read: the command acts only if it is still the last under the lock. */
  readonly deployId: string;
  readonly version: string;
  /** The gates the deploy being promoted plans without: those it passed, and the one it is paused at (none for an abort). */
  readonly passedGates: readonly string[];
  readonly message: string;
}

/**
 * `promote`: the journal's last deploy must be paused at a manual gate; it goes on with that
 * version. `abort`: the last deploy must not have finished; it goes back to the version most
 * instances ran before it. Refused with E_JOURNAL, saying why, otherwise. The journal is a file on
 * the proxy host that anyone there can edit: the versions are checked again here.
 */
export function canaryCommand(records: readonly JournalRecord[], command: "promote" | "abort"): CanaryCommand {
  const last = lastDeploy(records);
  if (!last) throw new NodropError("E_JOURNAL", `no deploy in the journal: nothing to ${command}`);
  const safe = (version: string, what: string) => {
    if (!isSafeName(version)) throw new NodropError("E_JOURNAL", `the journal's ${what} is not a safe version string; refusing to use it`);
    return version;
  };
  if (command === "promote") {
    if (last.finished || !last.paused) {
      throw new NodropError("E_JOURNAL", `the last deploy (${last.version} at ${last.at}) is not paused at a gate${last.finished ? ": it finished" : ` (last step: ${last.lastStep ?? "none"}; \`nodrop resume\` goes on with it)`}`);
    }
    return { command, deployId: last.id, version: safe(last.version, "version"), passedGates: resumedGates(last, true), message: `promoting the canary of ${last.version} past its gate in ${last.paused}` };
  }
  if (last.finished) throw new NodropError("E_JOURNAL", `the last deploy (${last.version} at ${last.at}) finished: nothing to abort (\`nodrop rollback\` goes back to the version before it)`);
  const previous = rollbackTarget(records);
  if (!previous) throw new NodropError("E_JOURNAL", `the journal does not say which version ran before the deploy of ${last.version}`);
  return { command, deployId: last.id, version: safe(previous, "previous version"), passedGates: [], message: `aborting the deploy of ${last.version}: every client back to ${previous}` };
}

/**
 * Runs a promote or an abort under the deploy lock, only if the deploy it was read from is still
 * the journal's last one there: two promotes at once pass one gate, not two, and an abort never
 * acts on a deploy that someone else finished or replaced meanwhile. Refused with E_JOURNAL, with
 * nothing changed, otherwise.
 */
export async function runCanaryCommand(deployment: LockedDeployment, next: CanaryCommand, options: Omit<LockedDeployOptions, "version" | "command" | "promote" | "reconcileProxies">): Promise<DeployReport> {
  const report = await lockedDeployAfter(deployment, next.deployId, {
    ...options,
    version: next.version,
    // A promote is a resume past its gate; an abort is a rollback through the canary-abort strategy.
    command: next.command === "promote" ? "resume" : "rollback",
    ...(next.command === "promote" ? { promote: true } : {}),
    reconcileProxies: true,
  });
  if (!report) throw new NodropError("E_JOURNAL", `another deploy ran after this ${next.command} read the journal: nothing done (\`nodrop status\` shows where the fleet stands now)`);
  return report;
}
