import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type Executor, type JournalRecord, NodropError, lastDeploy, type Proxy, type Routing, type Strategy, localExecutor, shellQuote, singlePool } from "@nodrop/core";
import { rollingOptionsSchema, rollingStrategy } from "@nodrop/strategy-rolling";
import { afterEach, describe, expect, it } from "vitest";
import { canaryCommand, runCanaryCommand } from "./canary-commands.js";
import { deploymentLock, lockedDeploy } from "./locked-deploy.js";
import { formatReport } from "./reporter.js";
import type { LockedDeployment } from "./locked-deploy.js";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** A fleet of two instances already on v1 behind a fake proxy; the lock and journal in a temp dir through real bash. */
async function fakeDeployment(proxyExecutor: Executor): Promise<LockedDeployment & { steadyRouting: Routing; proxy: Proxy; executors: Map<string, Executor>; dispose(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-locked-"));
  dirs.push(dir);
  const specs = ["a", "b"].map((id, i) => ({ id, host: "local", address: "127.0.0.1", port: 9100 + i }));
  const proxy: Proxy = {
    name: "fake",
    capabilities: { versionPinning: false, timedSwitch: false, affinity: false },
    check: async () => ({ ok: true, details: [] }),
    apply: async () => ({ generation: "1", confirmMs: 0, drainMs: 0 }),
    current: async () => singlePool(["a", "b"]),
  };
  const strategy = rollingStrategy() as Strategy<unknown>;
  return {
    steadyRouting: singlePool(["a", "b"]),
    proxy,
    proxyExecutor,
    heartbeatExecutor: proxyExecutor,
    stateDir: path.join(dir, "state"),
    executors: new Map([["local", proxyExecutor]]),
    options: {
      instances: specs.map((spec) => ({ spec, stop: async () => {}, update: async () => {}, start: async () => {} })),
      proxy,
      strategy,
      strategyOptions: rollingOptionsSchema.parse({}, "strategy", []),
      health: { probe: async () => ({ ok: true, version: "v1", detail: "status 200" }) },
      healthWait: { successes: 1, intervalMs: 10, deadlineMs: 1000 },
    },
    dispose: async () => {},
  };
}

/** A deploy of v4 killed after it stopped `a` behind a pin staged for v4; `earlier` records that v4 ran before. */
async function interruptedFleet(earlier: boolean) {
  const deployment = await fakeDeployment(localExecutor());
  const { mkdir, writeFile } = await import("node:fs/promises");
  await mkdir(deployment.stateDir, { recursive: true, mode: 0o700 });
  const at = new Date().toISOString();
  const line = (record: object) => `${JSON.stringify({ at, ...record })}\n`;
  const records = [
    ...(earlier ? [line({ type: "deploy", id: "d0", version: "v1", strategy: "rolling", instances: [{ id: "a", from: "v4" }, { id: "b", from: "v4" }] }), line({ type: "end", id: "d0", ok: true, instances: [] })] : []),
    line({ type: "deploy", id: "d1", version: "v4", strategy: "half-split", instances: [{ id: "a", from: "v1" }, { id: "b", from: "v1" }] }),
    line({ type: "step", id: "d1", phase: "half A", kind: "route", status: "ok" }),
    line({ type: "step", id: "d1", phase: "half A", kind: "stop", instance: "a", status: "ok" }),
  ];
  await writeFile(path.join(deployment.stateDir, "journal.jsonl"), records.join(""), { mode: 0o600 });
  let started = false;
  const routing = { pools: { a: ["a"], live: ["b"] }, defaultPool: "live", pins: { v4: "a" } };
  const proxy = { ...deployment.proxy, current: async () => routing };
  const instances = deployment.options.instances.map((i) => (i.spec.id === "a" ? { ...i, start: async () => void (started = true) } : i));
  const health = { probe: async (spec: { id: string }) => (spec.id === "a" && !started ? { ok: false, version: undefined, detail: "connection refused" } : { ok: true, version: "v1", detail: "status 200" }) };
  return { ...deployment, proxy, options: { ...deployment.options, proxy, instances, health } };
}

describe("lockedDeploy after a deploy that was killed", () => {
  it("counts an instance behind the pin the killed deploy staged (a version that never served) as out of the pool, and repairs it", async () => {
    const report = await lockedDeploy(await interruptedFleet(false), { version: "v1" });
    expect(report.error).toBeUndefined();
    expect(report.instances.map((i) => [i.id, i.inPool])).toEqual([["a", true], ["b", true]]);
  });

  it("does not, when that version ran in this fleet before: its clients may still hold the pin", async () => {
    const report = await lockedDeploy(await interruptedFleet(true), { version: "v1" });
    expect(report.error?.code).toBe("E_PREFLIGHT");
    expect(report.error?.message).toContain("a (127.0.0.1:9100) in the pool but not healthy");
  });
});

describe("lockedDeploy", () => {
  it("returns the report when releasing the lock fails; the failure is a warning that states the lock's state", async () => {
    const local = localExecutor();
    let dropped = false;
    // The connection to the proxy host drops once the deploy is done, before the release.
    const proxyExecutor: Executor = {
      name: "flaky",
      host: "proxy-1",
      exec: (command, options) => (dropped ? Promise.reject(new NodropError("E_SSH_DROPPED", "connection to proxy-1 closed")) : local.exec(command, options)),
    };
    const deployment = await fakeDeployment(proxyExecutor);
    const report = await lockedDeploy(deployment, {
      version: "v1",
      onEvent: (event) => {
        if (event.type === "done") dropped = true;
      },
    });
    expect(report.ok).toBe(true);
    expect(report.warnings).toHaveLength(1);
    const warning = report.warnings![0]!;
    expect(warning).toMatch(/^the deploy lock on proxy-1 could not be released \(connection to proxy-1 closed\): /);
    expect(warning).toMatch(/still held by this deploy's token [0-9a-f-]{36}, .*goes stale 1m0s after its last heartbeat .*`nodrop lock release`/);
    expect(formatReport(report)).toContain(`warning: ${warning}`);
    expect(JSON.parse(JSON.stringify(report)).warnings).toEqual([warning]);

    // With the connection back, the lock is still there, held by that token: the warning was true.
    dropped = false;
    const again = await lockedDeploy(deployment, { version: "v1" }).catch((error: unknown) => error as NodropError);
    expect((again as NodropError).code).toBe("E_LOCK");
  });

  it("a release that works leaves no warning and no lock", async () => {
    const deployment = await fakeDeployment(localExecutor());
    const report = await lockedDeploy(deployment, { version: "v1" });
    expect(report.ok).toBe(true);
    expect(report.warnings).toBeUndefined();
    expect((await lockedDeploy(deployment, { version: "v1" })).warnings).toBeUndefined();
  });
});

/** The fake fleet with a journal whose last deploy, of v2, is paused at the manual gate of "canary 25%" after passing "canary 10%". */
async function pausedCanary(proxyExecutor: Executor = localExecutor()) {
  const deployment = await fakeDeployment(proxyExecutor);
  const { mkdir, writeFile } = await import("node:fs/promises");
  await mkdir(deployment.stateDir, { recursive: true, mode: 0o700 });
  const at = new Date().toISOString();
  const records = [
    { type: "deploy", id: "d1", version: "v2", strategy: "canary", instances: [{ id: "a", from: "v1" }, { id: "b", from: "v1" }] },
    { type: "step", id: "d1", phase: "canary 10%", kind: "gate", status: "ok", detail: "passed" },
    { type: "step", id: "d1", phase: "canary 25%", kind: "gate", status: "paused" },
  ];
  const journalFile = path.join(deployment.stateDir, "journal.jsonl");
  await writeFile(journalFile, records.map((r) => `${JSON.stringify({ at, ...r })}\n`).join(""), { mode: 0o600 });
  const commands: string[] = [];
  const instances = deployment.options.instances.map((i) => ({ ...i, stop: async () => void commands.push(`stop ${i.spec.id}`), update: async () => void commands.push(`update ${i.spec.id}`) }));
  return { deployment: { ...deployment, options: { ...deployment.options, instances } }, commands, journalFile };
}

describe("a canary paused at a manual gate", () => {
  it("refuses a deploy of another version with E_CANARY naming the gate; nothing runs, the journal and the lock are as they were", async () => {
    const { deployment, commands, journalFile } = await pausedCanary();
    const { readFile } = await import("node:fs/promises");
    const before = await readFile(journalFile, "utf8");
    const error = (await lockedDeploy(deployment, { version: "v3" }).catch((e: unknown) => e)) as NodropError;
    expect(error).toBeInstanceOf(NodropError);
    expect(error.code).toBe("E_CANARY");
    expect(error.message).toContain("the canary of v2 is paused at its gate in canary 25%");
    expect(error.message).toContain("deploy v3 after either");
    expect(commands).toEqual([]);
    expect(await readFile(journalFile, "utf8")).toBe(before);
    expect(await deploymentLock(deployment).status()).toBeUndefined();
  });

  it("a journal that cannot be read (written to by this uid, not readable) refuses the deploy with E_JOURNAL naming it: never read as empty, which would deploy over the paused canary", async () => {
    const local = localExecutor();
    // root reads it anyway: its commands run without the capabilities that pass over file modes, as any other deployer's do.
    const asDeployer: Executor = process.geteuid?.() === 0 ? { name: "local", host: "local", exec: (command, options) => local.exec(`setpriv --inh-caps=-all --bounding-set=-dac_override,-dac_read_search -- bash -c ${shellQuote(command)}`, options) } : local;
    const { deployment, commands, journalFile } = await pausedCanary(asDeployer);
    const { chmod, readFile } = await import("node:fs/promises");
    const before = await readFile(journalFile, "utf8");
    await chmod(journalFile, 0o200);
    const error = (await lockedDeploy(deployment, { version: "v3" }).catch((e: unknown) => e)) as NodropError;
    expect(error).toBeInstanceOf(NodropError);
    expect(error.code).toBe("E_JOURNAL");
    expect(error.message).toContain(`cannot read the journal ${journalFile} on local (`);
    expect(commands).toEqual([]);
    expect(await readFile(journalFile, "utf8")).toBe(before);
    expect(await deploymentLock(deployment).status()).toBeUndefined();
  });

  it("refuses a deploy of another version over a canary killed during its gate too (not paused, not finished)", async () => {
    const { deployment, commands, journalFile } = await pausedCanary();
    const { readFile, writeFile } = await import("node:fs/promises");
    // The runner died during the gate: its last record is the gate's start.
    const lines = (await readFile(journalFile, "utf8")).trim().split("\n");
    lines[lines.length - 1] = JSON.stringify({ ...JSON.parse(lines.at(-1)!), status: "start" });
    await writeFile(journalFile, `${lines.join("\n")}\n`);
    const error = (await lockedDeploy(deployment, { version: "v3" }).catch((e: unknown) => e)) as NodropError;
    expect(error.code).toBe("E_CANARY");
    expect(error.message).toContain("the canary of v2 did not finish (last step: canary 25%: gate (start))");
    expect(error.message).toContain("`nodrop resume` takes it on");
    expect(commands).toEqual([]);
  });

  it("lets a deploy of the same version, a resume and a rollback through (the canary's own ways on)", async () => {
    for (const [version, command] of [["v2", "deploy"], ["v2", "resume"], ["v1", "rollback"]] as const) {
      const { deployment } = await pausedCanary();
      const report = await lockedDeploy(deployment, { version, command });
      expect(report.error?.code, `${command} ${version}`).not.toBe("E_CANARY");
    }
  });

  it("promote reads the gates to skip from the journal: those passed and the one it is paused at", async () => {
    const { journalFile } = await pausedCanary();
    const next = canaryCommand(await readJournal(journalFile), "promote");
    expect(next).toMatchObject({ command: "promote", deployId: "d1", version: "v2", passedGates: ["canary 10%", "canary 25%"] });
    const abort = canaryCommand(await readJournal(journalFile), "abort");
    expect(abort).toMatchObject({ command: "abort", deployId: "d1", version: "v1", passedGates: [] });
  });

  it("a second promote read from the same journal is refused once the first has run: two promotes pass one gate", async () => {
    const { deployment, journalFile } = await pausedCanary();
    const records = await readJournal(journalFile);
    const first = canaryCommand(records, "promote");
    const second = canaryCommand(records, "promote");
    // The first one runs (this fake fleet never reports v2 healthy, which does not matter here): a deploy record of its own.
    await runCanaryCommand(deployment, first, {});
    expect(lastDeploy(await readJournal(journalFile))?.id).not.toBe("d1");
    const linesAfterFirst = (await readJournal(journalFile)).length;
    const error = (await runCanaryCommand(deployment, second, {}).catch((e: unknown) => e)) as NodropError;
    expect(error.code).toBe("E_JOURNAL");
    expect(error.message).toContain("another deploy ran after this promote read the journal: nothing done");
    expect((await readJournal(journalFile)).length).toBe(linesAfterFirst);
  });

  it("an abort read before another deploy took the fleet is refused, nothing done", async () => {
    const { deployment, journalFile, commands } = await pausedCanary();
    const abort = canaryCommand(await readJournal(journalFile), "abort");
    // Meanwhile, someone promotes it (another deploy record of v2).
    await runCanaryCommand(deployment, canaryCommand(await readJournal(journalFile), "promote"), {});
    commands.length = 0;
    const error = (await runCanaryCommand(deployment, abort, {}).catch((e: unknown) => e)) as NodropError;
    expect(error.code).toBe("E_JOURNAL");
    expect(commands).toEqual([]);
  });
});

async function readJournal(file: string): Promise<JournalRecord[]> {
  const { readFile } = await import("node:fs/promises");
  return (await readFile(file, "utf8")).trim().split("\n").map((line) => JSON.parse(line) as JournalRecord);
}

describe("abort of a canary that was resumed or promoted", () => {
  // The resume's own record says what each instance ran when it started: some already on the canary's version.
  const at = "2026-12-01T10:00:00.000Z";
  const journal = (resumedFrom: Record<string, string>): JournalRecord[] =>
    [
      { type: "deploy", id: "d1", at, version: "v2", strategy: "canary", instances: ["a", "b", "c", "d"].map((id) => ({ id, from: "v1" })) },
      { type: "step", id: "d1", at, phase: "canary 25%", kind: "gate", status: "paused" },
      { type: "deploy", id: "d2", at, version: "v2", strategy: "canary", instances: Object.entries(resumedFrom).map(([id, from]) => ({ id, from })) },
      { type: "step", id: "d2", at, phase: "canary 50%", kind: "gate", status: "paused" },
    ] as unknown as JournalRecord[];

  it.each([
    ["a quarter on the canary", { a: "v2", b: "v1", c: "v1", d: "v1" }],
    ["half, the canary's listed first", { a: "v2", b: "v2", c: "v1", d: "v1" }],
    ["half, the old version's listed first", { c: "v1", d: "v1", a: "v2", b: "v2" }],
    ["three quarters on the canary", { a: "v2", b: "v2", c: "v2", d: "v1" }],
  ])("goes back to the version the canary started from (%s)", (_, from) => {
    expect(canaryCommand(journal(from), "abort")).toMatchObject({ deployId: "d2", version: "v1" });
  });
});
