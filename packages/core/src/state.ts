import os from "node:os";
import { sleep } from "./duration.js";
import { NodropError } from "./errors.js";
import type { Executor } from "./executor.js";
import { shellQuote } from "./template.js";

/** Exit code of a command refused by {@link stateGuard}; its reason is on stderr. */
export const REFUSED = 3;

// The check behind stateGuard, defined once per script.
const GUARD_FUNCTION = [
  "nd_guard() {",
  '  if [ -L "$1" ]; then echo "$1 is a symbolic link (to $(readlink -- "$1")); nodrop does not follow links in its state directory: remove it" >&2; return 3; fi',
  '  [ -e "$1" ] || return 0',
  '  local s; s=$(stat -c "%u %h %a" -- "$1") || return 3',
  '  set -- "$1" "$2" $s',
  '  if [ "$2" = dir ] && [ ! -d "$1" ]; then echo "$1 is not a directory" >&2; return 3; fi',
  '  if [ "$2" = file ] && [ ! -f "$1" ]; then echo "$1 is not a regular file" >&2; return 3; fi',
  '  if [ "$3" != "$EUID" ]; then echo "$1 is owned by uid $3, not by uid $EUID that nodrop runs as" >&2; return 3; fi',
  '  if [ "$2" = dir ] && (( 8#$5 & 8#022 )); then echo "$1 is writable by others (mode $5): make it 0700 and check what is in it" >&2; return 3; fi',
  '  if [ "$2" = file ] && [ "$4" -gt 1 ]; then echo "$1 has $4 hard links" >&2; return 3; fi',
  "}",
].join("\n");

type GuardedPath = { readonly path: string; readonly type: "dir" | "file" };

/**
 * Bash that refuses the given paths on the proxy host before nodrop reads or writes them: a path
 * that is a symbolic link, is not of the expected type, is owned by another uid than the one the
 * command runs as, is a file with more than one hard link, or is a directory that group or others
 * may write to. An absent path passes. On refusal it prints the path and the reason on stderr and
 * exits {@link REFUSED}. A state directory that passes (ours, mode 0700) is one nobody else can
 * plant anything in, which is what makes the plain commands that follow it safe.
 */
export function stateGuard(paths: readonly GuardedPath[]): string {
  return `${GUARD_FUNCTION}\n${stateCheck(paths)}`;
}

/** The checks of {@link stateGuard} again, for a script that already holds its function (one definition per script). */
export function stateCheck(paths: readonly GuardedPath[]): string {
  return `${paths.map((p) => `nd_guard ${shellQuote(p.path)} ${p.type}`).join(" && ")} || exit ${REFUSED}\n`;
}

/** The error of a refused state path, naming the host. */
function refusal(code: "E_STATE" | "E_JOURNAL", what: string, host: string, stderr: string): NodropError {
  return new NodropError(code, `refusing ${what} on ${host}: ${stderr.trim().split("\n").at(-1)}`);
}
export { refusal as stateRefusal };

/**
 * Bash that makes sure nodrop's state directory exists, is a real directory owned by this uid and
 * is mode 0700, its files 0600 (tightening what an older nodrop created with the default mode), or
 * refuses it.
 */
export function prepareStateDir(dir: string): string {
  const paths = [{ path: dir, type: "dir" }] as const;
  return `umask 077\n${stateGuard(paths)}[ -e ${shellQuote(dir)} ] || mkdir -p -- ${shellQuote(dir)} || exit 1\n${stateCheck(paths)}chmod 700 -- ${shellQuote(dir)} || exit 1\nfind ${shellQuote(dir)} -mindepth 1 -maxdepth 1 -type f -perm /077 -exec chmod go-rwx -- {} + 2>/dev/null || true\n`;
}

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

  // Every command that touches the lock first refuses a planted link or a foreign owner on its path.
  const guard = stateGuard([
    { path: dir, type: "dir" },
    { path: lockDir, type: "dir" },
    { path: info, type: "file" },
  ]);
  const guarded = async (command: string, options?: { input?: string }) => {
    const result = await executor.exec(`${guard}${command}`, options);
    if (result.code === REFUSED) throw refusal("E_STATE", "the deploy lock", executor.host, result.stderr);
    return result;
  };

  const read = async (): Promise<LockHolder | undefined> => {
    const result = await guarded(`cat ${shellQuote(info)} 2>/dev/null`);
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
    // A temp file of a name nobody can guess, created exclusively (mktemp, mode 0600) beside its
    // target, then renamed over it: rename replaces whatever is at holder.json, never follows it.
    const result = await guarded(
      `umask 077\nt=$(mktemp ${shellQuote(`${info}.`)}XXXXXXXXXX) || exit 1\nif cat > "$t" && mv -fT -- "$t" ${shellQuote(info)}; then exit 0; fi\nrm -f -- "$t"; exit 1`,
      { input: JSON.stringify(holder) },
    );
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
      const prepared = await executor.exec(prepareStateDir(dir));
      if (prepared.code === REFUSED) throw refusal("E_STATE", "the state directory", executor.host, prepared.stderr);
      if (prepared.code !== 0) throw new NodropError("E_STATE", `cannot create the state directory ${dir} on ${executor.host}: ${prepared.stderr.trim() || `exit ${prepared.code}`}`);
      for (;;) {
        const taken = await guarded(`umask 077; mkdir -- ${shellQuote(lockDir)}`);
        if (taken.code === 0) break;
        const current = await read();
        if (current && isStale(current)) {
          // The holder stopped beating: take the lock over (rename is atomic; only one taker wins).
          // Onto a fresh empty directory of an unguessable name (-T: never into a planted one).
          const moved = await guarded(`s=$(mktemp -d ${shellQuote(`${lockDir}.stale.`)}XXXXXXXXXX) && { mv -T -- ${shellQuote(lockDir)} "$s" || { rmdir -- "$s"; exit 1; }; } && rm -rf -- "$s"`);
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
