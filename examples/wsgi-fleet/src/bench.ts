// `pnpm bench`: deploys under the same load in several scenarios on real nginx, gunicorn and sshd,
// nodrop's strategies next to the two usual hand-rolled ways, and writes what it measured to
// docs/bench.md, docs/bench.json, one SVG timeline per scenario (docs/bench/) and README's table.
// Numbers only come from here: tests assert counts and states, never timings.
import { execSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { DeployReport } from "@nodrop/core";
import { formatStats, type LoadStats, summarize } from "@nodrop/loadgen";
import { startTestHosts } from "@nodrop/testhosts";
import { type FleetSamples, type ServingSample, firstAnswers, fleetFigures, sampleFleet, servingOverTime } from "./fleet-sampler.js";
import { type Fleet, exampleDir, startFleet } from "./fleet.js";
import { timelineSvg } from "./timeline.js";
import { type CliRun, type DeployUnderLoadResult, type RunOptions, deployUnderLoad, nodropBin, runNodrop, runProcess } from "./under-load.js";

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
  /** Gives every instance a spare port, port + offset: two slots each (surge and blue-green need them). */
  slotOffset?: number;
  /**
   * Measures `nodrop rollback` instead of a deploy: a deploy to v2 runs first and waits out the
   * strategy's keepOld window in the background; the rollback to v1 runs inside that window.
   */
  rollback?: true;
  /** Run nginx on these test hosts (of `hosts`), several proxies in front of the instances on the others. */
  proxyHosts?: readonly string[];
  /**
   * Deploys from an artifact of this many MiB (random bytes, so gzip cannot shrink them): the
   * release phase sends it to every host and prepares it before any instance leaves the pool.
   */
  artifactMib?: number;
  /** nginx writes nodrop's access log and the config reads it (proxy.accessLog): a canary's gates need it. */
  canaryLog?: true;
}

const webHosts = (n: number) => Array.from({ length: n }, (_, i) => `web${i + 1}`);
const scenarios: Scenario[] = [
  { name: "baseline: stop all, switch, start all (script)", slug: "baseline-stop-all", ports: [8361, 8362, 8363, 8364], baseline: "stop-all-switch-start-all" },
  { name: "baseline: kill one at a time, nginx routes around it (script)", slug: "baseline-kill-one", ports: [8371, 8372, 8373, 8374], baseline: "kill-one-at-a-time" },
  { name: "local 4 instances, rolling 1 at a time", slug: "rolling", ports: [8311, 8312, 8313, 8314], strategy: { name: "rolling", batchSize: 1 } },
  // Two-slot scenarios use 87xx: their spare ports (97xx) are clear of every other bench and test port.
  { name: "local 4 instances, surge rolling 1 at a time", slug: "surge", ports: [8721, 8722, 8723, 8724], slotOffset: 1000, strategy: { name: "rolling", batchSize: 1, surge: true } },
  // Surge never takes capacity away, so its batch size is bounded by memory, not by instances serving.
  { name: "local 4 instances, surge rolling 2 at a time", slug: "surge-2", ports: [8781, 8782, 8783, 8784], slotOffset: 1000, strategy: { name: "rolling", batchSize: 2, surge: true } },
  { name: "local 4 instances, half-split", slug: "half-split", ports: [8331, 8332, 8333, 8334], strategy: { name: "half-split" } },
  { name: "local 4 instances, blue-green", slug: "blue-green", ports: [8741, 8742, 8743, 8744], slotOffset: 1000, strategy: { name: "blue-green" } },
  { name: "local 4 instances, blue-green rollback inside the keepOld window", slug: "blue-green-rollback", ports: [8771, 8772, 8773, 8774], slotOffset: 1000, strategy: { name: "blue-green", keepOld: "30s" }, rollback: true },
  { name: "local 4 instances, sticky", slug: "sticky", ports: [8351, 8352, 8353, 8354], strategy: { name: "sticky" } },
  { name: "3 hosts x 4 instances over SSH, rolling batches of 3 across hosts", slug: "ssh-rolling", hosts: webHosts(3), ports: [8321, 8322, 8323, 8324], strategy: { name: "rolling", batchSize: 3 } },
  { name: "3 hosts x 4 instances over SSH, surge rolling batches of 3 across hosts", slug: "ssh-surge", hosts: webHosts(3), ports: [8751, 8752, 8753, 8754], slotOffset: 1000, strategy: { name: "rolling", batchSize: 3, surge: true } },
  { name: "3 hosts x 4 instances over SSH, half-split by host", slug: "ssh-half-split", hosts: webHosts(3), ports: [8341, 8342, 8343, 8344], strategy: { name: "half-split", split: "by-host" } },
  { name: "3 hosts x 4 instances over SSH, blue-green", slug: "ssh-blue-green", hosts: webHosts(3), ports: [8761, 8762, 8763, 8764], slotOffset: 1000, strategy: { name: "blue-green" } },
  // Two proxies: each load client keeps to one of them, as DNS round robin sends it.
  { name: "3 hosts x 4 instances behind 2 nginx proxies over SSH, half-split by host", slug: "two-proxies-half-split", hosts: [...webHosts(3), "lb1", "lb2"], proxyHosts: ["lb1", "lb2"], ports: [8291, 8292, 8293, 8294], strategy: { name: "half-split", split: "by-host" } },
  // The same fleet and strategy with two artifact sizes: the release phase grows with the size, the rest must not.
  { name: "3 hosts x 4 instances over SSH, rolling batches of 3, from a 10 MiB artifact", slug: "ssh-artifact-10", hosts: webHosts(3), ports: [8801, 8802, 8803, 8804], strategy: { name: "rolling", batchSize: 3 }, artifactMib: 10 },
  { name: "3 hosts x 4 instances over SSH, rolling batches of 3, from a 100 MiB artifact", slug: "ssh-artifact-100", hosts: webHosts(3), ports: [8811, 8812, 8813, 8814], strategy: { name: "rolling", batchSize: 3 }, artifactMib: 100 },
  // Gates of 10 s on nginx's own log, read every 2 s: the chart shows the share per version grow, the title each gate's decision.
  { name: "local 4 instances, canary 25% then 50% (10 s gates on nginx's log)", slug: "canary", ports: [8821, 8822, 8823, 8824], canaryLog: true, strategy: { name: "canary", steps: ["25%", "50%"], gate: "10s", analysis: { interval: "2s" } } },
  // The same canary on spare slots: the pool holds all 4 throughout (the serving line stays at 4).
  { name: "local 4 instances, canary on spare slots 25% then 50% (10 s gates)", slug: "canary-surge", ports: [8701, 8702, 8703, 8704], slotOffset: 1000, canaryLog: true, strategy: { name: "canary", surge: true, steps: ["25%", "50%"], gate: "10s", analysis: { interval: "2s" } } },
  { name: "16 hosts x 4 instances over SSH, rolling 25% at a time", slug: "scale-64", hosts: webHosts(16), ports: [8391, 8392, 8393, 8394], strategy: { name: "rolling", batchSize: "25%" } },
];

