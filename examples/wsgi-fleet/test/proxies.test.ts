// Two nginx proxies in front of one fleet (issue 17), each on a test host of its own (a network
// namespace with its own address and sshd), gunicorn instances on two more; nodrop reaches every
// host over SSH. The load's clients each keep to one proxy, as DNS round robin sends them, with
// their own cookies. Every routing change must hold on both, or on neither.
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { type Routing, sleep } from "@nodrop/core";
import { type TestHosts, startTestHosts } from "@nodrop/testhosts";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { type Fleet, deployUnderLoad, nodropBin, routingIn, runNodrop, startFleet } from "../src/index.js";
import { readJournal } from "../src/kill-points.js";

const execFileP = promisify(execFile);

/** Lines in a file (0 when it does not exist). */
const lines = (file: string) => readFile(file, "utf8").then((t) => t.split("\n").filter(Boolean).length, () => 0);

/** Polls `done` every 20 ms; throws after `timeoutMs`. */
async function until(done: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await done())) {
    if (performance.now() > deadline) throw new Error(`not reached within ${timeoutMs} ms`);
    await sleep(20);
  }
}

describe("two nginx proxies in front of one fleet (real nginx, gunicorn and sshd in network namespaces)", () => {
  let hosts: TestHosts;
  let fleet: Fleet;
  /** lb2's nginx -t fails while this file exists (its `binary` is a wrapper that checks for it). */
  let failTestFlag: string;
  /** A line per `nginx -s reload` lb1's nginx accepted. */
  let reloadsSent: string;
  const includes = () => Promise.all(fleet.proxies.map((p) => readFile(p.includeFile, "utf8")));

  beforeAll(async () => {
    // Namespaces, not loopback: each proxy host needs an address, and a home (for its own PATH), of its own.
    hosts = await startTestHosts({ names: ["web1", "web2", "lb1", "lb2"], mode: "netns", sshPort: [2261, 2262, 2263, 2264] });
    const lb2 = hosts.host("lb2");
    failTestFlag = path.join(lb2.dir, "fail-nginx-t");
    const wrapper = path.join(lb2.dir, "nginx-wrapper");
    // The real nginx, except that `nginx -t` fails (as a config nginx refuses would) while the flag exists.
    await writeFile(wrapper, `#!/bin/sh\nfor a in "$@"; do if [ "$a" = -t ] && [ -e ${failTestFlag} ]; then echo "nginx: [emerg] unknown directive \\"injected\\" in lb2's config"; exit 1; fi; done\nexec nginx "$@"\n`);
    await chmod(wrapper, 0o755);
    // lb1's nginx as it is, but every `nginx -s reload` that went through adds a line to a file.
    reloadsSent = path.join(hosts.host("lb1").dir, "reloads-sent");
    const lb1Wrapper = path.join(hosts.host("lb1").dir, "nginx-wrapper");
    await writeFile(lb1Wrapper, `#!/bin/sh\nnginx "$@"; rc=$?\ncase " $* " in *" -s reload "*) [ $rc = 0 ] && echo sent >> ${reloadsSent};; esac\nexit $rc\n`);
    await chmod(lb1Wrapper, 0o755);
    fleet = await startFleet({
      hosts,
      proxyHosts: ["lb1", "lb2"],
      ports: [8261, 8262],
      proxyPort: 18261,
      strategy: { name: "rolling", batchSize: 1 },
      proxyHostOptions: { lb1: { binary: lb1Wrapper }, lb2: { binary: wrapper } },
    });
  });
  afterAll(async () => {
    await fleet?.stop();
    await hosts?.stop();
  });

  it("rolling v1 -> v2 under load through both proxies: 0 failed, both end on the same routing, every instance on v2", async () => {
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 24, seed: 171, urls: fleet.proxies.map((p) => p.url) } });
    expect(result.cli.stderr).not.toContain("error [");
    expect(result.cli.code).toBe(0);
    expect(result.stats.failed).toBe(0);
    expect(result.stats.errors).toEqual({});
    expect(result.report?.instances.every((i) => i.version === "v2" && i.inPool)).toBe(true);
    // Every reload went to both: one generation each, joined.
    expect(result.report?.routes.every((r) => /^\d+\+\d+$/.test(r.generation))).toBe(true);
    const [one, two] = (await includes()).map(routingIn);
    expect(one).toBeDefined();
    expect(two).toEqual(one);
  });

  it("status shows each proxy's routing and that they agree", async () => {
    const status = await runNodrop(["status", "--config", fleet.configFile, "--json"]);
    const shown = JSON.parse(status.stdout) as { proxies: { host: string; routing: unknown }[]; disagree: boolean };
    expect(shown.proxies.map((p) => p.host)).toEqual(["lb1", "lb2"]);
    expect(shown.disagree).toBe(false);
    expect(shown.proxies[1]!.routing).toEqual(shown.proxies[0]!.routing);
    expect(status.code).toBe(0);
  });

  it("half-split v2 -> v4 under load through both: one switch instant on both proxies, 0 failed, 0 regressions, 0 late old answers counted across both", async () => {
    const plan = await runNodrop(["plan", "--config", fleet.configFile, "--version", "v4", "--strategy", "half-split"]);
    expect(plan.code, plan.stderr).toBe(0);
    // The offsets preflight measured, printed with the plan. Both proxies' namespaces share this
    // machine's clock: measured apart, the switch instants are that far apart, and a client of one
    // proxy could get the old version after a client of the other got the new.
    const clocks = /proxy clocks \(the switch is at one instant on all of them\): lb1 ([+-]\d+)ms ±\d+ms, lb2 ([+-]\d+)ms ±\d+ms, within 50ms/.exec(plan.stdout);
    expect(clocks, plan.stdout).not.toBeNull();
    expect(Math.abs(Number(clocks![1]) - Number(clocks![2])), clocks![0]).toBeLessThanOrEqual(5);
    // Every switch instant each proxy's file names while the deploy runs (the final routing has none).
    const seen = fleet.proxies.map(() => new Set<string>());
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const texts = await includes();
        texts.forEach((text, i) => {
          const instant = /# default pool until (\S+), then/.exec(text)?.[1];
          if (instant) seen[i]!.add(instant);
        });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const result = await deployUnderLoad({ fleet, version: "v4", strategy: "half-split", load: { clients: 24, seed: 173, urls: fleet.proxies.map((p) => p.url) } });
    watching = false;
    await watcher;
    expect(result.cli.stderr.includes("error ["), result.cli.stderr).toBe(false);
    expect(result.cli.code, result.cli.stderr).toBe(0);
    expect(result.stats.failed).toBe(0);
    // On a failure, what nodrop said of the switch (a proxy whose old generation closed after the instant warns).
    const switchLines = result.cli.stderr.split("\n").filter((l) => /warn|switch|closed/i.test(l)).join("\n");
    expect(result.stats.versionRegressions, switchLines).toBe(0);
    expect(result.stats.lateOld, switchLines).toBe(0);
    expect(result.stats.byVersion.v2).toBeGreaterThan(0);
    expect(result.stats.byVersion.v4).toBeGreaterThan(0);
    // One switch; each proxy's file named one instant for it, on its own host's clock: the same
    // instant converted with the offsets preflight measured (printed with the plan), to the millisecond.
    expect(result.report?.routes.filter((r) => r.why.startsWith("switch"))).toHaveLength(1);
    expect(result.report?.routes.flatMap((r) => r.warnings ?? [])).toEqual([]);
    expect(seen.map((s) => s.size)).toEqual([1, 1]);
    const offsets = /lb1 ([+-]\d+)ms ±\d+ms, lb2 ([+-]\d+)ms/.exec(result.cli.stderr);
    expect(offsets).not.toBeNull();
    const [one, two] = seen.map((s) => Date.parse([...s][0]!));
    expect(Math.abs(two! - one! - (Number(offsets![2]) - Number(offsets![1])))).toBeLessThanOrEqual(2);
    // The one clock both namespaces share: the instants are as far apart in real time as in the files.
    expect(Math.abs(two! - one!)).toBeLessThanOrEqual(5);
    expect(result.report?.instances.every((i) => i.version === "v4" && i.inPool)).toBe(true);
  });

  // The deploys below never reach an instance: v3 (a release that fails its health check) would show it if one did.
  it("lb2 refuses the change (nginx -t fails there): lb1 is put back, both keep the routing before, no instance is touched, and the error names lb2", async () => {
    const before = await includes();
    await writeFile(failTestFlag, "");
    try {
      const result = await deployUnderLoad({ fleet, version: "v3", warmupMs: 500, cooldownMs: 500, load: { clients: 12, seed: 172, urls: fleet.proxies.map((p) => p.url) } });
      expect(result.cli.code).not.toBe(0);
      expect(result.report?.error?.message).toMatch(/^proxy lb2: nginx -t failed on lb2.*; lb1 was put back on the previous routing/);
      expect(result.stats.failed).toBe(0);
      expect(result.report?.instances.every((i) => i.version === "v4" && i.inPool)).toBe(true);
      // Byte for byte what each had: lb2 restored its own file, lb1 was sent the routing before (a generation later).
      const after = await includes();
      expect(after[1]).toBe(before[1]);
      expect(routingIn(after[0]!)).toEqual(routingIn(before[0]!));
    } finally {
      await rm(failTestFlag, { force: true });
    }
    expect(Object.values(await fleet.versions()).every((v) => v === "v4")).toBe(true);
  });

  it("lb2's clock 5 s ahead (its SSH sessions get a `date` that adds 5 s): a half-split deploy is refused before anything is touched, saying how far apart the clocks are and to use NTP", async () => {
    const home = hosts.host("lb2").dir;
    const shim = path.join(home, "shim");
    await mkdir(shim, { recursive: true });
    await mkdir(path.join(home, ".ssh"), { recursive: true });
    await writeFile(path.join(shim, "date"), `#!/bin/sh\nif [ "$1" = "+%s%3N" ]; then echo $(( $(/bin/date +%s%3N) + 5000 )); else exec /bin/date "$@"; fi\n`);
    await chmod(path.join(shim, "date"), 0o755);
    const environment = path.join(home, ".ssh", "environment");
    await writeFile(environment, `PATH=${shim}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n`);
    const before = await includes();
    try {
      // The shim is what lb2's sessions run: the skew is there to be found.
      expect(Number((await hosts.sh("lb2", `PATH=${shim}:$PATH date +%s%3N`)).trim()) - Date.now()).toBeGreaterThan(4000);
      const deploy = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v3", "--strategy", "half-split"]);
      expect(deploy.code).not.toBe(0);
      const refusal = /refusing to deploy: the proxy hosts' clocks are (\d+)ms apart \(lb1 [+-]\d+ms ±\d+ms, lb2 \+(\d+)ms ±\d+ms\), more than the 50ms .*NTP/.exec(deploy.stderr);
      expect(refusal, deploy.stderr).not.toBeNull();
      // 5 s as two round trips measure it (4,999 ms has been seen): within the 50 ms limit of 5,000.
      expect(Math.abs(Number(refusal![1]) - 5000)).toBeLessThanOrEqual(50);
      expect(await includes()).toEqual(before);
      expect(Object.values(await fleet.versions()).every((v) => v === "v4")).toBe(true);
      // A rolling deploy has no switch at one instant: the same clocks do not stop it.
      const plan = await runNodrop(["plan", "--config", fleet.configFile, "--version", "v3"]);
      expect(plan.code, plan.stderr).toBe(0);
    } finally {
      await rm(environment, { force: true });
    }
  });

  it("proxies that route differently (lb2's file edited and reloaded by hand): status says so and exits 1, a deploy refuses before touching anything, naming both, and a rollback to the version they run brings them together", async () => {
    const lb2 = fleet.proxies[1]!;
    const original = await readFile(lb2.includeFile, "utf8");
    const routing = routingIn(original)!;
    const [first, ...rest] = routing.pools[routing.defaultPool]!;
    // The same file with one instance taken out of lb2's pool, as a hand edit would.
    const edited = original.replace(/^# nodrop-routing: .*$/m, `# nodrop-routing: ${JSON.stringify({ ...routing, pools: { ...routing.pools, [routing.defaultPool]: rest } })}`).replace(new RegExp(`^\\s*server [^;]+; # ${first}$`, "m"), "");
    await writeFile(lb2.includeFile, edited);
    await lb2.nginx("-s", "reload");
    try {
      const status = await runNodrop(["status", "--config", fleet.configFile]);
      expect(status.code).toBe(1);
      expect(status.stdout).toContain("proxies: 2, ROUTING DIFFERENTLY");
      const deploy = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v3"]);
      expect(deploy.code).not.toBe(0);
      expect(deploy.stderr).toMatch(/E_PROXY_DISAGREE[\s\S]*the proxies route differently: lb1 \{[^}]*\}; lb2 \{[^}]*\}/);
      expect(await readFile(lb2.includeFile, "utf8")).toBe(edited);
      expect(Object.values(await fleet.versions()).every((v) => v === "v4")).toBe(true);
      // rollback (to v4, which every instance runs: the last deploy, of v3, failed) is a way back: lb1's routing on both, nothing else changed.
      const resume = await runNodrop(["rollback", "--config", fleet.configFile, "--to", "v4", "--json"]);
      expect(resume.code, resume.stderr).toBe(0);
      const report = JSON.parse(resume.stdout) as { routes: { why: string }[]; instances: { version: string; inPool: boolean }[] };
      expect(report.routes.map((r) => r.why)).toEqual(["every proxy onto the routing lb1 has (they routed differently)"]);
      expect(report.instances.every((i) => i.version === "v4" && i.inPool)).toBe(true);
      const [one, two] = (await includes()).map(routingIn);
      expect(two).toEqual(one);
      expect(one).toEqual(routing);
    } finally {
      await writeFile(lb2.includeFile, original);
      await lb2.nginx("-s", "reload");
    }
  });

  it("lb2's host key changed (known_hosts holds another key for it): refused before anything is touched, naming lb2 and both keys' fingerprints", async () => {
    const config = parse(await readFile(fleet.configFile, "utf8")) as { ssh: { knownHosts: string } };
    const lb2 = hosts.host("lb2");
    const keyFile = path.join(lb2.dir, "impostor_key");
    await rm(keyFile, { force: true });
    await rm(`${keyFile}.pub`, { force: true });
    await execFileP("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", keyFile]);
    const [type, key] = (await readFile(`${keyFile}.pub`, "utf8")).trim().split(/\s+/);
    const [hostPart] = lb2.knownHostsLine.split(" ");
    const knownHosts = config.ssh.knownHosts.split("\n").map((line) => (line.startsWith(`${hostPart} `) ? `${hostPart} ${type} ${key}` : line)).join("\n");
    expect(knownHosts).not.toBe(config.ssh.knownHosts);
    const impostor = fleet.configFile.replace(/\.yaml$/, ".lb2-key.yaml");
    await writeFile(impostor, stringify({ ...config, ssh: { ...config.ssh, knownHosts } }));
    const before = await includes();
    const versions = await fleet.versions();
    const deploy = await runNodrop(["deploy", "--config", impostor, "--version", "v1"]);
    expect(deploy.code).not.toBe(0);
    expect(deploy.stderr).toMatch(/error \[E_SSH_HOSTKEY\]: proxy lb2: host key of lb2 \([^)]*\) has CHANGED: seen ssh-ed25519 SHA256:\S+, expected ssh-ed25519 SHA256:\S+/);
    expect(await includes()).toEqual(before);
    expect(await fleet.versions()).toEqual(versions);
  });

  // v1, so that the test after it has a deploy to make.
  it("nodrop killed (-9) when lb1 has taken batch 2's change and lb2 has not (a second deployer meanwhile is refused by the one lock): status shows both and that they differ, and resume brings them together, 0 failed requests through either proxy", async () => {
    const home = hosts.host("lb2").dir;
    const shim = path.join(home, "shim-mv");
    const hold = path.join(home, "hold-mv");
    const held = path.join(home, "mv-held");
    const count = path.join(home, "mv-count");
    await mkdir(shim, { recursive: true });
    await mkdir(path.join(home, ".ssh"), { recursive: true });
    // lb2's second rename onto its include file while the hold exists (batch 2's) waits until the
    // hold is gone and then fails: lb2's file and its nginx keep batch 1's routing.
    await writeFile(
      path.join(shim, "mv"),
      `#!/bin/sh\nfor last; do :; done\nif [ -e ${hold} ] && [ "$last" = ${fleet.proxies[1]!.includeFile} ]; then\n  n=$(( $(cat ${count} 2>/dev/null || echo 0) + 1 )); echo $n > ${count}\n  if [ $n = 2 ]; then : > ${held}; while [ -e ${hold} ]; do sleep 0.05; done; exit 1; fi\nfi\nexec /bin/mv "$@"\n`,
    );
    await chmod(path.join(shim, "mv"), 0o755);
    const environment = path.join(home, ".ssh", "environment");
    await writeFile(environment, `PATH=${shim}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n`);
    await writeFile(hold, "");
    await rm(count, { force: true });
    const reloadsBefore = await lines(reloadsSent);
    let status: { code: number | null; stdout: string } | undefined;
    let second: { code: number | null; stderr: string } | undefined;
    let secondWrote = -1;
    let split: (Routing | undefined)[] = [];
    try {
      const result = await deployUnderLoad({
        fleet,
        version: "v1",
        warmupMs: 500,
        cooldownMs: 1000,
        load: { clients: 16, seed: 175, urls: fleet.proxies.map((p) => p.url) },
        deployer: async () => {
          const child = spawn(process.execPath, [nodropBin, "deploy", "--config", fleet.configFile, "--version", "v1"], { stdio: ["ignore", "ignore", "pipe"] });
          let stderr = "";
          child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
          let gone = false;
          const exited = new Promise<void>((resolve) => child.on("exit", () => ((gone = true), resolve())));
          // lb2 holds batch 2's write; lb1 took batch 1's change and then batch 2's (its second reload signal).
          await until(async () => {
            if (gone) throw new Error(`the deploy ended before lb2 held batch 2's change:\n${stderr}`);
            return existsSync(held) && (await lines(reloadsSent)) >= reloadsBefore + 2;
          }, 60_000).catch((error: Error) => {
            throw new Error(`${error.message} (lb2 held: ${existsSync(held)}, lb1 reloads: ${reloadsBefore} before)\n${stderr}`);
          });
          // A second deployer meanwhile: refused by the one lock on lb1, naming the holder; it writes no journal record.
          const deploysBefore = (await readJournal(fleet)).filter((r) => r.type === "deploy").length;
          second = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v2"]);
          secondWrote = (await readJournal(fleet)).filter((r) => r.type === "deploy").length - deploysBefore;
          child.kill("SIGKILL");
          await exited;
          // The held mv ends (failing: nothing written) and lb2's next ones pass.
          await rm(hold, { force: true });
          split = (await includes()).map(routingIn);
          const shown = await runNodrop(["status", "--config", fleet.configFile, "--json"]);
          status = { code: shown.code, stdout: shown.stdout };
          return runNodrop(["resume", "--config", fleet.configFile, "--json"]);
        },
      });
      expect(second?.code).not.toBe(0);
      expect(second?.stderr).toMatch(/E_LOCK[\s\S]*deploying v1/);
      expect(secondWrote).toBe(0);
      // The kill left them apart: lb1 without batch 2's instance, lb2 without batch 1's.
      expect(split[0]).toBeDefined();
      expect(split[1]).toBeDefined();
      expect(split[0]).not.toEqual(split[1]);
      expect(status?.code).toBe(1);
      const shown = JSON.parse(status!.stdout) as { proxies: { host: string; routing: Routing }[]; disagree: boolean; lastDeploy?: { finished: boolean } };
      expect(shown.disagree).toBe(true);
      expect(shown.proxies.map((p) => p.host)).toEqual(["lb1", "lb2"]);
      expect(shown.proxies.map((p) => p.routing)).toEqual(split);
      expect(shown.lastDeploy?.finished).toBe(false);
      // resume: lb1's routing on both first, then the deploy finished.
      expect(result.cli.code, result.cli.stderr).toBe(0);
      expect(result.report?.routes[0]?.why).toBe("every proxy onto the routing lb1 has (they routed differently)");
      expect(result.report?.instances.every((i) => i.version === "v1" && i.inPool)).toBe(true);
      expect(result.stats.failed).toBe(0);
      expect(result.stats.errors).toEqual({});
      const [one, two] = (await includes()).map(routingIn);
      expect(two).toEqual(one);
      expect(Object.values(await fleet.versions()).every((v) => v === "v1")).toBe(true);
    } finally {
      await rm(hold, { force: true });
      await rm(environment, { force: true });
    }
  });

  // Last: it leaves lb2's routing unknown.
  it("lb2's host drops off the network mid-deploy (its sshd and every session killed as batch 2 starts): the deploy stops and names lb2, nothing it might still route to is stopped, 0 failed requests through either proxy", async () => {
    // What the fleet runs before (the test before leaves it on one version).
    const from = Object.values(await fleet.versions())[0];
    let cut: Promise<void> | undefined;
    const result = await deployUnderLoad({
      fleet,
      version: "v2",
      warmupMs: 500,
      cooldownMs: 1000,
      load: { clients: 16, seed: 174, urls: fleet.proxies.map((p) => p.url) },
      onStderr: (text) => {
        if (!cut && text.includes("batch 2/")) cut = hosts.stopSshd("lb2", { sessions: true });
      },
    });
    await cut;
    try {
      expect(cut, result.cli.stderr).toBeDefined();
      expect(result.cli.code).not.toBe(0);
      // lb2 could not be reached for batch 2's change (refused, or dropped while a command ran: then
      // its routing is unknown); lb1, which took the change, was put back either way.
      expect(result.report?.error?.message).toMatch(/^proxy lb2: .*(lb1 was put back on the previous routing|the proxies now route: lb1 the previous routing, lb2 unknown)/);
      expect(result.stats.failed).toBe(0);
      expect(result.stats.errors).toEqual({});
      // Every instance still runs: batch 1's on v2, batch 2's on v2 too when lb2 took its first change
      // before the cut (the cut then hit the change that puts it back), the others on the version before.
      const versions = Object.values(await fleet.versions());
      expect(versions.every((v) => v === "v2" || v === from)).toBe(true);
      expect(versions.filter((v) => v === "v2").length).toBeGreaterThanOrEqual(1);
      expect(versions.filter((v) => v === "v2").length).toBeLessThanOrEqual(2);
      // The report says where each instance is.
      expect(result.report?.instances.map((i) => i.version).sort()).toEqual([...versions].sort());
    } finally {
      await hosts.startSshd("lb2");
    }
  });
});
