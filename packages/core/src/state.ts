import os from "node:os";
import { sleep } from "./duration.js";
import { NodropError } from "./errors.js";
import type { Executor } from "./executor.js";
import { shellQuote } from "./template.js";

/** Who holds the deploy lock. */
export interface LockHolder {
  readonly who: string;
  readonly from: string;
  readonly version: string;
  readonly since: string;
  /** Last heartbeat, ISO time on the holder's clock. */
  readonly heartbeat: string;
  readonly pid: number;
}

export interface DeployLockOptions {
  /** Runs commands on the proxy host, where the lock lives. */
  executor: Executor;
  /** Directory for nodrop's state on that host (the lock and the journal). */
  dir: string;
  /** A lock whose heartbeat is older than this is stale (its holder died). */
  staleAfterMs?: number;
  heartbeatMs?: number;
}

export interface HeldLock {
  readonly holder: LockHolder;
  release(): Promise<void>;
}

/**
 * The deploy lock, kept on the proxy host: `mkdir` is atomic, so two deploys can never both take
 * it. The holder's details sit beside it and a heartbeat refreshes them, so a lock whose holder
 * died is recognised as stale and can be taken over.
 */
export function deployLock(options: DeployLockOptions) {
  const { executor } = options;
  const dir = options.dir;
  const lockDir = `${dir}/lock`;
  const info = `${lockDir}/holder.json`;
  const staleAfter = options.staleAfterMs ?? 60_000;
  const heartbeat = options.heartbeatMs ?? 5_000;

  const read = async (): Promise<LockHolder | undefined> => {
    const result = await executor.exec(`cat ${shellQuote(info)} 2>/dev/null`);
    if (result.code !== 0 || !result.stdout.trim()) return undefined;
    try {
      return JSON.parse(result.stdout) as LockHolder;
    } catch {
      return undefined;
    }
  };

  /** Stale: no heartbeat for staleAfter, or (on this machine) its process is gone, as after kill -9. */
  const isStale = (holder: LockHolder | undefined) => {
    if (holder === undefined || Date.now() - Date.parse(holder.heartbeat) > staleAfter) return true;
    if (holder.from !== os.hostname() || holder.pid === process.pid) return false;
    try {
      process.kill(holder.pid, 0);
      return false;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "ESRCH";
    }
  };

  const write = async (holder: LockHolder) => {
    const result = await executor.exec(`cat > ${shellQuote(`${info}.tmp`)} && mv -f ${shellQuote(`${info}.tmp`)} ${shellQuote(info)}`, { input: JSON.stringify(holder) });
    if (result.code !== 0) throw new NodropError("E_LOCK", `cannot write the deploy lock on ${executor.host}: ${result.stderr.trim()}`);
  };

  return {
    status: read,
    isStale,
    /** Takes the lock, waiting up to `waitMs` for a running deploy to finish. */
    async acquire(version: string, waitMs = 0, signal?: AbortSignal): Promise<HeldLock> {
      const deadline = Date.now() + waitMs;
      const now = new Date().toISOString();
      const holder: LockHolder = { who: os.userInfo().username, from: os.hostname(), version, since: now, heartbeat: now, pid: process.pid };
      await executor.exec(`mkdir -p ${shellQuote(dir)}`);
      for (;;) {
        const taken = await executor.exec(`mkdir ${shellQuote(lockDir)}`);
        if (taken.code === 0) break;
        const current = await read();
        if (current && isStale(current)) {
          // The holder stopped beating: take the lock over (rename is atomic; only one taker wins).
          const moved = await executor.exec(`mv ${shellQuote(lockDir)} ${shellQuote(`${lockDir}.stale.${process.pid}`)} && rm -rf ${shellQuote(`${lockDir}.stale.${process.pid}`)}`);
          if (moved.code === 0) continue;
        }
        if (Date.now() >= deadline) {
          const by = current ? `${current.who}@${current.from} deploying ${current.version} since ${current.since} (last heartbeat ${current.heartbeat})` : "another deploy (no details yet)";
          throw new NodropError("E_LOCK", `the deploy lock on ${executor.host} is held by ${by}; wait with --lock-wait, or run \`nodrop lock release\` if that deploy is gone`);
        }
        await sleep(Math.min(1000, Math.max(50, deadline - Date.now())), signal);
      }
      await write(holder);
      let current = holder;
      const timer = setInterval(() => {
        current = { ...current, heartbeat: new Date().toISOString() };
        void write(current).catch(() => undefined);
      }, heartbeat);
      timer.unref();
      return {
        holder,
        async release() {
          clearInterval(timer);
          await executor.exec(`rm -rf ${shellQuote(lockDir)}`);
        },
      };
    },
    /** Removes the lock whoever holds it (`nodrop lock release`). */
    async forceRelease(): Promise<LockHolder | undefined> {
      const current = await read();
      await executor.exec(`rm -rf ${shellQuote(lockDir)}`);
      return current;
    },
  };
}
