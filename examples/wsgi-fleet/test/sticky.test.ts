// Sticky under load (real nginx + gunicorn): 50 clients, each with its own cookie jar and its own
// source address on loopback, so address affinity is real.
import { afterAll, describe, expect, it } from "vitest";
import type { RequestRecord } from "@nodrop/loadgen";
import { type Fleet, deployUnderLoad, startFleet } from "../src/index.js";

const addresses = Array.from({ length: 50 }, (_, i) => `127.0.6.${i + 1}`);

/** Each client's instances in order, with repeats folded: ["8261", "8262", "8261"]. */
function instancePaths(records: readonly RequestRecord[]): string[][] {
  const paths = new Map<number, string[]>();
  for (const r of [...records].filter((r) => r.status === 200 && r.instance).sort((a, b) => a.start - b.start)) {
    const path = paths.get(r.client) ?? [];
    if (path.at(-1) !== r.instance) path.push(r.instance!);
    paths.set(r.client, path);
  }
  return [...paths.values()];
}

describe("sticky deploy of 4 instances under load (real nginx + gunicorn)", () => {
  const fleets: Fleet[] = [];
  afterAll(async () => {
    for (const fleet of fleets) await fleet.stop();
  });

  it("0 failed, 0 version regressions, and each client stays on one instance except while it is out of the pool", async () => {
    const fleet = await startFleet({ ports: [8261, 8262, 8263, 8264], proxyPort: 18261, strategy: { name: "sticky" } });
    fleets.push(fleet);
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 50, seed: 31, localAddresses: addresses } });
    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    expect(result.stats.versionRegressions).toBe(0);
    expect(result.stats.byVersion.v1).toBeGreaterThan(0);
    expect(result.stats.byVersion.v2).toBeGreaterThan(0);

    // One instance at a time leaves: a client moves away only while its own instance is out, and
    // comes back to it: at most home -> elsewhere -> home.
    const paths = instancePaths(result.records);
    expect(paths).toHaveLength(50);
    for (const path of paths) {
      expect(path.length).toBeLessThanOrEqual(3);
      expect(path.at(-1)).toBe(path[0]);
    }
    // The clients really were spread over the instances by their addresses.
    expect(new Set(paths.map((p) => p[0])).size).toBeGreaterThan(1);
    expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2", "v2"]);
  });

  it("with surge on two slots per instance: every client stays on its one instance through the swaps, 0 failed, 0 regressions", async () => {
    const fleet = await startFleet({ ports: [8481, 8482, 8483, 8484], proxyPort: 18481, slotOffset: 1000, strategy: { name: "sticky", surge: true } });
    fleets.push(fleet);
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 50, seed: 32, localAddresses: addresses } });
    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    expect(result.report?.instances.map((i) => [i.version, i.port, i.inPool])).toEqual([8481, 8482, 8483, 8484].map((port) => ["v2", port + 1000, true]));
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    expect(result.stats.versionRegressions).toBe(0);
    expect(result.stats.byVersion.v1).toBeGreaterThan(0);
    expect(result.stats.byVersion.v2).toBeGreaterThan(0);
    // The app names the port that answered; an instance answers from its first port, then its spare.
    const instanceOf = (port: string) => String(Number(port) >= 9000 ? Number(port) - 1000 : Number(port));
    const paths = instancePaths(result.records).map((path) => path.map(instanceOf).filter((id, i, all) => i === 0 || all[i - 1] !== id));
    expect(paths).toHaveLength(50);
    // No instance ever leaves the pool, and the ring is by instance: a client never changes instance.
    expect(paths.filter((path) => path.length > 1)).toEqual([]);
    expect(new Set(paths.map((p) => p[0])).size).toBeGreaterThan(1);
    // And it did move from the old process to the new one of its instance.
    const ports = instancePaths(result.records);
    expect(ports.filter((path) => path.length >= 2).length).toBeGreaterThan(40);
  });
});