interface Result {
  scenario: string;
  /** A canary's gates: each one's decision and the new version's share of its requests. */
  gates?: string;
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
  /** With an artifact: the release phase (upload, checksum, unpack, prepare on every host), and the deploy without it. */
  releaseMs?: number;
  afterReleaseMs?: number;
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
  /** Instances in the fleet (over every host). */
  instances: number;
  /** nodrop only: the fewest instance endpoints any routing in force served during the deploy (from nginx's include file). */
  minServing: number | undefined;
  /** The fleet's gunicorn processes' summed RSS just before the deploy, and its peak during it (MB). */
  fleetMemoryBeforeMb: number | undefined;
  fleetMemoryPeakMb: number | undefined;
  /** A rollback only: from its start to the end of its last phase, the one that swaps the slots back. */
  timeToSwapMs: number | undefined;
  /** A rollback only: from spawning the command to the line saying its swap was confirmed (node's start-up, config, lock and preflight included). */
  swappedFromSpawnMs: number | undefined;
  /** From spawning the deploying command to its exit (node's start-up and config loading included). */
  processMs: number;
  chart: string;
}

/** What a scenario's run gave: the load and deploy, and what the fleet did meanwhile (on the load's clock). */
interface ScenarioRun {
  run: DeployUnderLoadResult;
  report: (DeployReport & { ssh?: { connections: number; hosts: number } }) | undefined;
  fleet: FleetSamples;
  /** Instance endpoints served over time (none for a script: nginx is never told). */
  serving: ServingSample[];
  instances: number;
}

