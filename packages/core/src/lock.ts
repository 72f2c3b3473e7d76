import { randomUUID } from "node:crypto";
import os from "node:os";
import { formatDuration, sleep } from "./duration.js";
import { NodropError } from "./errors.js";
import type { Executor } from "./executor.js";
import { REFUSED, prepareStateDir, stateCheck, stateGuard, stateRefusal } from "./state.js";
import { shellQuote } from "./template.js";

/**
 * Who holds the deploy lock: the last record of the lock's chain (see {@link deployLock}).
 * Timestamps are the holder's clock, for people only: staleness never reads them.
 */
export interface LockHolder {
  /** Random per acquire; a takeover names the token it replaces. "legacy" for a record of an older nodrop. */
  readonly token: string;
  readonly who: string;
  readonly from: string;
  readonly version: string;
  readonly since: string;
  /** Last heartbeat, ISO time on the holder's clock (shown, never compared with another clock). */
  readonly heartbeat: string;
  /** Heartbeat counter: the holder increments it with every heartbeat. A counter that stops is a dead holder. */
  readonly beat: number;
  readonly pid: number;
  /** The token this holder took the lock over from. */
  readonly tookOver?: string;
  /** The holder is releasing the lock right now (it will be gone in a moment). */
  readonly releasing?: boolean;
}

export interface DeployLockOptions {
  /** Runs commands on the proxy host, where the lock lives. */
  executor: Executor;
  /**
   * A second session to the same host, for the heartbeat alone (default: `executor`), so that a
   * deploy whose commands fill the main session's channels still beats.
   */
  heartbeatExecutor?: Executor;
  /** Directory for nodrop's state on that host (the lock and the journal). */
  dir: string;
  /**
   * A lock whose heartbeat counter this reader has seen standing still for this long, on the
   * reader's own clock, is stale (its holder died) and may be taken over. Default 60 s.
   */
  staleAfterMs?: number;
  /** Default 5 s. */
  heartbeatMs?: number;
  /** The holder's clock for the timestamps written into its record, for people (default Date.now). */
  now?: () => number;
}

export interface HeldLock {
  readonly holder: LockHolder;
  /**
   * Aborted when the heartbeat finds that this deploy no longer holds the lock: another deploy
   * took it over (it judged this one dead) or it was removed (`nodrop lock release`). Its reason
   * is a NodropError E_LOCK saying so. A deploy combines it with its own signal and stops.
   */
  readonly lost: AbortSignal;
  /**
   * Releases the lock if this deploy still holds it (a compare-and-swap on its token), else
   * rejects with E_LOCK saying who holds it now. Stops the heartbeat either way.
   */
  release(): Promise<void>;
}

export type DeployLock = ReturnType<typeof deployLock>;

// Exit codes of the lock's scripts (REFUSED, 3, is the state guard's).
const EXISTS = 10;
const NOT_OURS = 11;
const TAKEN = 12;
const CLAIMED_NOT_REMOVED = 13;

const TOKEN = /^[A-Za-z0-9-]{1,64}$/;

interface Chain {
  readonly holder: LockHolder;
  /** The holder's record file, relative to the lock directory. */
  readonly record: string;
}

