// The action's executor on this machine's real bash and setsid: what it logs, what it kills, what
// it keeps from the commands' environment.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { NodropError, sleep } from "@nodrop/core";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { running } from "../../../packages/core/src/test-support.js";
import { RUNNER_SECRET_ENV, actionsExecExecutor } from "./exec-executor.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "nodrop-actions-exec-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** What the executor wrote to this process's stdout (the runner's log) while `run` ran. */
async function logged<T>(run: () => Promise<T>): Promise<{ result: T; log: string }> {
  let log = "";
  const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    log += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString();
    return true;
  });
  try {
    return { result: await run(), log };
  } finally {
    spy.mockRestore();
  }
}


afterEach(() => vi.restoreAllMocks());

describe.runIf(process.platform === "linux")("actionsExecExecutor", () => {
  it("shows an instance's command and its output in the log; nodrop's own commands run silently", async () => {
    const executor = actionsExecExecutor();
    const shown = await logged(() => executor.exec("echo visible-output", { echo: true }));
    expect(shown.result).toMatchObject({ code: 0, stdout: "visible-output\n" });
    expect(shown.log).toMatch(/^\[command\]\S*setsid bash --norc --noprofile -c echo visible-output$/m);
    expect(shown.log).toContain("visible-output");
    const quiet = await logged(() => executor.exec("echo journal-secret; exit 3"));
    expect(quiet.result).toMatchObject({ code: 3, stdout: "journal-secret\n" });
    expect(quiet.log).toBe("");
  });

  it("reads no ~/.bashrc in a runner's clean environment (no SHLVL, stdin a socket: bash takes itself for sshd's)", async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), "nodrop-home-"));
    const marker = path.join(home, "bashrc-ran");
    writeFileSync(path.join(home, ".bashrc"), `echo sourced > ${marker}; echo from-bashrc`);
    const result = await actionsExecExecutor({ env: { HOME: home }, unsetEnv: ["SHLVL", "BASH_ENV"] }).exec("echo only-this");
    expect(result.stdout).toBe("only-this\n");
    expect(existsSync(marker)).toBe(false);
    rmSync(home, { recursive: true, force: true });
  });

  it("a timeout kills the command's whole process group, children included, and rejects with E_TIMEOUT", async () => {
    const pidFile = path.join(dir, "child.pid");
    const executor = actionsExecExecutor();
    const started = performance.now();
    const error = await executor.exec(`sleep 30 & echo $! > ${pidFile}; wait`, { timeoutMs: 500 }).catch((e: unknown) => e);
    expect(NodropError.is(error) && error.code).toBe("E_TIMEOUT");
    expect(performance.now() - started).toBeLessThan(20_000);
    const child = Number(readFileSync(pidFile, "utf8"));
    await sleep(100);
    expect(running(child)).toBe(false);
  });

  it("an abort before the process exists still ends it", async () => {
    const marker = path.join(dir, "ran-after-abort");
    const controller = new AbortController();
    const running = actionsExecExecutor().exec(`sleep 2; touch ${marker}`, { signal: controller.signal });
    controller.abort(new Error("cancelled by the runner"));
    const error = await running.catch((e: unknown) => e);
    expect(NodropError.is(error) && error.code).toBe("E_ABORTED");
    await sleep(2500);
    expect(existsSync(marker)).toBe(false);
  });

  it("keeps the runner's tokens and the named secrets out of the commands' environment", async () => {
    const env = Object.fromEntries([...RUNNER_SECRET_ENV, "DEPLOY_KEY"].map((name) => [name, `value-of-${name}`]));
    Object.assign(process.env, env);
    try {
      const result = await actionsExecExecutor({ unsetEnv: ["DEPLOY_KEY"] }).exec("env");
      expect(result.stdout).not.toContain("value-of-");
    } finally {
      for (const name of Object.keys(env)) delete process.env[name];
    }
  });

  it("decodes output whole when a character is split across reads, and feeds input the plain way", async () => {
    // 70,000 bytes of 'é' (2 bytes each): some read boundary falls inside one of them.
    const result = await actionsExecExecutor().exec(`python3 -c "import sys; sys.stdout.write('é' * 35000)"`);
    expect(result.stdout).toBe("é".repeat(35_000));
    const fed = await actionsExecExecutor().exec("head -c 3", { input: "x".repeat(200_000) });
    expect(fed).toMatchObject({ code: 0, stdout: "xxx" });
  });
});
