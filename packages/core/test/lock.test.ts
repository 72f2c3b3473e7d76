// The deploy lock against real bash on this machine (localExecutor): racing takers in separate
// processes, holders with skewed clocks, a heartbeat behind a saturated session, ownership after a
// takeover, and a lock that cannot be created for a reason of its own.
//
// NODROP_LOCK_MODULE=<file> runs the same tests against another build of deployLock (how these
// tests were shown to fail on the lock as it was before, in state.ts); the holder with a skewed
// clock is always this package's build, since only it can write a skewed clock.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type * as Core from "../src/index.js";

const BUILT = path.resolve(import.meta.dirname, "../dist/index.js");
const MODULE = process.env.NODROP_LOCK_MODULE ?? BUILT;
const core = (await import(MODULE)) as typeof Core;
const built = (await import(BUILT)) as typeof Core;
const { NodropError, localExecutor } = built;
type Executor = Core.Executor;

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "nodrop-lock-"));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

let dirs = 0;
const stateDir = async () => {
  const dir = path.join(tmp, `state-${++dirs}`);
  await mkdir(dir, { mode: 0o700 });
  return dir;
};

async function rejected(promise: Promise<unknown>): Promise<Core.NodropError> {
  try {
    await promise;
  } catch (error) {
    expect(NodropError.is(error), String(error)).toBe(true);
    return error as Core.NodropError;
  }
  throw new Error("expected a rejection, got none");
}

