// Surge rolling on real nginx and gunicorn, each instance with two slots (a port and a spare):
// under load the pool never holds fewer instances than the fleet, a new slot that fails its check
// changes nothing users see, and a taken spare port or too little memory is refused up front.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import net from "node:net";
import { sleep } from "@nodrop/core";
import { startLoad } from "@nodrop/loadgen";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { type Fleet, deployUnderLoad, runNodrop, sampleRouting, startFleet } from "../src/index.js";
import { deployKilledAt, describeRecord, lastDeployRecords, readJournal, waitForOrphans } from "../src/kill-points.js";

const PORTS = [8411, 8412, 8413, 8414];
const OFFSET = 1000;

describe("surge rolling (real nginx + gunicorn, two slots per instance)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({ ports: PORTS, proxyPort: 18411, slotOffset: OFFSET, strategy: { name: "rolling", batchSize: 1, surge: true }, health: { deadline: "8s" } });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("moves v1 to v2 on the spare ports with 0 failed requests and never fewer than 4 instances in the pool", async () => {
    const sampler = sampleRouting(fleet.includeFile);
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 24, seed: 16 } });
    const seen = await sampler.stop();

    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    expect(result.report?.ok).toBe(true);
    expect(result.report?.instances.map((i) => [i.id, i.from, i.version, i.port, i.idle, i.inPool, i.outcome])).toEqual(
      PORTS.map((port) => [`web-${port}`, "v1", "v2", port + OFFSET, { port, running: false }, true, "updated"]),
    );
    // One swap per batch, no finish: each reload keeps every instance in.
    expect(result.report?.routes).toHaveLength(4);
    // The sampler saw the routing before the deploy and after each of the four swaps, and no routing
    // of any of them served fewer than the whole fleet.
    expect(seen.routings.map((r) => Object.values(r.slots ?? {}).filter((port) => port > 9000).length)).toEqual([0, 1, 2, 3, 4]);
    expect(seen.fewest).toBe(4);
    expect(seen.samples).toBeGreaterThan(50);

    expect(result.stats.requests).toBeGreaterThan(500);
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    expect(result.stats.byVersion.v1).toBeGreaterThan(0);
    expect(result.stats.byVersion.v2).toBeGreaterThan(0);
    expect(result.records.filter((r) => r.kind === "slow" && r.status === 200).length).toBeGreaterThan(0);
    expect(result.records.filter((r) => r.kind === "post" && r.status === 200).length).toBeGreaterThan(0);
    // The old slots are stopped; the new ones serve.
    expect(await fleet.versions()).toEqual(Object.fromEntries(PORTS.flatMap((port) => [[String(port), "down"], [String(port + OFFSET), "v2"]])));
    // status reads the routing back: each instance on its spare port.
    const status = await runNodrop(["status", "--config", fleet.configFile]);
    for (const port of PORTS) expect(status.stdout).toMatch(new RegExp(`web-${port}\\s.*127\\.0\\.0\\.1:${port + OFFSET}`));
  });

  it("a new slot that fails its check is stopped, and users see nothing change: the include file is not rewritten", async () => {
    const before = await readFile(fleet.includeFile, "utf8");
    // v3 is a release whose health check fails (examples/wsgi-fleet/releases/v3/BROKEN).
    const result = await deployUnderLoad({ fleet, version: "v3", warmupMs: 500, cooldownMs: 500, load: { clients: 12, seed: 17 } });
    expect(result.cli.code).not.toBe(0);
    expect(result.report?.error?.code).toBe("E_HEALTHCHECK");
    expect(result.report?.error?.instance).toBe("web-8411");
    expect(result.report?.recovery).toContain("stopped the idle slots of web-8411 (port 8411)");
    expect(result.report?.instances.map((i) => [i.id, i.version, i.port, i.inPool])).toEqual(PORTS.map((port) => [`web-${port}`, "v2", port + OFFSET, true]));
    expect(await readFile(fleet.includeFile, "utf8")).toBe(before);
    expect(result.stats.failed).toBe(0);
    expect(Object.keys(result.stats.byVersion)).toEqual(["v2"]);
    expect(await fleet.versions()).toEqual(Object.fromEntries(PORTS.flatMap((port) => [[String(port), "down"], [String(port + OFFSET), "v2"]])));
  });

  it("refuses, touching nothing, when an idle port is taken or the host lacks the memory for the overlap", async () => {
    const before = await readFile(fleet.includeFile, "utf8");
    const versions = await fleet.versions();
    // Something else listens on web-8412's idle slot (8412, since v2 went live on 9412).
    // It drops every connection at once (nodrop's preflight probes it): close() then has none to wait for.
    const squatter = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => squatter.listen(8412, "127.0.0.1", resolve));
    try {
      const taken = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v4", "--json"]);
      expect(taken.code).not.toBe(0);
      const report = JSON.parse(taken.stdout) as { error?: { code: string; message: string } };
      expect(report.error?.code).toBe("E_PREFLIGHT");
      expect(report.error?.message).toMatch(/port 8412 on host local \(the idle slot of web-8412\) is taken: 127\.0\.0\.1:8412 \(\S+ (\d+)\)/);
      // The listener is named by the pid that holds it: this test process.
      expect(/\((?:\S+) (\d+)\)/.exec(report.error?.message ?? "")?.[1]).toBe(String(process.pid));
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
    // The host's real MemAvailable against a reserve no machine has.
    const config = parse(await readFile(fleet.configFile, "utf8")) as Record<string, unknown>;
    const greedy = fleet.configFile.replace(/\.yaml$/, ".greedy.yaml");
    await writeFile(greedy, stringify({ ...config, slots: { offset: OFFSET, reserve: "100TiB" } }));
    const short = await runNodrop(["deploy", "--config", greedy, "--version", "v4", "--json"]);
    expect(short.code).not.toBe(0);
    const report = JSON.parse(short.stdout) as { error?: { code: string; message: string } };
    expect(report.error?.code).toBe("E_PREFLIGHT");
    expect(report.error?.message).toMatch(/host local has \d+ MiB available, the overlap needs \d+ MiB \(new processes at 1\.25× the old ones' size, 104857600 MiB reserve\): \d+ MiB short/);
    expect(await readFile(fleet.includeFile, "utf8")).toBe(before);
    expect(await fleet.versions()).toEqual(versions);
  });

  it("the next surge swaps back to the first ports, from the routing nginx holds", async () => {
    const result = await deployUnderLoad({ fleet, version: "v4", warmupMs: 500, cooldownMs: 500, load: { clients: 12, seed: 18 } });
    expect(result.cli.code).toBe(0);
    expect(result.report?.instances.map((i) => [i.id, i.from, i.version, i.port, i.idle?.running])).toEqual(PORTS.map((port) => [`web-${port}`, "v2", "v4", port, false]));
    expect(result.stats.failed).toBe(0);
    expect(await fleet.versions()).toEqual(Object.fromEntries(PORTS.flatMap((port) => [[String(port), "v4"], [String(port + OFFSET), "down"]])));
  });

  it("the pipeline: batch 2's new slot starts while batch 1 swaps; when that start fails, batch 2 fails with it, its instance never leaves its old slot, and no request fails", async () => {
    const before = await fleet.versions();
    const live = (port: number) => (before[String(port)] !== "down" ? port : port + OFFSET);
    const idle = (port: number) => (live(port) === port ? port + OFFSET : port);
    const from = before[String(live(8412))];
    await mkdir(path.join(fleet.dir, "instances", String(idle(8412))), { recursive: true });
    await writeFile(path.join(fleet.dir, "instances", String(idle(8412)), "fail-once-start"), "");
    const result = await deployUnderLoad({ fleet, version: "v2", warmupMs: 500, cooldownMs: 500, load: { clients: 12, seed: 19 } });
    expect(result.cli.code).not.toBe(0);
    expect(result.report?.error).toMatchObject({ code: "E_INSTANCE", instance: "web-8412", step: "batch 2/4: start" });
    expect(result.stats.failed).toBe(0);
    // The start was attempted before batch 1's swap had ended: it ran early, not after it.
    const records = lastDeployRecords(await readJournal(fleet));
    const when = (phase: string, kind: string, instance: string | undefined, status: string) => {
      const record = records.find((r) => r.type === "step" && r.phase === phase && r.kind === kind && r.instance === instance && r.status === status);
      expect(record, `${phase}: ${kind} ${instance ?? ""} ${status}`).toBeDefined();
      return Date.parse(record!.at);
    };
    expect(when("batch 2/4", "start", "web-8412", "start")).toBeLessThanOrEqual(when("batch 1/4", "route", undefined, "ok"));
    // Batch 1 went live on its new slot; web-8412 serves from its old one, the rest were not reached.
    const state = result.report!.instances.map((i) => [i.id, i.version, i.port, i.inPool]);
    expect(state).toEqual(PORTS.map((port) => [`web-${port}`, port === 8411 ? "v2" : from, port === 8411 ? idle(8411) : live(port), true]));
    const after = await fleet.versions();
    expect(after[String(live(8412))]).toBe(from);
    expect(after[String(idle(8412))]).toBe("down");
    expect(after[String(idle(8411))]).toBe("v2");
    // The next deploy finishes the job (the start fails only once): the tests after this one start from one version.
    const again = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v2"]);
    expect(again.code, again.stderr).toBe(0);
    expect(new Set(Object.values(await fleet.versions()).filter((v) => v !== "down"))).toEqual(new Set(["v2"]));
  });

  it("the old slots drain in the background: the next batch starts while a 10 s request is still in flight on batch 1's old slot, which stops only after it", async () => {
    const SLOW_MS = 10_000;
    // Where web-8411 is live now and what it runs (after the tests above: 8411, v4).
    const before = await fleet.versions();
    const live = before["8411"] !== "down" ? 8411 : 8411 + OFFSET;
    const from = before[String(live)];
    // Fresh connections, so that each nginx worker's round robin spreads them (its first goes to web-8411).
    const t0 = Date.now();
    const slow = slowRequests(fleet, 16, SLOW_MS, t0);
    await sleep(300);
    const cli = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v5", "--json"]);
    const answers = await Promise.all(slow);
    expect(cli.code).toBe(0);
    const report = JSON.parse(cli.stdout) as { routes: { background?: boolean; drainMs: number }[] };
    expect(report.routes.map((r) => r.background)).toEqual([true, true, true, true]);
    // Every slow request finished on the version it started on, none cut by a stop.
    expect(answers.map((a) => [a.status, a.version])).toEqual(answers.map(() => [200, from]));
    // The app names itself by its port.
    expect(answers.filter((a) => a.instance === String(live)).length).toBeGreaterThan(0);
    const records = lastDeployRecords(await readJournal(fleet));
    const at = (phase: string, kind: string, instance: string, status: string) => {
      const record = records.find((r) => r.type === "step" && r.phase === phase && r.kind === kind && r.instance === instance && r.status === status);
      expect(record, `${phase}: ${kind} ${instance} ${status}`).toBeDefined();
      return Date.parse(record!.at) - t0;
    };
    // The deploy went on: batch 2's new slot was up while the 10 s requests still ran...
    expect(at("batch 2/4", "start", "web-8412", "ok")).toBeLessThan(Math.min(...answers.map((a) => a.endMs)));
    // ...and web-8411's old slot was not stopped before they ended (its drain waited for them).
    expect(at("batch 1/4", "stop", "web-8411", "start")).toBeGreaterThanOrEqual(SLOW_MS);
    const newPort = (port: number) => (live === 8411 ? port + OFFSET : port);
    expect(await fleet.versions()).toEqual(Object.fromEntries(PORTS.flatMap((port) => [[String(port), newPort(port) === port ? "v5" : "down"], [String(port + OFFSET), newPort(port) === port ? "down" : "v5"]])));
  });

});

