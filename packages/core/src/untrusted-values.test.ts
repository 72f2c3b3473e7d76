// Values nodrop did not write itself (an instance's headers, the journal, config keys, durations)
// are checked where they are used: an unsafe one is unknown or refused, never passed on.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateConfig } from "./config.js";
import { MAX_DURATION_MS, parseDuration } from "./duration.js";
import { observeInstances } from "./engine.js";
import type { ExecResult, Executor } from "./executor.js";
import { hostHealthCheck, httpHealthCheck, reportedVersion } from "./health.js";
import { commandInstance } from "./instance.js";
import { type JournalRecord, lastDeploy } from "./journal.js";
import { duration, object, optional, int, parseOrThrow } from "./schema.js";
import { rejected, thrown } from "./test-support.js";
import type { HealthCheck, InstanceControl, InstanceSpec } from "./types.js";
import { verifyUrlProblem } from "./verify.js";

const HOSTILE_VERSIONS = [
  "v1'; touch /tmp/nodrop-pwned; echo '",
  "--upload-pack=touch /tmp/nodrop-pwned",
  "-v1",
  "v1\u001b[2J",
  "v\u0430", // Cyrillic a
  "x".repeat(129),
  "v1 v2",
  "__proto__",
];

describe("reportedVersion: what an instance reports is not trusted", () => {
  it("keeps a safe version", () => {
    expect(reportedVersion("v2.1", "X-App-Version")).toEqual({ version: "v2.1", detail: "X-App-Version: v2.1" });
    expect(reportedVersion(undefined, "X-App-Version")).toEqual({ version: undefined, detail: "no X-App-Version header" });
  });

  it.each(HOSTILE_VERSIONS)("counts %j as an unknown version and shows it escaped", (raw) => {
    const seen = reportedVersion(raw, "X-App-Version");
    expect(seen.version).toBeUndefined();
    expect(seen.detail).toMatch(/^X-App-Version ".*" is not a safe version string \(counted as unknown\)$/);
    expect(seen.detail).not.toContain("\u001b");
    expect(seen.detail.length).toBeLessThan(120);
  });
});

