// Hooks (issue 18): preDeploy, beforeBatch, afterBatch, postDeploy and onFailure run where nodrop
// runs, with the deploy in NODROP_* variables; each one's success and failure paths, against a real
// fleet (gunicorn and nginx on this machine).
import { chmod, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type Fleet, runNodrop, startFleet } from "../src/index.js";

describe("hooks around a rolling deploy (real gunicorn and nginx)", () => {
  let fleet: Fleet;
  let config: string;
  let log: string;
  const failOn = (name: string) => writeFile(path.join(fleet.dir, `fail-${name}`), "");
  beforeAll(async () => {
    fleet = await startFleet({ ports: [8741, 8742], proxyPort: 18741, health: { deadline: "8s" } });
    log = path.join(fleet.dir, "hooks.log");
    // One script for every hook: it logs what it was given, prints a line that tries to pass for a
    // workflow command and a terminal escape, and fails (exit 3) where a fail-<hook>[-<index>] file says so.
    const script = path.join(fleet.dir, "hook.sh");
    await writeFile(
      script,
      [
        "#!/bin/bash",
        `echo "$NODROP_HOOK|$NODROP_VERSION|$NODROP_PREVIOUS|$NODROP_STRATEGY|$NODROP_HOSTS|$NODROP_INSTANCES|$NODROP_PHASE|$NODROP_PHASE_INDEX/$NODROP_PHASE_COUNT|$NODROP_PHASE_INSTANCES|$NODROP_RESULT|$NODROP_ERROR_CODE|$NODROP_ERROR_STEP" >> ${log}`,
        'echo "::warning::forged by $NODROP_HOOK"',
        "printf 'escape \\033[2J here\\n' >&2",
        `if [ -e ${fleet.dir}/fail-$NODROP_HOOK ] || [ -e ${fleet.dir}/fail-$NODROP_HOOK-$NODROP_PHASE_INDEX ]; then exit 3; fi`,
      ].join("\n"),
    );
    await chmod(script, 0o755);
    const raw = parse(await readFile(fleet.configFile, "utf8")) as Record<string, unknown>;
    raw.hooks = Object.fromEntries(["preDeploy", "beforeBatch", "afterBatch", "postDeploy", "onFailure"].map((h) => [h, script]));
    config = path.join(fleet.dir, "hooks.yaml");
    await writeFile(config, stringify(raw));
  });
  beforeEach(async () => {
    await rm(log, { force: true });
    for (const name of ["preDeploy", "beforeBatch-2", "afterBatch-1", "postDeploy", "onFailure"]) await rm(path.join(fleet.dir, `fail-${name}`), { force: true });
  });
  afterAll(async () => {
    await fleet?.stop();
  });
  const logged = async () => (await readFile(log, "utf8").catch(() => "")).trim().split("\n").filter(Boolean);
  const deploy = async (version: string) => {
    const run = await runNodrop(["deploy", "--config", config, "--version", version, "--json"]);
    return { ...run, report: JSON.parse(run.stdout) as { ok: boolean; error?: { code: string; step?: string }; recovery?: string; hooks?: { hook: string; ok: boolean; code: number | null }[] } };
  };
  const versions = async () => Object.values(await fleet.versions());
  /** Pool membership as nginx has it, read by `nodrop status`. */
  const inPool = async () => {
    const status = JSON.parse((await runNodrop(["status", "--config", config, "--json"])).stdout) as { instances: { id: string; inPool: boolean }[] };
    return Object.fromEntries(status.instances.map((i) => [i.id, i.inPool]));
  };

  it("all succeed: each runs in order with the deploy in its variables, and its output reaches the log inert", async () => {
    const run = await deploy("v2");
    expect(run.code, run.stderr).toBe(0);
    expect(await logged()).toEqual([
      "preDeploy|v2|v1|rolling|local|web-8741 web-8742||/||||",
      "beforeBatch|v2|v1|rolling|local|web-8741 web-8742|batch 1/2|1/2|web-8741|||",
      "afterBatch|v2|v1|rolling|local|web-8741 web-8742|batch 1/2|1/2|web-8741|||",
      "beforeBatch|v2|v1|rolling|local|web-8741 web-8742|batch 2/2|2/2|web-8742|||",
      "afterBatch|v2|v1|rolling|local|web-8741 web-8742|batch 2/2|2/2|web-8742|||",
      "postDeploy|v2|v1|rolling|local|web-8741 web-8742||/||succeeded||",
    ]);
    expect(run.report.hooks?.map((h) => `${h.hook} ${h.ok}`)).toEqual(["preDeploy true", "beforeBatch true", "afterBatch true", "beforeBatch true", "afterBatch true", "postDeploy true"]);
    // The progress log (stderr with --json): each output line under its hook, none at a line's start, no escape.
    expect(run.stderr).toContain("  postDeploy | ::warning::forged by postDeploy");
    expect(run.stderr).toContain("  preDeploy | escape ?[2J here");
    expect(run.stderr.split("\n").some((line) => line.startsWith("::"))).toBe(false);
    expect(run.stderr).not.toContain("\x1b");
    // The report (the action's `result` output) has no hook output.
    expect(run.stdout).not.toContain("forged");
  });

  it("preDeploy fails: nothing is touched, and onFailure runs (its own failure is reported too)", async () => {
    await failOn("preDeploy");
    await failOn("onFailure");
    const before = await readFile(fleet.includeFile, "utf8");
    const run = await deploy("v4");
    expect(run.code).toBe(1);
    expect(run.report.error).toMatchObject({ code: "E_HOOK", step: "preDeploy" });
    expect(run.report.recovery).toMatch(/nothing was touched/);
    expect(await readFile(fleet.includeFile, "utf8")).toBe(before);
    expect(await versions()).toEqual(["v2", "v2"]);
    expect((await logged()).map((l) => l.split("|")[0])).toEqual(["preDeploy", "onFailure"]);
    expect((await logged())[1]).toBe("onFailure|v4|v2|rolling|local|web-8741 web-8742||/||failed|E_HOOK|preDeploy");
    expect(run.report.hooks?.map((h) => `${h.hook} ${h.ok} ${h.code}`)).toEqual(["preDeploy false 3", "onFailure false 3"]);
  });

  it("beforeBatch fails before batch 2: batch 1 is done and serves, batch 2 is not touched", async () => {
    await failOn("beforeBatch-2");
    const run = await deploy("v4");
    expect(run.code).toBe(1);
    expect(run.report.error).toMatchObject({ code: "E_HOOK", step: "batch 2/2: beforeBatch" });
    expect(run.report.recovery).toMatch(/pool restored: web-8741, web-8742/);
    expect(await versions()).toEqual(["v4", "v2"]);
    // Batch 1 was out of the pool until batch 2's reload: it is back, with the instance batch 2 never touched.
    expect(await inPool()).toEqual({ "web-8741": true, "web-8742": true });
    expect((await logged()).map((l) => l.split("|")[0])).toEqual(["preDeploy", "beforeBatch", "afterBatch", "beforeBatch", "onFailure"]);
  });

  it("afterBatch fails after batch 1: the deploy stops before batch 2, and resume goes on from there", async () => {
    await deploy("v2");
    await rm(log, { force: true });
    await failOn("afterBatch-1");
    const run = await deploy("v4");
    expect(run.code).toBe(1);
    expect(run.report.error).toMatchObject({ code: "E_HOOK", step: "batch 1/2: afterBatch" });
    expect(run.report.recovery).toMatch(/batch 1\/2 finished on the new version; pool restored: web-8741, web-8742; the deploy stopped before batch 2\/2, finish \(`nodrop resume` goes on without running this hook again/);
    expect(await versions()).toEqual(["v4", "v2"]);
    expect(await inPool()).toEqual({ "web-8741": true, "web-8742": true });
    await rm(path.join(fleet.dir, "fail-afterBatch-1"));
    const resumed = await runNodrop(["resume", "--config", config]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(await versions()).toEqual(["v4", "v4"]);
  });

  it("postDeploy fails: the fleet stays deployed, the report says so, and the CLI exits 1", async () => {
    await failOn("postDeploy");
    const run = await deploy("v1");
    expect(run.code).toBe(1);
    expect(run.report.ok).toBe(true);
    expect(run.report.hooks?.at(-1)).toMatchObject({ hook: "postDeploy", ok: false, code: 3 });
    expect(await versions()).toEqual(["v1", "v1"]);
    const text = await runNodrop(["deploy", "--config", config, "--version", "v1"]);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/^DEPLOYED: v1/m);
    expect(text.stdout).toMatch(/^hook postDeploy FAILED: the postDeploy hook exited with 3$/m);
  });
});