function measure(scenario: Scenario, { run, report, fleet, serving, instances }: ScenarioRun): Result {
  const stats = scenario.rollback ? towardsTarget(run, "v1", "v2") : run.stats;
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
    // Instances that moved in the same proxy change form a batch: group by the route that took them
    // out. Routes that name no instance (blue-green's switch) move every instance they do not name at once.
    const batches = new Map<string, number>();
    for (const i of report.instances) {
      const key = report.routes.find((r) => names(r.why, i.id))?.why ?? "(one change for all)";
      batches.set(key, Math.max(batches.get(key) ?? 0, foreground(i.steps)));
    }
    const critical = [...batches.values()].reduce((a, b) => a + b, 0);
    // Drains in the background (a surge's swaps, blue-green's switch) are off the critical path: only the others count.
    const drain = report.routes.filter((r) => !r.background).reduce((sum, r) => sum + r.drainMs, 0);
    const preflight = report.phases[0]?.startMs ?? 0;
    // Old slots stopping in the background after the last phase: the old processes' own time, not nodrop's.
    const tail = backgroundTail(report);
    nodrop = {
      instanceSumMs: Math.round(report.instances.reduce((sum, i) => sum + own(i), 0)),
      batchCriticalMs: Math.round(critical),
      drainMs: Math.round(drain),
      batches: batches.size,
      preflightMs: Math.round(preflight),
      // The release phase (an artifact's upload and prepare) runs before any batch: not a batch's overhead.
      overheadPerBatchMs: Math.round((report.durationMs - preflight - critical - drain - tail - (report.phases.find((p) => p.name === "release")?.ms ?? 0)) / batches.size),
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
    ...releaseFigures(report, deployMs),
    ...nodrop,
    sshConnections: report?.ssh?.connections,
    sshHosts: report?.ssh?.hosts,
    peakRssMb: run.cli.peakRssKb === undefined ? undefined : Math.round(run.cli.peakRssKb / 1024),
    instances,
    ...figures({ serving, memory: fleet.memory }, run),
    timeToSwapMs: scenario.rollback && report ? lastPhaseEnd(report) : undefined,
    swappedFromSpawnMs: scenario.rollback ? swappedFromSpawn(run) : undefined,
    processMs: Math.round(run.deployEndMs - run.deployStartMs),
    chart: `bench/${scenario.slug}.svg`,
  };
}

/** The release phase's time and the deploy's without it (the part with instances out of the pool). */
function releaseFigures(report: DeployReport | undefined, deployMs: number): Pick<Result, "releaseMs" | "afterReleaseMs"> {
  const release = report?.phases.find((p) => p.name === "release");
  return release ? { releaseMs: Math.round(release.ms), afterReleaseMs: Math.round(deployMs - release.ms) } : {};
}

function figures(fleet: Parameters<typeof fleetFigures>[0], run: DeployUnderLoadResult): Pick<Result, "minServing" | "fleetMemoryBeforeMb" | "fleetMemoryPeakMb"> {
  const f = fleetFigures(fleet, run.deployStartMs, run.deployEndMs);
  return { minServing: f.minServing, fleetMemoryBeforeMb: f.memoryBeforeMb, fleetMemoryPeakMb: f.memoryPeakMb };
}

/** Whether a route's reason names the instance (not only one whose id starts the same: web1-8391 in web11-8391). */
function names(why: string, id: string): boolean {
  return new RegExp(`(?<![\\w.-])${id.replace(/[.]/g, "\\.")}(?![\\w.-])`).test(why);
}

type Steps = DeployReport["instances"][number]["steps"];

/** The steps that stop an old slot after the new one's check: a surge (or blue-green) runs them in the background while it goes on. */
function backgroundStops(steps: Steps): Steps {
  const checked = steps.findIndex((s) => s.kind === "check");
  return steps.filter((s, index) => s.kind === "stop" && checked >= 0 && index > checked);
}

/** An instance's own time on its batch's critical path: its steps but the proxy's, and but the background stops. */
function foreground(steps: Steps): number {
  const background = backgroundStops(steps);
  return steps.filter((s) => s.kind !== "route" && !background.includes(s)).reduce((sum, s) => sum + s.ms, 0);
}

/** How long a deploy with background drains or stops (a surge's, blue-green's) waited for them after its last phase (ms; 0 without any). */
function backgroundTail(report: DeployReport): number {
  const end = lastPhaseEnd(report);
  const inBackground = report.routes.some((r) => r.background) || report.instances.some((i) => backgroundStops(i.steps).length > 0);
  return inBackground && end !== undefined ? Math.max(0, report.durationMs - end) : 0;
}

/** From a report's start to the end of its last phase (ms). */
/** When the command printed that its swap was confirmed, from its spawn (both on the load's clock). */
function swappedFromSpawn(run: DeployUnderLoadResult): number | undefined {
  const line = run.stderrLines.findLast((l) => /proxy generation \d+: .*swapped/.test(l.text));
  return line === undefined ? undefined : Math.round(line.atMs - run.deployStartMs);
}

function lastPhaseEnd(report: DeployReport): number | undefined {
  const last = report.phases.at(-1);
  return last === undefined ? undefined : Math.round(last.startMs + last.ms);
}

/**
 * A rollback's load stats counted in its own direction. The load generator calls the highest
 * version "new", which for a rollback to v1 is the one being left; with the two labels swapped for
 * counting, a regression is a client sent back to v2 after v1 answered it, and "late old" a v2
 * answer to a request started after the first v1 answer.
 */
