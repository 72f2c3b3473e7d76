// The committed bundle, run the way the runner runs it: `node dist/index.js` with INPUT_* variables
// (hyphens kept) and GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and GITHUB_STATE files, against the real
// local fleet and against SSH test hosts.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Fleet, fleetSh, startFleet } from "@nodrop/example-wsgi-fleet";
import { startTestHosts } from "@nodrop/testhosts";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostile } from "../../../tests/adversarial/tally.js";
import { type RunActionOptions, runActionBundle } from "./run-action.js";

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "dist");

const runAction = (entry: "index" | "post", inputs: Record<string, string>, options: RunActionOptions = {}) => runActionBundle(dist, entry, inputs, options);

describe("the action bundle against the local fleet (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    // v3 never passes its health check: an 8 s deadline (not 20 s) is what each failing deploy waits.
    fleet = await startFleet({ ports: [8291, 8292, 8293], proxyPort: 18291, verify: { rate: 20 }, health: { deadline: "8s" } });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("deploys, sets the outputs and writes the step summary", async () => {
    const run = await runAction("index", { config: fleet.configFile, version: "v2", "dry-run": "false" });
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("::group::batch 1/3 (1/4)");
    const result = JSON.parse(run.outputs.result!) as { ok: boolean; version: string };
    expect(result).toMatchObject({ ok: true, version: "v2" });
    expect(run.outputs.version).toBe("v2");
    expect(JSON.parse(run.outputs.instances!)).toEqual(
      [8291, 8292, 8293].map((port) => ({ id: `web-${port}`, host: "local", port, from: "v1", version: "v2", inPool: true, outcome: "updated" })),
    );
    expect(run.summary).toContain("<h2>nodrop: deployed v2 (rolling)</h2>");
    for (const port of [8291, 8292, 8293]) expect(run.summary).toContain(`<td>web-${port}</td><td>local</td><td>${port}</td><td>v1</td><td>v2</td>`);
    expect(run.state.deploying).toBe("");
    // The verify probe ran through nginx for the whole deploy: its counts are in the summary and an output.
    const verify = JSON.parse(run.outputs.verify!) as { requests: number; failed: number; regressions: number; breach: string | null };
    expect(verify.failed).toBe(0);
    expect(verify.breach).toBeNull();
    expect(verify.requests).toBeGreaterThan(10);
    expect(run.summary).toContain(`verify probe: ${verify.requests} requests to http://127.0.0.1:18291/ in`);
    expect(run.summary).toContain(": 0 failed, ");
  });

  it("a dry run prints the plan and changes nothing", async () => {
    const before = await readFile(fleet.includeFile, "utf8");
    const run = await runAction("index", { config: fleet.configFile, version: "v1", "dry-run": "true" });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("strategy rolling, deploying v1");
    expect(await readFile(fleet.includeFile, "utf8")).toBe(before);
    expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2"]);
  });

  it("a failing health check: exit non-zero, an annotation naming the instance and step, the fleet restored", async () => {
    const run = await runAction("index", { config: fleet.configFile, version: "v3", "dry-run": "false" });
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/::error title=nodrop E_HEALTHCHECK on web-8291 at batch 1\/3%3A check::instance web-8291: health check/);
    expect(JSON.parse(run.outputs.result!)).toMatchObject({ ok: false, error: { code: "E_HEALTHCHECK", instance: "web-8291" } });
    expect(run.summary).toContain("nodrop: FAILED v3");
    expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2"]);
    expect(JSON.parse(run.outputs.instances!).every((i: { inPool: boolean; version: string }) => i.inPool && i.version === "v2")).toBe(true);
  });

  it("SIGINT in the middle: nginx stays valid and serving, the state of each instance is reported, the post step says it is incomplete", async () => {
    const run = await runAction("index", { config: fleet.configFile, version: "v1", "dry-run": "false" }, {
      onStdout: (text, child) => {
        // As the runner does on cancel: SIGINT once the first instance is being changed.
        if (text.includes("update web-8291: ok") && !child.killed) child.kill("SIGINT");
      },
    });
    expect(run.code).toBe(1);
    const result = JSON.parse(run.outputs.result!) as { error: { code: string }; instances: { id: string; version: string; inPool: boolean }[] };
    expect(result.error.code).toBe("E_ABORTED");
    // Every instance is reported, and what the report says matches what runs.
    const versions = await fleet.versions();
    for (const i of result.instances) expect(versions[String(i.id.slice(4))]).toBe(i.version);
    expect(result.instances.filter((i) => i.inPool).length).toBeGreaterThan(0);
    await fleet.nginx("-t");
    expect((await fetch(fleet.url)).status).toBe(200);
    expect(run.state.deploying).toBe("v1");

    const post = await runAction("post", {}, { env: { STATE_deploying: run.state.deploying! } });
    expect(post.code).toBe(0);
    expect(post.stdout).toContain("::warning title=nodrop%3A deploy left incomplete::the deploy of v1 did not finish");
  });
});

