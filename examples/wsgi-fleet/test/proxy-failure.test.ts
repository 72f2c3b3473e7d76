// The proxy refuses a change: the previous include file is restored, nginx keeps serving the
// old config, no instance is touched, and the load sees no failure.
import { writeFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { deploy, sleep } from "@nodrop/core";
import { loadDeployment } from "@nodrop/deployment";
import { startLoad } from "@nodrop/loadgen";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, startFleet } from "../src/index.js";

async function workerPids(fleet: Fleet): Promise<number[]> {
  const { execFile } = await import("node:child_process");
  const master = (await readFile(fleet.pidFile, "utf8")).trim();
  const out = await new Promise<string>((resolve, reject) =>
    execFile("ps", ["-o", "pid=", "--ppid", master], (error, stdout) => (error ? reject(error) : resolve(stdout))),
  );
  return out.split("\n").map((l) => Number(l.trim())).filter(Boolean).sort();
}

describe("proxy failures (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  let siteConf: string;
  beforeAll(async () => {
    fleet = await startFleet({ ports: [8131, 8132, 8133, 8134], proxyPort: 18131 });
    siteConf = await readFile(fleet.nginxConf, "utf8");
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("nginx -t fails mid-deploy: previous file restored, nginx still serving, nothing touched, 0 failed", async () => {
    const includeBefore = await readFile(fleet.includeFile, "utf8");
    const workersBefore = await workerPids(fleet);
    const deployment = await loadDeployment(fleet.configFile);
    const load = startLoad({ url: fleet.url, clients: 20, seed: 3, durationMs: 60_000 });
    await sleep(500);
    // Someone breaks the site config by hand while the deploy runs (after its preflight passed):
    // nodrop's change must not go live on top of it.
    const report = await deploy({
      ...deployment.options,
      version: "v2",
      onEvent: (event) => {
        if (event.type === "plan") writeFileSync(fleet.nginxConf, siteConf.replace("http {", "http {\n    this_is_not_a_directive on;"));
      },
    });
    await sleep(500);
    load.stop();
    const { stats } = await load.done;
    await deployment.dispose();

    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_PROXY_TEST");
    expect(report.error?.message).toContain("this_is_not_a_directive");
    expect(report.error?.message).toContain("restored");
    expect(await readFile(fleet.includeFile, "utf8")).toBe(includeBefore);
    expect(await workerPids(fleet)).toEqual(workersBefore);
    expect(report.instances.every((i) => i.steps.length === 0 && i.version === "v1" && i.inPool)).toBe(true);
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
    expect(stats.requests).toBeGreaterThan(0);
    expect(Object.values(await fleet.versions())).toEqual(["v1", "v1", "v1", "v1"]);
    expect((await fetch(fleet.url)).status).toBe(200);
  });

  it("reload accepted by nginx -t but refused by the master: restored and reported", async () => {
    // A listen on a port that is taken passes `nginx -t` and `nginx -s reload` exits 0,
    // but the master cannot bind and keeps the old config (only the error log says so).
    await writeFile(fleet.nginxConf, siteConf.replace("http {", "http {\n    server { listen 127.0.0.1:8131; }"));
    const includeBefore = await readFile(fleet.includeFile, "utf8");
    const workersBefore = await workerPids(fleet);

    const result = await deployUnderLoad({ fleet, version: "v2", warmupMs: 500, cooldownMs: 500, load: { clients: 20, seed: 4 } });

    expect(result.cli.code).toBe(1);
    expect(result.report?.error?.code).toBe("E_PROXY_RELOAD");
    expect(result.report?.error?.message).toMatch(/did not take effect/);
    expect(await readFile(fleet.includeFile, "utf8")).toBe(includeBefore);
    expect(await workerPids(fleet)).toEqual(workersBefore);
    expect(result.report?.instances.every((i) => i.steps.length === 0 && i.version === "v1" && i.inPool)).toBe(true);
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
  });

  it("after the site config is fixed, the same deploy goes through", async () => {
    await writeFile(fleet.nginxConf, siteConf);
    const result = await deployUnderLoad({ fleet, version: "v2", warmupMs: 300, cooldownMs: 300, load: { clients: 20, seed: 5 } });
    expect(result.cli.code).toBe(0);
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2", "v2"]);
  });
});