function towardsTarget(run: DeployUnderLoadResult, target: string, left: string): LoadStats {
  const swap = (v: string | undefined) => (v === target ? left : v === left ? target : v);
  const records = run.records.map((r) => ({ ...r, version: swap(r.version) }));
  const directed = summarize(records, run.stats.durationMs, run.stats.switchesPerClient.length);
  const { firstNewAt: _first, lastOldAt: _last, ...rest } = run.stats;
  const { versionRegressions, lateOld, firstNewAt, lastOldAt } = directed;
  return { ...rest, versionRegressions, lateOld, ...(firstNewAt === undefined ? {} : { firstNewAt }), ...(lastOldAt === undefined ? {} : { lastOldAt }) };
}

/** The deploy's phases on the load's clock: nodrop's from its report, a script's from its step lines. */
function phasesOf(run: DeployUnderLoadResult, report: DeployReport | undefined, loadStartedAt: number) {
  if (report && report.phases.length > 0) {
    const engineStart = Date.parse(report.startedAt) - loadStartedAt;
    const first = report.phases[0]!;
    const tail = backgroundTail(report);
    return [
      { name: "preflight", startMs: engineStart, endMs: engineStart + first.startMs },
      ...report.phases.map((p) => ({ name: p.name, startMs: engineStart + p.startMs, endMs: engineStart + p.startMs + p.ms })),
      // The deploy ends only once the old processes stopped in the background have: show that wait too.
      ...(tail > 0 ? [{ name: "old slots stopping", startMs: engineStart + report.durationMs - tail, endMs: engineStart + report.durationMs }] : []),
    ];
  }
  const lines = run.stderrLines.filter((l) => l.text.trim() !== "");
  return lines.map((l, i) => ({ name: l.text.trim().slice(0, 40), startMs: l.atMs, endMs: lines[i + 1]?.atMs ?? run.deployEndMs }));
}

const s = (ms: number | undefined) => (ms === undefined ? "-" : `${(ms / 1000).toFixed(1)} s`);

interface Target {
  what: string;
  goal: string;
  /** The figure, with what it came from. */
  value: string;
  /** The figure alone, for bench.json (a ratio, ms or a count). */
  figure: number | undefined;
  /** Undefined for a figure shown for comparison only. */
  met: boolean | undefined;
}

