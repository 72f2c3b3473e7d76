// `pnpm bench`: deploys under the same load in several scenarios on real nginx, gunicorn and sshd,
// nodrop's strategies next to the two usual hand-rolled ways, and writes what it measured to
// docs/bench.md, docs/bench.json, one SVG timeline per scenario (docs/bench/) and README's table.
// Numbers only come from here: tests assert counts and states, never timings.
import { execSync, spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { DeployReport } from "@nodrop/core";
import { formatStats } from "@nodrop/loadgen";
import { startTestHosts } from "@nodrop/testhosts";
import { exampleDir, startFleet } from "./fleet.js";
import { timelineSvg } from "./timeline.js";
import { type DeployUnderLoadResult, deployUnderLoad, nodropBin, runProcess } from "./under-load.js";

type Baseline = "stop-all-switch-start-all" | "kill-one-at-a-time";

interface Scenario {
  name: string;
  /** File name of its chart. */
  slug: string;
  hosts?: readonly string[];
  ports: readonly number[];
  strategy?: Record<string, unknown>;
  /** A plain script instead of nodrop (examples/wsgi-fleet/baselines/<name>.sh). */
  baseline?: Baseline;
}

const webHosts = (n: number) => Array.from({ length: n }, (_, i) => `web${i + 1}`);
const scenarios: Scenario[] = [
  { name: "baseline: stop all, switch, start all (script)", slug: "baseline-stop-all", ports: [8361, 8362, 8363, 8364], baseline: "stop-all-switch-start-all" },
  { name: "baseline: kill one at a time, nginx routes around it (script)", slug: "baseline-kill-one", ports: [8371, 8372, 8373, 8374], baseline: "kill-one-at-a-time" },
  { name: "local 4 instances, rolling 1 at a time", slug: "rolling", ports: [8311, 8312, 8313, 8314], strategy: { name: "rolling", batchSize: 1 } },
  { name: "local 4 instances, half-split", slug: "half-split", ports: [8331, 8332, 8333, 8334], strategy: { name: "half-split" } },
  { name: "local 4 instances, sticky", slug: "sticky", ports: [8351, 8352, 8353, 8354], strategy: { name: "sticky" } },
  { name: "3 hosts x 4 instances over SSH, rolling batches of 3 across hosts", slug: "ssh-rolling", hosts: webHosts(3), ports: [8321, 8322, 8323, 8324], strategy: { name: "rolling", batchSize: 3 } },
  { name: "3 hosts x 4 instances over SSH, half-split by host", slug: "ssh-half-split", hosts: webHosts(3), ports: [8341, 8342, 8343, 8344], strategy: { name: "half-split", split: "by-host" } },
  { name: "16 hosts x 4 instances over SSH, rolling 25% at a time", slug: "scale-64", hosts: webHosts(16), ports: [8391, 8392, 8393, 8394], strategy: { name: "rolling", batchSize: "25%" } },
];

interface Result {
  scenario: string;
  slug: string;
  tool: "nodrop" | "script";
  /** The deploy's own exit code (a baseline that loses requests still "succeeds"). */
  exitCode: number;
  requests: number;
  rps: number;
  failed: number;
  rawFailed: number;
  strictFailed: number;
  /** Seconds (in 250 ms slots) in which at least one request failed: an outage's length, whatever the request rate. */
  failingSeconds: number;
  versionRegressions: number;
  lateOld: number;
  /** Instance changes per client (between consecutive successful responses), mean and max. */
  switchesMean: number;
  switchesMax: number;
  /** From the first response of the new version to the last of the old one (ms; negative: no overlap). */
  mixedMs: number | undefined;
  deployMs: number;
  /** nodrop only: sum over instances of their own stop + update + start + check time. */
  instanceSumMs: number | undefined;
  /** nodrop only: sum over batches of the slowest instance in the batch (what a batch cannot go below). */
  batchCriticalMs: number | undefined;
  /** nodrop only: time waiting for in-flight requests at the old proxy routing (summed over reloads). */
  drainMs: number | undefined;
  batches: number | undefined;
  /** nodrop only: from the start to the first phase (proxy check, hosts reached, every instance probed, the plan). */
  preflightMs: number | undefined;
  /** nodrop only: (deploy - preflight - critical path - drains) / batches: what nodrop itself adds per batch. */
  overheadPerBatchMs: number | undefined;
  reloads: number | undefined;
  sshConnections: number | undefined;
  sshHosts: number | undefined;
  /** Peak resident memory of the deploying process (nodrop's, or bash's for a script). */
  peakRssMb: number | undefined;
  chart: string;
}

function measure(scenario: Scenario, run: DeployUnderLoadResult, report: (DeployReport & { ssh?: { connections: number; hosts: number } }) | undefined): Result {
  const { stats } = run;
  const deployMs = Math.round(report?.durationMs ?? run.deployEndMs - run.deployStartMs);
  let nodrop: Pick<Result, "instanceSumMs" | "batchCriticalMs" | "drainMs" | "batches" | "preflightMs" | "overheadPerBatchMs" | "reloads"> = {
    instanceSumMs: undefined,
    batchCriticalMs: undefined,
    drainMs: undefined,
    batches: undefined,
    preflightMs: undefined,
    overheadPerBatchMs: undefined,
    reloads: undefined,
  };
  if (report) {
    const own = (i: DeployReport["instances"][number]) => i.steps.filter((s) => s.kind !== "route").reduce((sum, s) => sum + s.ms, 0);
    // Instances that moved in the same proxy change form a batch: group by the route that took them out.
    const batches = new Map<string, number>();
    for (const i of report.instances) {
      const key = report.routes.find((r) => r.why.includes(i.id))?.why ?? i.id;
      batches.set(key, Math.max(batches.get(key) ?? 0, own(i)));
    }
    const critical = [...batches.values()].reduce((a, b) => a + b, 0);
    const drain = report.routes.reduce((sum, r) => sum + r.drainMs, 0);
    const preflight = report.phases[0]?.startMs ?? 0;
    nodrop = {
      instanceSumMs: Math.round(report.instances.reduce((sum, i) => sum + own(i), 0)),
      batchCriticalMs: Math.round(critical),
      drainMs: Math.round(drain),
      batches: batches.size,
      preflightMs: Math.round(preflight),
      overheadPerBatchMs: Math.round((report.durationMs - preflight - critical - drain) / batches.size),
      reloads: report.routes.length,
    };
  }
  return {
    scenario: scenario.name,
    slug: scenario.slug,
    tool: scenario.baseline ? "script" : "nodrop",
    exitCode: run.cli.code,
    requests: stats.requests,
    rps: Math.round(stats.rps),
    failed: stats.failed,
    rawFailed: stats.rawFailed,
    strictFailed: stats.strictFailed,
    failingSeconds: new Set(run.records.filter((r) => r.error !== undefined || r.status < 200 || r.status > 299).map((r) => Math.floor(r.end / 250))).size / 4,
    versionRegressions: stats.versionRegressions,
    lateOld: stats.lateOld,
    switchesMean: Number((stats.switchesPerClient.reduce((a, b) => a + b, 0) / Math.max(1, stats.switchesPerClient.length)).toFixed(1)),
    switchesMax: Math.max(0, ...stats.switchesPerClient),
    mixedMs: stats.firstNewAt !== undefined && stats.lastOldAt !== undefined ? Math.round(stats.lastOldAt - stats.firstNewAt) : undefined,
    deployMs,
    ...nodrop,
    sshConnections: report?.ssh?.connections,
    sshHosts: report?.ssh?.hosts,
    peakRssMb: run.cli.peakRssKb === undefined ? undefined : Math.round(run.cli.peakRssKb / 1024),
    chart: `bench/${scenario.slug}.svg`,
  };
}

/** The deploy's phases on the load's clock: nodrop's from its report, a script's from its step lines. */
function phasesOf(run: DeployUnderLoadResult, report: DeployReport | undefined, loadStartedAt: number) {
  if (report && report.phases.length > 0) {
    const engineStart = Date.parse(report.startedAt) - loadStartedAt;
    const first = report.phases[0]!;
    return [
      { name: "preflight", startMs: engineStart, endMs: engineStart + first.startMs },
      ...report.phases.map((p) => ({ name: p.name, startMs: engineStart + p.startMs, endMs: engineStart + p.startMs + p.ms })),
    ];
  }
  const lines = run.stderrLines.filter((l) => l.text.trim() !== "");
  return lines.map((l, i) => ({ name: l.text.trim().slice(0, 40), startMs: l.atMs, endMs: lines[i + 1]?.atMs ?? run.deployEndMs }));
}

const { values } = parseArgs({ options: { only: { type: "string" }, clients: { type: "string", default: "48" } } });
// Every client has its own cookie jar and its own loopback source address (address affinity is real).
const addresses = Array.from({ length: Number(values.clients) }, (_, i) => `127.0.${10 + Math.floor(i / 250)}.${(i % 250) + 1}`);
const repo = path.resolve(exampleDir, "..", "..");
const docs = path.join(repo, "docs");
await mkdir(path.join(docs, "bench"), { recursive: true });
const benchStarted = performance.now();
const results: Result[] = [];
for (const scenario of scenarios) {
  if (values.only && !scenario.name.includes(values.only) && scenario.slug !== values.only) continue;
  console.log(`\n== ${scenario.name}`);
  const t0 = performance.now();
  const hosts = scenario.hosts ? await startTestHosts({ names: scenario.hosts }) : undefined;
  const fleet = await startFleet({ ports: scenario.ports, proxyPort: 18301, strategy: scenario.strategy ?? { name: "rolling" }, ...(hosts ? { hosts } : {}) });
  console.log(`fleet of ${fleet.instances.length} instances up in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
  try {
    const loadStartedAt = Date.now();
    const script = scenario.baseline ? path.join(exampleDir, "baselines", `${scenario.baseline}.sh`) : undefined;
    const run = await deployUnderLoad({
      fleet,
      version: "v2",
      load: { clients: Number(values.clients), seed: 7, localAddresses: addresses },
      measureMemory: !script,
      ...(script ? { deployer: (options) => runProcess("bash", [script, fleet.dir, "v2", ...fleet.ports.map(String)], options) } : {}),
    });
    const report = script ? undefined : run.report;
    if (!script && !report) throw new Error(`no report: ${run.cli.stderr}`);
    const result = measure(scenario, run, report);
    results.push(result);
    const svg = timelineSvg({ title: `${scenario.name}: ${result.failed} failed of ${result.requests}, ${result.versionRegressions} regressions`, records: run.records, phases: phasesOf(run, report, loadStartedAt) });
    await writeFile(path.join(docs, result.chart), svg);
    // The raw report and load stats, for looking into a number (not committed: they are large).
    await writeFile(path.join(os.tmpdir(), `nodrop-bench-${scenario.slug}.json`), JSON.stringify({ report, stats: run.stats, stderr: run.stderrLines }, null, 1));
    console.log(formatStats(run.stats));
    console.log(
      `deploy ${(result.deployMs / 1000).toFixed(1)}s (exit ${result.exitCode})` +
        (result.batchCriticalMs === undefined
          ? ""
          : `; preflight ${result.preflightMs} ms; per-batch critical path ${(result.batchCriticalMs / 1000).toFixed(1)}s + drains ${(result.drainMs! / 1000).toFixed(1)}s; overhead per batch ${result.overheadPerBatchMs} ms over ${result.batches} batches; ${result.reloads} reloads`) +
        (result.sshConnections === undefined ? "" : `; SSH connections ${result.sshConnections} for ${result.sshHosts} hosts`) +
        (result.peakRssMb === undefined ? "" : `; peak memory ${result.peakRssMb} MB`),
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

const cliStart = await firstLine(nodropBin, ["--version"]);
// The action with a config that does not exist: it starts, reads its inputs and prints its first line.
const actionStart = await firstLine(path.join(repo, "actions", "deploy", "dist", "index.js"), [], { "INPUT_CONFIG": "/nonexistent/nodrop.yaml", "INPUT_DRY-RUN": "true" });
console.log(`\nstart-up (median of 5): nodrop --version ${Math.round(cliStart)} ms; action bundle first line ${Math.round(actionStart)} ms`);
const benchMinutes = (performance.now() - benchStarted) / 60_000;

const versionOf = (command: string) => {
  try {
    return execSync(`${command} 2>&1`).toString().trim().split("\n")[0]!;
  } catch {
    return `${command}: not found`;
  }
};
const machine = `${versionOf("nginx -v").replace("nginx version: ", "")}, gunicorn ${versionOf("gunicorn --version").replace(/^gunicorn \(version (.*)\)$/, "$1")}; ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`;
const s = (ms: number | undefined) => (ms === undefined ? "-" : `${(ms / 1000).toFixed(1)} s`);
const table = [
  "| scenario | requests | failed | without resend | Go rule | time with failures | regressions | late old | switches per client (mean / max) | first new → last old | deploy | preflight | per-batch critical path | drains | overhead per batch | deploy / (critical + drains) | instances' own time (sum) | SSH connections | peak memory |",
  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ...results.map((r) => {
    const unavoidable = r.batchCriticalMs === undefined ? undefined : r.batchCriticalMs + r.drainMs!;
    return `| [${r.scenario}](${r.chart}) | ${r.requests} | **${r.failed}** | ${r.rawFailed} | ${r.strictFailed} | ${r.failingSeconds} s | ${r.versionRegressions} | ${r.lateOld} | ${r.switchesMean} / ${r.switchesMax} | ${r.mixedMs === undefined ? "-" : `${(r.mixedMs / 1000).toFixed(2)} s`} | ${s(r.deployMs)} | ${r.preflightMs === undefined ? "-" : `${r.preflightMs} ms`} | ${s(r.batchCriticalMs)} | ${s(r.drainMs)} | ${r.overheadPerBatchMs === undefined ? "-" : `${r.overheadPerBatchMs} ms`} | ${unavoidable === undefined ? "-" : (r.deployMs / unavoidable).toFixed(2)} | ${s(r.instanceSumMs)} | ${r.sshConnections === undefined ? "-" : `${r.sshConnections} (${r.sshHosts} hosts)`} | ${r.peakRssMb === undefined ? "-" : `${r.peakRssMb} MB`} |`;
  }),
].join("\n");
const legend = `Load: ${values.clients} keep-alive clients, each with its own cookie jar and loopback source address; 10% POST, 10% slow requests of 500 ms. "failed" counts what users see (a request on a reused keep-alive connection closed before any answer byte is resent once, as browsers do); "without resend" and "Go rule" (resends GETs only) count the same run stricter. "time with failures": how long requests were failing, in 250 ms slots (a failing instance answers at once, so clients that never wait between requests multiply the failed count; this column does not). "regressions": a client got an older version after a newer one. "late old": a request started after the first new-version answer and answered by the old version. "per-batch critical path": the sum over batches of the slowest instance's own stop, update, start and health check; "drains": waiting for requests in flight at the old routing; "preflight": from the start to the first change (the proxy checked, every host reached, every instance probed directly: an instance busy with slow requests answers its probe late). "overhead per batch": deploy time minus preflight, critical path and drains, per batch (what nodrop itself adds: config tests, reloads and their confirmation, the journal, SSH round trips). Baselines are plain bash scripts in examples/wsgi-fleet/baselines/; nginx is never told, so its columns are "-". Each scenario name links to its timeline chart.`;
const measuredOn = `Measured by \`pnpm bench\` on ${new Date().toISOString().slice(0, 10)} in ${benchMinutes.toFixed(1)} minutes: ${machine}.`;
const startup = `Start-up (median of 5 runs to the first line of output): \`nodrop --version\` ${Math.round(cliStart)} ms; the GitHub Action bundle ${Math.round(actionStart)} ms.`;
if (!values.only) {
  await writeFile(path.join(docs, "bench.md"), `# Benchmark\n\n${measuredOn}\n\n${startup}\n\n${legend}\n\n${table}\n\n${results.map((r) => `### ${r.scenario}\n\n![${r.scenario}](${r.chart})\n`).join("\n")}`);
  await writeFile(path.join(docs, "bench.json"), `${JSON.stringify({ machine, date: new Date().toISOString(), minutes: Number(benchMinutes.toFixed(1)), startup: { cliMs: Math.round(cliStart), actionMs: Math.round(actionStart) }, results }, null, 2)}\n`);
  // README embeds the table and one chart between markers, so it always shows the last run.
  const readmeFile = path.join(repo, "README.md");
  const readme = await readFile(readmeFile, "utf8");
  const start = "<!-- bench:start -->";
  const end = "<!-- bench:end -->";
  if (readme.includes(start) && readme.includes(end)) {
    const readmeTable = table.replaceAll("](bench/", "](docs/bench/");
    const block = `${start}\n${measuredOn}\n\n${readmeTable}\n\n![half-split under load: requests per 250 ms by the version that answered](docs/bench/half-split.svg)\n${end}`;
    await writeFile(readmeFile, readme.slice(0, readme.indexOf(start)) + block + readme.slice(readme.indexOf(end) + end.length));
  }
}
console.log(`\n${table}\n\nbench took ${benchMinutes.toFixed(1)} minutes`);
