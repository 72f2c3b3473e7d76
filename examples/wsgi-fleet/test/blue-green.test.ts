// Blue-green on real nginx and gunicorn, two slots per instance, 40 clients with cookie jars: the
// new version starts on every spare port while the whole old fleet serves, every nginx worker
// flips to it at one instant, and no client goes back to the old version. A release that fails its
// check is never seen by anyone.
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { type DeployReport, type JournalRecord, sleep } from "@nodrop/core";
import { startLoad } from "@nodrop/loadgen";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { type Fleet, deployUnderLoad, runNodrop, sampleRouting, startFleet } from "../src/index.js";
import { lastDeployRecords, readJournal } from "../src/kill-points.js";
import { runActionBundle } from "../../../actions/deploy/test/run-action.js";

const PORTS = [8431, 8432, 8433, 8434];
const OFFSET = 1000;

describe("blue-green deploy (real nginx + gunicorn, two slots per instance)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({ ports: PORTS, proxyPort: 18431, slotOffset: OFFSET, strategy: { name: "blue-green" }, health: { deadline: "8s" } });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("v1 -> v2 under load: 0 failed, 0 late-old, 0 version regressions, and the whole fleet in the pool throughout", async () => {
    const sampler = sampleRouting(fleet.includeFile);
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 40, seed: 31 } });
    const seen = await sampler.stop();
    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    expect(result.report?.instances.map((i) => [i.id, i.from, i.version, i.port, i.idle, i.inPool, i.outcome])).toEqual(
      PORTS.map((port) => [`web-${port}`, "v1", "v2", port + OFFSET, { port, running: false }, true, "updated"]),
    );
    // Two reloads: the timed switch (blue and green both configured), then blue out.
    expect(result.report?.routes.map((r) => r.why)).toEqual(["switch: every new request to the new slots (v2) at one instant", "old slots out"]);
    // The default switchDelay (500 ms) covered the reload under this load: nginx's old generation
    // closed before the instant (the adapter would warn otherwise, and late-old answers could follow).
    expect(result.report?.routes.flatMap((r) => r.warnings ?? [])).toEqual([]);
    expect(result.cli.stderr).not.toContain("warning:");
    expect(seen.routings.map((r) => Object.keys(r.pools).sort().join("+"))).toEqual(["all", "blue+green", "all"]);
    expect(seen.routings[1]?.poolSlots?.green).toEqual(Object.fromEntries(PORTS.map((port) => [`web-${port}`, port + OFFSET])));
    expect(seen.fewest).toBe(4);

    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    expect(result.stats.lateOld).toBe(0);
    expect(result.stats.versionRegressions).toBe(0);
    expect(result.stats.byVersion.v1).toBeGreaterThan(0);
    expect(result.stats.byVersion.v2).toBeGreaterThan(0);
    expect(result.stats.firstNewAt).toBeDefined();
    // The first v2 answer came only after every green slot was checked: once the switch phase began
    // (the engine's clock starts after the CLI's, so this bound is on the safe side).
    const switchPhase = result.report?.phases.find((p) => p.name === "switch");
    expect(switchPhase).toBeDefined();
    expect(result.stats.firstNewAt!).toBeGreaterThan(result.deployStartMs + switchPhase!.startMs);
    expect(await fleet.versions()).toEqual(Object.fromEntries(PORTS.flatMap((port) => [[String(port), "down"], [String(port + OFFSET), "v2"]])));
  });

  it("a green slot that fails its check: every green slot is stopped, nobody sees the release, the include file is not rewritten", async () => {
    const before = await readFile(fleet.includeFile, "utf8");
    const result = await deployUnderLoad({ fleet, version: "v3", warmupMs: 500, cooldownMs: 500, load: { clients: 20, seed: 32 } });
    expect(result.cli.code).not.toBe(0);
    expect(result.report?.error?.code).toBe("E_HEALTHCHECK");
    expect(result.report?.error?.step).toBe("green: check");
    expect(result.report?.recovery).toContain("stopped the idle slots of");
    expect(result.stats.byVersion.v3 ?? 0).toBe(0);
    expect(result.stats.failed).toBe(0);
    expect(await readFile(fleet.includeFile, "utf8")).toBe(before);
    expect(result.report?.instances.map((i) => [i.version, i.port, i.inPool])).toEqual(PORTS.map((port) => ["v2", port + OFFSET, true]));
    expect(await fleet.versions()).toEqual(Object.fromEntries(PORTS.flatMap((port) => [[String(port), "down"], [String(port + OFFSET), "v2"]])));
  });
});

