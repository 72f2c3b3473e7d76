// The deploy lock and the journal on the proxy host: two deploys never overlap, a deploy killed
// with -9 is seen as unfinished, `resume` finishes it and `rollback` returns the fleet.
import { spawn } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startLoad } from "@nodrop/loadgen";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, nodropBin, runNodrop, startFleet } from "../src/index.js";

describe("deploy lock and journal (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({ ports: [8301, 8302, 8303], proxyPort: 18302 });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("a second deploy during the first is refused, naming the holder; with --lock-wait it queues", async () => {
    const first = runNodrop(["deploy", "--config", fleet.configFile, "--version", "v2"]);
    await new Promise((r) => setTimeout(r, 1500));
    const refused = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v2"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/E_LOCK.*held by .* deploying v2 since/);
    const status = await runNodrop(["lock", "status", "--config", fleet.configFile, "--json"]);
    expect(JSON.parse(status.stdout)).toMatchObject({ held: true, stale: false, holder: { version: "v2" } });
    const queued = runNodrop(["deploy", "--config", fleet.configFile, "--version", "v1", "--lock-wait", "2m"]);
    expect((await first).code).toBe(0);
    expect((await queued).code).toBe(0);
    expect(Object.values(await fleet.versions())).toEqual(["v1", "v1", "v1"]);
    expect(JSON.parse((await runNodrop(["lock", "status", "--config", fleet.configFile, "--json"])).stdout)).toMatchObject({ held: false });
  });

  it("a stale lock (its holder was killed on this machine) is taken over; one from elsewhere is refused until watched stale; `nodrop lock release` removes one", async () => {
    const lockDir = path.join(fleet.dir, "state", "lock");
    await mkdir(lockDir, { recursive: true });
    // A deploy killed with -9 on this machine: its pid is gone, so the lock is stale at once.
    const gone = spawn("true");
    await new Promise((r) => gone.on("close", r));
    const at = new Date().toISOString();
    await writeFile(path.join(lockDir, "holder.json"), JSON.stringify({ who: "ci", from: os.hostname(), version: "v9", since: at, heartbeat: at, pid: gone.pid }));
    expect((await runNodrop(["lock", "status", "--config", fleet.configFile])).stdout).toContain("stale");
    expect((await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v1"])).code).toBe(0);

    // A holder on another machine, however old its timestamps: only a heartbeat counter this
    // reader watched standing still for 60 s makes it stale, so a deploy that does not wait is refused.
    await mkdir(lockDir, { recursive: true });
    const old = new Date(Date.now() - 3_600_000).toISOString();
    await writeFile(path.join(lockDir, "holder.json"), JSON.stringify({ who: "ci", from: "elsewhere", version: "v9", since: old, heartbeat: old, pid: 1 }));
    const refused = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v2"]);
    expect(refused.stderr).toContain("E_LOCK");
    expect(refused.stderr).toMatch(/held by ci@elsewhere .*no heartbeat seen in the .* this deploy watched it/);
    const released = await runNodrop(["lock", "release", "--config", fleet.configFile]);
    expect(released.stdout).toContain("released the lock held by ci@elsewhere");
  });

  it("kill -9 mid-deploy: nginx keeps serving, status says unfinished, resume finishes, rollback returns; 0 failed", async () => {
    const load = startLoad({ url: fleet.url, clients: 16, seed: 51, durationMs: 180_000 });
    try {
      // Kill the deploy the moment its first instance has been stopped.
      const child = spawn(process.execPath, [nodropBin, "deploy", "--config", fleet.configFile, "--version", "v2"], { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      await new Promise<void>((resolve) => {
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (/stop web-8301 ok/.test(out)) child.kill("SIGKILL");
        });
        child.on("close", () => resolve());
      });
      expect(out).toContain("stop web-8301 ok");

      const status = await runNodrop(["status", "--config", fleet.configFile]);
      expect(status.code).toBe(1);
      expect(status.stdout).toContain("last deploy: v2 (rolling)");
      expect(status.stdout).toMatch(/DID NOT FINISH; last step: batch 1\/3: (stop|update|start) web-8301/);
      await fleet.nginx("-t");
      expect((await fetch(fleet.url)).status).toBe(200);

      const resumed = await runNodrop(["resume", "--config", fleet.configFile]);
      expect(resumed.stderr).toContain("resuming the deploy of v2");
      expect(resumed.code).toBe(0);
      expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2"]);

      const rolledBack = await runNodrop(["rollback", "--config", fleet.configFile]);
      expect(rolledBack.stderr).toContain("rolling back from v2 to v1");
      expect(rolledBack.code).toBe(0);
      expect(Object.values(await fleet.versions())).toEqual(["v1", "v1", "v1"]);
      const after = await runNodrop(["status", "--config", fleet.configFile, "--json"]);
      const parsed = JSON.parse(after.stdout) as { lastDeploy: { version: string; finished: boolean; ok: boolean }; instances: { inPool: boolean }[] };
      expect(parsed.lastDeploy).toMatchObject({ version: "v1", finished: true, ok: true });
      expect(parsed.instances.every((i) => i.inPool)).toBe(true);
    } finally {
      load.stop();
    }
    const { stats } = await load.done;
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
  });
});
