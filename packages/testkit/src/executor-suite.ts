import { type Executor, shellQuote } from "@nodrop/core";
import { type SuiteOptions, type TestApi, registerSuite } from "./api.js";
import { ConformanceError, Problems, equal, nodropError, ok, rejects, show } from "./assert.js";
import { eventually } from "./wait.js";

export interface ExecutorSuiteOptions extends SuiteOptions {
  /** The executor under test; created once and shared by every check, as a deploy shares one per host. */
  readonly create: () => Promise<Executor>;
  /** Releases it after the last check (default: its own dispose(), when it has one). */
  readonly dispose?: ((executor: Executor) => Promise<void>) | undefined;
  /** The timeoutMs given to the command that must time out (default 2000). */
  readonly timeoutMs?: number | undefined;
}

/**
 * Values that must reach a command unchanged once shellQuote'd: what versions, paths and ids can
 * hold when they are not plain words, and what an attacker would try.
 */
export const SHELL_VALUES: readonly string[] = [
  "plain",
  "",
  "two  spaces and\ttab",
  "it's",
  `"double" and 'single'`,
  "$(touch /tmp/nodrop-testkit-injected)",
  "`id`",
  "$HOME ${PATH} $$",
  "; echo nope && false || true | cat",
  "line one\nline two\n",
  "back\\slash\\n",
  "*?[a]{b,c}~",
  "-n",
  "ünïcødé ✓ 日本語 🚀",
  "#not a comment",
  "a'b\"c`d$e\\f",
];

/**
 * What the engine and the adapters need from an executor: exit codes (a non-zero exit is a
 * result, not an error), both output streams intact, standard input, shell quoting that holds,
 * a timeout and an abort that really end the command (and what it started) with the right error
 * code, and concurrent commands on one executor.
 */
