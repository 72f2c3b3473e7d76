import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DeployRun } from "./deploy-run.js";
import type { DeployEvent } from "./events.js";
import { localExecutor } from "./executor.js";
import { NodropError } from "./errors.js";
import { HOOK_ENV, hookFailure, phaseEnv, runEnv, runHook } from "./hooks.js";
import type { InstanceControl } from "./types.js";

const control = (id: string, host: string): InstanceControl => ({
  spec: { id, host, address: "127.0.0.1", port: 8011 },
  stop: async () => undefined,
  update: async () => undefined,
  start: async () => undefined,
});

function run(events: DeployEvent[] = []): DeployRun {
  const r = new DeployRun("v2", [control("web1-8011", "web1"), control("web2-8011", "web2")], (e) => events.push(e));
  r.observed = [
    { id: "web1-8011", host: "web1", address: "127.0.0.1", port: 8011, version: "v1", healthy: true, inPool: true },
    // A version an instance reported that is not a name never reaches a hook's environment.
    { id: "web2-8011", host: "web2", address: "127.0.0.1", port: 8011, version: "$(reboot)", healthy: true, inPool: true },
  ];
  return r;
}

describe("hooks", () => {
  it("get the deploy in variables, each value a name (nothing an instance said that is not one)", () => {
    const env = runEnv(run(), { app: "shop" }, "rolling", "preDeploy");
    expect(env).toMatchObject({ NODROP_HOOK: "preDeploy", NODROP_APP: "shop", NODROP_VERSION: "v2", NODROP_PREVIOUS: "v1", NODROP_HOSTS: "web1 web2", NODROP_INSTANCES: "web1-8011 web2-8011" });
    expect(phaseEnv({ name: "batch 1/2\u001b[2J", instances: ["web1-8011"], steps: [], onFailure: "revert" }, 1, 2)).toEqual({
      NODROP_PHASE: "batch 1/2?[2J",
      NODROP_PHASE_INDEX: "1",
      NODROP_PHASE_COUNT: "2",
      NODROP_PHASE_INSTANCES: "web1-8011",
    });
  });

  it("a hook's output comes back as inert lines; a failure is E_HOOK saying which hook, with the routing before it in force", async () => {
    const events: DeployEvent[] = [];
    const r = run(events);
    const setup = { commands: { afterBatch: "printf '::error::x\\n\\033[1mbold\\n'; echo \"$NODROP_PHASE\" >&2; exit 4" }, timeoutMs: 5000, executor: localExecutor(), app: "shop" };
    const error = hookFailure(await runHook(r, setup, "afterBatch", { NODROP_PHASE: "batch 1/2" }))!;
    expect(NodropError.is(error)).toBe(true);
    expect(error.code).toBe("E_HOOK");
    expect(error.message).toBe("the afterBatch hook exited with 4");
    expect(error.routingInForce).toBeUndefined();
    const end = events.find((e) => e.type === "hook" && e.status === "fail");
    expect(end).toMatchObject({ output: ["::error::x", "?[1mbold", "batch 1/2"] });
    expect(r.hooks).toEqual([expect.objectContaining({ hook: "afterBatch", ok: false, code: 4 })]);
    // The run records each one and goes on; a hook the config lacks does nothing.
    expect(await runHook(r, setup, "afterBatch", {})).toMatchObject({ ok: false });
    expect(r.hooks).toHaveLength(2);
    expect(await runHook(r, setup, "postDeploy", {})).toBeUndefined();
    expect(hookFailure(undefined)).toBeUndefined();
  });

  it("a hook that outlives its timeout is ended and reported as such", async () => {
    const r = run();
    const result = await runHook(r, { commands: { postDeploy: "sleep 5" }, timeoutMs: 100, executor: localExecutor(), app: "shop" }, "postDeploy", {});
    expect(result).toMatchObject({ ok: false, code: null });
    expect(result?.error).toMatch(/^the postDeploy hook could not run to its end: command timed out after 100ms/);
  });

  it("docs/guides/releases.md lists every variable, as HOOK_ENV describes it", () => {
    const doc = readFileSync(new URL("../../../docs/guides/releases.md", import.meta.url), "utf8");
    for (const [name, holds] of Object.entries(HOOK_ENV)) expect(doc).toContain(`| \`${name}\` | ${holds} |`);
    const listed = [...doc.matchAll(/^\| `(NODROP_[A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(listed).toEqual(Object.keys(HOOK_ENV));
  });
});
