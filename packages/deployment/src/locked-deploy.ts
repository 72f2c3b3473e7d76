import { type DeployListener, type DeployReport, type HeldLock, type Journal, type JournalRecord, type LastDeploy, NodropError, type ReleaseSetup, deploy, deployLock, fileJournal, formatDuration, isSafeName, lastDeploy } from "@nodrop/core";
import type { Deployment } from "./deployment.js";
import { rollbackTarget } from "./rollback-target.js";

/** What the lock, the journal and a locked deploy need of a deployment. */
export type LockedDeployment = Pick<Deployment, "options" | "proxyExecutor" | "heartbeatExecutor" | "stateDir">;

/** The deploy lock of a deployment's fleet, on the proxy host; its heartbeat has a session of its own. */
export function deploymentLock(deployment: LockedDeployment): ReturnType<typeof deployLock> {
  return deployLock({ executor: deployment.proxyExecutor, heartbeatExecutor: deployment.heartbeatExecutor ?? deployment.proxyExecutor, dir: deployment.stateDir });
}

/** The journal of a deployment's fleet, on the proxy host next to the lock. */
export function deploymentJournal(deployment: LockedDeployment): Journal {
  return fileJournal(deployment.proxyExecutor, `${deployment.stateDir}/journal.jsonl`);
}

export interface LockedDeployOptions {
  version: string;
  /** How long to wait for a deploy already holding the lock (default 0: refuse at once). */
  lockWaitMs?: number;
  signal?: AbortSignal | undefined;
  onEvent?: DeployListener | undefined;
  /** Proxies of a group that route differently are brought together first, not refused (resume, rollback). */
  reconcileProxies?: boolean;
  /** The release put on every instance host before any instance leaves the pool (Deployment.releaseFor). */
  release?: ReleaseSetup | undefined;
  /** What runs this deploy, for the hooks' NODROP_COMMAND (default deploy); "retire" runs no hooks. */
  command?: "deploy" | "resume" | "rollback" | "retire" | undefined;
  /**
   * `nodrop promote`: the deploy being resumed is paused at a manual gate, and that gate counts as
   * passed. A resume of the same version plans the gates it passed already without them either way.
   */
  promote?: boolean | undefined;
}

/**
 * A deploy the way the CLI and the action run one: under the deploy lock on the proxy host, with
 * every step in the journal, so `nodrop status`, `resume` and a second deploy see it whoever started it.
 * The deploy stops (and recovers) when it finds its lock taken over. The report is always returned:
 * a lock that could not be released is a warning in it, saying what state the lock is in.
 */
export async function lockedDeploy(deployment: LockedDeployment, options: LockedDeployOptions): Promise<DeployReport> {
  const { value: report, warning } = await underLock(deployment, options, (journal, signal) => deployWith(deployment, journal, options, signal));
  return warning ? { ...report, warnings: [...(report.warnings ?? []), warning] } : report;
}

/**
 * A deploy under the lock only when the journal's last deploy, read under the lock, is `deployId`;
 * undefined (nothing done) when another one came after it.
 */
export async function lockedDeployAfter(deployment: LockedDeployment, deployId: string, options: LockedDeployOptions): Promise<DeployReport | undefined> {
  const { value: report, warning } = await underLock(deployment, options, async (journal, signal) => {
    if (lastDeploy(await journal.read())?.id !== deployId) return undefined;
    return deployWith(deployment, journal, options, signal);
  });
  return report && warning ? { ...report, warnings: [...(report.warnings ?? []), warning] } : report;
}

async function deployWith(deployment: LockedDeployment, journal: Journal, options: LockedDeployOptions, signal: AbortSignal): Promise<DeployReport> {
  const { hooks, ...rest } = deployment.options;
  const command = options.command ?? "deploy";
  // Read under the lock: this is the read that counts. One that fails refuses the deploy before anything changes.
  const records = await journal.read();
  refuseOverUnfinishedCanary(records, options);
  const stagedVersions = interruptedVersions(records);
  // Pruning keeps what `nodrop rollback` would go back to, also after a deploy of the version already running.
  const target = options.release ? rollbackTarget(records) : undefined;
  const release = options.release && target ? { ...options.release, rollbackTarget: target } : options.release;
  const passedGates = gatesToSkip(records, options);
  return deploy({
      ...rest,
      ...(hooks && command !== "retire" ? { hooks: { ...hooks, command } } : {}),
      version: options.version,
      journal,
      stagedVersions,
      signal,
      ...(options.onEvent ? { onEvent: options.onEvent } : {}),
      ...(options.reconcileProxies ? { reconcileProxies: true } : {}),
      ...(release ? { release } : {}),
      ...(passedGates.length > 0 ? { passedGates } : {}),
    });
}

/**
 * The gates a resume of the journal's last deploy (unfinished, same version) plans without: those
 * it passed, and with `promote` the one it is paused at. None for anything else, and none from a
 * journal whose last deploy cannot be read (a hostile record: the deploy reports that itself).
 */
