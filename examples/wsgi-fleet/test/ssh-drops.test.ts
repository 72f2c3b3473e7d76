// One deploy, one host's SSH dropped twice: once during the deploy's own step, once more during
// the recovery that follows (after nodrop reconnected). The real `nodrop` CLI runs as a child
// process against real sshd, gunicorn and nginx; it must end with a report, not a crash.
// web2's SSH goes through a TCP relay in front of its real sshd, so a drop can also be a
// connection that errors twice (corrupt bytes, then a reset) instead of a kill.
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { DeployReport } from "@nodrop/core";
import { sleep } from "@nodrop/core";
import { startLoad } from "@nodrop/loadgen";
import { type TcpRelay, type TestHosts, startTestHosts, tcpRelay } from "@nodrop/testhosts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { hostile } from "../../../tests/adversarial/tally.js";
import { type Fleet, runNodrop, startFleet } from "../src/index.js";

/** Waits for `check` while the CLI runs; when it ends first, says what it printed. */
async function waitFor(what: string, check: () => boolean, cli: { ended?: { code: number; stdout: string; stderr: string } }, bound = 60_000) {
  const deadline = Date.now() + bound;
  while (!check()) {
    if (cli.ended) throw new Error(`nodrop ended (exit ${cli.ended.code}) before ${what}:\n${cli.ended.stderr}\n${cli.ended.stdout}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe("one host's SSH dropped twice in one deploy (real CLI, sshd, gunicorn, nginx)", () => {
  let hosts: TestHosts;
  let fleet: Fleet;
  let relay: TcpRelay;
  let configFile: string;
  const gate = () => path.join(fleet.dir, "gate");
  beforeAll(async () => {
    hosts = await startTestHosts({ names: ["web1", "web2"] });
    fleet = await startFleet({ hosts, ports: [8021, 8022], proxyPort: 18202 });
    const web2 = hosts.host("web2");
    relay = await tcpRelay(web2.address, web2.sshPort);
    await mkdir(gate(), { recursive: true });
    // web2 is reached through the relay; its stop command waits at a gate the test opens (the
    // hosts share this machine's disk): while it waits, the test drops the connection it runs on.
    const config = parse(await readFile(fleet.configFile, "utf8")) as Record<string, any>;
    // The relay stands where web2 was, so known_hosts (which names web2's address) cannot vouch for it: a pinned key does.
    config.hosts.web2 = { address: "127.0.0.1", port: relay.port, fingerprint: web2.fingerprint };
    const g = gate();
    config.commands.stop = `if [ -e ${g}/{id}.hold ]; then touch ${g}/{id}.held; while [ -e ${g}/{id}.hold ]; do sleep 0.1; done; exit 1; fi; ${config.commands.stop}`;
    configFile = path.join(fleet.dir, "drops.yaml");
    await writeFile(configFile, stringify(config));
  });
  afterAll(async () => {
    await rm(gate(), { recursive: true, force: true }).catch(() => undefined);
    await relay?.close();
    await fleet?.stop();
    await hosts?.stop();
  });

  const twoDrops = async (first: "kill" | "corrupt") => {
    const hold = path.join(gate(), "web2-8021.hold");
    const held = path.join(gate(), "web2-8021.held");
    await writeFile(hold, "");
    const load = startLoad({ url: fleet.url, clients: 16, seed: first === "kill" ? 21 : 22, durationMs: 180_000 });
    await sleep(500);
    const cli = runNodrop(["deploy", "--config", configFile, "--version", "v2", "--json"]);
    const watch: { ended?: Awaited<typeof cli> } = {};
    void cli.then((r) => (watch.ended = r));
    try {
      // Drop 1: web2-8021's stop is running on web2's connection.
      await waitFor("the deploy's stop of web2-8021 to start", () => existsSync(held), watch);
      await rm(held);
      if (first === "kill") {
        await hosts.stopSshd("web2", { sessions: true });
        await hosts.startSshd("web2");
      } else relay.corruptNewest();
      // Drop 2: recovery reconnected and reverts web2-8021, starting with its stop.
      await waitFor("recovery's stop of web2-8021 to start", () => existsSync(held), watch);
      await hosts.stopSshd("web2", { sessions: true });
      const result = await cli;
      await sleep(500);
      load.stop();
      const { stats } = await load.done;
      return { result, stats };
    } finally {
      load.stop();
      await rm(hold, { force: true });
      await rm(held, { force: true });
      await hosts.startSshd("web2").catch(() => undefined);
    }
  };

  const expectRecovered = async (result: Awaited<ReturnType<typeof runNodrop>>, stats: { failed: number }) => {
    // The process ended on its own with a report: no crash from an unhandled 'error' event.
    expect(result.stderr).not.toMatch(/Unhandled 'error' event|uncaught/i);
    expect(result.code).toBe(1);
    const report = JSON.parse(result.stdout) as DeployReport & { ssh?: { connections: number; hosts: number } };
    expect(report.ok).toBe(false);
    expect(report.error?.code).toBe("E_SSH_DROPPED");
    expect(report.error?.message).toContain("web2");
    // Recovery ran: it reconnected to web2 (a second connection there), lost it again, and said so.
    expect(report.ssh?.connections).toBeGreaterThanOrEqual(3);
    expect(report.recovery).toContain("could not revert web2-8021");
    // The failed instance was already out of the routing in force, so recovery either keeps that
    // routing (no reload needed) or restores it; either way exactly the other three serve.
    expect(report.recovery).toMatch(/pool (restored|kept): web1-8021, web1-8022, web2-8022/);
    const byId = Object.fromEntries(report.instances.map((i) => [i.id, i]));
    expect(byId["web2-8021"]).toMatchObject({ inPool: false, outcome: "failed" });
    // Every other instance serves, in the pool (on v2 if its batch ran before, else on v1).
    for (const id of ["web1-8021", "web1-8022", "web2-8022"]) expect(byId[id]).toMatchObject({ inPool: true });
    expect(report.instances.filter((i) => i.version === "v2").every((i) => i.outcome === "updated")).toBe(true);
    const versions = await fleet.versions();
    for (const i of report.instances) if (i.inPool) expect(versions[i.id]).toBe(i.version);
    await fleet.nginx("-t");
    expect((await fetch(fleet.url)).status).toBe(200);
    expect(stats.failed).toBe(0);
  };

  it("a connection that errors twice, then sshd killed during recovery: the CLI reports, recovery restores the pool, 0 failed requests", async () => {
    await hostile("ssh-server", "deploy: web2's connection errors twice mid-step, then its sshd is killed mid-recovery", async () => {
      const { result, stats } = await twoDrops("corrupt");
      await expectRecovered(result, stats);
    });
  });

  it("sshd killed twice in one deploy (mid-step, then mid-recovery after a reconnect): the CLI reports, recovery restores the pool, 0 failed requests", async () => {
    // Back to v1 everywhere (a plain deploy), so this deploy starts where the first one did.
    expect((await runNodrop(["deploy", "--config", configFile, "--version", "v1"])).code).toBe(0);
    await hostile("ssh-server", "deploy: web2's sshd and sessions killed twice", async () => {
      const { result, stats } = await twoDrops("kill");
      await expectRecovered(result, stats);
    });
  });
});
