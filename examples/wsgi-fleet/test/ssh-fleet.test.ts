// A fleet on three SSH hosts (network namespaces with their own sshd and gunicorn instances, made
// by the test), nginx on this machine, nodrop reaching every host over SSH.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { loadDeployment } from "@nodrop/deployment";
import { deploy, sleep } from "@nodrop/core";
import { startLoad } from "@nodrop/loadgen";
import { type TestHosts, startTestHosts } from "@nodrop/testhosts";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFile } from "node:fs/promises";
import { type Fleet, deployUnderLoad, runNodrop, startFleet } from "../src/index.js";

describe("fleet across 3 SSH hosts (real sshd, gunicorn and nginx)", () => {
  let hosts: TestHosts;
  let fleet: Fleet;
  beforeAll(async () => {
    // sshd off port 22 (known_hosts names them [address]:port, as ssh-keyscan -p prints them);
    // packages/ssh/test/ssh.test.ts covers port 22.
    hosts = await startTestHosts({ names: ["web1", "web2", "web3"], sshPort: [2201, 2202, 2203] });
    fleet = await startFleet({ hosts, ports: [8011, 8012], proxyPort: 18201 });
  });
  afterAll(async () => {
    await fleet?.stop();
    await hosts?.stop();
  });

  /** Everything a deploy could change: the include file, nginx's workers, the instances. */
  const snapshot = async () => {
    const include = await readFile(fleet.includeFile, "utf8");
    const pids = await Promise.all(fleet.instances.map((i) => readFile(path.join(hosts.host(i.host).dir, "fleet", "instances", String(i.port), "gunicorn.pid"), "utf8")));
    return JSON.stringify({ include, pids, versions: await fleet.versions() });
  };

  const withConfig = async (mutate: (config: Record<string, any>) => void) => {
    const config = parse(await readFile(fleet.configFile, "utf8")) as Record<string, any>;
    mutate(config);
    const file = path.join(fleet.dir, "case.yaml");
    await writeFile(file, stringify(config));
    return file;
  };

  it("rolls 3 hosts x 2 instances from v1 to v2 under load with 0 failed requests and one SSH connection per host", async () => {
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 24, seed: 11 } });
    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    const report = result.report as typeof result.report & { ssh?: { connections: number; hosts: number } };
    expect(report?.instances.every((i) => i.version === "v2" && i.inPool && i.outcome === "updated")).toBe(true);
    expect(report?.ssh).toEqual({ connections: 3, hosts: 3 });
    expect(result.stats.errors).toEqual({});
    expect(result.stats.failed).toBe(0);
    expect(result.stats.byVersion.v1).toBeGreaterThan(0);
    expect(result.stats.byVersion.v2).toBeGreaterThan(0);
    expect(new Set(Object.values(await fleet.versions()))).toEqual(new Set(["v2"]));
  });

  it("refuses a host whose key is not the known one, before touching anything", async () => {
    const other = hosts.host("web2").knownHostsLine.split(" ").slice(1).join(" ");
    const forged = hosts.knownHosts.replace(hosts.host("web1").knownHostsLine, `${hosts.host("web1").knownHostsLine.split(" ")[0]} ${other}`);
    const file = await withConfig((c) => (c.ssh.knownHosts = forged));
    const before = await snapshot();
    const result = await runNodrop(["deploy", "--config", file, "--version", "v1"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("E_SSH_HOSTKEY");
    expect(result.stderr).toContain("web1");
    expect(result.stderr).toContain(hosts.host("web1").fingerprint);
    expect(await snapshot()).toBe(before);
  });

  it("refuses a user key the hosts do not accept, before touching anything", async () => {
    const file = await withConfig((c) => (c.ssh.privateKeyFile = hosts.strangerKey.path));
    const before = await snapshot();
    const result = await runNodrop(["deploy", "--config", file, "--version", "v1"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("E_SSH_AUTH");
    const key = hosts.strangerKey.privateKey.split("\n")[1]!;
    expect(result.stderr + result.stdout).not.toContain(key);
    expect(await snapshot()).toBe(before);
  });

  it("a host lost mid-deploy: the deploy stops, nginx serves the healthy instances, the report says who is where", async () => {
    // Back to v1 everywhere first (a plain deploy), then deploy v2 and lose web2 in its first batch.
    expect((await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v1"])).code).toBe(0);
    const deployment = await loadDeployment(fleet.configFile);
    const load = startLoad({ url: fleet.url, clients: 20, seed: 12, durationMs: 120_000 });
    await sleep(500);
    let killed = false;
    const report = await deploy({
      ...deployment.options,
      version: "v2",
      onEvent: (event) => {
        // Batches go web1, web2, web3, ...: web2's first instance is the second batch.
        if (event.type === "route" && event.why.includes("web2-8011") && !killed) {
          killed = true;
          void hosts.stopSshd("web2", { sessions: true });
        }
      },
    });
    await sleep(500);
    load.stop();
    const { stats } = await load.done;
    await deployment.dispose();
    await hosts.startSshd("web2");

    expect(killed).toBe(true);
    expect(report.ok).toBe(false);
    expect(["E_SSH_CONNECT", "E_SSH_DROPPED"]).toContain(report.error?.code);
    expect(report.error?.instance ?? report.error?.message).toContain("web2");
    const byId = Object.fromEntries(report.instances.map((i) => [i.id, i]));
    // web2-8011 could not be reached: out of the pool, state reported as failed.
    expect(byId["web2-8011"]).toMatchObject({ inPool: false, outcome: "failed" });
    // The first batch finished on v2 and serves; the rest never started and serve v1.
    expect(byId["web1-8011"]).toMatchObject({ version: "v2", inPool: true, outcome: "updated" });
    for (const id of ["web3-8011", "web1-8012", "web2-8012", "web3-8012"]) expect(byId[id]).toMatchObject({ version: "v1", inPool: true });
    // What the report says matches the instances themselves.
    const versions = await fleet.versions();
    for (const i of report.instances) if (i.inPool) expect(versions[i.id]).toBe(i.version);
    expect(stats.failed).toBe(0);
    expect((await fetch(fleet.url)).status).toBe(200);
  });
});