async function until(condition: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > end) throw new Error(`condition not met within ${ms}ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** An executor whose commands fail while `down` is set, as over a connection that hangs up. */
function switchable(inner: Executor): Executor & { down: boolean } {
  const e = {
    name: inner.name,
    host: inner.host,
    down: false,
    exec: (command: string, options?: Core.ExecOptions) =>
      e.down ? Promise.reject(new NodropError("E_SSH_DROPPED", "connection dropped (test)")) : inner.exec(command, options),
  };
  return e;
}

/** An executor that runs one command at a time, the rest queued: a session whose channels are all busy. */
function oneAtATime(inner: Executor): Executor {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    name: inner.name,
    host: inner.host,
    exec(command, options) {
      const run = tail.then(() => inner.exec(command, options));
      tail = run.catch(() => undefined);
      return run;
    },
  };
}

/** A pid of a process that has exited: a holder killed with -9 on this machine. */
async function deadPid(): Promise<number> {
  const child = spawn("true");
  await new Promise((r) => child.on("close", r));
  return child.pid!;
}

/** A lock as a deploy killed with -9 on this machine leaves it (the record format both nodrop versions read). */
async function plantDeadHolder(dir: string): Promise<void> {
  const lockDir = path.join(dir, "lock");
  await rm(lockDir, { recursive: true, force: true });
  await mkdir(lockDir, { mode: 0o700 });
  const at = new Date().toISOString();
  await writeFile(path.join(lockDir, "holder.json"), JSON.stringify({ who: "ghost", from: os.hostname(), version: "v0", since: at, heartbeat: at, pid: await deadPid() }), { mode: 0o600 });
}

// A deployer in a process of its own: on "go" it tries the lock once, on "release" it releases it.
const WORKER = `
import { createInterface } from "node:readline";
const { deployLock, localExecutor } = await import(process.argv[2]);
const lock = deployLock({ executor: localExecutor(), dir: process.argv[3], heartbeatMs: 60_000 });
let held;
for await (const line of createInterface({ input: process.stdin })) {
  if (line === "go") {
    try {
      held = await lock.acquire("v" + process.pid, 0);
      console.log(JSON.stringify({ won: true, pid: process.pid }));
    } catch (error) {
      held = undefined;
      console.log(JSON.stringify({ won: false, pid: process.pid, code: error.code, message: error.message }));
    }
  } else if (line === "release") {
    await held?.release().catch(() => undefined);
    held = undefined;
    console.log(JSON.stringify({ released: true }));
  }
}
`;

class Worker {
  private readonly lines: string[] = [];
  private waiting: ((line: string) => void) | undefined;
  readonly child: ChildProcess;
  constructor(child: ChildProcess) {
    this.child = child;
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(line);
      } else this.lines.push(line);
    });
  }
  send(line: string) {
    this.child.stdin!.write(`${line}\n`);
  }
  next(): Promise<Record<string, unknown>> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(JSON.parse(line) as Record<string, unknown>);
    return new Promise((resolve) => {
      this.waiting = (l) => resolve(JSON.parse(l) as Record<string, unknown>);
    });
  }
}

describe("deploy lock (real bash, local executor)", () => {
  it("5 deployers in separate processes race for one stale lock, 40 rounds: exactly one winner each round", async () => {
    const dir = await stateDir();
    const script = path.join(tmp, "lock-worker.mjs");
    await writeFile(script, WORKER);
    const workers = Array.from({ length: 5 }, () => new Worker(spawn(process.execPath, [script, MODULE, dir], { stdio: ["pipe", "pipe", "inherit"] })));
    const reader = built.deployLock({ executor: localExecutor(), dir });
    const rounds = 40;
    const winners: number[] = [];
    const otherErrors: string[] = [];
    try {
      for (let round = 0; round < rounds; round++) {
        await plantDeadHolder(dir);
        for (const w of workers) w.send("go");
        const results = await Promise.all(workers.map((w) => w.next()));
        const won = results.filter((r) => r.won === true);
        // A loser is told the lock is held (E_LOCK), nothing else; checked after all the rounds.
        for (const r of results) if (r.won !== true && r.code !== "E_LOCK") otherErrors.push(`round ${round}: ${String(r.code)} ${String(r.message)}`);
        winners.push(won.length);
        // The lock names the one winner, as `nodrop status` shows it.
        if (won.length === 1 && otherErrors.length === 0) expect((await reader.status())?.pid).toBe(won[0]!.pid);
        const releasing = workers.filter((_, i) => results[i]!.won === true);
        for (const w of releasing) w.send("release");
        await Promise.all(releasing.map((w) => w.next()));
      }
    } finally {
      for (const w of workers) w.child.kill();
    }
    const exactlyOne = winners.filter((n) => n === 1).length;
    console.log(`lock races: ${rounds} rounds, ${exactlyOne} with exactly one winner (winners per round: ${winners.join(" ")})`);
    expect(exactlyOne).toBe(rounds);
    expect(otherErrors).toEqual([]);
  }, 120_000);

  it("a holder whose clock is 10 minutes behind or ahead is not stale while its counter advances; once dead, stale only after staleAfter without an advance, on the reader's clock", async () => {
    for (const skew of [-600_000, 600_000]) {
      const dir = await stateDir();
      const heartbeat = switchable(localExecutor());
      const holder = built.deployLock({ executor: localExecutor(), heartbeatExecutor: heartbeat, dir, heartbeatMs: 100, now: () => Date.now() + skew });
      const held = await holder.acquire("v1");
      const reader = core.deployLock({ executor: localExecutor(), dir, staleAfterMs: 1000 });
      const seen = await reader.status();
      expect(Math.abs(Date.parse(seen!.heartbeat) - (Date.now() + skew))).toBeLessThan(60_000);

      // Watched for 2.5 times staleAfter: the counter advances, so the lock is held, whatever its clock says.
      const refused = await rejected(reader.acquire("v2", 2500));
      expect(refused.code).toBe("E_LOCK");
      expect(refused.message).toMatch(/held by .* deploying v1 since .*its heartbeat advanced while this deploy watched it for 2\.\d+s/);

      // The holder dies (its heartbeats stop): stale once the reader has seen no advance for 1 s.
      heartbeat.down = true;
      const started = performance.now();
      const taken = await reader.acquire("v2", 10_000);
      const waited = performance.now() - started;
      expect(waited).toBeGreaterThanOrEqual(1000 - 100 - 50); // the last advance was at most one heartbeat before
      expect(waited).toBeLessThan(4000);
      expect((await reader.status())?.version).toBe("v2");
      await held.release().catch(() => undefined);
      await taken.release();
      expect(await reader.status()).toBeUndefined();
    }
  }, 60_000);

  it("a heartbeat through its own session keeps advancing while the main session is saturated; no other deployer takes over", async () => {
    const dir = await stateDir();
    const main = oneAtATime(localExecutor());
    // A stale limit well above a loaded machine's spawn time: the holder gives up after half of it
    // without a heartbeat getting through, and this test is about the heartbeat getting through.
    const holder = core.deployLock({ executor: main, heartbeatExecutor: localExecutor(), dir, heartbeatMs: 100, staleAfterMs: 3000 });
    const held = await holder.acquire("v1");
    // The deploy's commands: 4 of 1.5 s each, queued behind each other on the main session.
    const busy = Promise.all(Array.from({ length: 4 }, () => main.exec("sleep 1.5")));
    const other = core.deployLock({ executor: localExecutor(), dir, staleAfterMs: 3000 });
    const first = await other.status();
    const refused = await rejected(other.acquire("v2", 5000));
    expect(refused.code).toBe("E_LOCK");
    const later = await other.status();
    expect(later?.version).toBe("v1");
    expect(later!.beat).toBeGreaterThan(first!.beat + 10);
    await busy;
    expect(held.lost.aborted).toBe(false);
    await held.release();
    expect(await other.status()).toBeUndefined();
  }, 30_000);

  it("a holder whose heartbeats keep failing gives the lock up (its `lost` fires) before others may judge it dead", async () => {
    const dir = await stateDir();
    const failing: Core.Executor = { name: "dead-heartbeat", host: "local", exec: async () => Promise.reject(new NodropError("E_SSH_DROPPED", "connection dropped")) };
    const holder = core.deployLock({ executor: localExecutor(), heartbeatExecutor: failing, dir, heartbeatMs: 50, staleAfterMs: 600 });
    const held = await holder.acquire("v2");
    const lost = await new Promise<unknown>((resolve) => held.lost.addEventListener("abort", () => resolve(held.lost.reason), { once: true }));
    expect(lost).toMatchObject({ code: "E_LOCK" });
    expect((lost as Error).message).toMatch(/could not be kept: no heartbeat got through/);
    // Having given it up, it does not release it either: it goes stale for the next deploy.
    await expect(held.release()).rejects.toMatchObject({ code: "E_LOCK" });
  });

  it("after a takeover the old holder's heartbeat and release leave the new holder's lock alone, and its `lost` signal fires", async () => {
    const dir = await stateDir();
    const heartbeat = switchable(localExecutor());
    const a = core.deployLock({ executor: localExecutor(), heartbeatExecutor: heartbeat, dir, heartbeatMs: 100, staleAfterMs: 800 });
    const heldA = await a.acquire("v1");
    heartbeat.down = true; // A lives on, but its heartbeats do not get through
    const b = core.deployLock({ executor: localExecutor(), dir, heartbeatMs: 100, staleAfterMs: 800 });
    const heldB = await b.acquire("v2", 5000);
    expect((await b.status())?.token).toBe(heldB.holder.token);

    heartbeat.down = false; // A's next heartbeat gets through and finds the lock taken
    await until(() => heldA.lost.aborted, 3000);
    const reason = heldA.lost.reason as Core.NodropError;
    expect(reason.code).toBe("E_LOCK");
    // A gives the lock up once no heartbeat got through for half the stale limit (usually before B
    // takes it over), or finds it taken at its next heartbeat: either way it stops.
    expect(reason.message).toMatch(/the deploy lock on local (was taken over by .+@.+ \(pid \d+, deploying v2\) at .+|could not be kept: no heartbeat got through for .+); stopping/);
    await new Promise((r) => setTimeout(r, 300));
    const now = await b.status();
    expect(now).toMatchObject({ token: heldB.holder.token, version: "v2", tookOver: heldA.holder.token });

    const refused = await rejected(heldA.release());
    expect(refused.message).toMatch(/taken over|could not be kept/);
    expect((await b.status())?.token).toBe(heldB.holder.token);
    // B still beats and releases its lock.
    const beat = (await b.status())!.beat;
    await new Promise((r) => setTimeout(r, 400));
    expect((await b.status())!.beat).toBeGreaterThan(beat);
    await heldB.release();
    expect(await b.status()).toBeUndefined();
  }, 30_000);

  it("a lock that cannot be created says why (no space left for its directory), not that another deploy holds it", async (context) => {
    // A tmpfs of 2 inodes in a mount namespace of the child's own: the state dir fits, the lock does not.
    const mountPoint = await mkdtemp(path.join(tmp, "full-"));
    const script = path.join(tmp, "acquire-once.mjs");
    await writeFile(
      script,
      `const { deployLock, localExecutor } = await import(process.argv[2]);
try { await deployLock({ executor: localExecutor(), dir: process.argv[3] }).acquire("v1", 1500); console.log(JSON.stringify({ ok: true })); }
catch (error) { console.log(JSON.stringify({ code: error.code, message: error.message })); }`,
    );
    const child = spawn(
      "unshare",
      ["-m", "--propagation", "private", "bash", "-c", 'mount -t tmpfs -o size=1m,nr_inodes=2 nodrop-lock-test "$1" && mkdir -m 700 "$1/state" && exec "$2" "$3" "$4" "$1/state"', "_", mountPoint, process.execPath, script, MODULE],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.on("close", r));
    if (code !== 0 && out === "") {
      context.skip(`cannot mount a tmpfs in a mount namespace here: ${err.trim()}`);
      return;
    }
    const result = JSON.parse(out) as { code?: string; message?: string };
    expect(result.code).toMatch(/^E_(STATE|LOCK)$/);
    expect(result.message).toContain("No space left on device");
    expect(result.message).not.toMatch(/held by/);
  }, 30_000);
});