/** The new strategies' targets, from this run's results; those whose scenarios did not run are left out. */
function targets(results: readonly Result[]): Target[] {
  const by = (slug: string) => results.find((r) => r.slug === slug);
  const out: Target[] = [];
  const exit = (r: Result) => (r.exitCode === 0 ? "" : `, exit ${r.exitCode}`);
  // A deploy that failed is not faster: a ratio counts only when both exited 0.
  const ratio = (what: string, slug: string, base: string) => {
    const [a, b] = [by(slug), by(base)];
    if (!a || !b) return;
    const figure = Number((a.deployMs / b.deployMs).toFixed(2));
    out.push({ what, goal: "≤ 0.5", value: `${figure} (${s(a.deployMs)}${exit(a)} / ${s(b.deployMs)}${exit(b)})`, figure, met: figure <= 0.5 && a.exitCode === 0 && b.exitCode === 0 });
  };
  ratio("surge rolling deploy time ÷ rolling, local", "surge", "rolling");
  ratio("surge rolling deploy time ÷ rolling, SSH", "ssh-surge", "ssh-rolling");
  const wider = by("surge-2");
  const classic = by("rolling");
  // Not a target: the same fleet with surge batches of 2 (what its capacity allows), beside classic rolling 1 at a time.
  if (wider && classic) out.push({ what: "surge 2 at a time ÷ rolling 1 at a time, local", goal: "none (for comparison)", value: `${(wider.deployMs / classic.deployMs).toFixed(2)} (${s(wider.deployMs)}${exit(wider)} / ${s(classic.deployMs)}${exit(classic)})`, figure: Number((wider.deployMs / classic.deployMs).toFixed(2)), met: undefined });
  ratio("blue-green deploy time ÷ half-split, local", "blue-green", "half-split");
  ratio("blue-green deploy time ÷ half-split, SSH", "ssh-blue-green", "ssh-half-split");
  const rollback = by("blue-green-rollback");
  if (rollback) {
    const swap = rollback.timeToSwapMs;
    // From the command's spawn, not the engine's start: what someone who types `nodrop rollback` waits for.
    const fromSpawn = rollback.swappedFromSpawnMs;
    out.push({ what: "rollback inside the keepOld window, time to swap (the command's start to its swap confirmed: every new request on v1)", goal: "< 2 s", value: fromSpawn === undefined ? "-" : `${fromSpawn} ms (its engine's start to the end of the swap phase: ${swap ?? "-"} ms)${exit(rollback)}`, figure: fromSpawn, met: fromSpawn !== undefined && fromSpawn < 2000 && rollback.exitCode === 0 });
    out.push({ what: "rollback inside the keepOld window, total (the command's start to its exit)", goal: "< 2 s", value: `${rollback.processMs} ms (nodrop's report: ${rollback.deployMs} ms)${exit(rollback)}`, figure: rollback.processMs, met: rollback.processMs < 2000 && rollback.exitCode === 0 });
  }
  const [small, large] = [by("ssh-artifact-10"), by("ssh-artifact-100")];
  if (small?.afterReleaseMs !== undefined && large?.afterReleaseMs !== undefined) {
    // The part of the deploy with instances out of the pool, with ten times the artifact.
    const figure = Number((large.afterReleaseMs / small.afterReleaseMs).toFixed(2));
    const both = small.exitCode === 0 && large.exitCode === 0;
    out.push({
      what: "deploy after the release phase, 100 MiB artifact ÷ 10 MiB (release phase: upload, check, unpack, prepare)",
      goal: "≤ 1.1 (does not grow with the artifact)",
      value: `${figure} (${s(large.afterReleaseMs)}${exit(large)} / ${s(small.afterReleaseMs)}${exit(small)}; release phase ${s(large.releaseMs!)} / ${s(small.releaseMs!)})`,
      figure,
      met: both && figure <= 1.1,
    });
  }
  const watched = ["surge", "surge-2", "ssh-surge", "blue-green", "ssh-blue-green", "blue-green-rollback"].flatMap((slug) => by(slug) ?? []);
  if (watched.length > 0) {
    const failed = watched.reduce((sum, r) => sum + r.failed, 0);
    out.push({ what: "failed requests in the surge, blue-green and rollback scenarios", goal: "0", value: watched.map((r) => `${r.slug} ${r.failed}`).join(", "), figure: failed, met: failed === 0 });
  }
  for (const r of ["surge", "surge-2", "ssh-surge"].flatMap((slug) => by(slug) ?? [])) {
    out.push({ what: `${r.slug}: fewest instances serving during the deploy`, goal: `≥ ${r.instances} (the fleet)`, value: r.minServing === undefined ? "-" : `${r.minServing}`, figure: r.minServing, met: r.minServing !== undefined && r.minServing >= r.instances });
  }
  return out;
}

const KEPT_LINE = "the old processes stay up until";

/**
 * Starts `nodrop deploy --version v2` in the background and returns once it has reported and waits
 * out its keep window (the old processes still up); `exited` settles when the window is over.
 */
async function deployKeepingOld(fleet: Fleet): Promise<{ exited: Promise<CliRun> }> {
  let stderr = "";
  let kept!: () => void;
  const keptLine = new Promise<void>((resolve) => (kept = resolve));
  const exited = runNodrop(["deploy", "--version", "v2", "--config", fleet.configFile], {
    // Chunks may split the line: look at everything seen so far.
    onStderr: (text) => ((stderr += text).includes(KEPT_LINE) ? kept() : undefined),
  });
  const early = exited.then((cli) => {
    throw new Error(`the deploy to v2 exited (${cli.code}) before keeping the old processes: ${cli.stderr}`);
  });
  await Promise.race([keptLine, early]);
  return { exited };
}

/** How a scenario deploys: a baseline's script, a rollback, or (undefined) `nodrop deploy`. */
function deployerFor(scenario: Scenario, fleet: Fleet): ((options: RunOptions) => Promise<CliRun>) | undefined {
  if (scenario.baseline) {
    const script = path.join(exampleDir, "baselines", `${scenario.baseline}.sh`);
    return (options) => runProcess("bash", [script, fleet.dir, "v2", ...fleet.ports.map(String)], options);
  }
  if (scenario.rollback) return (options) => runNodrop(["rollback", "--config", fleet.configFile, "--json"], options);
  return undefined;
}

const onLoadClock = (samples: FleetSamples, loadStart: number): FleetSamples => ({
  changes: samples.changes.map((c) => ({ ...c, atMs: c.atMs - loadStart })),
  memory: samples.memory.map((s) => ({ ...s, atMs: s.atMs - loadStart })),
});

/**
 * Runs a scenario's deploy (or rollback) under load while sampling the fleet. `processDir` is where
 * the fleet's gunicorn processes keep their state (fleet.dir, or the test hosts' directory).
 */
