// Half-split under load (real nginx + gunicorn, 40 clients with cookie jars): at no moment do both
// versions take new requests, and no client goes back to the old version.
import { rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, runNodrop, startFleet } from "../src/index.js";

describe("half-split deploy (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    // v3 never passes its health check: an 8 s deadline (not 20 s) is what the failing deploy waits.
    fleet = await startFleet({ ports: [8241, 8242, 8243, 8244], proxyPort: 18241, strategy: { name: "half-split" }, health: { deadline: "8s" } });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("v1 -> v2 under load: 0 failed, 0 late-old, 0 version regressions", async () => {
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 40, seed: 21 } });
    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    expect(result.report?.instances.every((i) => i.version === "v2" && i.inPool && i.outcome === "updated")).toBe(true);
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    expect(result.stats.lateOld).toBe(0);
    expect(result.stats.versionRegressions).toBe(0);
    // The timed switch's default delay covered the reload: no late-switch warning from the adapter.
    expect(result.report?.routes.flatMap((r) => r.warnings ?? [])).toEqual([]);
    // The load ran across the switch: both versions answered, the old one first.
    expect(result.stats.byVersion.v1).toBeGreaterThan(0);
    expect(result.stats.byVersion.v2).toBeGreaterThan(0);
    expect(result.stats.firstNewAt).toBeDefined();
    // Every client that got v2 got the version cookie with it.
    const withCookie = result.records.filter((r) => r.version === "v2");
    expect(withCookie.length).toBeGreaterThan(0);
    expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2", "v2"]);
  });

  it("half A fails its check: A goes back, nothing ever served the new version, exit non-zero", async () => {
    const result = await deployUnderLoad({ fleet, version: "v3", load: { clients: 40, seed: 22 } });
    expect(result.cli.code).toBe(1);
    expect(result.report?.error?.code).toBe("E_HEALTHCHECK");
    expect(result.report?.error?.step).toBe("half A: check");
    expect(result.stats.byVersion.v3 ?? 0).toBe(0);
    expect(result.stats.failed).toBe(0);
    expect(result.report?.instances.map((i) => [i.version, i.inPool])).toEqual([
      ["v2", true],
      ["v2", true],
      ["v2", true],
      ["v2", true],
    ]);
    expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2", "v2"]);
  });

  it("half B fails after the switch: the new version keeps serving from A, B stays out; deploying again repairs B", async () => {
    // B's update fails (as a full disk would make it).
    const marker = path.join(fleet.dir, "instances", "8243", "fail-update");
    await writeFile(marker, "");
    const failed = await deployUnderLoad({ fleet, version: "v4", load: { clients: 40, seed: 23 } });
    expect(failed.cli.code).toBe(1);
    expect(failed.report?.error?.step).toBe("switch, half B: update");
    expect(failed.report?.error?.instance).toBe("web-8243");
    const byId = Object.fromEntries(failed.report!.instances.map((i) => [i.id, i]));
    expect(byId["web-8241"]).toMatchObject({ version: "v4", inPool: true });
    expect(byId["web-8242"]).toMatchObject({ version: "v4", inPool: true });
    expect(byId["web-8243"]).toMatchObject({ inPool: false, outcome: "failed" });
    expect(byId["web-8244"]).toMatchObject({ inPool: false });
    expect(failed.stats.failed).toBe(0);
    // Once the first v4 answer came, nobody got v2 again (the switch held).
    expect(failed.stats.lateOld).toBe(0);
    expect(failed.stats.versionRegressions).toBe(0);
    const afterSwitch = await fetch(fleet.url);
    expect(afterSwitch.headers.get("x-app-version")).toBe("v4");

    await rm(marker);
    const repaired = await deployUnderLoad({ fleet, version: "v4", load: { clients: 20, seed: 24 } });
    expect(repaired.cli.code).toBe(0);
    expect(repaired.report?.instances.every((i) => i.version === "v4" && i.inPool)).toBe(true);
    expect(repaired.stats.failed).toBe(0);
    expect(repaired.stats.byVersion.v2 ?? 0).toBe(0);

    const status = await runNodrop(["status", "--config", fleet.configFile, "--json"]);
    const parsed = JSON.parse(status.stdout) as { instances: { version: string; inPool: boolean }[] };
    expect(parsed.instances.every((i) => i.version === "v4" && i.inPool)).toBe(true);
  });
});