describe("httpHealthCheck against a hostile instance", () => {
  let server: http.Server;
  let spec: InstanceSpec;
  let answer = "v1";
  beforeAll(async () => {
    server = http.createServer((_req, res) => {
      res.setHeader("X-App-Version", answer);
      res.end("ok");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    spec = { id: "web-1", host: "local", address: "127.0.0.1", port: (server.address() as AddressInfo).port };
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("a safe version is reported", async () => {
    answer = "v7";
    expect(await httpHealthCheck({ path: "/health", versionHeader: "X-App-Version", timeoutMs: 2000 }).probe(spec)).toEqual({ ok: true, version: "v7", detail: "status 200, X-App-Version: v7" });
  });

  it.each(HOSTILE_VERSIONS.filter((v) => /^[\x20-\x7e]*$/.test(v)))("%j is an unknown version, named escaped in the detail", async (raw) => {
    answer = raw;
    const probe = await httpHealthCheck({ path: "/health", versionHeader: "X-App-Version", timeoutMs: 2000 }).probe(spec);
    expect(probe.ok).toBe(true);
    expect(probe.version).toBeUndefined();
    expect(probe.detail).toContain(`X-App-Version ${JSON.stringify(raw.length > 40 ? `${raw.slice(0, 40)}…` : raw)} is not a safe version string`);
  });

  it("preflight sees it as healthy=false with no version, so it never becomes {previous}", async () => {
    answer = "--upload-pack=x";
    const control = { spec } as InstanceControl;
    const [observed] = await observeInstances([control], httpHealthCheck({ path: "/health", versionHeader: "X-App-Version", timeoutMs: 2000 }));
    expect(observed).toMatchObject({ id: "web-1", version: undefined, healthy: false });
  });
});

describe("hostHealthCheck reads curl's headers with the same rule", () => {
  const spec: InstanceSpec = { id: "web-1", host: "web1", address: "10.0.0.5", port: 8011 };
  const executorAnswering = (stdout: string): Executor => ({
    name: "fake",
    host: "web1",
    async exec(): Promise<ExecResult> {
      return { code: 0, stdout, stderr: "", durationMs: 0 };
    },
  });
  const check = (stdout: string) => hostHealthCheck({ path: "/health", versionHeader: "X-App-Version", timeoutMs: 1000, executorFor: () => executorAnswering(stdout) }).probe(spec);

  it("a safe version is kept", async () => {
    expect(await check("HTTP/1.1 200 OK\r\nX-App-Version: v3\r\n\r\n")).toEqual({ ok: true, version: "v3", detail: "status 200 (from web1), X-App-Version: v3" });
  });

  it.each(HOSTILE_VERSIONS)("%j from curl is an unknown version", async (raw) => {
    const probe = await check(`HTTP/1.1 200 OK\r\nX-App-Version: ${raw}\r\n\r\n`);
    expect(probe.version).toBeUndefined();
    expect(probe.detail).toContain("is not a safe version string");
  });
});

describe("observeInstances: a plugin's health check cannot smuggle a version", () => {
  it.each(HOSTILE_VERSIONS)("%j from a plugin is unknown", async (raw) => {
    const spec: InstanceSpec = { id: "web-1", host: "local", address: "127.0.0.1", port: 1 };
    const plugin: HealthCheck = { probe: async () => ({ ok: true, version: raw, detail: "plugin" }) };
    const [observed] = await observeInstances([{ spec } as InstanceControl], plugin);
    expect(observed!.version).toBeUndefined();
    expect(observed!.healthy).toBe(false);
  });
});

describe("commandInstance: values are checked where the command is rendered", () => {
  const ran: string[] = [];
  const executor: Executor = {
    name: "fake",
    host: "local",
    async exec(command) {
      ran.push(command);
      return { code: 0, stdout: "", stderr: "", durationMs: 0 };
    },
  };
  const commands = { stop: "./ctl stop {id}", update: "./ctl update {version} {previous}", start: "./ctl start {address} {port}" };

  it.each(HOSTILE_VERSIONS)("{previous} %j is refused with E_TEMPLATE and nothing runs", async (previous) => {
    ran.length = 0;
    const control = commandInstance({ spec: { id: "web-1", host: "local", address: "127.0.0.1", port: 8011 }, executor, commands, timeoutMs: 1000 });
    const error = await rejected(control.update({ version: "v2", previous }));
    expect(error.code).toBe("E_TEMPLATE");
    expect(error.message).toContain('commands.update: refusing to run it: placeholder {previous} (from the version "web-1" reported before the deploy)');
    expect(ran).toEqual([]);
  });

  it("a plugin-built spec with a bad address or port is refused too", async () => {
    ran.length = 0;
    const bad = commandInstance({ spec: { id: "web-1", host: "local", address: "127.0.0.1; reboot", port: 0 }, executor, commands, timeoutMs: 1000 });
    expect((await rejected(bad.start({ version: "v2" }))).message).toContain("placeholder {address} (from the instance spec of \"web-1\"): \"127.0.0.1; reboot\" is not an IP address");
    expect(ran).toEqual([]);
  });
});

describe("parseDuration and duration(): bounded to 24h", () => {
  it("accepts up to 24h", () => {
    expect(parseDuration("24h")).toBe(MAX_DURATION_MS);
    expect(parseDuration(MAX_DURATION_MS)).toBe(MAX_DURATION_MS);
    expect(parseDuration("1440m")).toBe(MAX_DURATION_MS);
    expect(Object.is(parseDuration(-0), 0)).toBe(true);
  });

  it.each(["1000h", "25h", "2147483648ms", `${"9".repeat(400)}ms`, `1.${"5".repeat(400)}s`, "NaNs", "Infinityms", "-1s", "-0s", "1e3ms", "0x10s", "٣s", "１s", "1s\u0000"])("refuses %j", (value) => {
    expect(parseDuration(value)).toBeUndefined();
  });

  it.each([Number.POSITIVE_INFINITY, Number.NaN, 2 ** 31, MAX_DURATION_MS + 1, -1, Number("9".repeat(400))])("refuses the number %d", (value) => {
    expect(parseDuration(value)).toBeUndefined();
  });

  it("the schema names the field and the bound", () => {
    const schema = object({ timeout: optional(duration({ min: 1 }), 1000) });
    expect(thrown(() => parseOrThrow(schema, { timeout: "1000h" })).message).toContain('timeout: expected a duration such as 500ms, 30s or 2m (at most 24h), got string "1000h"');
    expect(thrown(() => parseOrThrow(schema, { timeout: -0 })).message).toContain("timeout: expected a duration between 1ms and 24h, got number -0");
    expect(thrown(() => parseOrThrow(schema, { timeout: Number("9".repeat(400)) })).message).toContain("timeout: expected a duration such as 500ms, 30s or 2m (at most 24h), got number Infinity");
  });
});

describe("config keys that name Object.prototype members are unknown keys", () => {
  const base = () => ({
    app: "web",
    instances: [{ port: 8011 }, { port: 8012 }],
    commands: { stop: "./stop {port}", update: "./update {version} {previous}", start: "./start {port} {version}" },
    proxy: { type: "nginx" },
  });
  const withKey = (target: Record<string, unknown>, key: string) => Object.defineProperty(target, key, { value: "x", enumerable: true, writable: true, configurable: true });

  for (const key of ["constructor", "toString", "__proto__", "hasOwnProperty", "valueOf"]) {
    it(`${key} at the top level, in commands, health and an instance`, () => {
      for (const [where, pick] of [
        ["", (c: Record<string, unknown>) => c],
        ["commands.", (c: Record<string, unknown>) => c.commands as Record<string, unknown>],
        ["health.", (c: Record<string, unknown>) => ((c.health = {}), c.health as Record<string, unknown>)],
        ["instances[1].", (c: Record<string, unknown>) => (c.instances as Record<string, unknown>[])[1]!],
      ] as const) {
        const config = base();
        withKey(pick(config), key);
        const error = thrown(() => validateConfig(config, { baseDir: "/srv", source: "nodrop.yml" }));
        expect(error.code).toBe("E_CONFIG");
        expect(error.message).toContain(`  ${where}${key}: unknown key (known keys:`);
      }
    });
  }

  it("a schema object never reads an inherited value as a field", () => {
    const schema = object({ count: optional(int({ min: 1 }), 3) });
    const input = Object.create({ count: 99 }) as Record<string, unknown>;
    expect(parseOrThrow(schema, input)).toEqual({ count: 3 });
  });
});

describe("verifyUrlProblem never echoes credentials", () => {
  it.each(["http://user:s3cret-pw@[bad", "http://admin:s3cret-pw@exa mple.com/", "https://:s3cret-pw@[::1/"])("%j", (url) => {
    const problem = verifyUrlProblem(url);
    expect(problem).toBeDefined();
    expect(problem).not.toContain("s3cret-pw");
    expect(problem).toContain("(credentials hidden)");
  });

  it("a malformed URL without credentials is still shown", () => {
    expect(verifyUrlProblem("http://[bad")).toBe('expected an http:// or https:// URL, got "http://[bad"');
  });
});

describe("lastDeploy checks what it reads back", () => {
  const at = "2026-11-27T18:00:00.000Z";
  const deployRecord = (over: Record<string, unknown>) => ({ at, type: "deploy", id: "d1", version: "v2", strategy: "rolling", instances: [{ id: "web-1", from: "v1" }], ...over }) as unknown as JournalRecord;

  it.each([
    ["version", { version: "v1'; touch /tmp/x; echo '" }, 'the journal\'s last deploy has version "v1\'; touch /tmp/x; echo \'", which is not a safe version string'],
    ["version option", { version: "--upload-pack=x" }, 'version "--upload-pack=x", which is not a safe version string'],
    ["version not a string", { version: ["v2"] }, 'version "[\\"v2\\"]", which is not a safe version string'],
    ["from", { instances: [{ id: "web-1", from: "--upload-pack=x" }] }, 'instances[0].from (web-1) "--upload-pack=x", which is not a safe version string'],
    ["instance id", { instances: [{ id: "web 1; reboot", from: "v1" }] }, 'instances[0].id "web 1; reboot", which is not an instance id'],
    ["instance id __proto__", { instances: [{ id: "__proto__", from: "v1" }] }, 'instances[0].id "__proto__", which is not an instance id'],
    ["instances not a list", { instances: { id: "web-1" } }, "instances"],
    ["strategy", { strategy: "\u001b[2Jrolling" }, 'strategy "\\u001b[2Jrolling", which is not a strategy name'],
    ["time", { at: "now\n" }, 'time "now\\n", which is not an ISO time'],
  ])("a hostile %s is E_JOURNAL naming the field", (_name, over, message) => {
    const error = thrown(() => lastDeploy([deployRecord(over)]));
    expect(error.code).toBe("E_JOURNAL");
    expect(error.message).toContain(message);
  });

  it("a step with control characters is shown escaped", () => {
    const last = lastDeploy([deployRecord({}), { at, type: "step", id: "d1", phase: "batch\u001b[2J", kind: "stop", instance: "web 1\n", status: "start" } as JournalRecord]);
    expect(last!.lastStep).toBe('"batch\\u001b[2J": stop "web 1\\n" (start)');
  });

  it("an end record whose ok is not a boolean is not a success", () => {
    const last = lastDeploy([deployRecord({}), { at, type: "end", id: "d1", ok: "yes", instances: [] } as unknown as JournalRecord]);
    expect(last).toMatchObject({ finished: true, ok: false });
  });
});
