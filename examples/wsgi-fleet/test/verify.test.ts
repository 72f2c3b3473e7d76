// The verify probe during real deploys (nginx + gunicorn under load): its counts match what nginx
// logged for it, agree with the load generator's, and a release that passes its health check but
// fails real pages is caught and stopped.
import { readFile } from "node:fs/promises";
import type { LoadStats } from "@nodrop/loadgen";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, runNodrop, startFleet } from "../src/index.js";

interface Logged {
  status: number;
  version: string;
  agent: string;
}

async function accessLog(fleet: Fleet): Promise<Logged[]> {
  const text = await readFile(fleet.accessLogFile, "utf8");
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const match = /^(\d{3}) (\S+) "([^"]*)"$/.exec(line);
      if (!match) throw new Error(`unexpected access log line: ${line}`);
      return { status: Number(match[1]), version: match[2]!, agent: match[3]! };
    });
}

const count = (lines: Logged[], pick: (l: Logged) => boolean) => lines.filter(pick).length;
const versionsOk = (lines: Logged[]) => {
  const out: Record<string, number> = {};
  for (const l of lines) if (l.status < 400) out[l.version] = (out[l.version] ?? 0) + 1;
  return out;
};

describe("verify probe (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({
      ports: [8151, 8152, 8153, 8154],
      proxyPort: 18151,
      strategy: { name: "half-split" },
      accessLog: true,
      verify: { rate: 20, maxRegressions: 0 },
    });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("half-split v1 -> v2: the probe's counts equal nginx's log of its requests and agree with the load generator", async () => {
    const before = (await accessLog(fleet)).length;
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 24, seed: 31 } });
    expect(result.cli.code).toBe(0);
    const verify = result.report?.verify;
    expect(verify).toBeDefined();
    const lines = (await accessLog(fleet)).slice(before);
    const probe = lines.filter((l) => l.agent === "nodrop-verify");
    const load = lines.filter((l) => l.agent.startsWith("nodrop-loadgen/"));
    // Every request the probe counted reached nginx once (a resent request never did the first time).
    expect(verify!.requests).toBe(probe.length);
    expect(verify!.ok).toBe(count(probe, (l) => l.status === 200));
    expect(verify!.byVersion).toEqual(versionsOk(probe));
    expect(result.stats.requests).toBe(load.length);
    expect(result.stats.byVersion).toEqual(versionsOk(load));
    // Both saw the switch, and both saw what users would: nothing lost, nobody sent back to v1.
    expect(verify!.byVersion.v1).toBeGreaterThan(0);
    expect(verify!.byVersion.v2).toBeGreaterThan(0);
    expect(verify!.failed).toBe(result.stats.failed);
    expect(verify!.failed).toBe(0);
    expect(verify!.regressions).toBe(result.stats.versionRegressions);
    expect(verify!.regressions).toBe(0);
    expect(verify!.breach).toBeUndefined();
  });

  it("rolling to v5, healthy but failing every page: the probe stops the deploy; nginx, the probe and the load generator all count the 500s", async () => {
    const before = (await accessLog(fleet)).length;
    const result = await deployUnderLoad({ fleet, version: "v5", strategy: "rolling", load: { clients: 24, seed: 32 } });
    expect(result.cli.code).toBe(1);
    const report = result.report!;
    expect(report.error?.code).toBe("E_VERIFY");
    expect(report.error?.message).toMatch(/verify: \d+ of \d+ requests to http:\/\/127\.0\.0\.1:18151\/ failed \(allowed: 0; http_500 \d+\)/);
    const verify = report.verify!;
    const lines = (await accessLog(fleet)).slice(before);
    const probe = lines.filter((l) => l.agent === "nodrop-verify");
    expect(verify.requests).toBe(probe.length);
    expect(verify.failed).toBe(count(probe, (l) => l.status === 500));
    expect(verify.errors).toEqual({ http_500: verify.failed });
    expect(verify.failed).toBeGreaterThan(0);
    const stats: LoadStats = result.stats;
    expect(stats.failed).toBe(count(lines.filter((l) => l.agent.startsWith("nodrop-loadgen/")), (l) => l.status === 500));
    expect(stats.errors.http_500).toBe(stats.failed);
    expect(stats.failed).toBeGreaterThan(0);
    // The deploy stopped: some instances were never changed and still serve v2.
    const untouched = report.instances.filter((i) => i.outcome === "not-reached");
    expect(untouched.length).toBeGreaterThan(0);
    for (const i of untouched) expect(i).toMatchObject({ version: "v2", inPool: true });
    const versions = await fleet.versions();
    expect(Object.values(versions).filter((v) => v === "v2").length).toBeGreaterThanOrEqual(untouched.length);

    // `nodrop rollback` brings every instance back to v2; the probe sees no failure on the way.
    const rollback = await runNodrop(["rollback", "--config", fleet.configFile, "--to", "v2"]);
    expect(rollback.code).toBe(0);
    expect(rollback.stdout).toMatch(/verify: \d+ requests to http:\/\/127\.0\.0\.1:18151\/ in [\d.]+m?s: \d+ failed/);
    expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2", "v2"]);
  });
});
