// executorSuite against localExecutor wrapped with one deliberate defect each: the check meant to
// catch it fails. (The strategy, proxy and instance suites are tested this way with fakes in src/.)
import { type ExecOptions, type Executor, NodropError, localExecutor } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { failed, runSuite } from "../src/fake-runner.js";
import { executorSuite } from "../src/index.js";

const CHUNKS = "output larger than a pipe buffer, with multi-byte characters across reads, arrives intact";

function wrapped(change: (exec: Executor["exec"], command: string, options: ExecOptions) => ReturnType<Executor["exec"]>): Executor {
  const inner = localExecutor();
  return { name: "wrapped", host: "local", exec: (command, options = {}) => change(inner.exec.bind(inner), command, options) };
}

const run = (executor: Executor) => runSuite((api) => executorSuite(api, { name: "defect", create: async () => executor }));

describe("executorSuite catches", () => {
  it("an executor that drops the input", async () => {
    const results = await run(wrapped((exec, command, { input: _input, ...options }) => exec(command, options)));
    expect(failed(results)).toEqual(["input is written to the command's standard input; without input, a read sees end of file"]);
  });

  it("output decoded one read at a time", async () => {
    // What the executors did before fd4be21: each 64 KiB read decoded on its own.
    const perRead = (text: string) => {
      const bytes = Buffer.from(text, "utf8");
      let out = "";
      for (let at = 0; at < bytes.length; at += 65_536) out += bytes.subarray(at, at + 65_536).toString("utf8");
      return out;
    };
    const results = await run(wrapped(async (exec, command, options) => {
      const result = await exec(command, options);
      return { ...result, stdout: perRead(result.stdout), stderr: perRead(result.stderr) };
    }));
    expect(failed(results)).toEqual([CHUNKS]);
  });

  it("an abort that rejects with a plain Error", async () => {
    const results = await run(
      wrapped((exec, command, options) =>
        exec(command, options).catch((error: unknown) => {
          throw NodropError.is(error) && error.code === "E_ABORTED" ? new Error("aborted") : error;
        }),
      ),
    );
    expect(failed(results)).toEqual(["an AbortSignal ends the command with NodropError E_ABORTED; an aborted signal runs nothing"]);
  });

  it("a timeout that rejects but leaves the command running", async () => {
    // It gives up waiting at timeoutMs; the command itself is ended 12 s later, after the suite
    // has looked for its processes (for up to 10 s), and the test waits for that end.
    const abandoned: Promise<unknown>[] = [];
    const results = await run(
      wrapped((exec, command, { timeoutMs, ...options }) => {
        const running = exec(command, { ...options, ...(timeoutMs === undefined ? {} : { timeoutMs: timeoutMs + 12_000 }) });
        if (timeoutMs === undefined) return running;
        abandoned.push(running.catch(() => undefined));
        return Promise.race([running, new Promise<never>((_, reject) => setTimeout(() => reject(new NodropError("E_TIMEOUT", "gave up")), timeoutMs))]);
      }),
    );
    await Promise.all(abandoned);
    const timeout = results.find((r) => r.title.startsWith("timeoutMs ends the command"))!;
    expect(timeout.error).toMatch(/after the timeout, processes of the command still run: \d+, \d+ /);
  });
});