function gatesToSkip(records: readonly JournalRecord[], options: LockedDeployOptions): string[] {
  let last;
  try {
    last = lastDeploy(records);
  } catch {
    return [];
  }
  if (!last || last.finished || last.version !== options.version || options.command !== "resume") return [];
  return resumedGates(last, options.promote === true);
}

/** The gates a resume of `last` plans without: those it passed, and with `promote` the one it is paused at. */
export function resumedGates(last: LastDeploy, promote: boolean): string[] {
  return [...last.passedGates, ...(promote && last.paused ? [last.paused] : [])];
}

/**
 * A deploy of another version while a canary has not finished (paused at a manual gate, or killed
 * or failed mid-way) is refused, nothing changed: the canary's clients hold its version's cookie,
 * and the new deploy's routing pins only its own version, so they would land on old instances (a
 * client back on an older version). The canary ends first, either way. A deploy of the same
 * version goes on with it, holding its gates again.
 */
function refuseOverUnfinishedCanary(records: readonly JournalRecord[], options: LockedDeployOptions): void {
  if ((options.command ?? "deploy") !== "deploy") return;
  let last;
  try {
    last = lastDeploy(records);
  } catch {
    return; // the deploy reports an unreadable journal itself
  }
  if (!last || last.finished || last.version === options.version || (!last.paused && last.strategy !== "canary")) return;
  const where = last.paused ? `is paused at its gate in ${last.paused}` : `did not finish (last step: ${last.lastStep ?? "none"})`;
  const next = last.paused ? "`nodrop promote` takes it on" : "`nodrop resume` takes it on";
  throw new NodropError("E_CANARY", `the canary of ${last.version} ${where}: ${next}, \`nodrop abort\` sends every client back; deploy ${options.version} after either (nothing was changed)`);
}

/** Runs `body` holding the deploy lock; a lock that could not be released comes back as a warning. */
async function underLock<T>(deployment: LockedDeployment, options: LockedDeployOptions, body: (journal: Journal, signal: AbortSignal) => Promise<T>): Promise<{ value: T; warning: string | undefined }> {
  const lock = deploymentLock(deployment);
  const held = await lock.acquire(options.version, options.lockWaitMs ?? 0, options.signal);
  const signal = options.signal ? AbortSignal.any([options.signal, held.lost]) : held.lost;
  let value: T;
  try {
    value = await body(deploymentJournal(deployment), signal);
  } catch (error) {
    // deploy() reports its failures; an exception here is a bug, and it is what the caller must see.
    await held.release().catch(() => undefined);
    throw error;
  }
  return { value, warning: await releaseWarning(lock, held, deployment.proxyExecutor.host) };
}

/**
 * The version of a deploy that did not finish (killed, its runner lost): pins it staged lead only
 * to instances already on it, so the next deploy (resume, rollback, or a new one) can repair an
 * instance it left stopped behind one. Read under the lock, checked where it is used.
 */
function interruptedVersions(records: readonly JournalRecord[]): string[] {
  const last = lastDeploy(records);
  if (!last || last.finished || !isSafeName(last.version)) return [];
  // Only a version that never served: clients may hold the pin of one that ran before (a rollback
  // goes back to it) or that an instance was checked healthy on in the interrupted deploy.
  const version = last.version;
  const ranBefore = versionRanBefore(records, version);
  const servedNow = records.some((r) => r.type === "step" && r.id === last.id && r.kind === "check" && r.status === "ok");
  return ranBefore || servedNow ? [] : [version];
}

/**
 * Whether an instance ran `version` before some deploy in the journal: a deploy to it goes back
 * (a rollback, or its resume), so its release is the one already on the hosts.
 */
export function versionRanBefore(records: readonly JournalRecord[], version: string): boolean {
  return records.some((r) => r.type === "deploy" && Array.isArray(r.instances) && r.instances.some((i) => i?.from === version));
}

/** Releases the lock; when that fails, a warning that says why and what state the lock is in. */
async function releaseWarning(lock: ReturnType<typeof deployLock>, held: HeldLock, host: string): Promise<string | undefined> {
  try {
    await held.release();
    return undefined;
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    const token = held.holder.token;
    const stale = `it goes stale ${formatDuration(lock.staleAfterMs)} after its last heartbeat (the heartbeat has stopped), or run \`nodrop lock release\``;
    let state: string;
    try {
      const now = await lock.status();
      if (!now) state = "it is not held any more";
      else if (now.token === token) state = `it is still held by this deploy's token ${token}; ${stale}`;
      else if (now.tookOver === token && now.releasing) state = `it is still marked as being released by this deploy (pid ${now.pid}); ${stale}`;
      else state = `it is held by ${now.who}@${now.from} (pid ${now.pid}) deploying ${now.version} since ${now.since}, token ${now.token}`;
    } catch (readError) {
      state = `its state could not be read (${readError instanceof Error ? readError.message : String(readError)}); if it is still held by this deploy's token ${token}, ${stale}`;
    }
    return `the deploy lock on ${host} could not be released (${why}): ${state}`;
  }
}