export function executorSuite(api: TestApi, options: ExecutorSuiteOptions): void {
  registerSuite(api, "nodrop executor conformance", options, ({ test, fixture }) => {
    const executor = fixture(options.create, async (e) => {
      if (options.dispose) await options.dispose(e);
      else await e.dispose?.();
    });
    const timeoutMs = options.timeoutMs ?? 2000;

    /** A scratch directory on the executor's host, for pid files. */
    const scratch = async (e: Executor): Promise<string> => {
      const made = await e.exec("mktemp -d", { timeoutMs: 30_000 });
      const dir = made.stdout.trim();
      ok(made.code === 0 && dir.startsWith("/"), `mktemp -d on ${e.host} failed (exit ${made.code}): ${made.stderr.trim()}`);
      return dir;
    };
    /** Pids among these that still run (a zombie counts as gone: it runs nothing). */
    const alive = async (e: Executor, pids: readonly number[]): Promise<number[]> => {
      const script = `for p in ${pids.join(" ")}; do if kill -0 "$p" 2>/dev/null; then case "$(ps -o stat= -p "$p" 2>/dev/null)" in Z*) ;; *) echo "$p" ;; esac; fi; done`;
      const result = await e.exec(script, { timeoutMs: 30_000 });
      return result.stdout.split(/\s+/).filter(Boolean).map(Number);
    };
    const readPids = async (e: Executor, dir: string): Promise<number[]> => {
      const result = await e.exec(`cat ${shellQuote(dir)}/self ${shellQuote(dir)}/child 2>/dev/null`, { timeoutMs: 30_000 });
      return result.stdout.split(/\s+/).filter(Boolean).map(Number);
    };
    // The command and a child it started in the background: both must be ended, as `fleet.sh`
    // or a service manager leaves children that hold ports and files.
    const sleeper = (dir: string) => `sleep 30 & echo $! > ${shellQuote(dir)}/child; echo $$ > ${shellQuote(dir)}/self; wait`;

    test("exec resolves with the exit code, stdout and stderr, also for a non-zero exit", async () => {
      const e = await executor();
      ok(typeof e.name === "string" && e.name !== "", `executor.name must be a non-empty string, got ${show(e.name)}`);
      ok(typeof e.host === "string" && e.host !== "", `executor.host must be a non-empty string, got ${show(e.host)}`);
      const failed = await e.exec("printf 'out\\n'; printf 'err\\n' >&2; exit 3");
      equal({ code: failed.code, stdout: failed.stdout, stderr: failed.stderr }, { code: 3, stdout: "out\n", stderr: "err\n" }, "exec of `printf out; printf err >&2; exit 3`");
      ok(typeof failed.durationMs === "number" && Number.isFinite(failed.durationMs) && failed.durationMs >= 0, `durationMs must be a number >= 0, got ${show(failed.durationMs)}`);
      const passed = await e.exec("true");
      equal({ code: passed.code, stdout: passed.stdout, stderr: passed.stderr }, { code: 0, stdout: "", stderr: "" }, "exec of `true`");
    });

    test("input is written to the command's standard input; without input, a read sees end of file", async () => {
      const e = await executor();
      const input = "line one\nline two ü ✓\n\nlast line without newline";
      const echoed = await e.exec("cat", { input });
      equal(echoed.stdout, input, "`cat` with input");
      // An executor that leaves stdin open makes any command that reads it hang until its timeout.
      const empty = await e.exec("cat; echo done", { timeoutMs: 15_000 });
      equal(empty.stdout, "done\n", "`cat; echo done` without input");
    });

    test("values quoted with shellQuote reach the command unchanged: quotes, spaces, $(), newlines, unicode", async () => {
      const e = await executor();
      const problems = new Problems();
      await e.exec("rm -f /tmp/nodrop-testkit-injected");
      for (const value of SHELL_VALUES) {
        const result = await e.exec(`printf '%s' ${shellQuote(value)}`);
        if (result.code !== 0 || result.stdout !== value) problems.add(show(value), `printf '%s' ${shellQuote(value)} gave ${show(result.stdout)} (exit ${result.code}, stderr ${show(result.stderr)})`);
      }
      const all = await e.exec(`printf '[%s]' ${SHELL_VALUES.map((v) => shellQuote(v)).join(" ")}`);
      const expected = SHELL_VALUES.map((v) => `[${v}]`).join("");
      if (all.stdout !== expected) problems.add("all values as separate arguments", `gave ${show(all.stdout)}, expected ${show(expected)}`);
      const injected = await e.exec("test -e /tmp/nodrop-testkit-injected && echo injected || true");
      if (injected.stdout.includes("injected")) problems.add("$(touch ...)", "the command substitution ran");
      problems.throwIfAny("command templates quote every value with shellQuote; the executor must not re-interpret the command");
    });

    test("output larger than a pipe buffer, with multi-byte characters across reads, arrives intact", async () => {
      const e = await executor();
      // "a" then 150000 x "é" (2 bytes each), written by cat in large blocks: a pipe hands them
      // over in reads of whole 4 KiB pages, so every read ends inside a character.
      const result = await e.exec(`f=$(mktemp) && printf a > "$f" && yes é | tr -d '\\n' | head -c 300000 >> "$f" && cat "$f"; rm -f "$f"`, { timeoutMs: 60_000 });
      const expected = `a${"é".repeat(150_000)}`;
      if (result.stdout !== expected) {
        let at = 0;
        while (at < expected.length && result.stdout[at] === expected[at]) at++;
        throw new ConformanceError(
          `stdout of "a" and 150000 x "é" (300001 bytes) differs from what the command wrote: ${result.stdout.length} characters instead of ${expected.length}, ` +
            `${(result.stdout.match(/\uFFFD/g) ?? []).length} replacement characters (U+FFFD), first difference at character ${at}: ${show(result.stdout.slice(Math.max(0, at - 3), at + 3))}. ` +
            "Decode each stream as a whole (setEncoding, a StringDecoder, or Buffer.concat then toString), not each chunk on its own.",
        );
      }
    });

    test("timeoutMs ends the command and what it started, rejecting with NodropError E_TIMEOUT", async () => {
      const e = await executor();
      const dir = await scratch(e);
      try {
        const error = await rejects(e.exec(sleeper(dir), { timeoutMs }), `exec of a 30 s command with timeoutMs ${timeoutMs}`);
        nodropError(error, ["E_TIMEOUT"], `exec of a 30 s command with timeoutMs ${timeoutMs}`);
        const pids = await readPids(e, dir);
        equal(pids.length, 2, "pids the command wrote before its timeout (itself and its background child)");
        const left = await eventually(() => alive(e, pids), (l) => l.length === 0, 10_000);
        ok(left.length === 0, () => `after the timeout, processes of the command still run: ${left.join(", ")} (of ${pids.join(", ")}); end its whole process group`);
      } finally {
        await e.exec(`rm -rf ${shellQuote(dir)}`);
      }
    });

    test("an AbortSignal ends the command with NodropError E_ABORTED; an aborted signal runs nothing", async () => {
      const e = await executor();
      const dir = await scratch(e);
      try {
        const controller = new AbortController();
        const running = e.exec(sleeper(dir), { signal: controller.signal, timeoutMs: 60_000 });
        running.catch(() => undefined);
        const pids = await eventually(() => readPids(e, dir), (p) => p.length === 2, 15_000);
        equal(pids.length, 2, "pids the command wrote (itself and its background child)");
        controller.abort(new Error("testkit abort"));
        nodropError(await rejects(running, "exec aborted while it runs"), ["E_ABORTED"], "exec aborted while it runs");
        const left = await eventually(() => alive(e, pids), (l) => l.length === 0, 10_000);
        ok(left.length === 0, () => `after the abort, processes of the command still run: ${left.join(", ")} (of ${pids.join(", ")})`);

        const marker = `${dir}/ran`;
        nodropError(await rejects(e.exec(`touch ${shellQuote(marker)}`, { signal: AbortSignal.abort() }), "exec with an aborted signal"), ["E_ABORTED"], "exec with an aborted signal");
        const ran = await e.exec(`test -e ${shellQuote(marker)} && echo ran || echo not`);
        equal(ran.stdout.trim(), "not", "whether the command given an aborted signal ran");
      } finally {
        await e.exec(`rm -rf ${shellQuote(dir)}`);
      }
    });

    test("8 commands at once all succeed, each with its own output", async () => {
      const e = await executor();
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => e.exec(`sleep 0.3; echo command-${i}`, { timeoutMs: 60_000 })));
      const problems = new Problems();
      results.forEach((r, i) => {
        if (r.code !== 0 || r.stdout !== `command-${i}\n`) problems.add(`command ${i}`, `exit ${r.code}, stdout ${show(r.stdout)}, stderr ${show(r.stderr)}`);
      });
      problems.throwIfAny("a deploy runs the commands of several instances on one host at once");
    });
  });
}
