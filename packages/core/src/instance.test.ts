import { describe, expect, it } from "vitest";
import { parseDuration } from "./duration.js";
import { NodropError } from "./errors.js";
import type { ExecOptions, ExecResult, Executor } from "./executor.js";
import { waitHealthy } from "./health.js";
import { commandInstance } from "./instance.js";
import type { HealthCheck, HealthProbe, InstanceSpec } from "./types.js";
import { rejected } from "./test-support.js";

const spec: InstanceSpec = { id: "web-8011", host: "web1", address: "10.0.0.5", port: 8011 };


function recordingExecutor(answer: (command: string) => ExecResult | Error): Executor & { commands: string[]; options: ExecOptions[] } {
  const commands: string[] = [];
  const options: ExecOptions[] = [];
  return {
    name: "fake",
    host: "web1",
    commands,
    options,
    async exec(command, execOptions = {}) {
      commands.push(command);
      options.push(execOptions);
      const result = answer(command);
      if (result instanceof Error) throw result;
      return result;
    },
  };
}

const ok: ExecResult = { code: 0, stdout: "", stderr: "", durationMs: 0 };

describe("commandInstance", () => {
  const commands = { stop: "./ctl stop {id} {port} {version}", update: "./ctl update {version} {previous} {address}", start: "./ctl start {host} {version}" };

  it("renders each command with the instance's values and passes the timeout", async () => {
    const executor = recordingExecutor(() => ok);
    const control = commandInstance({ spec, executor, commands, timeoutMs: 1234 });
    expect(control.spec).toBe(spec);
    await control.stop({ version: "v1" });
    await control.update({ version: "v2_beta", previous: "v1" });
    await control.start({ version: "v2" });
    expect(executor.commands).toEqual(["./ctl stop web-8011 8011 v1", "./ctl update v2_beta v1 10.0.0.5", "./ctl start web1 v2"]);
    expect(executor.options.map((o) => o.timeoutMs)).toEqual([1234, 1234, 1234]);
  });

  it("a placeholder without a value here is E_TEMPLATE and runs nothing", async () => {
    const executor = recordingExecutor(() => ok);
    const control = commandInstance({ spec, executor, commands, timeoutMs: 1000 });
    expect((await rejected(control.stop({ version: undefined }))).code).toBe("E_TEMPLATE");
    expect((await rejected(control.update({ version: "v2", previous: undefined }))).message).toContain("commands.update: placeholder {previous} has no value here");
    expect(executor.commands).toEqual([]);
  });

  it("a non-zero exit becomes E_INSTANCE naming the instance", async () => {
    const executor = recordingExecutor(() => ({ code: 1, stdout: "", stderr: "port busy", durationMs: 0 }));
    const error = await rejected(commandInstance({ spec, executor, commands, timeoutMs: 1000 }).start({ version: "v2" }));
    expect(error.code).toBe("E_INSTANCE");
    expect(error.instance).toBe("web-8011");
    expect(error.message).toBe("start of web-8011 failed on web1 (exit 1): port busy");
  });

  it("a timeout keeps its code and gains the instance", async () => {
    const executor = recordingExecutor(() => new NodropError("E_TIMEOUT", "command timed out"));
    const error = await rejected(commandInstance({ spec, executor, commands, timeoutMs: 1000 }).stop({ version: "v1" }));
    expect(error.code).toBe("E_TIMEOUT");
    expect(error.instance).toBe("web-8011");
  });
});

function scripted(probes: HealthProbe[]): HealthCheck & { calls: number } {
  const check = {
    calls: 0,
    async probe(): Promise<HealthProbe> {
      const probe = probes[Math.min(check.calls, probes.length - 1)]!;
      check.calls += 1;
      return probe;
    },
  };
  return check;
}

const good = (version: string): HealthProbe => ({ ok: true, version, detail: `status 200, X-App-Version: ${version}` });
const bad: HealthProbe = { ok: false, version: undefined, detail: "connection refused" };

describe("waitHealthy", () => {
  it("needs the given number of consecutive good probes of the expected version", async () => {
    const check = scripted([good("v2"), good("v2"), bad, good("v1"), good("v2"), good("v2"), good("v2")]);
    const result = await waitHealthy(check, spec, "v2", { successes: 3, intervalMs: 1, deadlineMs: 60_000 });
    expect(result.probes).toBe(7);
    expect(check.calls).toBe(7);
  });

  it("gives up with E_HEALTHCHECK naming the instance and what it saw last", async () => {
    // The interval exceeds the deadline, so exactly one probe fits.
    const check = scripted([good("v1")]);
    const error = await rejected(waitHealthy(check, spec, "v2", { successes: 1, intervalMs: 1000, deadlineMs: 100 }));
    expect(error.code).toBe("E_HEALTHCHECK");
    expect(error.instance).toBe("web-8011");
    expect(error.message).toBe(
      "instance web-8011: health check at http://10.0.0.5:8011 did not report v2 healthy 1x within 100ms (last seen: status 200, X-App-Version: v1)",
    );
    expect(check.calls).toBe(1);
  });

  it("an aborted signal is E_ABORTED before any probe", async () => {
    const check = scripted([good("v2")]);
    const error = await rejected(waitHealthy(check, spec, "v2", { successes: 1, intervalMs: 1, deadlineMs: 1000, signal: AbortSignal.abort() }));
    expect(error.code).toBe("E_ABORTED");
    expect(check.calls).toBe(0);
  });
});

describe("parseDuration", () => {
  it("parses units and plain milliseconds", () => {
    expect(parseDuration("500ms")).toBe(500);
    expect(parseDuration("30s")).toBe(30_000);
    expect(parseDuration("1.5s")).toBe(1500);
    expect(parseDuration("2m")).toBe(120_000);
    expect(parseDuration("1h")).toBe(3_600_000);
    expect(parseDuration(" 5s ")).toBe(5000);
    expect(parseDuration(250)).toBe(250);
  });

  it("rejects anything else", () => {
    for (const value of ["30 seconds", "5", "-1s", "1d", "", "s", null, undefined, -5, Number.NaN, Number.POSITIVE_INFINITY, {}]) {
      expect(parseDuration(value)).toBeUndefined();
    }
  });
});
