import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { copyFile, lstat, mkdir, open, readlink, stat } from "node:fs/promises";
import path from "node:path";
import { NodropError, abortError } from "./errors.js";

export interface ExecOptions {
  signal?: AbortSignal | undefined;
  /** Ends the command (its whole process group) when it runs longer. */
  timeoutMs?: number | undefined;
  /** Written to the command's standard input. */
  input?: string | undefined;
  /** More environment variables for this command: honoured by executors on this machine (hooks run there). */
  env?: Record<string, string> | undefined;
  /**
   * A command the user wrote (an instance's stop, update or start), not one of nodrop's own: an
   * executor that shows commands in a log (the action's) shows these, and keeps nodrop's own quiet.
   */
  echo?: boolean | undefined;
}

export interface ExecResult {
  /** Exit code; null when ended by a signal. */
  code: number | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/**
 * Runs shell commands on one host. Resolves with the exit code, also when it is non-zero:
 * the caller decides what a failure means. Rejects on timeout (E_TIMEOUT), abort (E_ABORTED),
 * or when the command could not be run at all (E_EXEC).
 */
export interface Executor {
  readonly name: string;
  /** Where commands run, for messages ("local", "web1"). */
  readonly host: string;
  exec(command: string, options?: ExecOptions): Promise<ExecResult>;
  /**
   * Appends text to a file on the host, creating its directory. Optional: without it, callers
   * append with a shell command. It exists because a deploy appends to its journal twice per step,
   * and a process per line costs more than the step itself on a fast fleet.
   */
  appendFile?(file: string, text: string): Promise<void>;
  /**
   * Copies a local file to a new file on the host, in a directory the caller has just made for it
   * (nodrop's is a fresh `mktemp -d`, mode 0700, so nothing else can be at that name). Optional:
   * without it, `uploadFile` sends the file through `exec` in chunks. SSH does it over SFTP on the
   * connection it holds (mode 0600); locally it is a copy that refuses an existing name.
   */
  upload?(localFile: string, remoteFile: string, options?: { signal?: AbortSignal | undefined; onProgress?: ((sentBytes: number, totalBytes: number) => void) | undefined }): Promise<void>;
  dispose?(): Promise<void>;
}

export interface LocalExecutorOptions {
  /** Working directory of every command (default: the process's). */
  cwd?: string;
  /** Extra environment for the commands. */
  env?: Record<string, string>;
  /**
   * Variables removed from the commands' environment (and so from any daemon they start), e.g.
   * those holding SSH keys: a secret nodrop reads from the environment is for nodrop alone.
   */
  unsetEnv?: readonly string[];
  /** Output kept per stream; the rest is dropped (a runaway command must not eat memory). */
  maxOutputBytes?: number;
}

/**
 * bash run with its standard input on a socket (node's pipes are socket pairs) and SHLVL below 2
 * (a runner's or a service's clean environment) takes itself for a command from rshd or sshd and
 * sources ~/.bashrc: whatever that does (pyenv's init rehashes behind a lock file, and waits out a
 * stale one for a minute) would run before every nodrop command, and what it prints would mix with
 * the output nodrop parses. No startup file is read; BASH_ENV, set on purpose, still is.
 */
export const BASH_NO_STARTUP_FILES = ["--norc", "--noprofile"] as const;

/** Runs commands with bash on this machine. */
export function localExecutor(options: LocalExecutorOptions = {}): Executor {
  const maxOutput = options.maxOutputBytes ?? 1 << 20;
  return {
    name: "local",
    host: "local",
    async appendFile(file, text) {
      // Never through a planted link, never into a directory or file of another uid: the text may be
      // sensitive (the journal holds command errors), so the directory is 0700 and the file 0600.
      const target = path.resolve(options.cwd ?? process.cwd(), file);
      const dir = path.dirname(target);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const uid = process.geteuid?.();
      const d = await lstat(dir);
      if (d.isSymbolicLink()) throw new Error(`${dir} is a symbolic link (to ${await readlink(dir)}); nodrop does not follow it: remove it`);
      if (!d.isDirectory()) throw new Error(`${dir} is not a directory`);
      if (uid !== undefined && d.uid !== uid) throw new Error(`${dir} is owned by uid ${d.uid}, not by uid ${uid} that nodrop runs as`);
      if (d.mode & 0o022) throw new Error(`${dir} is writable by others (mode ${(d.mode & 0o7777).toString(8)}): make it 0700 and check what is in it`);
      let handle;
      try {
        // O_NOFOLLOW: a link at the file itself fails (ELOOP); O_NONBLOCK: a planted FIFO cannot hang us.
        handle = await open(target, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ELOOP") throw new Error(`${target} is a symbolic link (to ${await readlink(target).catch(() => "?")}); nodrop does not follow it: remove it`);
        throw error;
      }
      try {
        const f = await handle.stat();
        if (!f.isFile()) throw new Error(`${target} is not a regular file`);
        if (uid !== undefined && f.uid !== uid) throw new Error(`${target} is owned by uid ${f.uid}, not by uid ${uid} that nodrop runs as`);
        if (f.nlink > 1) throw new Error(`${target} has ${f.nlink} hard links`);
        if (f.mode & 0o077) await handle.chmod(0o600);
        await handle.appendFile(text);
      } finally {
        await handle.close();
      }
    },
    async upload(localFile, remoteFile, uploadOptions = {}) {
      if (uploadOptions.signal?.aborted) throw abortError(uploadOptions.signal);
      // COPYFILE_EXCL: never over an existing file, nor through a link planted at the name.
      await copyFile(localFile, path.resolve(options.cwd ?? process.cwd(), remoteFile), constants.COPYFILE_EXCL);
      const { size } = await stat(localFile);
      uploadOptions.onProgress?.(size, size);
    },
    exec(command, execOptions = {}) {
      const { signal, timeoutMs, input } = execOptions;
      if (signal?.aborted) return Promise.reject(abortError(signal));
      const env = { ...process.env, ...options.env, ...execOptions.env };
      const started = performance.now();
      return new Promise<ExecResult>((resolve, reject) => {
        // detached: the command leads its own process group, so a timeout ends its children too.
        const child = spawn("bash", [...BASH_NO_STARTUP_FILES, "-c", command], {
          cwd: options.cwd,
          env: Object.fromEntries(Object.entries(env).filter(([name]) => !options.unsetEnv?.includes(name))),
          detached: true,
          stdio: ["pipe", "pipe", "pipe"],
        });
        let stdout = "";
        let stderr = "";
        let failure: NodropError | undefined;
        // Decoded by the stream, so a character split across two reads stays whole.
        child.stdout.setEncoding("utf8");
        child.stderr.setEncoding("utf8");
        child.stdout.on("data", (chunk: string) => {
          if (stdout.length < maxOutput) stdout += chunk;
        });
        child.stderr.on("data", (chunk: string) => {
          if (stderr.length < maxOutput) stderr += chunk;
        });
        const killGroup = () => {
          try {
            if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
          } catch {
            // already gone
          }
        };
        const timer =
          timeoutMs === undefined
            ? undefined
            : setTimeout(() => {
                failure = new NodropError("E_TIMEOUT", `command timed out after ${timeoutMs}ms on local: ${command}`);
                killGroup();
              }, timeoutMs);
        const onAbort = () => {
          failure = abortError(signal);
          killGroup();
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        child.on("error", (error) => {
          failure ??= new NodropError("E_EXEC", `could not run command on local: ${error.message}`, { cause: error });
        });
        child.on("close", (code) => {
          if (timer) clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          if (failure) return reject(failure);
          resolve({ code, stdout, stderr, durationMs: performance.now() - started });
        });
        child.stdin.on("error", () => {
          // the command may exit without reading its input; its exit code tells the story
        });
        child.stdin.end(input ?? "");
      });
    },
  };
}

/** Runs a command and rejects with E_EXEC, naming what and where, when it exits non-zero. */
export async function execOrThrow(executor: Executor, command: string, what: string, options: ExecOptions = {}): Promise<ExecResult> {
  const result = await executor.exec(command, options);
  if (result.code !== 0) {
    const detail = (result.stderr.trim() || result.stdout.trim()).split("\n").slice(-5).join("\n");
    throw new NodropError("E_EXEC", `${what} failed on ${executor.host} (exit ${result.code ?? "signal"})${detail ? `: ${detail}` : ""}`);
  }
  return result;
}
