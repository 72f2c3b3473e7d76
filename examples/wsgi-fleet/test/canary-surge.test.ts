// The canary on spare slots (strategy.surge) against real nginx and gunicorn, under load from
// clients that hold cookies: each instance starts the new version on its spare port while its old
// process serves, so the pool never holds fewer than the fleet; the old processes are kept until
// the gates pass, and a gate that fails swaps back to them in one reload, restarting nothing.
// Order matters: the aborted deploy leaves the fleet on v1, the good one ends on v2.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, sampleRouting, startFleet } from "../src/index.js";

const PORTS = [8791, 8792, 8793, 8794];
const OFFSET = 1000;
const GATE_MS = 4000;
const LOAD = { clients: 40, seed: 1931 };

describe("canary on spare slots (real nginx + gunicorn, two slots per instance)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({
      ports: PORTS,
      proxyPort: 18791,
      slotOffset: OFFSET,
      canaryLog: true,
      gracefulTimeout: 2,
      health: { deadline: "8s" },
      strategy: { name: "canary", surge: true, steps: ["25%", "50%"], gate: `${GATE_MS}ms`, analysis: { minRequests: 20, interval: "1s", extraTime: "10s" } },
    });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  /** The pid of the gunicorn master serving a port (its pid file in the fleet's directory). */
  const masterPid = async (port: number) => Number((await readFile(path.join(fleet.dir, "instances", String(port), "gunicorn.pid"), "utf8")).trim());

  it("a release that answers 500 on some paths (v6) is aborted at the first gate by a swap back to the old process: that process never restarted, and the pool never held fewer than 4", async () => {
    const before = await masterPid(8791);
    const sampler = sampleRouting(fleet.includeFile);
    const result = await deployUnderLoad({ fleet, version: "v6", load: LOAD });
    const seen = await sampler.stop();
    const report = result.report!;
    expect(result.cli.code).not.toBe(0);
    expect(report.error).toMatchObject({ code: "E_CANARY", step: "canary 25%: gate" });
    expect(report.gates![0]).toMatchObject({ gate: "25%", decision: "failed" });
    expect(report.recovery).toContain("web-8791 swapped back to the old process on its other slot");
    expect(report.recovery).not.toContain("reverted web-8791");
    // The same v1 process serves 8791 as before the deploy: the abort started nothing.
    expect(await masterPid(8791)).toBe(before);
    expect(seen.fewest).toBe(4);
    // Every failure is a 500 of v6's; after the deploy every request gets v1.
    const failed = result.records.filter((r) => r.status !== 200);
    expect(failed.length).toBe(result.stats.failed);
    expect(failed.every((r) => r.status === 500 && r.version === "v6")).toBe(true);
    const after = result.records.filter((r) => r.start > result.deployEndMs);
    expect(after.length).toBeGreaterThan(0);
    expect(after.filter((r) => r.version !== "v1" || r.status !== 200)).toEqual([]);
    expect(report.instances.map((i) => [i.id, i.version, i.port, i.inPool])).toEqual(PORTS.map((port) => [`web-${port}`, "v1", port, true]));
    // v6's process on the spare port is stopped.
    expect(await fleet.versions()).toEqual(Object.fromEntries(PORTS.flatMap((port) => [[String(port), "v1"], [String(port + OFFSET), "down"]])));
  });

  it("a good release (v2) goes through 25% and 50% to 100% on the spare ports: 0 failed, 0 regressions, never fewer than 4 in the pool, the old processes stopped", async () => {
    const sampler = sampleRouting(fleet.includeFile);
    const result = await deployUnderLoad({ fleet, version: "v2", load: LOAD });
    const seen = await sampler.stop();
    const report = result.report!;
    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    expect(report.gates?.map((g) => [g.gate, g.decision])).toEqual([
      ["25%", "passed"],
      ["50%", "passed"],
    ]);
    expect(result.stats.failed).toBe(0);
    expect(result.stats.versionRegressions).toBe(0);
    expect(seen.fewest).toBe(4);
    expect(report.instances.map((i) => [i.id, i.version, i.port, i.inPool])).toEqual(PORTS.map((port) => [`web-${port}`, "v2", port + OFFSET, true]));
    expect(await fleet.versions()).toEqual(Object.fromEntries(PORTS.flatMap((port) => [[String(port), "down"], [String(port + OFFSET), "v2"]])));
  });
});
