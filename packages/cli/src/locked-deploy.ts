import { type DeployListener, type DeployReport, type Journal, deploy, deployLock, fileJournal } from "@nodrop/core";
import type { Deployment } from "./setup.js";

/** The deploy lock of a deployment's fleet, on the proxy host. */
export function deploymentLock(deployment: Deployment): ReturnType<typeof deployLock> {
  return deployLock({ executor: deployment.proxyExecutor, dir: deployment.stateDir });
}

/** The journal of a deployment's fleet, on the proxy host next to the lock. */
export function deploymentJournal(deployment: Deployment): Journal {
  return fileJournal(deployment.proxyExecutor, `${deployment.stateDir}/journal.jsonl`);
}

export interface LockedDeployOptions {
  version: string;
  /** How long to wait for a deploy already holding the lock (default 0: refuse at once). */
  lockWaitMs?: number;
  signal?: AbortSignal | undefined;
  onEvent?: DeployListener | undefined;
}

/**
 * A deploy the way the CLI and the action run one: under the deploy lock on the proxy host, with
 * every step in the journal, so `nodrop status`, `resume` and a second deploy see it whoever started it.
 */
export async function lockedDeploy(deployment: Deployment, options: LockedDeployOptions): Promise<DeployReport> {
  const held = await deploymentLock(deployment).acquire(options.version, options.lockWaitMs ?? 0, options.signal);
  try {
    return await deploy({
      ...deployment.options,
      version: options.version,
      journal: deploymentJournal(deployment),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onEvent ? { onEvent: options.onEvent } : {}),
    });
  } finally {
    await held.release();
  }
}