/**
 * The deploy lock, kept on the proxy host in `<dir>/lock/`. Every change of hands is one
 * rename(2) of a directory prepared beforehand (holding the new record) onto a name that must not
 * exist: rename onto a missing name succeeds once, onto a non-empty directory it fails, so of N
 * racers exactly one wins, and the record is there the moment the name is.
 *
 * - Acquire: `<dir>/lock.new.X/` (with `holder.json`) renamed to `<dir>/lock`.
 * - Takeover of the holder with token T (judged stale): `lock/.take.X/` renamed to `lock/taken-T`.
 *   That is a compare-and-swap on T: it succeeds only while nobody replaced T. The records form a
 *   chain (`holder.json` → `taken-<token>/holder.json` → …); its last record is the holder.
 * - Heartbeat of H: only if `taken-H` does not exist, H rewrites `lock/beat-H` (its counter). The
 *   file is H's alone, so a heartbeat racing a takeover never touches the new holder's record; the
 *   next one sees `taken-H` and aborts {@link HeldLock.lost}.
 * - Release by H: first claims `taken-H` with a "releasing" record (the same CAS, so nobody can take
 *   over a lock being released, and a lock taken over is not released), then renames the lock away
 *   and removes it.
 *
 * Staleness: a reader remembers each token's counter and when (on its own clock) it first saw that
 * value; the holder is stale once the counter has stood still for `staleAfterMs`. Two clocks are
 * never compared. A holder on this machine whose process is gone (kill -9) is stale at once.
 */