async function deployScenario(scenario: Scenario, fleet: Fleet, processDir: string, load: { clients: number; addresses: string[] }, args: readonly string[] = []): Promise<ScenarioRun & { loadStartedAt: number }> {
  const keeping = scenario.rollback ? await deployKeepingOld(fleet) : undefined;
  // A script never tells nginx: its include file says nothing about what serves.
  const sampler = sampleFleet({ dir: processDir, ...(scenario.baseline ? {} : { includeFile: fleet.proxies[0]?.includeFile ?? fleet.includeFile }) });
  const loadStartedAt = Date.now();
  const run = await deployUnderLoad({
    fleet,
    version: scenario.rollback ? "v1" : "v2",
    // Behind several proxies (on namespace addresses a loopback source cannot reach) each client keeps to one.
    load: { clients: load.clients, seed: 7, ...(fleet.proxies.length > 0 ? { urls: fleet.proxies.map((p) => p.url) } : { localAddresses: load.addresses }) },
    measureMemory: !scenario.baseline,
    deployer: deployerFor(scenario, fleet),
    args,
  }).catch(async (error: unknown) => {
    await sampler.stop();
    throw error;
  });
  const samples = onLoadClock(await sampler.stop(), run.loadStart);
  if (keeping) {
    const deploy = await keeping.exited;
    console.log(`the deploy that kept the old processes exited ${deploy.code}: ${deploy.stderr.trim().split("\n").at(-1)}`);
  }
  const report = scenario.baseline ? undefined : run.report;
  if (!scenario.baseline && !report) throw new Error(`no report: ${run.cli.stderr}`);
  const serving = servingOverTime(samples.changes, firstAnswers(run.records));
  return { run, report, fleet: samples, serving, instances: fleet.instances.length, loadStartedAt };
}

function summaryLine(r: Result): string {
  return (
    `deploy ${(r.deployMs / 1000).toFixed(1)}s (exit ${r.exitCode})` +
    (r.timeToSwapMs === undefined ? "" : `; time to swap ${r.timeToSwapMs} ms`) +
    (r.releaseMs === undefined ? "" : `; release phase ${(r.releaseMs / 1000).toFixed(1)}s, the rest ${(r.afterReleaseMs! / 1000).toFixed(1)}s`) +
    (r.batchCriticalMs === undefined
      ? ""
      : `; preflight ${r.preflightMs} ms; per-batch critical path ${(r.batchCriticalMs / 1000).toFixed(1)}s + drains ${(r.drainMs! / 1000).toFixed(1)}s; overhead per batch ${r.overheadPerBatchMs} ms over ${r.batches} batches; ${r.reloads} reloads`) +
    (r.sshConnections === undefined ? "" : `; SSH connections ${r.sshConnections} for ${r.sshHosts} hosts`) +
    (r.peakRssMb === undefined ? "" : `; peak memory ${r.peakRssMb} MB`) +
    (r.minServing === undefined ? "" : `; min serving ${r.minServing} of ${r.instances}`) +
    (r.fleetMemoryPeakMb === undefined ? "" : `; fleet memory peak ${r.fleetMemoryPeakMb} MB (before ${r.fleetMemoryBeforeMb ?? "?"} MB)`)
  );
}

/** `--only`: slugs, or parts of names where no slug matches, comma-separated (`--only rolling,surge`). */
const selected = (scenario: Scenario, only: string) =>
  only.split(",").some((part) => scenario.slug === part || (!scenarios.some((s) => s.slug === part) && scenario.name.includes(part)));
