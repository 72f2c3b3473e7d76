import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import type { DeployReport } from "@nodrop/core";
import { type LoadOptions, type LoadStats, type RequestRecord, startLoad } from "@nodrop/loadgen";
import { sleep } from "@nodrop/core";
import type { Fleet } from "./fleet.js";

const require = createRequire(import.meta.url);
/** The `nodrop` bin, run as a separate process the way a user runs it. */
export const nodropBin = path.join(path.dirname(require.resolve("@nodrop/cli/package.json")), "dist", "bin.js");

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  /** Peak resident memory of the process, when measured. */
  peakRssKb?: number;
}

export interface RunOptions {
  /** Sees stderr (progress) as it comes. */
  onStderr?: (text: string) => void;
  signalAfterMs?: { signal: NodeJS.Signals; ms: number };
  /** Reports the process's peak resident memory (from getrusage, at exit) in `peakRssKb`. */
  measureMemory?: boolean;
}

/** Runs `nodrop ARGS`, a separate process the way a user runs it. */
export function runNodrop(args: readonly string[], options: RunOptions = {}): Promise<CliRun> {
  return runProcess(process.execPath, [nodropBin, ...args], options);
}

// Writes the process's own peak RSS to fd 3 as it exits: exact (getrusage), and nothing in nodrop changes.
const PEAK_RSS_PRELOAD = `data:text/javascript,${encodeURIComponent('process.on("exit", () => { try { process.getBuiltinModule("node:fs").writeSync(3, String(process.resourceUsage().maxRSS)); } catch {} });')}`;

/** Runs a command; with measureMemory (node processes only) its peak RSS comes back too. */
export function runProcess(command: string, args: readonly string[], options: RunOptions = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const nodeArgs = options.measureMemory ? ["--import", PEAK_RSS_PRELOAD] : [];
    // fd 3 carries the peak-memory figure when measured; "ignore" keeps it closed otherwise.
    const child = spawn(command, [...nodeArgs, ...args], { stdio: ["ignore", "pipe", "pipe", options.measureMemory ? "pipe" : "ignore"] });
    let peak = "";
    (child.stdio[3] as NodeJS.ReadableStream | undefined)?.on("data", (d: Buffer) => (peak += d.toString()));
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => {
      stderr += d.toString();
      options.onStderr?.(d.toString());
    });
    const timer = options.signalAfterMs ? setTimeout(() => child.kill(options.signalAfterMs!.signal), options.signalAfterMs.ms) : undefined;
    child.on("error", reject);
    child.on("close", (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr, ...(peak ? { peakRssKb: Number(peak) } : {}) });
    });
  });
}

export interface DeployUnderLoadOptions {
  fleet: Fleet;
  version: string;
  strategy?: string;
  /** More arguments for `nodrop deploy` (e.g. --artifact FILE). */
  args?: readonly string[];
  /** Load settings; url comes from the fleet. */
  load?: Partial<Omit<LoadOptions, "url">>;
  /** Load before the deploy starts (default 1500 ms). */
  warmupMs?: number;
  /** Load after the deploy ends (default 1500 ms). */
  cooldownMs?: number;
  /** Keep the load going after the deploy until this many requests were made (bounded by 60 s more). */
  minRequests?: number;
  onStderr?: (text: string) => void;
  /** Measure the deploying process's peak memory. */
  measureMemory?: boolean;
  /** Deploys some other way than `nodrop deploy` (the benchmark's naive baselines). */
  deployer?: (options: RunOptions) => Promise<CliRun>;
}

export interface DeployUnderLoadResult {
  cli: CliRun;
  /** The deploy's JSON report, when the CLI printed one. */
  report: DeployReport | undefined;
  stats: LoadStats;
  records: RequestRecord[];
  /** performance.now() when the load started: time 0 of the records, for putting other samples on their clock. */
  loadStart: number;
  /** When the deploy ran, in ms since the load started (the records' clock). */
  deployStartMs: number;
  deployEndMs: number;
  /** Each line the deploying process wrote to stderr, with when it arrived (ms since the load started). */
  stderrLines: { atMs: number; text: string }[];
}

/** Runs `nodrop deploy --json` against the fleet while the load generator sends traffic through nginx. */
export async function deployUnderLoad(options: DeployUnderLoadOptions): Promise<DeployUnderLoadResult> {
  const load = startLoad({
    url: options.fleet.url,
    clients: 24,
    postRatio: 0.1,
    slowRatio: 0.1,
    slowMs: 500,
    durationMs: 180_000,
    ...options.load,
  });
  // The load generator's clock starts with startLoad: records are in ms since then.
  const loadStart = performance.now();
  const stderrLines: { atMs: number; text: string }[] = [];
  let partial = "";
  const onStderr = (text: string) => {
    options.onStderr?.(text);
    const lines = (partial + text).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) stderrLines.push({ atMs: performance.now() - loadStart, text: line });
  };
  try {
    await sleep(options.warmupMs ?? 1500);
    const args = ["deploy", "--config", options.fleet.configFile, "--version", options.version, "--json"];
    if (options.strategy) args.push("--strategy", options.strategy);
    if (options.args) args.push(...options.args);
    const deployStartMs = performance.now() - loadStart;
    const runOptions: RunOptions = { onStderr, ...(options.measureMemory ? { measureMemory: true } : {}) };
    const cli = await (options.deployer ? options.deployer(runOptions) : runNodrop(args, runOptions));
    const deployEndMs = performance.now() - loadStart;
    await sleep(options.cooldownMs ?? 1500);
    const until = performance.now() + 60_000;
    while (options.minRequests && load.completed() < options.minRequests && performance.now() < until) await sleep(100);
    load.stop();
    const { stats, records } = await load.done;
    let report: DeployReport | undefined;
    try {
      report = JSON.parse(cli.stdout) as DeployReport;
    } catch {
      report = undefined;
    }
    return { cli, report, stats, records, loadStart, deployStartMs, deployEndMs, stderrLines };
  } finally {
    load.stop();
  }
}
