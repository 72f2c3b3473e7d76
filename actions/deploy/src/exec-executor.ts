import { randomUUID } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { StringDecoder } from "node:string_decoder";
import { exec } from "@actions/exec";
import { BASH_NO_STARTUP_FILES, type ExecOptions, type ExecResult, type Executor, type LocalExecutorOptions, NodropError, abortError, localExecutor, sleep } from "@nodrop/core";

// Each command carries this variable, so that its process group can be found among our children.
const MARK = "NODROP_EXEC_ID";

/**
 * The runner's own credentials: a local command (and a daemon it starts) has no use for them, and
 * with ACTIONS_ID_TOKEN_REQUEST_* it could mint OIDC tokens for the repository.
 */
export const RUNNER_SECRET_ENV = [
  "ACTIONS_RUNTIME_TOKEN",
  "ACTIONS_RUNTIME_URL",
  "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
  "ACTIONS_ID_TOKEN_REQUEST_URL",
  "ACTIONS_CACHE_URL",
  "ACTIONS_RESULTS_URL",
] as const;

/**
 * Runs commands on the runner through @actions/exec. The instances' own commands (`echo`) show in
 * the log as `[command]/usr/bin/setsid bash --norc --noprofile -c ...` with their output, as other actions' commands
 * do; nodrop's own (the journal, the lock, nginx's checks) run silently, since they would flood the
 * log and the journal holds command errors. A command leads a process group of its own (setsid),
 * and a timeout or an abort kills that group, found through /proc: Linux runners only; elsewhere,
 * and for commands fed on standard input, core's localExecutor runs them.
 */
export function actionsExecExecutor(options: LocalExecutorOptions = {}): Executor {
  const unsetEnv = [...(options.unsetEnv ?? []), ...RUNNER_SECRET_ENV];
  const plain = localExecutor({ ...options, unsetEnv });
  if (process.platform !== "linux") return plain;
  const maxOutput = options.maxOutputBytes ?? 1 << 20;
  const env = Object.fromEntries(
    Object.entries({ ...process.env, ...options.env }).filter((entry): entry is [string, string] => entry[1] !== undefined && !unsetEnv.includes(entry[0])),
  );
  return {
    name: "actions-exec",
    host: "local",
    // The journal's appends are file writes, not commands: the same checks as core's, no log line.
    ...(plain.appendFile ? { appendFile: plain.appendFile } : {}),
    // An artifact for a local fleet is a file copy too.
    ...(plain.upload ? { upload: plain.upload } : {}),
    // @actions/exec leaves its child's stdin without an error handler: a command that exits before
    // reading its input would crash the action with EPIPE. Those (nodrop's file writes) go the plain way.
    exec: (command, execOptions = {}) => (execOptions.input ? plain.exec(command, execOptions) : run(command, execOptions, { cwd: options.cwd, env, maxOutput })),
  };
}

interface RunContext {
  cwd: string | undefined;
  env: Record<string, string>;
  maxOutput: number;
}

async function run(command: string, options: ExecOptions, context: RunContext): Promise<ExecResult> {
  const { signal, timeoutMs } = options;
  if (signal?.aborted) throw abortError(signal);
  const id = randomUUID();
  const started = performance.now();
  const out = capture(context.maxOutput);
  const err = capture(context.maxOutput);
  const state: { failure: NodropError | undefined; settled: boolean } = { failure: undefined, settled: false };
  const end = (why: NodropError) => (state.failure ??= why);
  const timer = timeoutMs === undefined ? undefined : setTimeout(() => end(new NodropError("E_TIMEOUT", `command timed out after ${timeoutMs}ms on local: ${command}`)), timeoutMs);
  const onAbort = () => end(abortError(signal));
  signal?.addEventListener("abort", onAbort, { once: true });
  const running = exec("setsid", ["bash", ...BASH_NO_STARTUP_FILES, "-c", command], {
    cwd: context.cwd,
    // A hook's own variables (NODROP_*) on top; the secrets stay out (context.env has none).
    env: { ...context.env, ...options.env, [MARK]: id },
    ignoreReturnCode: true,
    silent: options.echo !== true,
    listeners: { stdout: out.push, stderr: err.push },
  }).finally(() => (state.settled = true));
  const killer = killOnFailure(id, state);
  try {
    const code = await running.catch((error: unknown) => {
      state.failure ??= new NodropError("E_EXEC", `could not run command on local: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      return null;
    });
    await killer;
    if (state.failure) throw state.failure;
    return { code, stdout: out.text(), stderr: err.text(), durationMs: performance.now() - started };
  } finally {
    if (timer) clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** Output kept up to a cap, decoded so that a character split across two chunks stays whole. */
function capture(max: number): { push: (data: Buffer) => void; text: () => string } {
  const decoder = new StringDecoder("utf8");
  let text = "";
  return {
    push: (data) => {
      if (text.length < max) text += decoder.write(data);
    },
    text: () => text + decoder.end(),
  };
}

/**
 * Finds the command's process group as soon as it exists (setsid makes its pid the group id, and the
 * group lives on after its leader exits, as long as a process in it runs), and once the command has
 * failed (timeout, abort) kills that group, again until @actions/exec settles.
 */
async function killOnFailure(id: string, state: { failure: NodropError | undefined; settled: boolean }): Promise<void> {
  let group: number | undefined;
  while (!state.settled) {
    group ??= await findGroup(id);
    if (state.failure && group !== undefined) {
      try {
        process.kill(-group, "SIGKILL");
      } catch {
        // setsid has not made the group yet, or it is gone: the next round tells.
      }
    }
    await sleep(group === undefined ? 10 : 50);
  }
}

/** The pid of our child whose environment holds the command's mark. */
async function findGroup(id: string): Promise<number | undefined> {
  const needle = `\0${MARK}=${id}\0`;
  for (const entry of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      // Field 4 (after the command name in parentheses) is the parent pid.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid) continue;
      if (`\0${await readFile(`/proc/${entry}/environ`, "latin1")}`.includes(needle)) return Number(entry);
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return undefined;
}