describe("blue-green with keepOld: an instant rollback inside the window, and the window's end (real nginx + gunicorn)", () => {
  const ports = [8441, 8442, 8443];
  let fleet: Fleet;
  /** The fleet's config with blue-green keeping the old slots for `keep`. */
  const keeping = async (keep: string) => {
    const config = parse(await readFile(fleet.configFile, "utf8")) as Record<string, unknown>;
    const file = path.join(fleet.dir, `keep-${keep}.yaml`);
    await writeFile(file, stringify({ ...config, strategy: { use: "blue-green", keepOld: keep } }));
    return file;
  };
  /** The gunicorn master pid of each slot's port that has one running. */
  const masters = async (): Promise<Record<string, number>> => {
    const entries = await Promise.all(
      ports.flatMap((port) => [port, port + OFFSET]).map(async (port) => {
        const pid = Number((await readFile(path.join(fleet.dir, "instances", String(port), "gunicorn.pid"), "utf8").catch(() => "")).trim());
        if (!pid) return [];
        try {
          process.kill(pid, 0);
          return [[String(port), pid] as const];
        } catch {
          return [];
        }
      }),
    );
    return Object.fromEntries(entries.flat());
  };
  beforeAll(async () => {
    fleet = await startFleet({ ports, proxyPort: 18441, slotOffset: OFFSET, strategy: { name: "blue-green" }, health: { deadline: "8s" } });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("rollback inside the window swaps back in one reload with no process started; the waiting deploy then leaves the fleet alone", async () => {
    const file = await keeping("15s");
    const v1 = await masters();
    expect(Object.keys(v1).sort()).toEqual(ports.map(String));
    const load = startLoad({ url: fleet.url, clients: 24, seed: 41, postRatio: 0.1, slowRatio: 0.1, slowMs: 200, durationMs: 300_000 });
    let waiting!: Promise<{ code: number; stdout: string; stderr: string }>;
    try {
      while (load.completed() < 50) await sleep(10);
      let kept!: () => void;
      const keptLine = new Promise<void>((resolve) => (kept = resolve));
      waiting = runNodrop(["deploy", "--config", file, "--version", "v2", "--json"], { onStderr: (text) => (text.includes("the old processes stay up until") ? kept() : undefined) });
      await keptLine;
      // The deploy has printed its report and is waiting out the window: both slots run.
      const both = await masters();
      expect(Object.keys(both).sort()).toEqual(ports.flatMap((p) => [p, p + OFFSET]).map(String).sort());
      await sleep(500);
      const rollback = await runNodrop(["rollback", "--config", fleet.configFile, "--json"]);
      expect(rollback.code, rollback.stderr).toBe(0);
      const report = JSON.parse(rollback.stdout) as DeployReport;
      expect(report.ok).toBe(true);
      expect(report.version).toBe("v1");
      expect(report.routes).toHaveLength(1);
      console.log(`rollback inside the keep window: ${Math.round(report.durationMs)} ms, ${report.routes.length} reload`);
      // No process started: the journal of the rollback has no update or start step, and the v1 masters are the same processes.
      const records = lastDeployRecords(await readJournal(fleet)) as JournalRecord[];
      expect(records.filter((r) => r.type === "step" && (r.kind === "start" || r.kind === "update"))).toEqual([]);
      expect(report.instances.map((i) => [i.version, i.port, i.idle?.running])).toEqual(ports.map((port) => ["v1", port, false]));
      const after = await masters();
      expect(after).toEqual(v1);
    } finally {
      load.stop();
    }
    const { stats } = await load.done;
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
    expect(stats.byVersion.v2).toBeGreaterThan(0);
    // The deploy that kept them wakes at the window's end, finds the rollback after it, and touches nothing.
    const done = await waiting;
    expect(done.code).toBe(0);
    expect(done.stderr).toContain("a later deploy (v1 at");
    expect(await masters()).toEqual(v1);
  }, 180_000);

  it("without a rollback, the old processes stop when the window ends", async () => {
    const file = await keeping("2s");
    const run = await runNodrop(["deploy", "--config", file, "--version", "v2", "--json"]);
    expect(run.code, run.stderr).toBe(0);
    expect((JSON.parse(run.stdout) as DeployReport).keptUntil).toBeDefined();
    expect(run.stderr).toContain("the keep window ended; the old processes are stopped");
    expect(Object.keys(await masters()).sort()).toEqual(ports.map((p) => String(p + OFFSET)).sort());
    expect(await fleet.versions()).toEqual(Object.fromEntries(ports.flatMap((port) => [[String(port), "down"], [String(port + OFFSET), "v2"]])));
    // The window's end redeployed v2 to stop the old processes; a rollback still goes back to v1.
    const rollback = await runNodrop(["rollback", "--config", fleet.configFile, "--json"]);
    expect(rollback.code, rollback.stderr).toBe(0);
    expect(rollback.stderr).toContain("rolling back from v2 to v1");
    expect(await fleet.versions()).toEqual(Object.fromEntries(ports.flatMap((port) => [[String(port), "v1"], [String(port + OFFSET), "down"]])));
  });

  it("the action's step waits out the window too, then stops the old processes", async () => {
    const file = await keeping("2s");
    const dist = path.resolve(import.meta.dirname, "..", "..", "..", "actions", "deploy", "dist");
    const action = await runActionBundle(dist, "index", { config: file, version: "v4", "dry-run": "false" }, { cwd: fleet.dir });
    expect(action.code, action.stdout).toBe(0);
    expect((JSON.parse(action.outputs.result!) as DeployReport).keptUntil).toBeDefined();
    expect(action.stdout).toContain("the keep window ended; the old processes are stopped");
    expect(await fleet.versions()).toEqual(Object.fromEntries(ports.flatMap((port) => [[String(port), "down"], [String(port + OFFSET), "v4"]])));
  });
});
