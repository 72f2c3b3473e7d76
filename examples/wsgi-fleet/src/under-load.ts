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
}

/** Runs `nodrop ARGS`; `onStderr` sees progress as it comes. */
export function runNodrop(args: readonly string[], options: { onStderr?: (text: string) => void; signalAfterMs?: { signal: NodeJS.Signals; ms: number } } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [nodropBin, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      options.onStderr?.(d.toString());
    });
    const timer = options.signalAfterMs ? setTimeout(() => child.kill(options.signalAfterMs!.signal), options.signalAfterMs.ms) : undefined;
    child.on("error", reject);
    child.on("close", (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

export interface DeployUnderLoadOptions {
  fleet: Fleet;
  version: string;
  strategy?: string;
  /** Load settings; url comes from the fleet. */
  load?: Partial<Omit<LoadOptions, "url">>;
  /** Load before the deploy starts (default 1500 ms). */
  warmupMs?: number;
  /** Load after the deploy ends (default 1500 ms). */
  cooldownMs?: number;
  /** Keep the load going after the deploy until this many requests were made (bounded by 60 s more). */
  minRequests?: number;
  onStderr?: (text: string) => void;
}

export interface DeployUnderLoadResult {
  cli: CliRun;
  /** The deploy's JSON report, when the CLI printed one. */
  report: DeployReport | undefined;
  stats: LoadStats;
  records: RequestRecord[];
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
  try {
    await sleep(options.warmupMs ?? 1500);
    const args = ["deploy", "--config", options.fleet.configFile, "--version", options.version, "--json"];
    if (options.strategy) args.push("--strategy", options.strategy);
    const cli = await runNodrop(args, { onStderr: options.onStderr });
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
    return { cli, report, stats, records };
  } finally {
    load.stop();
  }
}
