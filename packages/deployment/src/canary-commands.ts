import { type JournalRecord, NodropError, isSafeName, lastDeploy } from "@nodrop/core";
import { rollbackTarget } from "./rollback-target.js";

/** What `promote` or `abort` does, read from the journal: the version it deploys and what it says first. */
export interface CanaryCommand {
  readonly version: string;
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
    return { version: safe(last.version, "version"), message: `promoting the canary of ${last.version} past its gate in ${last.paused}` };
  }
  if (last.finished) throw new NodropError("E_JOURNAL", `the last deploy (${last.version} at ${last.at}) finished: nothing to abort (\`nodrop rollback\` goes back to the version before it)`);
  const previous = rollbackTarget(records);
  if (!previous) throw new NodropError("E_JOURNAL", `the journal does not say which version ran before the deploy of ${last.version}`);
  return { version: safe(previous, "previous version"), message: `aborting the deploy of ${last.version}: every client back to ${previous}` };
}
