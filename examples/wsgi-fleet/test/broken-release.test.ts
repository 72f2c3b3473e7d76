// A release that fails its health check: the deploy stops, the failed batch goes back to the
// previous version and rejoins the pool, and the load sees no failure.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, runNodrop, startFleet } from "../src/index.js";

describe("broken release v3 (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    // A health deadline of 8 s, not the default 20 s: v3 never passes, and the deploy waits the whole deadline for it.
    fleet = await startFleet({ ports: [8121, 8122, 8123, 8124], proxyPort: 18121, version: "v2", health: { deadline: "8s" } });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("exits non-zero, names the instance and step, and leaves the fleet on v2 in the pool with 0 failed requests", async () => {
    const result = await deployUnderLoad({ fleet, version: "v3", load: { clients: 24, seed: 2 } });

    expect(result.cli.code).toBe(1);
    const report = result.report!;
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_HEALTHCHECK");
    expect(report.error?.instance).toBe("web-8121");
    expect(report.error?.step).toBe("batch 1/4: check");
    expect(report.error?.message).toContain("status 503");
    expect(report.instances.map((i) => [i.id, i.version, i.inPool, i.outcome])).toEqual([
      ["web-8121", "v2", true, "reverted"],
      ["web-8122", "v2", true, "not-reached"],
      ["web-8123", "v2", true, "not-reached"],
      ["web-8124", "v2", true, "not-reached"],
    ]);

    expect(result.stats.failed).toBe(0);
    expect(result.stats.byVersion.v3 ?? 0).toBe(0);
    expect(await fleet.versions()).toEqual(Object.fromEntries(fleet.ports.map((p) => [p, "v2"])));

    // `nodrop status` agrees: all healthy on v2 and in the pool.
    const status = await runNodrop(["status", "--config", fleet.configFile, "--json"]);
    expect(status.code).toBe(0);
    const parsed = JSON.parse(status.stdout) as { instances: { id: string; version: string; healthy: boolean; inPool: boolean }[] };
    expect(parsed.instances.map((i) => [i.version, i.healthy, i.inPool])).toEqual(fleet.ports.map(() => ["v2", true, true]));
  });
});
