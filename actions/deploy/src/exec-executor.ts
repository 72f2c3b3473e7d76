import { randomUUID } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { exec } from "@actions/exec";
import { type ExecOptions, type ExecResult, type Executor, type LocalExecutorOptions, NodropError, abortError, localExecutor } from "@nodrop/core";

// Each command carries this variable, so that a timeout or an abort finds its process among ours.
const MARK = "NODROP_EXEC_ID";

/**
 * Runs commands on the runner through @actions/exec, so that each shows in the log as
 * `[command]/usr/bin/setsid bash -c ...` with its output, as other actions' commands do. Like core's
 * localExecutor, a command leads a process group of its own (setsid), and a timeout or an abort
 * kills that whole group. That needs /proc (Linux runners); elsewhere core's localExecutor runs them.
 */
export function actionsExecExecutor(options: LocalExecutorOptions = {}): Executor {
  const plain = localExecutor(options);
  if (process.platform !== "linux") return plain;
  const maxOutput = options.maxOutputBytes ?? 1 << 20;
  const env = Object.fromEntries(
    Object.entries({ ...process.env, ...options.env }).filter((entry): entry is [string, string] => entry[1] !== undefined && !options.unsetEnv?.includes(entry[0])),
  );
  return {
    name: "actions-exec",
    host: "local",
    // The journal's appends are file writes, not commands: the same checks as core's, no log line.
    ...(plain.appendFile ? { appendFile: plain.appendFile } : {}),
    exec: (command, execOptions = {}) => run(command, execOptions, { cwd: options.cwd, env, maxOutput }),
  };
}

async function run(command: string, options: ExecOptions, context: { cwd: string | undefined; env: Record<string, string>; maxOutput: number }): Promise<ExecResult> {
  const { signal, timeoutMs, input } = options;
  if (signal?.aborted) throw abortError(signal);
  const id = randomUUID();
  const started = performance.now();
  let stdout = "";
  let stderr = "";
  let failure: NodropError | undefined;
  const end = (why: NodropError) => {
    failure ??= why;
    void killCommand(id);
  };
  const timer = timeoutMs === undefined ? undefined : setTimeout(() => end(new NodropError("E_TIMEOUT", `command timed out after ${timeoutMs}ms on local: ${command}`)), timeoutMs);
  const onAbort = () => end(abortError(signal));
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const code = await exec("setsid", ["bash", "-c", command], {
      cwd: context.cwd,
      env: { ...context.env, [MARK]: id },
      input: Buffer.from(input ?? ""),
      ignoreReturnCode: true,
      listeners: {
        stdout: (data) => {
          if (stdout.length < context.maxOutput) stdout += data.toString("utf8");
        },
        stderr: (data) => {
          if (stderr.length < context.maxOutput) stderr += data.toString("utf8");
        },
      },
    }).catch((error: unknown) => {
      failure ??= new NodropError("E_EXEC", `could not run command on local: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      return null;
    });
    if (failure) throw failure;
    return { code, stdout, stderr, durationMs: performance.now() - started };
  } finally {
    if (timer) clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** Kills the process group of the command marked `id`: the child of this process whose environment holds it. */
async function killCommand(id: string): Promise<void> {
  const needle = `${MARK}=${id}\0`;
  for (const entry of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      // Field 4 (after the command name in parentheses) is the parent pid.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid) continue;
      if (!(await readFile(`/proc/${entry}/environ`, "latin1")).includes(needle)) continue;
      const pid = Number(entry);
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // setsid has not made the group yet: the process alone.
        process.kill(pid, "SIGKILL");
      }
      return;
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
}
