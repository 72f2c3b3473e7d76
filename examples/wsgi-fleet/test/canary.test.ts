// The canary strategy against real nginx and gunicorn, under load from clients that hold cookies:
// the gates read nginx's own access log (nodrop's log_format) and abort a release that answers 500
// on some paths, or is slower, by themselves; a good release goes through every step to 100%.
// Order matters: the aborted deploys leave the fleet on v1, the good one ends on v2, the paused and
// promoted one on v4, the aborted one back on v4, and the killed and resumed one on v8.
import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import type { DeployReport } from "@nodrop/core";
import { startLoad } from "@nodrop/loadgen";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, nodropBin, runNodrop, startFleet } from "../src/index.js";

const GATE_MS = 4000;
/**
 * How far a gate's share of requests may lie from its weight, in points. split_clients hashes 40
 * clients: the share of them on the canary is binomial, σ ≈ 7 points at 25% and 8 at 50%, and
 * clients differ in how many requests they make; 20 points is about 3σ (12 failed once in a run).
 */
const SHARE_TOLERANCE = 20;
/** Load: 40 clients, each its own agent string (the split's key is address and agent) and cookie jar. */
const LOAD = { clients: 40, seed: 1901 };

type Gate = NonNullable<DeployReport["gates"]>[number];
const share = (g: Gate) => (100 * (g.canary?.requests ?? 0)) / ((g.canary?.requests ?? 0) + (g.baseline?.requests ?? 0));

/** Clients that got v1 after a response of v2 had completed, with the two records. */
function regressions(records: readonly { client: number; start: number; end: number; version?: string }[]) {
  const seen = new Map<number, number>();
  const out: { client: number; v2At: number; v1Start: number }[] = [];
  for (const r of [...records].sort((a, b) => a.end - b.end)) if (r.version === "v2" && !seen.has(r.client)) seen.set(r.client, r.end);
  for (const r of records) {
    const at = seen.get(r.client);
    if (r.version === "v1" && at !== undefined && r.start > at) out.push({ client: r.client, v2At: Math.round(at), v1Start: Math.round(r.start) });
  }
  return out;
}

/** The fleet's config with another strategy section, beside it. */
async function withStrategy(fleet: Fleet, name: string, strategy: Record<string, unknown>): Promise<string> {
  const config = parse(await readFile(fleet.configFile, "utf8")) as Record<string, unknown>;
  const file = fleet.configFile.replace(/\.yaml$/, `.${name}.yaml`);
  await writeFile(file, stringify({ ...config, strategy }));
  return file;
}

async function status(fleet: Fleet): Promise<{ instances: { id: string; version?: string; inPool: boolean }[] }> {
  const run = await runNodrop(["status", "--config", fleet.configFile, "--json"]);
  expect(run.code, run.stderr).toBe(0);
  return JSON.parse(run.stdout) as { instances: { id: string; version?: string; inPool: boolean }[] };
}

