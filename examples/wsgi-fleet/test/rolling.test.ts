// A rolling deploy of 4 gunicorn instances behind real nginx, under load: not one request fails.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, startFleet } from "../src/index.js";

describe("rolling deploy under load (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({ ports: [8111, 8112, 8113, 8114], proxyPort: 18111 });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("moves every instance from v1 to v2 with 0 failed requests", async () => {
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 24, seed: 1 } });

    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    expect(result.report?.ok).toBe(true);
    expect(result.report?.instances.map((i) => [i.id, i.from, i.version, i.inPool, i.outcome])).toEqual(
      fleet.ports.map((port) => [`web-${port}`, "v1", "v2", true, "updated"]),
    );
    // One reload per batch plus the last one that brings everything back.
    expect(result.report?.routes).toHaveLength(5);

    expect(result.stats.requests).toBeGreaterThan(500);
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    // Both versions answered during the deploy: the load really ran across it.
    expect(result.stats.byVersion.v1).toBeGreaterThan(0);
    expect(result.stats.byVersion.v2).toBeGreaterThan(0);
    expect(result.records.filter((r) => r.kind === "post" && r.status === 200).length).toBeGreaterThan(0);
    expect(result.records.filter((r) => r.kind === "slow" && r.status === 200).length).toBeGreaterThan(0);

    expect(await fleet.versions()).toEqual(Object.fromEntries(fleet.ports.map((p) => [p, "v2"])));
  });

  it("deploying the version that already runs changes nothing and succeeds", async () => {
    const result = await deployUnderLoad({ fleet, version: "v2", warmupMs: 200, cooldownMs: 200 });
    expect(result.cli.code).toBe(0);
    expect(result.report?.routes).toHaveLength(0);
    expect(result.report?.instances.every((i) => i.outcome === "unchanged" && i.inPool)).toBe(true);
    expect(result.stats.failed).toBe(0);
  });
});
