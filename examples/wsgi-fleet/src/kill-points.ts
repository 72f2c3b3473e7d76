// Helpers of the kill-point suite (test/kill-points.test.ts): a deploy killed with -9 right after
// its journal's k-th record, the orphaned commands it leaves behind, and a settled fleet to check
// `nodrop status` against.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, fstatSync, openSync, readSync, watch } from "node:fs";
import { readFile, readdir, stat } from "node:fs/promises";
import path from "node:path";
import type { JournalRecord } from "@nodrop/core";
import { parseJournal, sleep } from "@nodrop/core";
import type { Fleet } from "./fleet.js";
import { instanceVersion } from "./fleet.js";
import { type CliRun, nodropBin } from "./under-load.js";

/** The environment variable that marks every process a killed deploy started (its orphans inherit it). */
export const KILL_POINT_TAG = "NODROP_KILL_POINT_TAG";

/** The fleet's journal, on the proxy host (this machine): `<stateDir>/journal.jsonl`. */
export function journalFile(fleet: Fleet): string {
  return path.join(fleet.dir, "state", "journal.jsonl");
}

/** The journal's records, whole lines only (a line cut short is left out, as `lastDeploy` does). */
export async function readJournal(fleet: Fleet): Promise<JournalRecord[]> {
  return parseJournal(await readFile(journalFile(fleet), "utf8").catch(() => ""));
}

/** The records of the journal's last deploy (from its "deploy" record on). */
export function lastDeployRecords(records: readonly JournalRecord[]): JournalRecord[] {
  const start = records.findLastIndex((r) => r.type === "deploy");
  if (start < 0) return [];
  const id = records[start]!.id;
  return records.slice(start).filter((r) => r.id === id);
}

/** A record as the kill-point tables show it, `step batch 1/2: stop web-8511 ok`: the same for the same boundary of two deploys (no id, time or version). */
export function describeRecord(r: JournalRecord): string {
  if (r.type === "step") return `step ${r.phase}: ${r.kind}${r.instance ? ` ${r.instance}` : ""} ${r.status}`;
  if (r.type === "end") return `end ${r.ok ? "ok" : "failed"}`;
  return "deploy";
}

/** The record's kind for coverage: `deploy`, `route start`, `stop ok`, ..., `end`. */
export function recordKind(r: JournalRecord): string {
  if (r.type === "step") return `${r.kind} ${r.status}`;
  return r.type;
}

/** What `nodrop status` shows as the last step, for a step record (as `lastDeploy()` words it). */
export function lastStepText(r: JournalRecord | undefined): string | undefined {
  if (!r || r.type !== "step") return undefined;
  return `${r.phase}: ${r.kind}${r.instance ? ` ${r.instance}` : ""} (${r.status})`;
}

export interface KilledDeploy {
  /** Records the journal had when the kill was sent (counted from the deploy's own first record). */
  recordsAtKill: number;
  /** Records the killed deploy wrote in all (read after it died). */
  records: JournalRecord[];
  /** Milliseconds from the k-th record's time stamp (taken as the engine wrote it) to the kill being sent. */
  killLagMs: number;
  /** The signal the process died of (SIGKILL), or its exit code when it ended before the kill. */
  exit: { code: number | null; signal: NodeJS.Signals | null };
  stdout: string;
  stderr: string;
}

/**
 * Starts `nodrop deploy --version V` as a child process and sends it SIGKILL as soon as the journal
 * has `k` records of this deploy (or, with `at`, as soon as it has the record `describeRecord` words so). The file is watched (fs.watch) and polled every 5 ms besides; the
 * count and the kill happen synchronously in the same callback. That is the granularity an external
 * kill has: the kill lands within a few milliseconds after record k, so when the engine writes the
 * next record less than that after it (a step's "ok" and the next step's "start" are often under a
 * millisecond apart), the process may die after record k+1. `recordsAtKill` says what the watcher
 * saw, `records` what the journal really holds; the suite reports both.
 * Resolves once the process has exited and been reaped (a zombie's pid still answers kill -0, which
 * would keep its lock from looking stale).
 */
