// Blue-green on real nginx and gunicorn, two slots per instance, 40 clients with cookie jars: the
// new version starts on every spare port while the whole old fleet serves, every nginx worker
// flips to it at one instant, and no client goes back to the old version. A release that fails its
// check is never seen by anyone.
import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, sampleRouting, startFleet } from "../src/index.js";

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
    // The first v2 answer came only after every green slot was checked: the switch phase.
    const switchPhase = result.report?.phases.find((p) => p.name === "switch");
    expect(switchPhase).toBeDefined();
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