export function deployLock(options: DeployLockOptions) {
  const { executor } = options;
  const heartbeatExecutor = options.heartbeatExecutor ?? executor;
  const dir = options.dir;
  const lockDir = `${dir}/lock`;
  const root = `${lockDir}/holder.json`;
  const staleAfter = options.staleAfterMs ?? 60_000;
  const heartbeatMs = options.heartbeatMs ?? 5_000;
  const clock = options.now ?? Date.now;
  const q = shellQuote;
  const inLock = (file: string) => `${lockDir}/${file}`;

  // Every command that touches the lock first refuses a planted link or a foreign owner on its path.
  const guard = stateGuard([
    { path: dir, type: "dir" },
    { path: lockDir, type: "dir" },
    { path: root, type: "file" },
  ]);
  const guarded = async (command: string, execOptions?: { input?: string; timeoutMs?: number }, on: Executor = executor) => {
    const result = await on.exec(`umask 077\n${guard}${command}`, execOptions);
    if (result.code === REFUSED) throw stateRefusal("E_STATE", "the deploy lock", on.host, result.stderr);
    return result;
  };
  const check = (path: string, type: "dir" | "file") => stateCheck([{ path, type }]);
  const recordOf = (path: string) => `${check(path.replace(/\/holder\.json$/, ""), "dir")}${check(path, "file")}`;

  // What this reader has seen of each holder: its counter, and since when (this process's clock).
  const seen = new Map<string, { key: string; since: number; first: number }>();
  const beatKey = (h: LockHolder) => `${h.beat}\0${h.heartbeat}\0${h.releasing ? 1 : 0}`;
  const observe = (h: LockHolder) => {
    const at = performance.now();
    const o = seen.get(h.token);
    if (!o) seen.set(h.token, { key: beatKey(h), since: at, first: at });
    else if (o.key !== beatKey(h)) {
      o.key = beatKey(h);
      o.since = at;
    }
  };
  /** How long this reader has seen the holder's counter standing still (0 when it never saw it). */
  const standingMs = (h: LockHolder) => {
    const o = seen.get(h.token);
    return o && o.key === beatKey(h) ? performance.now() - o.since : 0;
  };
  const processGone = (h: LockHolder) => {
    if (h.from !== os.hostname() || h.pid === process.pid || !Number.isInteger(h.pid) || h.pid <= 0) return false;
    try {
      process.kill(h.pid, 0);
      return false;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "ESRCH";
    }
  };
  /** Stale: its counter stood still for staleAfter as this reader saw it, or (on this machine) its process is gone. */
  const isStale = (holder: LockHolder | undefined): boolean => holder === undefined || processGone(holder) || standingMs(holder) >= staleAfter;

  const parse = (text: string): Record<string, unknown> | undefined => {
    try {
      const value = JSON.parse(text) as unknown;
      return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  };
  const str = (v: unknown, fallback = "?") => (typeof v === "string" ? v : fallback);

  /** Reads the chain of records; its last one is the holder. Undefined when the lock is not held. */
  const readChain = async (on: Executor = executor): Promise<Chain | undefined> => {
    const emit = (file: string) => `printf '=%s\\n' ${q(file)}; cat -- ${q(inLock(file))}; echo`;
    const result = await guarded(
      [
        `[ -d ${q(lockDir)} ] || exit 0`,
        `echo =lock`,
        `[ -f ${q(root)} ] && { ${emit("holder.json")}; }`,
        `for d in ${q(lockDir)}/taken-*; do [ -e "$d" ] || [ -L "$d" ] || continue; nd_guard "$d" dir && nd_guard "$d/holder.json" file || { [ -e "$d" ] || [ -L "$d" ] || continue; exit ${REFUSED}; }; [ -f "$d/holder.json" ] || continue; printf '=%s\\n' "\${d##*/}/holder.json"; cat -- "$d/holder.json" 2>/dev/null; echo; done`,
        `for f in ${q(lockDir)}/beat-*; do [ -e "$f" ] || [ -L "$f" ] || continue; case "\${f##*/}" in *.*) continue;; esac; nd_guard "$f" file || { [ -e "$f" ] || [ -L "$f" ] || continue; exit ${REFUSED}; }; printf '=%s\\n' "\${f##*/}"; cat -- "$f" 2>/dev/null; echo; done`,
        "exit 0",
      ].join("\n"),
      undefined,
      on,
    );
    if (result.code !== 0) throw new NodropError("E_LOCK", `cannot read the deploy lock on ${on.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
    if (!result.stdout.startsWith("=lock")) return undefined;
    const files = new Map<string, string>();
    let name: string | undefined;
    for (const line of result.stdout.split("\n").slice(1)) {
      if (line.startsWith("=")) name = line.slice(1);
      else if (name !== undefined && line !== "") files.set(name, (files.get(name) ?? "") + line);
    }
    const beats = new Map<string, Record<string, unknown>>();
    for (const [file, text] of files) if (file.startsWith("beat-")) beats.set(file.slice(5), parse(text) ?? {});
    const holderOf = (raw: Record<string, unknown> | undefined, fallbackToken: string): LockHolder => {
      const token = typeof raw?.token === "string" && TOKEN.test(raw.token) ? raw.token : fallbackToken;
      const beat = beats.get(token);
      const since = str(raw?.since);
      return {
        token,
        who: str(raw?.who),
        from: str(raw?.from),
        version: str(raw?.version),
        since,
        heartbeat: str(beat?.heartbeat, str(raw?.heartbeat, since)),
        beat: typeof beat?.beat === "number" ? beat.beat : typeof raw?.beat === "number" ? raw.beat : 0,
        pid: typeof raw?.pid === "number" ? raw.pid : 0,
        ...(typeof raw?.tookOver === "string" ? { tookOver: raw.tookOver } : {}),
        ...(raw?.releasing === true ? { releasing: true } : {}),
      };
    };
    // The first record: an older nodrop's has no token ("legacy"); a lock without one is "none".
    const first = files.has("holder.json") ? parse(files.get("holder.json")!) : undefined;
    let chain: Chain = { holder: holderOf(first, first ? "legacy" : "none"), record: "holder.json" };
    for (let hops = 0; hops < 10_000; hops++) {
      const next = `taken-${chain.holder.token}/holder.json`;
      if (!files.has(next)) break;
      chain = { holder: holderOf(parse(files.get(next)!), `after-${chain.holder.token}`.slice(0, 64)), record: next };
    }
    observe(chain.holder);
    return chain;
  };

  const newHolder = (version: string, extra: Partial<LockHolder> = {}): LockHolder => {
    const at = new Date(clock()).toISOString();
    return { token: randomUUID(), who: os.userInfo().username, from: os.hostname(), version, since: at, heartbeat: at, beat: 0, pid: process.pid, ...extra };
  };
  const recordJson = (h: LockHolder) => JSON.stringify(h);
  const beatJson = (beat: number) => JSON.stringify({ beat, heartbeat: new Date(clock()).toISOString() });
  /** Bash: the record `file` (relative to the lock) still names `token`. */
  const stillNames = (file: string, token: string) =>
    token === "legacy" ? `[ -f ${q(inLock(file))} ]` : token === "none" || token.startsWith("after-") ? "true" : `grep -qF -- ${q(`"token":"${token}"`)} ${q(inLock(file))}`;

  const describe = (h: LockHolder) => `${h.who}@${h.from} deploying ${h.version} since ${h.since} (pid ${h.pid})`;

  const removeLock = `g=$(mktemp -d ${q(`${lockDir}.released.`)}XXXXXXXXXX) || exit ${CLAIMED_NOT_REMOVED}\nmv -T -- ${q(lockDir)} "$g" || { rmdir -- "$g"; exit ${CLAIMED_NOT_REMOVED}; }\nrm -rf -- "$g" || true\n`;

  /** One try at a free lock: true when taken, false when it exists. */
  const create = async (holder: LockHolder): Promise<boolean> => {
    const result = await guarded(
      [
        `p=$(mktemp -d ${q(`${lockDir}.new.`)}XXXXXXXXXX) || exit 1`,
        `if ! { cat > "$p/holder.json" && printf '%s' ${q(beatJson(0))} > "$p/beat-${holder.token}"; }; then rm -rf -- "$p"; exit 1; fi`,
        `if e=$(mv -T -- "$p" ${q(lockDir)} 2>&1); then exit 0; fi`,
        `rm -rf -- "$p"`,
        `[ -e ${q(lockDir)} ] && exit ${EXISTS}`,
        `echo "$e" >&2; exit 1`,
      ].join("\n"),
      { input: recordJson(holder) },
    );
    if (result.code === 0) return true;
    if (result.code === EXISTS) return false;
    throw new NodropError("E_STATE", `cannot create the deploy lock ${lockDir} on ${executor.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
  };

  /** The compare-and-swap on a stale holder's token: true when this acquire won. */
  const takeOver = async (stale: Chain, holder: LockHolder): Promise<boolean> => {
    const target = `${lockDir}/taken-${stale.holder.token}`;
    const result = await guarded(
      [
        `[ -d ${q(lockDir)} ] || exit ${NOT_OURS}`,
        recordOf(inLock(stale.record)).trimEnd(),
        `${stillNames(stale.record, stale.holder.token)} || exit ${NOT_OURS}`,
        `p=$(mktemp -d ${q(`${lockDir}/.take.`)}XXXXXXXXXX) || exit 1`,
        `if ! cat > "$p/holder.json"; then rm -rf -- "$p"; exit 1; fi`,
        `printf '%s' ${q(beatJson(0))} > ${q(inLock(`beat-${holder.token}`))} || { rm -rf -- "$p"; exit 1; }`,
        `if e=$(mv -T -- "$p" ${q(target)} 2>&1); then exit 0; fi`,
        `rm -rf -- "$p" ${q(inLock(`beat-${holder.token}`))}`,
        `[ -e ${q(target)} ] && exit ${EXISTS}`,
        `echo "$e" >&2; exit 1`,
      ].join("\n"),
      { input: recordJson(holder) },
    );
    if (result.code === EXISTS || result.code === NOT_OURS) return false;
    if (result.code !== 0) throw new NodropError("E_LOCK", `cannot take over the deploy lock on ${executor.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
    // The lock may have been released and taken afresh between our read and the rename: then our
    // record hangs off a token nobody follows. The chain says who holds it.
    const now = await readChain();
    return now?.holder.token === holder.token;
  };

  const heldMessage = (current: Chain | undefined) => {
    if (!current) return `the deploy lock on ${executor.host} is held by another deploy`;
    const h = current.holder;
    const o = seen.get(h.token);
    const watched = o ? performance.now() - o.first : 0;
    const still = standingMs(h);
    const beat =
      still >= watched - 1
        ? `no heartbeat seen in the ${formatDuration(watched)} this deploy watched it (counter ${h.beat}; stale after ${formatDuration(staleAfter)} without one)`
        : `its heartbeat advanced while this deploy watched it for ${formatDuration(watched)} (counter ${h.beat}, none for the last ${formatDuration(still)}; stale after ${formatDuration(staleAfter)} without one)`;
    return (
      `the deploy lock on ${executor.host} is held by ${describe(h)}${h.releasing ? ", releasing it now" : ""}, last heartbeat ${h.heartbeat} on its clock; ${beat}; ` +
      `wait with --lock-wait (at least ${formatDuration(staleAfter)} to take over a lock whose holder is gone), or run \`nodrop lock release\` if that deploy is gone`
    );
  };

  return {
    staleAfterMs: staleAfter,
    /** The current holder (the chain's last record), or undefined when the lock is free. */
    async status(): Promise<LockHolder | undefined> {
      return (await readChain())?.holder;
    },
    isStale,
    /** Takes the lock, waiting up to `waitMs` for a running deploy to finish or go stale. */
    async acquire(version: string, waitMs = 0, signal?: AbortSignal): Promise<HeldLock> {
      const deadline = performance.now() + waitMs;
      const prepared = await executor.exec(prepareStateDir(dir));
      if (prepared.code === REFUSED) throw stateRefusal("E_STATE", "the state directory", executor.host, prepared.stderr);
      if (prepared.code !== 0) throw new NodropError("E_STATE", `cannot create the state directory ${dir} on ${executor.host}: ${prepared.stderr.trim() || `exit ${prepared.code}`}`);
      let holder = newHolder(version);
      let record = "holder.json";
      for (;;) {
        if (await create(holder)) break;
        const current = await readChain();
        if (current && isStale(current.holder)) {
          const taker = newHolder(version, { tookOver: current.holder.token });
          if (await takeOver(current, taker)) {
            holder = taker;
            record = `taken-${current.holder.token}/holder.json`;
            break;
          }
          continue;
        }
        if (current === undefined) continue;
        if (performance.now() >= deadline) throw new NodropError("E_LOCK", heldMessage(current));
        await sleep(Math.max(20, Math.min(1000, staleAfter / 4, deadline - performance.now())), signal);
      }
      return hold(holder, record);
    },
    /** Removes the lock whoever holds it (`nodrop lock release`). */
    async forceRelease(): Promise<LockHolder | undefined> {
      const current = await readChain();
      if (!current) return undefined;
      const result = await guarded(`[ -d ${q(lockDir)} ] || exit 0\n${removeLock}`);
      if (result.code !== 0) throw new NodropError("E_LOCK", `cannot remove the deploy lock on ${executor.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
      return current.holder;
    },
  };

  function hold(holder: LockHolder, record: string): HeldLock {
    const lost = new AbortController();
    const token = holder.token;
    let beat = 0;
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    let inflight: Promise<void> | undefined;
    // When a heartbeat last got through: once none has for half the stale limit, other deploys may
    // soon see the counter stand still, so this one stops rather than risk two holders.
    let lastBeat = performance.now();
    const takenBy = (stdout: string) => {
      const by = parse(stdout.trim());
      return by ? `${str(by.who)}@${str(by.from)} (pid ${typeof by.pid === "number" ? by.pid : "?"}, deploying ${str(by.version)}) at ${str(by.since)}` : "another deploy";
    };
    const owned = `[ -d ${q(lockDir)} ] && [ -f ${q(inLock(record))} ] && ${stillNames(record, token)} || exit ${NOT_OURS}`;
    const beatOnce = async () => {
      beat += 1;
      const file = inLock(`beat-${token}`);
      const taken = inLock(`taken-${token}`);
      try {
        const result = await guarded(
          [
            recordOf(inLock(record)).trimEnd(),
            owned,
            `if [ -e ${q(taken)} ] || [ -L ${q(taken)} ]; then cat -- ${q(`${taken}/holder.json`)} 2>/dev/null; exit ${TAKEN}; fi`,
            check(file, "file").trimEnd(),
            `t=$(mktemp ${q(`${file}.`)}XXXXXXXXXX) || exit 1`,
            `printf '%s' ${q(beatJson(beat))} > "$t" && mv -fT -- "$t" ${q(file)} || { rm -f -- "$t"; exit 1; }`,
          ].join("\n"),
          { timeoutMs: Math.max(1000, staleAfter / 2) },
          heartbeatExecutor,
        );
        if (result.code === TAKEN) lose(`was taken over by ${takenBy(result.stdout)}`);
        else if (result.code === NOT_OURS) lose("is no longer this deploy's: it was removed (`nodrop lock release`?) or replaced");
        else if (result.code === 0) lastBeat = performance.now();
      } catch {
        // A heartbeat that could not run (a dropped connection) is retried at the next one.
      }
      if (!stopped && performance.now() - lastBeat > staleAfter / 2) {
        lose(`could not be kept: no heartbeat got through for ${formatDuration(performance.now() - lastBeat)}, and other deploys take a lock over once its heartbeat stands still for ${formatDuration(staleAfter)}`);
      }
    };
    const lose = (what: string) => {
      stopped = true;
      if (!lost.signal.aborted) lost.abort(new NodropError("E_LOCK", `the deploy lock on ${executor.host} ${what}; stopping`));
    };
    const schedule = () => {
      if (stopped) return;
      timer = setTimeout(() => {
        inflight = beatOnce().finally(() => {
          inflight = undefined;
          schedule();
        });
      }, heartbeatMs);
      timer.unref();
    };
    schedule();
    const stop = async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await inflight;
    };
    return {
      holder,
      lost: lost.signal,
      async release() {
        await stop();
        if (lost.signal.aborted) throw new NodropError("E_LOCK", `${(lost.signal.reason as Error).message.replace(/; stopping$/, "")}; it was left to its holder`);
        const releasing = newHolder(holder.version, { releasing: true, tookOver: token });
        const taken = inLock(`taken-${token}`);
        const script = [
          recordOf(inLock(record)).trimEnd(),
          owned,
          `p=$(mktemp -d ${q(`${lockDir}/.release.`)}XXXXXXXXXX) || exit 1`,
          `if ! cat > "$p/holder.json"; then rm -rf -- "$p"; exit 1; fi`,
          `if ! e=$(mv -T -- "$p" ${q(taken)} 2>&1); then rm -rf -- "$p"; [ -e ${q(taken)} ] && { cat -- ${q(`${taken}/holder.json`)} 2>/dev/null; exit ${TAKEN}; }; echo "$e" >&2; exit 1; fi`,
          removeLock,
        ].join("\n");
        let result;
        try {
          result = await guarded(script, { input: recordJson(releasing) });
        } catch (error) {
          // The main session may be what failed; the heartbeat's is another connection.
          if (heartbeatExecutor === executor || (NodropError.is(error) && error.code === "E_STATE")) throw error;
          result = await guarded(script, { input: recordJson(releasing) }, heartbeatExecutor);
        }
        if (result.code === 0) return;
        if (result.code === TAKEN) throw new NodropError("E_LOCK", `the deploy lock on ${executor.host} was taken over by ${takenBy(result.stdout)} before this deploy released it; it was left to its new holder`);
        if (result.code === NOT_OURS) throw new NodropError("E_LOCK", `the deploy lock on ${executor.host} is no longer this deploy's (removed or replaced); nothing was released`);
        if (result.code === CLAIMED_NOT_REMOVED) {
          throw new NodropError("E_LOCK", `the deploy lock on ${executor.host} was marked as being released by this deploy but not removed: ${result.stderr.trim() || "mv failed"}`);
        }
        throw new NodropError("E_LOCK", `cannot release the deploy lock on ${executor.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
      },
    };
  }
}