describe("canary (real nginx + gunicorn, gates on nginx's access log)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({
      ports: [8761, 8762, 8763, 8764],
      proxyPort: 18761,
      canaryLog: true,
      gracefulTimeout: 2,
      strategy: { name: "canary", steps: ["25%", "50%"], gate: `${GATE_MS}ms`, analysis: { minRequests: 20, interval: "1s", extraTime: "10s" } },
    });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("a proxy.accessLog that nginx does not write in nodrop's format is refused before anything changes, naming the file", async () => {
    const config = parse(await readFile(fleet.configFile, "utf8")) as { proxy: Record<string, unknown> };
    const file = fleet.configFile.replace(/\.yaml$/, ".otherlog.yaml");
    const elsewhere = `${fleet.canaryLogFile}.elsewhere`;
    await writeFile(file, stringify({ ...config, proxy: { ...config.proxy, accessLog: elsewhere } }));
    const run = await runNodrop(["deploy", "--config", file, "--version", "v2"]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(`no \`access_log ${elsewhere} nodrop;\` in the nginx config`);
    expect(run.stderr).toContain(`cannot read the access log ${elsewhere}`);
    expect(Object.values(await fleet.versions())).toEqual(["v1", "v1", "v1", "v1"]);
  });

  it("a release that answers 500 on /submit and /slow (v6) is aborted at the first gate: its failures stay within its share for one gate, and every client ends on v1", async () => {
    const result = await deployUnderLoad({ fleet, version: "v6", load: LOAD });
    const report = result.report!;
    expect(result.cli.code).not.toBe(0);
    expect(report.error?.code).toBe("E_CANARY");
    expect(report.error?.step).toBe("canary 25%: gate");
    expect(report.gates).toHaveLength(1);
    expect(report.gates![0]).toMatchObject({ gate: "25%", decision: "failed", reason: expect.stringContaining("5xx rate") });
    expect(report.gates![0]!.canary!.errors).toBeGreaterThan(0);
    expect(report.gates![0]!.baseline!.errors).toBe(0);
    // Every failure is a 500 of v6's: nothing else failed, the abort and revert included.
    const failed = result.records.filter((r) => r.status !== 200);
    expect(failed.length).toBe(result.stats.failed);
    expect(failed.every((r) => r.status === 500 && r.version === "v6")).toBe(true);
    // The bound: failures only between the reload that gave v6 its share and the one that sent
    // every client back (plus that one's drain), which the first failing read of the gate decided;
    // and only to the canary's share of clients (25%, within the SHARE_TOLERANCE points the
    // split's hash of 40 clients gives, see the good release's test).
    const at = (pattern: RegExp) => result.stderrLines.find((l) => pattern.test(l.text))?.atMs;
    const shareOn = at(/proxy generation \d+: 25% of clients to v6/);
    const allBack = at(/proxy generation \d+: recovery: every client back/);
    expect(shareOn).toBeDefined();
    expect(allBack).toBeDefined();
    const first = Math.min(...failed.map((r) => r.start));
    const last = Math.max(...failed.map((r) => r.end));
    // The log line comes once the reload is confirmed and drained: a request may start before it.
    expect(first).toBeGreaterThan(shareOn! - 1500);
    expect(last).toBeLessThanOrEqual(allBack!);
    expect(allBack! - shareOn!).toBeLessThan(GATE_MS);
    const hit = new Set(failed.map((r) => r.client));
    expect(hit.size).toBeGreaterThan(0);
    expect(hit.size).toBeLessThanOrEqual(Math.ceil(((25 + SHARE_TOLERANCE) / 100) * LOAD.clients));
    // Afterwards every client is on v1: each request started after the deploy returned v1.
    const after = result.records.filter((r) => r.start > result.deployEndMs);
    expect(after.length).toBeGreaterThan(0);
    const wrong = after.filter((r) => r.version !== "v1" || r.status !== 200);
    expect(wrong, `${JSON.stringify(wrong.slice(0, 3))}; deploy ended at ${result.deployEndMs}; ${report.recovery}\n${result.cli.stderr.slice(-2500)}`).toEqual([]);
    expect(report.recovery).toContain("every client routed to");
    expect(report.recovery).toContain("reverted web-8761");
    const now = await status(fleet);
    expect(now.instances.every((i) => i.version === "v1" && i.inPool)).toBe(true);
    expect(await fleet.versions()).toEqual({ 8761: "v1", 8762: "v1", 8763: "v1", 8764: "v1" });
  });

  it("a release 300 ms slower on every page (v7) is aborted by the latency gate", async () => {
    // No /slow requests: the old version's p99 is then its ordinary pages'.
    const result = await deployUnderLoad({ fleet, version: "v7", load: { ...LOAD, slowRatio: 0 } });
    const report = result.report!;
    expect(result.cli.code).toBe(1);
    expect(report.error?.code).toBe("E_CANARY");
    expect(report.instances.every((i) => i.version === "v1" && i.inPool)).toBe(true);
    expect(report.gates![0]).toMatchObject({ decision: "failed", reason: expect.stringMatching(/p9[09] latency/) });
    expect(report.gates![0]!.canary!.p90Ms).toBeGreaterThanOrEqual(300);
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    expect(await fleet.versions()).toEqual({ 8761: "v1", 8762: "v1", 8763: "v1", 8764: "v1" });
  });

  it("a good release (v2) goes through 25% and 50% to 100%: 0 failed, 0 regressions, each gate's share of requests within SHARE_TOLERANCE (20) points of its weight", async () => {
    const result = await deployUnderLoad({ fleet, version: "v2", load: LOAD });
    const report = result.report!;
    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    expect(result.stats.failed).toBe(0);
    const back = regressions(result.records);
    expect(back, JSON.stringify(back.slice(0, 5))).toEqual([]);
    expect(result.stats.versionRegressions).toBe(0);
    expect(report.gates?.map((g) => [g.gate, g.decision])).toEqual([
      ["25%", "passed"],
      ["50%", "passed"],
    ]);
    for (const gate of report.gates!) expect(Math.abs(share(gate) - gate.weight), `${gate.gate}: ${share(gate).toFixed(1)}%`).toBeLessThanOrEqual(SHARE_TOLERANCE);
    expect(report.instances.every((i) => i.version === "v2" && i.inPool)).toBe(true);
    // A client that got v2 never got v1 again; and after the deploy, only v2 answers.
    expect(result.records.filter((r) => r.start > result.deployEndMs).every((r) => r.version === "v2")).toBe(true);
  });

  it("a manual gate pauses the canary and the command exits; `nodrop promote` from a new process goes on under load: 0 failed, 0 regressions", async () => {
    const config = await withStrategy(fleet, "manual", { name: "canary", steps: [{ weight: "25%", pause: "manual" }, "50%"], gate: `${GATE_MS}ms`, analysis: { minRequests: 20, interval: "1s", extraTime: "10s" } });
    const paused = await deployUnderLoad({ fleet, version: "v4", deployer: (o) => runNodrop(["deploy", "--config", config, "--version", "v4", "--json"], o), load: LOAD });
    expect(paused.cli.code, paused.cli.stderr).toBe(0);
    expect(paused.cli.stderr).toContain("paused at gate 25%");
    expect(paused.report?.paused).toMatchObject({ phase: "canary 25%", gate: "25%" });
    expect(paused.stats.failed).toBe(0);
    // Paused, serving both: web-8761 on v4 for its share, the lock free for the next command.
    expect(await fleet.versions()).toEqual({ 8761: "v4", 8762: "v2", 8763: "v2", 8764: "v2" });
    expect((await runNodrop(["lock", "status", "--config", config])).stdout).toBe("not held\n");
    // A second deployer while it is paused: a deploy of another version is refused, nothing changed.
    const other = await runNodrop(["deploy", "--config", config, "--version", "v5"]);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toContain("[E_CANARY]");
    expect(other.stderr).toContain("the canary of v4 is paused at its gate in canary 25%");
    expect(await fleet.versions()).toEqual({ 8761: "v4", 8762: "v2", 8763: "v2", 8764: "v2" });
    const text = await runNodrop(["status", "--config", config]);
    expect(text.stdout).toContain("PAUSED at its gate in canary 25%");
    expect(text.stdout).toMatch(/gate canary 25%: paused: 25% of clients on v4/);
    const promoted = await deployUnderLoad({ fleet, version: "v4", deployer: (o) => runNodrop(["promote", "--config", config, "--json"], o), load: LOAD });
    expect(promoted.cli.code, promoted.cli.stderr).toBe(0);
    expect(promoted.cli.stderr).toContain("promoting the canary of v4 past its gate in canary 25%");
    // The paused gate is not held again; the next one is.
    expect(promoted.report?.gates?.map((g) => [g.gate, g.decision])).toEqual([["50%", "passed"]]);
    expect(promoted.stats.failed).toBe(0);
    expect(regressions(promoted.records)).toEqual([]);
    expect(promoted.stats.versionRegressions).toBe(0);
    expect(Object.values(await fleet.versions())).toEqual(["v4", "v4", "v4", "v4"]);
  });

  it("`nodrop abort` of a paused canary sends every client back at once, then reverts the canary's instances: 0 failed, nothing answers v2 after its first reload", async () => {
    const config = await withStrategy(fleet, "manual2", { name: "canary", steps: [{ weight: "50%", pause: "manual" }], analysis: { enabled: false } });
    const paused = await runNodrop(["deploy", "--config", config, "--version", "v2", "--json"]);
    expect(paused.code, paused.stderr).toBe(0);
    expect(Object.values(await fleet.versions()).sort()).toEqual(["v2", "v2", "v4", "v4"]);
    const aborted = await deployUnderLoad({ fleet, version: "v4", deployer: (o) => runNodrop(["abort", "--config", config, "--json"], o), load: LOAD });
    expect(aborted.cli.code, aborted.cli.stderr).toBe(0);
    expect(aborted.cli.stderr).toContain("aborting the deploy of v2: every client back to v4");
    expect(aborted.report?.strategy).toBe("canary-abort");
    expect(aborted.stats.failed).toBe(0);
    // After the abort's first reload (every client to v4) had drained, nothing answered v2.
    const firstRoute = aborted.stderrLines.find((l) => /proxy generation \d+: every client back to v4/.test(l.text));
    expect(firstRoute).toBeDefined();
    expect(aborted.records.filter((r) => r.start > firstRoute!.atMs && r.version === "v2")).toEqual([]);
    expect(Object.values(await fleet.versions())).toEqual(["v4", "v4", "v4", "v4"]);
    const done = await runNodrop(["abort", "--config", config]);
    expect(done.code).toBe(1);
    expect(done.stderr).toContain("nothing to abort");
  });

  it("nodrop killed (-9) during a gate: status says where, and resume holds that gate again and finishes", async () => {
    const load = startLoad({ url: fleet.url, ...LOAD, durationMs: 120_000 });
    try {
      const killed = await new Promise<{ out: string; signal: NodeJS.Signals | null }>((resolve) => {
        const child = spawn(process.execPath, [nodropBin, "deploy", "--config", fleet.configFile, "--version", "v8"], { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        let sent = false;
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          // The 25% share is in force: the gate is what runs now.
          if (!sent && /25% of clients to v8 on web-8761/.test(out)) {
            sent = true;
            setTimeout(() => child.kill("SIGKILL"), 1000);
          }
        });
        child.on("close", (_code, signal) => resolve({ out, signal }));
      });
      expect(killed.signal, killed.out).toBe("SIGKILL");
      expect(killed.out).not.toContain("gate ok");
      const seen = JSON.parse((await runNodrop(["status", "--config", fleet.configFile, "--json"])).stdout) as { lastDeploy: { version: string; finished: boolean; lastStep?: string } };
      expect(seen.lastDeploy).toMatchObject({ version: "v8", finished: false, lastStep: "canary 25%: gate (start)" });
      const resumed = await runNodrop(["resume", "--config", fleet.configFile, "--lock-wait", "2m", "--json"]);
      expect(resumed.code, resumed.stderr).toBe(0);
      const report = JSON.parse(resumed.stdout) as DeployReport;
      expect(report.gates?.map((g) => [g.gate, g.decision])).toEqual([
        ["25%", "passed"],
        ["50%", "passed"],
      ]);
    } finally {
      load.stop();
    }
    const { stats } = await load.done;
    expect(stats.failed).toBe(0);
    expect(stats.versionRegressions).toBe(0);
    expect(Object.values(await fleet.versions())).toEqual(["v8", "v8", "v8", "v8"]);
  });
});
