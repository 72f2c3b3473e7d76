// `pnpm bench`: deploys under the same load in several scenarios on real nginx, gunicorn and sshd,
// and writes what it measured to docs/bench.md and docs/bench.json. Numbers only come from here:
// tests assert counts and states, never timings.
import { execSync, spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { DeployReport } from "@nodrop/core";
import { type LoadStats, formatStats } from "@nodrop/loadgen";
import { startTestHosts } from "@nodrop/testhosts";
import { exampleDir, startFleet } from "./fleet.js";
import { deployUnderLoad, nodropBin } from "./under-load.js";

interface Scenario {
  name: string;
  hosts?: readonly string[];
  ports: readonly number[];
  strategy: Record<string, unknown>;
}

const scenarios: Scenario[] = [
  { name: "local 4 instances, rolling 1 at a time", ports: [8311, 8312, 8313, 8314], strategy: { name: "rolling", batchSize: 1 } },
  { name: "local 4 instances, half-split", ports: [8331, 8332, 8333, 8334], strategy: { name: "half-split" } },
  { name: "local 4 instances, sticky", ports: [8351, 8352, 8353, 8354], strategy: { name: "sticky" } },
  { name: "3 hosts x 4 instances over SSH, rolling batches of 3 across hosts", hosts: ["web1", "web2", "web3"], ports: [8321, 8322, 8323, 8324], strategy: { name: "rolling", batchSize: 3 } },
  { name: "3 hosts x 4 instances over SSH, half-split by host", hosts: ["web1", "web2", "web3"], ports: [8341, 8342, 8343, 8344], strategy: { name: "half-split", split: "by-host" } },
];

interface Result {
  scenario: string;
  requests: number;
  rps: number;
  failed: number;
  rawFailed: number;
  strictFailed: number;
  versionRegressions: number;
  lateOld: number;
  /** Instance changes per client (between consecutive successful responses), mean and max. */
  switchesMean: number;
  switchesMax: number;
  /** From the first response of the new version to the last of the old one (ms; negative: no overlap). */
  mixedMs: number | undefined;
  deployMs: number;
  /** Sum over instances of their own stop + update + start + check time. */
  instanceSumMs: number;
  /** Sum over batches of the slowest instance in the batch: the unavoidable time when a batch runs in parallel. */
  batchCriticalMs: number;
  drainMs: number;
  reloads: number;
  sshConnections: number | undefined;
  sshHosts: number | undefined;
}

function measure(name: string, report: DeployReport & { ssh?: { connections: number; hosts: number } }, stats: LoadStats): Result {
  const own = (i: DeployReport["instances"][number]) => i.steps.filter((s) => s.kind !== "route").reduce((sum, s) => sum + s.ms, 0);
  // Instances that moved in the same proxy change form a batch: group by the route that took them out.
  const batches = new Map<string, number>();
  report.instances.forEach((i) => {
    const key = report.routes.find((r) => r.why.includes(i.id))?.why ?? i.id;
    batches.set(key, Math.max(batches.get(key) ?? 0, own(i)));
  });
  return {
    scenario: name,
    requests: stats.requests,
    rps: Math.round(stats.rps),
    failed: stats.failed,
    rawFailed: stats.rawFailed,
    strictFailed: stats.strictFailed,
    versionRegressions: stats.versionRegressions,
    lateOld: stats.lateOld,
    switchesMean: Number((stats.switchesPerClient.reduce((a, b) => a + b, 0) / Math.max(1, stats.switchesPerClient.length)).toFixed(1)),
    switchesMax: Math.max(0, ...stats.switchesPerClient),
    mixedMs: stats.firstNewAt !== undefined && stats.lastOldAt !== undefined ? Math.round(stats.lastOldAt - stats.firstNewAt) : undefined,
    deployMs: Math.round(report.durationMs),
    instanceSumMs: Math.round(report.instances.reduce((sum, i) => sum + own(i), 0)),
    batchCriticalMs: Math.round([...batches.values()].reduce((a, b) => a + b, 0)),
    drainMs: Math.round(report.routes.reduce((sum, r) => sum + r.drainMs, 0)),
    reloads: report.routes.length,
    sshConnections: report.ssh?.connections,
    sshHosts: report.ssh?.hosts,
  };
}

const { values } = parseArgs({ options: { only: { type: "string" }, clients: { type: "string", default: "48" } } });
// Every client has its own cookie jar and its own loopback source address (address affinity is real).
const addresses = Array.from({ length: Number(values.clients) }, (_, i) => `127.0.${10 + Math.floor(i / 250)}.${(i % 250) + 1}`);
const results: Result[] = [];
for (const scenario of scenarios) {
  if (values.only && !scenario.name.includes(values.only)) continue;
  console.log(`\n== ${scenario.name}`);
  const hosts = scenario.hosts ? await startTestHosts({ names: scenario.hosts }) : undefined;
  const fleet = await startFleet({ ports: scenario.ports, proxyPort: 18301, strategy: scenario.strategy, ...(hosts ? { hosts } : {}) });
  try {
    const run = await deployUnderLoad({ fleet, version: "v2", load: { clients: Number(values.clients), seed: 7, localAddresses: addresses } });
    if (!run.report) throw new Error(`no report: ${run.cli.stderr}`);
    const result = measure(scenario.name, run.report, run.stats);
    results.push(result);
    console.log(formatStats(run.stats));
    console.log(
      `deploy ${(result.deployMs / 1000).toFixed(1)}s; instances' own time: sum ${(result.instanceSumMs / 1000).toFixed(1)}s (ratio ${(result.deployMs / result.instanceSumMs).toFixed(2)}), per-batch critical path ${(result.batchCriticalMs / 1000).toFixed(1)}s (ratio ${(result.deployMs / result.batchCriticalMs).toFixed(2)}); ${result.reloads} reloads, drains ${(result.drainMs / 1000).toFixed(1)}s` +
        (result.sshConnections === undefined ? "" : `; SSH connections ${result.sshConnections} for ${result.sshHosts} hosts`),
    );
  } finally {
    await fleet.stop();
    await hosts?.stop();
  }
}

/** Median time (ms) from spawning `node file args` to its first line of output. */
async function firstLine(file: string, args: string[], env: Record<string, string> = {}): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    times.push(
      await new Promise<number>((resolve, reject) => {
        const t0 = performance.now();
        const child = spawn(process.execPath, [file, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
        const done = () => {
          resolve(performance.now() - t0);
          child.kill();
        };
        child.stdout.once("data", done);
        child.stderr.once("data", done);
        child.on("error", reject);
      }),
    );
  }
  return times.sort((a, b) => a - b)[2]!;
}

const repo = path.resolve(exampleDir, "..", "..");
const cliStart = await firstLine(nodropBin, ["--version"]);
// The action with a config that does not exist: it starts, reads its inputs and prints its first line.
const actionStart = await firstLine(path.join(repo, "actions", "deploy", "dist", "index.js"), [], { "INPUT_CONFIG": "/nonexistent/nodrop.yaml", "INPUT_DRY-RUN": "true" });
console.log(`\nstart-up (median of 5): nodrop --version ${Math.round(cliStart)} ms; action bundle first line ${Math.round(actionStart)} ms`);

const versionOf = (command: string) => {
  try {
    return execSync(`${command} 2>&1`).toString().trim().split("\n")[0]!;
  } catch {
    return `${command}: not found`;
  }
};
const machine = `${versionOf("nginx -v").replace("nginx version: ", "")}, gunicorn ${versionOf("gunicorn --version").replace(/^gunicorn \(version (.*)\)$/, "$1")}; ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`;
const table = [
  "| scenario | requests | req/s | failed | without resend | Go rule | regressions | late old | instance switches per client (mean / max) | first new → last old | deploy | instances' own time (sum) | per-batch critical path | deploy / critical path | reloads | drains | SSH connections |",
  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ...results.map(
    (r) =>
      `| ${r.scenario} | ${r.requests} | ${r.rps} | ${r.failed} | ${r.rawFailed} | ${r.strictFailed} | ${r.versionRegressions} | ${r.lateOld} | ${r.switchesMean} / ${r.switchesMax} | ${r.mixedMs === undefined ? "-" : `${(r.mixedMs / 1000).toFixed(2)} s`} | ${(r.deployMs / 1000).toFixed(1)} s | ${(r.instanceSumMs / 1000).toFixed(1)} s | ${(r.batchCriticalMs / 1000).toFixed(1)} s | ${(r.deployMs / r.batchCriticalMs).toFixed(2)} | ${r.reloads} | ${(r.drainMs / 1000).toFixed(1)} s | ${r.sshConnections === undefined ? "-" : `${r.sshConnections} (${r.sshHosts} hosts)`} |`,
  ),
].join("\n");
const docs = path.resolve(exampleDir, "..", "..", "docs");
if (!values.only) {
  await writeFile(path.join(docs, "bench.md"), `# Benchmark\n\nMeasured by \`pnpm bench\` on ${new Date().toISOString().slice(0, 10)}: ${machine}.\n\nStart-up (median of 5 runs to the first line of output): \`nodrop --version\` ${Math.round(cliStart)} ms; the GitHub Action bundle ${Math.round(actionStart)} ms.\n\nLoad: ${values.clients} keep-alive clients, each with its own cookie jar and loopback source address; 10% POST, 10% slow requests of 500 ms. "failed" counts what users see (a request on a reused keep-alive connection closed before any answer byte is resent once, as browsers do); "without resend" and "Go rule" (resends GETs only) show the same run counted stricter. "regressions": a client got an older version after a newer one. "late old": a request started after the first new-version answer and answered by the old version. "instances' own time": the sum of every instance's stop, update, start and check; "per-batch critical path": the sum over batches of the slowest instance in the batch.\n\n${table}\n`);
  await writeFile(path.join(docs, "bench.json"), `${JSON.stringify({ machine, date: new Date().toISOString(), results }, null, 2)}\n`);
}
console.log(`\n${table}`);