describe("surge rolling killed with -9 mid-deploy, then resume (real nginx + gunicorn)", () => {
  const ports = [8421, 8422, 8423];
  let fleet: Fleet;
  /** The journal of one whole surge deploy, v1 -> v2: where each kill point is. */
  let enumeration: string[];
  beforeAll(async () => {
    fleet = await startFleet({ ports, proxyPort: 18421, slotOffset: OFFSET, strategy: { name: "rolling", batchSize: 1, surge: true }, health: { deadline: "8s" } });
    const first = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v2"]);
    expect(first.code, first.stderr).toBe(0);
    enumeration = lastDeployRecords(await readJournal(fleet)).map(describeRecord);
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it.each([
    // The new slot of batch 2 has started but is not in the pool yet.
    { name: "after batch 2's new slot started", record: "step batch 2/3: start web-8422 ok", from: "v2", to: "v4" },
    // The swap is being put into effect (or is, once an orphaned reload ends); the old slot was not stopped.
    { name: "as batch 2's swap starts", record: "step batch 2/3: route start", from: "v4", to: "v2" },
  ])("killed $name: the idle slot holds a process of the app, and resume finishes with 0 failed requests", async ({ record, from, to }) => {
    expect(Object.values(await fleet.versions()).filter((v) => v !== "down")).toEqual(ports.map(() => from));
    const k = enumeration.indexOf(record) + 1;
    expect(k, `"${record}" in ${enumeration.join(" | ")}`).toBeGreaterThan(0);

    const load = startLoad({ url: fleet.url, clients: 8, seed: k, postRatio: 0.1, slowRatio: 0.1, slowMs: 200, durationMs: 300_000 });
    try {
      while (load.completed() < 16) await sleep(5);
      const tag = `surge-${k}-${to}`;
      const killed = await deployKilledAt(fleet, { version: to, k, tag, at: record });
      expect(killed.exit.signal).toBe("SIGKILL");
      await waitForOrphans(tag);
      // The kill left batch 2's instance with both slots up: the old version and the new one.
      const left = await fleet.versions();
      expect([left["8422"], left[String(8422 + OFFSET)]].sort()).toEqual([from, to].sort());

      const status = await runNodrop(["status", "--config", fleet.configFile]);
      expect(status.stdout).toContain("DID NOT FINISH");
      const resumed = await runNodrop(["resume", "--config", fleet.configFile, "--json"]);
      expect(resumed.code, resumed.stderr).toBe(0);
      const report = JSON.parse(resumed.stdout) as { ok: boolean; instances: { id: string; version: string; port: number; idle?: { running?: boolean } }[] };
      expect(report.ok).toBe(true);
      // Every instance on the new version, on the slot the first deploy did not use, with its old slot stopped.
      const live = (port: number) => (to === "v4" ? port : port + OFFSET);
      expect(report.instances.map((i) => [i.id, i.version, i.port, i.idle?.running])).toEqual(ports.map((port) => [`web-${port}`, to, live(port), false]));
      expect(await fleet.versions()).toEqual(Object.fromEntries(ports.flatMap((port) => [[String(port), to === "v4" ? to : "down"], [String(port + OFFSET), to === "v4" ? "down" : to]])));
    } finally {
      load.stop();
    }
    const { stats } = await load.done;
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
    expect(stats.requests).toBeGreaterThan(100);
  });

  it("killed just after batch 1's swap, with 10 s requests draining on its old slot: resume stops that slot only after they end, and they all succeed", async () => {
    const SLOW_MS = 10_000;
    const before = await fleet.versions();
    const live = before["8421"] !== "down" ? 8421 : 8421 + OFFSET;
    const from = before[String(live)]!;
    const to = from === "v2" ? "v4" : "v2";
    const record = "step batch 1/3: route ok";
    const k = enumeration.indexOf(record) + 1;
    expect(k, `"${record}" in ${enumeration.join(" | ")}`).toBeGreaterThan(0);
    // Fresh connections: each nginx worker's round robin sends its first to web-8421.
    const t0 = Date.now();
    const slow = slowRequests(fleet, 12, SLOW_MS, t0);
    await sleep(300);
    const tag = `surge-drain-${k}-${to}`;
    const killed = await deployKilledAt(fleet, { version: to, k, tag, at: record });
    expect(killed.exit.signal).toBe("SIGKILL");
    await waitForOrphans(tag);
    const resumed = await runNodrop(["resume", "--config", fleet.configFile, "--json"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    const answers = await Promise.all(slow);
    // Every slow request ended on the version it started on; some were on web-8421's old slot.
    expect(answers.map((a) => [a.status, a.version])).toEqual(answers.map(() => [200, from]));
    expect(answers.filter((a) => a.instance === String(live)).length).toBeGreaterThan(0);
    // The resume stopped the old slot left running only once the crashed deploy's old nginx generation had drained.
    const records = lastDeployRecords(await readJournal(fleet));
    const stop = records.find((r) => r.type === "step" && r.kind === "stop" && r.instance === "web-8421" && r.status === "start");
    expect(stop, records.map(describeRecord).join(" | ")).toBeDefined();
    expect(Date.parse(stop!.at) - t0).toBeGreaterThanOrEqual(SLOW_MS);
    expect(Object.values(await fleet.versions()).filter((v) => v !== "down")).toEqual(ports.map(() => to));
  });
});

/** `count` requests through nginx that the app answers after `ms`, each on a fresh connection (so each nginx worker's round robin spreads them); `endMs` counts from `t0`. */
function slowRequests(fleet: Fleet, count: number, ms: number, t0: number) {
  return Array.from({ length: count }, async () => {
    const response = await fetch(`${fleet.url}/slow?ms=${ms}`, { headers: { connection: "close" } });
    await response.text();
    return { status: response.status, instance: response.headers.get("x-app-instance"), version: response.headers.get("x-app-version"), endMs: Date.now() - t0 };
  });
}
