// nodrop killed (-9) between writing nginx's include file and the reload that puts it in force:
// the file then says batch 1 is out of the pool while nginx still routes to it. Read as it stands,
// the file would let the next deploy stop that instance with requests still on it. The adapter
// keeps the routing before an unconfirmed change on record; status says so, and the next deploy
// puts the file's routing into effect (and lets the old one drain) before it stops anything.
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chmod, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { type Routing, sleep } from "@nodrop/core";
import { startLoad } from "@nodrop/loadgen";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, nodropBin, routingIn, runNodrop, startFleet } from "../src/index.js";

const PORTS = [8591, 8592, 8593];

describe("nodrop killed between writing nginx's file and its reload (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  let hold: string;
  let held: string;
  beforeAll(async () => {
    const dir = path.join(process.env.TMPDIR ?? "/tmp", `nodrop-unconfirmed-${process.pid}`);
    hold = `${dir}-hold`;
    held = `${dir}-held`;
    const wrapper = `${dir}-nginx`;
    // The real nginx, except that `nginx -s reload` waits while the hold exists and then fails, sending nothing.
    await writeFile(wrapper, `#!/bin/sh\ncase " $* " in *" -s reload "*) if [ -e ${hold} ]; then : > ${held}; while [ -e ${hold} ]; do sleep 0.05; done; exit 1; fi;; esac\nexec nginx "$@"\n`);
    await chmod(wrapper, 0o755);
    fleet = await startFleet({ ports: PORTS, proxyPort: 18591, strategy: { name: "rolling", batchSize: 1 }, proxy: { binary: wrapper } });
  });
  afterAll(async () => {
    await rm(hold, { force: true });
    await fleet?.stop();
  });

  it("status says nginx may still route by the routing before, and resume puts the file's into effect first: 0 failed requests", async () => {
    const before = routingIn(await readFile(fleet.includeFile, "utf8"));
    const load = startLoad({ url: fleet.url, clients: 16, seed: 591, postRatio: 0.1, slowRatio: 0.1, slowMs: 300, durationMs: 120_000 });
    try {
      await writeFile(hold, "");
      await rm(held, { force: true });
      const child = spawn(process.execPath, [nodropBin, "deploy", "--config", fleet.configFile, "--version", "v2"], { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
      for (let waited = 0; !existsSync(held); waited += 20) {
        if (waited > 60_000 || child.exitCode !== null) throw new Error(`nginx -s reload was never reached:\n${stderr}`);
        await sleep(20);
      }
      // Batch 1's file is written and tested; its reload is held. Killed there.
      child.kill("SIGKILL");
      await exited;
      await rm(hold, { force: true });
      const written = routingIn(await readFile(fleet.includeFile, "utf8"));
      expect(written).toBeDefined();
      expect(written).not.toEqual(before);
      expect(readdirSync(path.dirname(fleet.includeFile)).filter((f) => f.startsWith("web.conf.nodrop-unconfirmed.")).length).toBe(1);

      const status = await runNodrop(["status", "--config", fleet.configFile, "--json"]);
      expect(status.code).toBe(1);
      const shown = JSON.parse(status.stdout) as { routing: Routing; unconfirmed?: Routing[] };
      expect(shown.routing).toEqual(written);
      expect(shown.unconfirmed).toEqual([before]);
      const text = await runNodrop(["status", "--config", fleet.configFile]);
      expect(text.stdout).toContain("A CHANGE WAS WRITTEN BUT ITS RELOAD NEVER CONFIRMED");

      const resume = await runNodrop(["resume", "--config", fleet.configFile, "--json"]);
      expect(resume.code, resume.stderr).toBe(0);
      const report = JSON.parse(resume.stdout) as { routes: { why: string }[]; instances: { version: string; inPool: boolean }[] };
      expect(report.routes[0]?.why).toBe("the routing in the proxy's file put into effect (a change to it was never confirmed)");
      expect(report.instances.every((i) => i.version === "v2" && i.inPool)).toBe(true);
      expect(readdirSync(path.dirname(fleet.includeFile)).filter((f) => f.includes("nodrop-unconfirmed"))).toEqual([]);
    } finally {
      await rm(hold, { force: true });
      load.stop();
    }
    const { stats } = await load.done;
    expect(stats.failed).toBe(0);
    expect(stats.errors).toEqual({});
    expect(Object.values(await fleet.versions()).every((v) => v === "v2")).toBe(true);
    expect((await runNodrop(["status", "--config", fleet.configFile])).code).toBe(0);
  });
});