describe("the action bundle: secrets, runners without summary or outputs, and the post step (real nginx + gunicorn)", () => {
  const ports = [8296, 8297];
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({ ports, proxyPort: 18296, health: { deadline: "8s" } });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  /** The gunicorn master of an instance, started by the config's `start` command ("" when stopped). */
  const pidOf = (port: number) => {
    const file = path.join(fleet.dir, "instances", String(port), "gunicorn.pid");
    return existsSync(file) ? readFileSync(file, "utf8").trim() : "";
  };
  /** Everything a deploy could change: the include file, the instances' daemons and versions, the lock. */
  const snapshot = async () =>
    JSON.stringify({ include: await readFile(fleet.includeFile, "utf8"), pids: ports.map(pidOf), versions: await fleet.versions(), lock: readdirSync(path.join(fleet.dir, "state")).sort() });
  /** Every regular file under a directory, for a leak check. */
  const filesUnder = (dir: string): string[] =>
    readdirSync(dir).flatMap((name) => {
      const file = path.join(dir, name);
      const stat = lstatSync(file);
      return stat.isDirectory() ? filesUnder(file) : stat.isFile() ? [file] : [];
    });

  it("the ssh-private-key and ssh-passphrase inputs are in no environment of a local command or a daemon it started", async () => {
    // Key-shaped text: the fleet is local, so no SSH connection is made, but the action reads the inputs as always.
    const material = "bm9kcm9wLXRlc3Qta2V5LW1hdGVyaWFsLTdhMmYK";
    const key = `-----BEGIN OPENSSH PRIVATE KEY-----\n${material}\n-----END OPENSSH PRIVATE KEY-----`;
    const passphrase = "nodrop-test-passphrase-5f1c";
    await hostile("action-input", "ssh-private-key and ssh-passphrase reaching daemons started by local commands (/proc/PID/environ)", async () => {
      const before = ports.map(pidOf);
      const run = await runAction(
        "index",
        { config: fleet.configFile, version: "v2", "dry-run": "false", "ssh-private-key": key, "ssh-passphrase": passphrase },
        { env: { NODROP_TEST_INHERITED: "yes" } },
      );
      expect(run.code).toBe(0);
      expect(JSON.parse(run.outputs.result!)).toMatchObject({ ok: true, version: "v2" });
      expect(Object.values(await fleet.versions())).toEqual(["v2", "v2"]);
      const daemons = ports.map(pidOf);
      // New gunicorn masters, started by the action's `start` commands.
      expect(daemons.filter((pid, i) => pid !== "" && pid !== before[i])).toHaveLength(ports.length);
      for (const pid of daemons) {
        const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean);
        // The action's own environment did reach the daemon: what is missing was removed.
        expect(environ).toContain("NODROP_TEST_INHERITED=yes");
        expect(environ.filter((v) => /^(INPUT_SSH|NODROP_ACTION_SSH)/i.test(v))).toEqual([]);
        for (const secret of [material, passphrase]) expect(environ.join("\n")).not.toContain(secret);
      }
      // Nothing else kept them: no file of the fleet (journal, lock, nginx, instances), no output, the state.
      for (const file of filesUnder(fleet.dir)) for (const secret of [material, passphrase]) expect(readFileSync(file, "utf8"), file).not.toContain(secret);
      for (const text of [JSON.stringify(run.outputs), JSON.stringify(run.state), run.summary]) for (const secret of [material, passphrase]) expect(text).not.toContain(secret);
      expect(run.state.deploying).toBe("");
    });
  });

  it("a runner without a step summary (GITHUB_STEP_SUMMARY unset): the deploy that succeeded exits 0 with a warning", async () => {
    await hostile("action-input", "GITHUB_STEP_SUMMARY unset", async () => {
      const run = await runAction("index", { config: fleet.configFile, version: "v1", "dry-run": "false" }, { env: { GITHUB_STEP_SUMMARY: undefined } });
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^::warning::nodrop: could not write the step summary: .*GITHUB_STEP_SUMMARY/m);
      expect(run.stdout).not.toContain("::error");
      expect(JSON.parse(run.outputs.result!)).toMatchObject({ ok: true, version: "v1" });
      expect(run.outputs.version).toBe("v1");
      expect(run.state.deploying).toBe("");
      // The deploy itself is whole: every instance on v1 and in the pool.
      expect(JSON.parse(run.outputs.instances!).map((i: { version: string; inPool: boolean }) => `${i.version}:${i.inPool}`)).toEqual(["v1:true", "v1:true"]);
      expect(Object.values(await fleet.versions())).toEqual(["v1", "v1"]);
      expect(run.summary).toBe("");
    });
  });

  it("GITHUB_OUTPUT an unwritable path: a warning; the deploy's result decides the exit code (0 on success, 1 on failure)", async () => {
    // A directory: appending to it fails, also for root.
    const unwritable = mkdtempSync(path.join(os.tmpdir(), "nodrop-output-"));
    await hostile("action-input", "GITHUB_OUTPUT an unwritable path, deploy succeeds", async () => {
      const run = await runAction("index", { config: fleet.configFile, version: "v2", "dry-run": "false" }, { env: { GITHUB_OUTPUT: unwritable } });
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^::warning::nodrop: could not set the output result: /m);
      expect(run.stdout).not.toContain("::error");
      expect(run.summary).toContain("<h2>nodrop: deployed v2 (rolling)</h2>");
      expect(Object.values(await fleet.versions())).toEqual(["v2", "v2"]);
      expect(readdirSync(unwritable)).toEqual([]);
    });
    // A version with no release fails its first update at once (a failing health check waits out its deadline).
    await hostile("action-input", "GITHUB_OUTPUT an unwritable path, deploy fails its first update", async () => {
      const run = await runAction("index", { config: fleet.configFile, version: "v9", "dry-run": "false" }, { env: { GITHUB_OUTPUT: unwritable } });
      expect(run.code).toBe(1);
      expect(run.stdout).toMatch(/^::warning::nodrop: could not set the output result: /m);
      expect(run.stdout).toMatch(/::error title=nodrop E_INSTANCE on web-8296/);
      expect(run.summary).toContain("nodrop: FAILED v9");
      // Reverted: both instances back on v2.
      expect(Object.values(await fleet.versions())).toEqual(["v2", "v2"]);
      expect(readdirSync(unwritable)).toEqual([]);
    });
  });

  it("the deploy lock held by another deploy: refused, nothing touched, and the post step warns of nothing", async () => {
    const lockDir = path.join(fleet.dir, "state", "lock");
    mkdirSync(lockDir, { recursive: true });
    const now = new Date().toISOString();
    const holder = JSON.stringify({ who: "ci", from: "elsewhere", version: "v9", since: now, heartbeat: now, pid: 1 });
    writeFileSync(path.join(lockDir, "holder.json"), holder);
    try {
      await hostile("proxy-host-file", "deploy lock held by another deploy", async () => {
        const before = await snapshot();
        const run = await runAction("index", { config: fleet.configFile, version: "v1", "dry-run": "false" });
        expect(run.code).toBe(1);
        expect(run.stdout).toMatch(/::error title=nodrop E_LOCK::.*held by ci@elsewhere deploying v9/);
        expect(run.state.deploying ?? "").toBe("");
        const post = await runAction("post", {}, { env: { STATE_deploying: run.state.deploying } });
        expect(post.code).toBe(0);
        expect(post.stdout).not.toContain("did not finish");
        expect(post.stdout).not.toContain("::warning");
        expect(post.stdout).toContain("nodrop: nothing to clean up");
        expect(await snapshot()).toBe(before);
        expect(readFileSync(path.join(lockDir, "holder.json"), "utf8")).toBe(holder);
      });
    } finally {
      rmSync(lockDir, { recursive: true, force: true });
    }
  });

  it("preflight refuses (an instance in the pool is down): nothing touched, and the post step warns of nothing", async () => {
    execFileSync(fleetSh, [fleet.dir, "stop", "8297"]);
    try {
      await hostile("instance-response", "instance in the pool down before the deploy", async () => {
        const before = await snapshot();
        const run = await runAction("index", { config: fleet.configFile, version: "v1", "dry-run": "false" });
        expect(run.code).toBe(1);
        expect(run.stdout).toMatch(/::error title=nodrop E_PREFLIGHT.*::refusing to deploy: web-8297/);
        expect(JSON.parse(run.outputs.result!)).toMatchObject({ ok: false, error: { code: "E_PREFLIGHT" } });
        expect(run.state.deploying ?? "").toBe("");
        const post = await runAction("post", {}, { env: { STATE_deploying: run.state.deploying } });
        expect(post.code).toBe(0);
        expect(post.stdout).not.toContain("did not finish");
        expect(post.stdout).not.toContain("::warning");
        expect(await snapshot()).toBe(before);
        expect(await fleet.versions()).toEqual({ "8296": "v2", "8297": "down" });
      });
    } finally {
      execFileSync(fleetSh, [fleet.dir, "start", "8297", "127.0.0.1"]);
    }
  });
});

