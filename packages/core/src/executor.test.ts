import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NodropError } from "./errors.js";
import { execOrThrow, type Executor, localExecutor } from "./executor.js";
import { rejected, running } from "./test-support.js";

const dir = mkdtempSync(path.join(tmpdir(), "nodrop-executor-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function readPid(file: string): number {
  const pid = Number(readFileSync(file, "utf8").trim());
  expect(Number.isInteger(pid) && pid > 1).toBe(true);
  return pid;
}

async function untilExists(file: string): Promise<void> {
  while (!existsSync(file) || readFileSync(file, "utf8").trim() === "") await new Promise((r) => setTimeout(r, 10));
}

describe("localExecutor", () => {
  const local = localExecutor();

  it("reads no ~/.bashrc, even where bash takes itself for a remote shell's (stdin a socket, no SHLVL: a runner's clean environment)", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "nodrop-home-"));
    const marker = path.join(home, "bashrc-ran");
    writeFileSync(path.join(home, ".bashrc"), `echo sourced > ${marker}; echo from-bashrc`);
    writeFileSync(path.join(home, ".bash_profile"), `echo sourced > ${marker}`);
    const clean = localExecutor({ env: { HOME: home }, unsetEnv: ["SHLVL", "BASH_ENV"] });
    const result = await clean.exec("echo only-this");
    expect(result.stdout).toBe("only-this\n");
    expect(existsSync(marker)).toBe(false);
    rmSync(home, { recursive: true, force: true });
  });

  it("names itself local", () => {
    expect(local.name).toBe("local");
    expect(local.host).toBe("local");
  });

  it("returns exit codes instead of throwing", async () => {
    const ok = await local.exec("echo out; echo err >&2");
    expect(ok).toMatchObject({ code: 0, stdout: "out\n", stderr: "err\n" });
    const failed = await local.exec("echo partial; exit 3");
    expect(failed.code).toBe(3);
    expect(failed.stdout).toBe("partial\n");
    const missing = await local.exec("definitely-not-a-command-nodrop");
    expect(missing.code).toBe(127);
  });

  it("reports a command ended by a signal with a null code", async () => {
    const result = await local.exec("kill -KILL $$");
    expect(result.code).toBeNull();
  });

  it("passes stdin input to the command", async () => {
    const result = await local.exec("read -r first; cat; echo \"[$first]\"", { input: "line one\nline two\n" });
    expect(result.code).toBe(0);
    expect(result.stdout).toBe("line two\n[line one]\n");
  });

  it("gives the command empty stdin when there is no input", async () => {
    const result = await local.exec("wc -c");
    expect(result.stdout.trim()).toBe("0");
  });

  it("uses the cwd and extra env it was given", async () => {
    const executor = localExecutor({ cwd: dir, env: { NODROP_TEST_VALUE: "hello world" } });
    const result = await executor.exec('pwd; printf "%s\\n" "$NODROP_TEST_VALUE"');
    expect(result.stdout).toBe(`${dir}\nhello world\n`);
  });

  it("a working directory that does not exist is E_EXEC", async () => {
    const error = await rejected(localExecutor({ cwd: path.join(dir, "missing") }).exec("true"));
    expect(error.code).toBe("E_EXEC");
  });

  it("keeps only about maxOutputBytes of output", async () => {
    const result = await localExecutor({ maxOutputBytes: 10 }).exec("head -c 400000 /dev/zero | tr '\\0' a");
    expect(result.code).toBe(0);
    expect(result.stdout.length).toBeGreaterThanOrEqual(10);
    expect(result.stdout.length).toBeLessThan(400_000);
  });

  it("timeoutMs kills the command and its children and rejects with E_TIMEOUT", async () => {
    const parentFile = path.join(dir, "timeout-parent.pid");
    const childFile = path.join(dir, "timeout-child.pid");
    const command = `echo $$ > ${parentFile}; sleep 30 & echo $! > ${childFile}; sleep 30; wait`;
    const error = await rejected(local.exec(command, { timeoutMs: 1500 }));
    expect(error.code).toBe("E_TIMEOUT");
    expect(error.message).toContain("timed out after 1500ms on local");
    const parent = readPid(parentFile);
    const child = readPid(childFile);
    expect(child).not.toBe(parent);
    expect(running(parent)).toBe(false);
    expect(running(child)).toBe(false);
  });

  it("an abort during the command kills its children and rejects with E_ABORTED", async () => {
    const childFile = path.join(dir, "abort-child.pid");
    const controller = new AbortController();
    const pending = local.exec(`sleep 30 & echo $! > ${childFile}; wait`, { signal: controller.signal });
    await untilExists(childFile);
    const child = readPid(childFile);
    expect(running(child)).toBe(true);
    controller.abort("stop now");
    const error = await rejected(pending);
    expect(error.code).toBe("E_ABORTED");
    expect(error.message).toContain("stop now");
    expect(running(child)).toBe(false);
  });

  it("an already-aborted signal rejects with E_ABORTED without running anything", async () => {
    const marker = path.join(dir, "never-created");
    const error = await rejected(local.exec(`touch ${marker}`, { signal: AbortSignal.abort() }));
    expect(error.code).toBe("E_ABORTED");
    expect(existsSync(marker)).toBe(false);
  });
});

describe("execOrThrow", () => {
  const fake = (code: number | null, stdout = "", stderr = ""): Executor => ({
    name: "fake",
    host: "web1",
    exec: async () => ({ code, stdout, stderr, durationMs: 0 }),
  });

  it("returns the result on exit 0", async () => {
    const result = await execOrThrow(fake(0, "ok\n"), "x", "stop of a");
    expect(result.stdout).toBe("ok\n");
  });

  it("rejects a non-zero exit with E_EXEC naming what, where and the last lines of output", async () => {
    const stderr = ["1", "2", "3", "4", "5", "6", "7"].map((n) => `line ${n}`).join("\n");
    const error = await rejected(execOrThrow(fake(2, "ignored", stderr), "x", "stop of a"));
    expect(error.code).toBe("E_EXEC");
    expect(error.message).toBe("stop of a failed on web1 (exit 2): line 3\nline 4\nline 5\nline 6\nline 7");
  });

  it("falls back to stdout, and says signal when there is no code", async () => {
    const error = await rejected(execOrThrow(fake(null, "killed\n"), "x", "start of b"));
    expect(error.message).toBe("start of b failed on web1 (exit signal): killed");
  });

  it("runs real commands through the local executor", async () => {
    const error = await rejected(execOrThrow(localExecutor(), "echo nope >&2; exit 4", "update of c"));
    expect(error.message).toBe("update of c failed on local (exit 4): nope");
  });
});

describe("localExecutor output decoding", () => {
  it("keeps multi-byte characters whole when they straddle two reads", async () => {
    // One write of "x" and 40,000 "é" (2 bytes each): the pipe hands it over in reads of at most
    // 64 KiB, and the first one ends in the middle of a character.
    const result = await localExecutor().exec(`printf 'x%s' "$(printf 'é%.0s' {1..40000})"`);
    expect(result.stdout).toBe(`x${"é".repeat(40000)}`);
    expect(result.stdout.includes("\uFFFD")).toBe(false);
  });
});