export async function deployKilledAt(fleet: Fleet, options: { version: string; k: number; tag: string; timeoutMs?: number; at?: string }): Promise<KilledDeploy> {
  const file = journalFile(fleet);
  const offset = await stat(file).then((s) => s.size, () => 0);
  const fd = openSync(file, "a+");
  let seen = offset;
  let lines = 0;
  let partial = "";
  let reached = false;
  let recordsAtKill = -1;
  let killedAt = 0;
  const buffer = Buffer.alloc(64 * 1024);
  let child: ChildProcess | undefined;
  const check = () => {
    if (recordsAtKill >= 0 || !child || child.exitCode !== null) return;
    const size = fstatSync(fd).size;
    if (size <= seen) return;
    while (seen < size) {
      const n = readSync(fd, buffer, 0, Math.min(buffer.length, size - seen), seen);
      if (n <= 0) break;
      for (let i = 0; i < n; i++) if (buffer[i] === 0x0a) lines++;
      // With `at`, the record itself is looked for: concurrent steps (surge's pipeline) may write their records in either order.
      if (options.at !== undefined) {
        const text = partial + buffer.toString("utf8", 0, n);
        const whole = text.split("\n");
        partial = whole.pop() ?? "";
        reached ||= parseJournal(whole.join("\n")).some((r) => describeRecord(r) === options.at);
      }
      seen += n;
    }
    if (options.at !== undefined ? reached : lines >= options.k) {
      child.kill("SIGKILL");
      killedAt = Date.now();
      recordsAtKill = lines;
    }
  };
  const watcher = watch(file, check);
  const poll = setInterval(check, 5);
  try {
    const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve, reject) => {
      child = spawn(process.execPath, [nodropBin, "deploy", "--config", fleet.configFile, "--version", options.version], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, [KILL_POINT_TAG]: options.tag },
      });
      let stdout = "";
      let stderr = "";
      child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child!.kill("SIGKILL"), options.timeoutMs ?? 120_000);
      child.on("error", reject);
      // "exit" comes after the process has been reaped.
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        check();
        resolve({ code, signal, stdout, stderr });
      });
    });
    const records = lastDeployRecords(await readJournal(fleet));
    return {
      recordsAtKill,
      records,
      killLagMs: killLag(records, recordsAtKill >= 0 ? (options.at === undefined ? options.k : recordsAtKill) : -1, killedAt),
      exit: { code: result.code, signal: result.signal },
      stdout: result.stdout,
      stderr: result.stderr,
    };
  } finally {
    watcher.close();
    clearInterval(poll);
    closeSync(fd);
  }
}

/** From the time stamp of the `n`-th record (1-based) to the kill; NaN when there was no kill. */
function killLag(records: readonly JournalRecord[], n: number, killedAt: number): number {
  const record = n > 0 ? records[n - 1] : undefined;
  return record ? killedAt - Date.parse(record.at) : Number.NaN;
}

/** Processes (pid and command line) that carry `tag` in their environment, but not the app servers they started. */
export async function taggedProcesses(tag: string): Promise<{ pid: number; cmd: string }[]> {
  const found: { pid: number; cmd: string }[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environ = await readFile(`/proc/${entry}/environ`, "utf8");
      if (!environ.split("\0").includes(`${KILL_POINT_TAG}=${tag}`)) continue;
      const cmd = (await readFile(`/proc/${entry}/cmdline`, "utf8")).replaceAll("\0", " ").trim();
      // gunicorn, started by an orphaned `start`, keeps the variable for as long as it serves.
      if (/gunicorn/.test(cmd)) continue;
      found.push({ pid: Number(entry), cmd });
    } catch {
      // gone, or not ours
    }
  }
  return found;
}

/**
 * Waits until the killed deploy's orphans have ended: the local executor runs each command in a
 * process group of its own, so a `stop`, `update` or nginx command under way when the CLI is killed
 * runs on to its end. Returns what was found still running right after the kill.
 */
export async function waitForOrphans(tag: string, timeoutMs = 60_000): Promise<{ orphans: string[]; ms: number }> {
  const started = performance.now();
  const first = await taggedProcesses(tag);
  for (let left = first; left.length > 0; left = await taggedProcesses(tag)) {
    if (performance.now() - started > timeoutMs) throw new Error(`orphans of the killed deploy still running after ${timeoutMs} ms: ${left.map((p) => `${p.pid} ${p.cmd}`).join("; ")}`);
    await sleep(20);
  }
  return { orphans: first.map((p) => p.cmd.slice(0, 160)), ms: performance.now() - started };
}

/** Whether the gunicorn master of the instance on `port` is alive (its pid file names a live process). */
async function gunicornAlive(fleet: Fleet, port: number): Promise<boolean> {
  try {
    const pid = Number((await readFile(path.join(fleet.dir, "instances", String(port), "gunicorn.pid"), "utf8")).trim());
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits until every instance is in a state that will last: it answers /health, or it has no live
 * gunicorn (a gunicorn started by an orphaned `start` may still be loading the app). Returns each
 * instance's version ("down" when it does not answer), by port.
 */
export async function waitSettled(fleet: Fleet, timeoutMs = 30_000): Promise<Record<string, string>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const versions = await fleet.versions();
    const starting = [];
    for (const i of fleet.instances) if (versions[String(i.port)] === "down" && (await gunicornAlive(fleet, i.port))) starting.push(i.port);
    if (starting.length === 0) return versions;
    if (performance.now() > deadline) throw new Error(`instances ${starting.join(", ")} have a live gunicorn that does not answer after ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** Each instance's version probed directly, by port. */
export async function probeVersions(fleet: Fleet): Promise<Record<string, string>> {
  return Object.fromEntries(await Promise.all(fleet.instances.map(async (i) => [String(i.port), await instanceVersion(i)] as const)));
}

/** Runs `nodrop ARGS` with a time limit (a hung recovery fails the point instead of the whole run). */
export function runNodropWithin(args: readonly string[], timeoutMs = 120_000): Promise<CliRun & { timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [nodropBin, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr, timedOut });
    });
  });
}