const { values } = parseArgs({ options: { only: { type: "string" }, clients: { type: "string", default: "48" } } });
// Every client has its own cookie jar and its own loopback source address (address affinity is real).
const addresses = Array.from({ length: Number(values.clients) }, (_, i) => `127.0.${10 + Math.floor(i / 250)}.${(i % 250) + 1}`);
const repo = path.resolve(exampleDir, "..", "..");
const docs = path.join(repo, "docs");
await mkdir(path.join(docs, "bench"), { recursive: true });
const benchStarted = performance.now();
const results: Result[] = [];
for (const scenario of scenarios) {
  if (values.only && !selected(scenario, values.only)) continue;
  console.log(`\n== ${scenario.name}`);
  const t0 = performance.now();
  const hosts = scenario.hosts ? await startTestHosts({ names: scenario.hosts }) : undefined;
  const fleet = await startFleet({
    ports: scenario.ports,
    proxyPort: 18301,
    strategy: scenario.strategy ?? { name: "rolling" },
    ...(hosts ? { hosts } : {}),
    ...(scenario.slotOffset === undefined ? {} : { slotOffset: scenario.slotOffset }),
    ...(scenario.proxyHosts ? { proxyHosts: scenario.proxyHosts } : {}),
    ...(scenario.artifactMib === undefined ? {} : { releases: { prepare: "cd {release} && test -s VERSION && date -u +%FT%TZ > PREPARED_AT" } }),
    ...(scenario.canaryLog ? { canaryLog: true } : {}),
  });
  console.log(`fleet of ${fleet.instances.length} instances up in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
  try {
    const artifact = scenario.artifactMib === undefined ? [] : ["--artifact", await buildArtifact(fleet.dir, "v2", scenario.artifactMib)];
    const measured = await deployScenario(scenario, fleet, hosts ? hosts.dir : fleet.dir, { clients: Number(values.clients), addresses }, artifact);
    const { run, report } = measured;
    const measuredResult = measure(scenario, measured);
    // A canary's gates: each one's decision and the share of requests the new version took in it, as nginx's log counted them.
    const gates = (report?.gates ?? []).map((g) => `${g.gate} ${g.decision} (${gateShare(g)}% of requests)`).join(", ");
    const result: Result = gates ? { ...measuredResult, gates } : measuredResult;
    results.push(result);
    if (gates) console.log(`gates: ${gates}`);
    const svg = timelineSvg({
      title: `${scenario.name}: ${result.failed} failed of ${result.requests}, ${result.versionRegressions} regressions${gates ? `; gates ${gates}` : ""}`,
      records: run.records,
      phases: phasesOf(run, report, measured.loadStartedAt),
      serving: measured.serving,
    });
    await writeFile(path.join(docs, result.chart), svg);
    // The raw report, load stats and fleet samples, for looking into a number (not committed: they are large).
    await writeFile(path.join(os.tmpdir(), `nodrop-bench-${scenario.slug}.json`), JSON.stringify({ report, stats: run.stats, stderr: run.stderrLines, deploy: [run.deployStartMs, run.deployEndMs], fleet: { ...measured.fleet, serving: measured.serving } }, null, 1));
    console.log(formatStats(scenario.rollback ? towardsTarget(run, "v1", "v2") : run.stats));
    console.log(summaryLine(result));
  } finally {
    await fleet.stop();
    await hosts?.stop();
  }
}

/** The new version's share of a gate's requests (percent, whole). */
function gateShare(g: { canary?: { requests: number } | undefined; baseline?: { requests: number } | undefined }): number {
  const ours = g.canary?.requests ?? 0;
  const total = ours + (g.baseline?.requests ?? 0);
  return total === 0 ? 0 : Math.round((100 * ours) / total);
}

/** A release tarball of `mib` MiB: the version's VERSION file and random bytes. */
async function buildArtifact(dir: string, version: string, mib: number): Promise<string> {
  const build = path.join(dir, `build-${version}`);
  await mkdir(build, { recursive: true });
  await writeFile(path.join(build, "VERSION"), `${version}\n`);
  await writeFile(path.join(build, "blob.bin"), randomBytes(mib * 1024 * 1024));
  const file = path.join(dir, `app-${version}.tar.gz`);
  execSync(`tar -czf ${file} -C ${build} .`);
  return file;
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
const table = [
  "| scenario | requests | failed | without resend | Go rule | time with failures | min serving | regressions | late old | switches per client (mean / max) | first new → last old | deploy | preflight | per-batch critical path | drains | overhead per batch | deploy / (critical + drains) | instances' own time (sum) | SSH connections | deployer peak memory | fleet memory peak (before) |",
  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ...results.map((r) => {
    const unavoidable = r.batchCriticalMs === undefined ? undefined : r.batchCriticalMs + r.drainMs!;
    const swappedAt = r.swappedFromSpawnMs ?? r.timeToSwapMs;
    const deploy = swappedAt === undefined ? s(r.deployMs) : `${s(r.deployMs)} (swapped at ${(swappedAt / 1000).toFixed(2)} s)`;
    const fleetMemory = r.fleetMemoryPeakMb === undefined ? "-" : `${r.fleetMemoryPeakMb} MB (${r.fleetMemoryBeforeMb ?? "-"} MB)`;
    return `| [${r.scenario}](${r.chart})${r.gates ? `; gates: ${r.gates}` : ""} | ${r.requests} | **${r.failed}** | ${r.rawFailed} | ${r.strictFailed} | ${r.failingSeconds} s | ${r.minServing === undefined ? "-" : `${r.minServing} of ${r.instances}`} | ${r.versionRegressions} | ${r.lateOld} | ${r.switchesMean} / ${r.switchesMax} | ${r.mixedMs === undefined ? "-" : `${(r.mixedMs / 1000).toFixed(2)} s`} | ${deploy} | ${r.preflightMs === undefined ? "-" : `${r.preflightMs} ms`} | ${s(r.batchCriticalMs)} | ${s(r.drainMs)} | ${r.overheadPerBatchMs === undefined ? "-" : `${r.overheadPerBatchMs} ms`} | ${unavoidable === undefined ? "-" : (r.deployMs / unavoidable).toFixed(2)} | ${s(r.instanceSumMs)} | ${r.sshConnections === undefined ? "-" : `${r.sshConnections} (${r.sshHosts} hosts)`} | ${r.peakRssMb === undefined ? "-" : `${r.peakRssMb} MB`} | ${fleetMemory} |`;
  }),
].join("\n");
const goals = targets(results);
const targetLines = goals.map((t) => `- ${t.met === undefined ? "for comparison" : t.met ? "met" : "**not met**"}: ${t.what}: ${t.value} (target ${t.goal})`).join("\n");
const legend = `Load: ${values.clients} keep-alive clients, each with its own cookie jar and loopback source address; 10% POST, 10% slow requests of 500 ms. "failed" counts what users see (a request on a reused keep-alive connection closed before any answer byte is resent once, as browsers do); "without resend" and "Go rule" (resends GETs only) count the same run stricter. "time with failures": how long requests were failing, in 250 ms slots (a failing instance answers at once, so clients that never wait between requests multiply the failed count; this column does not). "regressions": a client got an older version after a newer one. "late old": a request started after the first new-version answer and answered by the old version. "per-batch critical path": the sum over batches of the slowest instance's own stop, update, start and health check; "drains": waiting for requests in flight at the old routing (a surge's swaps and blue-green's switch drain in the background: those are not on the critical path and not counted); "preflight": from the start to the first change (the proxy checked, every host reached, every instance probed directly: an instance busy with slow requests answers its probe late). "overhead per batch": deploy time minus preflight, critical path and drains, per batch (what nodrop itself adds: config tests, reloads and their confirmation, the journal, SSH round trips). "min serving": the fewest instance endpoints the routing in force sent requests to at any moment of the deploy, read from nginx's include file every 10 ms (a version pin's pool counts from that version's first answer, when a client can first hold the pin; a timed switch counts both sides, either may answer until its instant); the timeline charts draw it as a line. "fleet memory": the summed resident memory of the fleet's gunicorn processes (masters and workers, sampled every 100 ms) at its peak during the deploy, and just before it in brackets: two slots run two sets of processes for a while; "deployer peak memory" is nodrop's own process (or bash's). Surge and blue-green scenarios give each instance a spare port (\`slots: { offset: 1000 }\`); their per-batch critical path and overhead leave out the old slots' drains and stops, which run in the background (the deploy still waits for the last of them: the "old slots stopping" band of their charts). The rollback row measures \`nodrop rollback\` inside the keepOld window of a blue-green deploy to v2 that is still waiting it out: "swapped at" is when it printed that its one swap back was confirmed, from the command's start (node's start-up, the lock and the preflight included), and its regressions and late old count the other way (a client sent back to v2 after v1 answered it). Baselines are plain bash scripts in examples/wsgi-fleet/baselines/; nginx is never told, so its columns are "-". Behind two nginx proxies (lb1, lb2: test hosts of their own) each client keeps to one proxy, as DNS round robin sends it, and has no source address of its own (a loopback address cannot reach a namespace's). Each scenario name links to its timeline chart.`;
const measuredOn = `Measured by \`pnpm bench\` on ${new Date().toISOString().slice(0, 10)} in ${benchMinutes.toFixed(1)} minutes: ${machine}.`;
const startup = `Start-up (median of 5 runs to the first line of output): \`nodrop --version\` ${Math.round(cliStart)} ms; the GitHub Action bundle ${Math.round(actionStart)} ms.`;
if (!values.only) {
  await writeFile(path.join(docs, "bench.md"), `# Benchmark\n\n${measuredOn}\n\n${startup}\n\n${legend}\n\n${table}\n\n## Targets\n\nComputed from this run (reported, never asserted: a bench does not fail on numbers).\n\n${targetLines}\n\n${results.map((r) => `### ${r.scenario}\n\n![${r.scenario}](${r.chart})\n`).join("\n")}`);
  await writeFile(path.join(docs, "bench.json"), `${JSON.stringify({ machine, date: new Date().toISOString(), minutes: Number(benchMinutes.toFixed(1)), startup: { cliMs: Math.round(cliStart), actionMs: Math.round(actionStart) }, results, targets: goals }, null, 2)}\n`);
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
console.log(`\n${table}\n\nTargets:\n${targetLines || "(none: their scenarios did not run)"}\n\nbench took ${benchMinutes.toFixed(1)} minutes`);