describe("the action bundle against SSH hosts", () => {
  it("deploys with the key from an input and the key appears nowhere in stdout, stderr, the summary or the outputs", async () => {
    const hosts = await startTestHosts({ names: ["web1", "web2"] });
    let fleet: Fleet | undefined;
    try {
      fleet = await startFleet({ hosts, ports: [8295], proxyPort: 18295 });
      // The config names no key and no known hosts: both come from the action's inputs.
      const config = parse(await readFile(fleet.configFile, "utf8")) as { ssh: Record<string, unknown> };
      delete config.ssh.privateKeyFile;
      delete config.ssh.knownHosts;
      const file = path.join(fleet.dir, "action.yaml");
      writeFileSync(file, stringify(config));
      const key = hosts.clientKey.privateKey;
      const run = await runAction("index", {
        config: file,
        version: "v2",
        "dry-run": "false",
        "ssh-private-key": key,
        "ssh-passphrase": hosts.clientKey.passphrase,
        "known-hosts": hosts.knownHosts,
      });
      expect(run.code).toBe(0);
      expect(JSON.parse(run.outputs.result!)).toMatchObject({ ok: true });
      // The runner learns secrets from ::add-mask:: commands and never shows them; everything else must not carry the key.
      const visible = run.stdout.split("\n").filter((line) => !line.startsWith("::add-mask::")).join("\n");
      expect(run.stdout).toContain("::add-mask::");
      const secrets = [...key.split("\n").filter((l) => l && !l.startsWith("-----")), hosts.clientKey.passphrase];
      for (const text of [visible, run.stderr, run.summary, JSON.stringify(run.outputs)]) {
        for (const secret of secrets) expect(text).not.toContain(secret);
      }
    } finally {
      await fleet?.stop();
      await hosts.stop();
    }
  });
});

describe("the committed bundle", () => {
  it("is what a fresh build produces (pnpm test builds first; a stale dist shows as a change)", async () => {
    const { execFileSync } = await import("node:child_process");
    const root = path.resolve(dist, "..", "..", "..");
    const changed = execFileSync("git", ["status", "--porcelain", "--", "actions/deploy/dist"], { cwd: root }).toString().trim();
    expect(changed, "rebuild and commit actions/deploy/dist").toBe("");
  });
});
