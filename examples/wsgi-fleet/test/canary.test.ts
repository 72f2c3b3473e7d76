// The canary strategy against real nginx and gunicorn, under load from clients that hold cookies:
// the gates read nginx's own access log (nodrop's log_format) and abort a release that answers 500
// on some paths, or is slower, by themselves; a good release goes through every step to 100%.
// Order matters: the aborted deploys leave the fleet on v1, the good one ends on v2.
import type { DeployReport } from "@nodrop/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, runNodrop, startFleet } from "../src/index.js";

const GATE_MS = 4000;
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
    // The bound: failures only for about one gate, and only to the canary's share of clients (25%,
    // within the 12 points the split's hash of 40 clients gives, see the good release's test).
    const first = Math.min(...failed.map((r) => r.end));
    const last = Math.max(...failed.map((r) => r.end));
    expect(last - first).toBeLessThan(GATE_MS + 3000);
    const hit = new Set(failed.map((r) => r.client));
    expect(hit.size).toBeGreaterThan(0);
    expect(hit.size).toBeLessThanOrEqual(Math.ceil(0.37 * LOAD.clients));
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
    expect(report.error?.code).toBe("E_CANARY");
    expect(report.gates![0]).toMatchObject({ decision: "failed", reason: expect.stringContaining("p99 latency") });
    expect(report.gates![0]!.canary!.p99Ms).toBeGreaterThanOrEqual(300);
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    expect(await fleet.versions()).toEqual({ 8761: "v1", 8762: "v1", 8763: "v1", 8764: "v1" });
  });

  it("a good release (v2) goes through 25% and 50% to 100%: 0 failed, 0 regressions, each gate's share of requests within 12 points of its weight", async () => {
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
    for (const gate of report.gates!) expect(Math.abs(share(gate) - gate.weight), `${gate.gate}: ${share(gate).toFixed(1)}%`).toBeLessThanOrEqual(12);
    expect(report.instances.every((i) => i.version === "v2" && i.inPool)).toBe(true);
    // A client that got v2 never got v1 again; and after the deploy, only v2 answers.
    expect(result.records.filter((r) => r.start > result.deployEndMs).every((r) => r.version === "v2")).toBe(true);
  });
});
