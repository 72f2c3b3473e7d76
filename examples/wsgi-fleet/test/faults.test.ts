// Fault injection under load: each fault at the first and the last batch of a rolling deploy (two
// instances: the first batch has one after it, the last none).
// After each one: no request failed, nginx's config is valid and serving, `nodrop status` agrees
// with what runs, and `nodrop resume` brings the fleet to one version.
import { spawn } from "node:child_process";
import { execFileSync } from "node:child_process";
import { copyFile, mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { startLoad } from "@nodrop/loadgen";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, nodropBin, runNodrop, startFleet } from "../src/index.js";

interface Fault {
  name: string;
  /** Prepares the fault for the instance on `port`; returns how to run the deploy. */
  inject(fleet: Fleet, port: number): Promise<{ killOn?: RegExp; signal?: NodeJS.Signals; cleanup?: () => Promise<void> }>;
}

const marker = (fleet: Fleet, port: number, name: string) => writeFile(path.join(fleet.dir, "instances", String(port), name), "");

const faults: Fault[] = [
  { name: "stop fails", inject: async (f, p) => (await marker(f, p, "fail-once-stop"), {}) },
  { name: "update fails", inject: async (f, p) => (await marker(f, p, "fail-once-update"), {}) },
  { name: "start fails", inject: async (f, p) => (await marker(f, p, "fail-once-start"), {}) },
  { name: "start hangs past the command timeout", inject: async (f, p) => (await marker(f, p, "hang-once-start"), {}) },
  { name: "nodrop killed (-9) after the instance left the pool", inject: async (_f, p) => ({ killOn: new RegExp(`out: web-${p} \\(confirmed`), signal: "SIGKILL" }) },
  { name: "nodrop killed (-9) after the instance stopped", inject: async (_f, p) => ({ killOn: new RegExp(`stop web-${p} ok`), signal: "SIGKILL" }) },
  { name: "SIGTERM while the instance is updated", inject: async (_f, p) => ({ killOn: new RegExp(`update web-${p} ok`), signal: "SIGTERM" }) },
];

interface Outcome {
  fault: string;
  at: string;
  survived: boolean;
  detail: string;
}

describe("fault injection under load (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  const outcomes: Outcome[] = [];
  beforeAll(async () => {
    // A start that hangs waits out the command timeout: 5 s, above a start under load (about 1 s).
    fleet = await startFleet({ ports: [8311, 8312], proxyPort: 18311, commandTimeout: "5s" });
  });
  afterAll(async () => {
    console.log(`faults tried: ${outcomes.length}, survived: ${outcomes.filter((o) => o.survived).length}`);
    for (const o of outcomes) console.log(`  ${o.survived ? "survived" : "FAILED  "} ${o.fault} at ${o.at}${o.detail ? `: ${o.detail}` : ""}`);
    await fleet?.stop();
  });

  const points = [
    { port: 8311, at: "batch 1/2" },
    { port: 8312, at: "batch 2/2" },
  ];
  const cases = faults.flatMap((fault) => points.map((point) => ({ ...point, fault })));

  it.each(cases)("$fault.name at $at", async ({ fault, port, at }) => {
    const before = Object.values(await fleet.versions())[0]!;
    const target = before === "v1" ? "v2" : "v1";
    const how = await fault.inject(fleet, port);
    const load = startLoad({ url: fleet.url, clients: 16, seed: port, durationMs: 180_000 });
    let code: number | null;
    try {
      await new Promise((r) => setTimeout(r, 300));
      code = await new Promise<number | null>((resolve) => {
        const child = spawn(process.execPath, [nodropBin, "deploy", "--config", fleet.configFile, "--version", target], { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (how.killOn && how.signal && how.killOn.test(out) && child.exitCode === null && !child.killed) child.kill(how.signal);
        });
        child.on("close", (c) => resolve(c));
      });
      await how.cleanup?.();
      // The fault hit: the deploy did not report success.
      expect(code).not.toBe(0);
      execFileSync("nginx", ["-p", fleet.dir, "-c", fleet.nginxConf, "-t"], { stdio: "ignore" });
      expect((await fetch(fleet.url)).status).toBe(200);
      // `nodrop status` tells the truth: the versions it reports are what each instance answers.
      // First the fleet settles: an instance started just before the kill is still booting (slower
      // when another test file loads the machine), and would answer between the two probes.
      await settledVersions(fleet);
      const status = JSON.parse((await runNodrop(["status", "--config", fleet.configFile, "--json"])).stdout) as {
        instances: { id: string; port: number; version?: string; healthy: boolean; inPool: boolean }[];
        lastDeploy: { version: string; finished: boolean; ok?: boolean };
      };
      const probed = await fleet.versions();
      for (const i of status.instances) expect(i.healthy ? i.version : "down").toBe(probed[String(i.port)]);
      expect(status.lastDeploy.version).toBe(target);
      expect(status.lastDeploy.ok).not.toBe(true);
      // Resume finishes the deploy: one version everywhere, all in the pool.
      const resumed = await runNodrop(["resume", "--config", fleet.configFile]);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(new Set(Object.values(await fleet.versions()))).toEqual(new Set([target]));
    } finally {
      load.stop();
    }
    const { stats } = await load.done;
    outcomes.push({ fault: fault.name, at, survived: stats.failed === 0, detail: stats.failed ? JSON.stringify(stats.errors) : "" });
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
  });

  it("the proxy host's disk is full when the config is written: nothing changes, nginx keeps serving", async () => {
    const dir = path.dirname(fleet.includeFile);
    const saved = path.join(fleet.dir, "web.conf.saved");
    await copyFile(fleet.includeFile, saved);
    let mounted = false;
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=32k", "tmpfs", dir]);
      mounted = true;
    } catch {
      console.log("disk-full fault skipped: cannot mount a small tmpfs here");
      return;
    }
    const load = startLoad({ url: fleet.url, clients: 16, seed: 99, durationMs: 120_000 });
    try {
      await copyFile(saved, fleet.includeFile);
      await writeFile(path.join(dir, "filler"), Buffer.alloc(48 * 1024)).catch(() => undefined);
      const before = execFileSync("cat", [fleet.includeFile]).toString();
      const target = Object.values(await fleet.versions())[0] === "v1" ? "v2" : "v1";
      const result = await runNodrop(["deploy", "--config", fleet.configFile, "--version", target]);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/cannot write .*web\.conf/);
      expect(execFileSync("cat", [fleet.includeFile]).toString()).toBe(before);
      execFileSync("nginx", ["-p", fleet.dir, "-c", fleet.nginxConf, "-t"], { stdio: "ignore" });
      expect((await fetch(fleet.url)).status).toBe(200);
    } finally {
      load.stop();
      if (mounted) {
        execFileSync("umount", [dir]);
        await mkdir(dir, { recursive: true });
        await copyFile(saved, fleet.includeFile);
        await rm(saved);
      }
    }
    const { stats } = await load.done;
    outcomes.push({ fault: "disk full at the config write", at: "batch 1/2", survived: stats.failed === 0, detail: "" });
    expect(stats.failed).toBe(0);
  });
});

/** The fleet's versions once two probes 700 ms apart agree (at most about 15 s). */
async function settledVersions(fleet: Fleet): Promise<Record<string, string>> {
  let last = JSON.stringify(await fleet.versions());
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 700));
    const now = JSON.stringify(await fleet.versions());
    if (now === last) return JSON.parse(now) as Record<string, string>;
    last = now;
  }
  return JSON.parse(last) as Record<string, string>;
}
