// Releases on the hosts (issue 18): an artifact sent once per host over SFTP on the connection nodrop
// holds, checked by its sha256 there, unpacked into <release.dir>/<version> through a temporary
// directory and a rename; commands.prepare once per host; all of it before any instance leaves the
// pool. Real sshd (three hosts, each a network namespace), gunicorn and nginx.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { sha256Of } from "@nodrop/deployment";
import { type TestHosts, startTestHosts } from "@nodrop/testhosts";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, nodropBin, runNodrop, startFleet } from "../src/index.js";

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;

/** A release tarball: VERSION (what the app reports) and `mib` MiB of random bytes (gzip cannot shrink them). */
async function buildArtifact(work: string, version: string, mib: number): Promise<string> {
  const dir = path.join(work, `build-${version}`);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "VERSION"), `${version}\n`);
  if (mib > 0) await writeFile(path.join(dir, "blob.bin"), randomBytes(mib * MiB));
  const file = path.join(work, `web-${version}.tar.gz`);
  await execFileP("tar", ["-czf", file, "-C", dir, "."]);
  return file;
}

describe("releases on 3 SSH hosts: the artifact over SFTP, prepare once per host (real sshd, gunicorn and nginx)", () => {
  let hosts: TestHosts;
  let fleet: Fleet;
  let work: string;
  const names = ["web1", "web2", "web3"];
  beforeAll(async () => {
    hosts = await startTestHosts({ names });
    // Batches of 2 of the 3 instances: each deploy two batches, not three (the release phase is what is tested).
    fleet = await startFleet({ hosts, ports: [8721], proxyPort: 18721, releases: {}, health: { deadline: "8s" }, strategy: { name: "rolling", batchSize: 2 } });
    work = path.join(fleet.dir, "artifacts");
    await mkdir(work, { recursive: true });
  });
  afterAll(async () => {
    await fleet?.stop();
    await hosts?.stop();
  });

  const releasesOn = (host: string) => path.join(hosts.host(host).dir, "releases");
  /** SFTP sessions each host's sshd has opened so far (LogLevel VERBOSE logs each subsystem request). */
  const sftpSessions = async () =>
    Object.fromEntries(await Promise.all(names.map(async (h) => [h, (await readFile(path.join(hosts.host(h).dir, "sshd.log"), "utf8")).split("\n").filter((l) => /Starting session: subsystem 'sftp'/.test(l)).length] as const)));
  /** Everything a deploy could change for users: the include file, the instances' processes and versions. */
  const snapshot = async () => {
    const include = await readFile(fleet.includeFile, "utf8");
    const pids = await Promise.all(fleet.instances.map((i) => readFile(path.join(hosts.host(i.host).dir, "fleet", "instances", String(i.port), "gunicorn.pid"), "utf8")));
    return JSON.stringify({ include, pids, versions: await fleet.versions() });
  };
  const withConfig = async (name: string, mutate: (config: Record<string, any>) => void) => {
    const config = parse(await readFile(fleet.configFile, "utf8")) as Record<string, any>;
    mutate(config);
    const file = path.join(fleet.dir, `${name}.yaml`);
    await writeFile(file, stringify(config));
    return file;
  };
  const entries = async (dir: string) => (await readdir(dir).catch(() => [] as string[])).sort();

  it("a 50 MiB artifact reaches each host once, its sha256 checked there, and the deploy switches to it under load with 0 failed; deploying it again sends nothing", async () => {
    const file = await buildArtifact(work, "r2", 50);
    const sha = await sha256Of(file);
    const before = await sftpSessions();
    const result = await deployUnderLoad({ fleet, version: "r2", load: { clients: 12, seed: 81 }, args: ["--artifact", file] });
    expect(result.cli.code, result.cli.stderr).toBe(0);
    expect(result.stats.failed).toBe(0);
    expect(result.stats.byVersion.r2).toBeGreaterThan(0);
    const after = await sftpSessions();
    for (const h of names) {
      expect(after[h]! - before[h]!).toBe(1);
      const release = path.join(releasesOn(h), "r2");
      expect(await readFile(path.join(release, ".nodrop-release"), "utf8")).toBe(`version=r2\nsha256=${sha}\n`);
      expect(await sha256Of(path.join(release, "blob.bin"))).toBe(await sha256Of(path.join(work, "build-r2", "blob.bin")));
      // Nothing of the upload beside the release.
      expect(await entries(releasesOn(h))).toEqual(["r2"]);
    }
    // The release phase came first, and said what it did on each host.
    const journal = (await readFile(path.join(fleet.dir, "state", "journal.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    const id = journal.filter((r) => r.type === "deploy").at(-1)!.id;
    const steps = journal.filter((r) => r.type === "step" && r.id === id && r.status === "ok");
    expect(steps.findIndex((r) => r.kind === "release")).toBe(0);
    expect(steps.findLastIndex((r) => r.kind === "release")).toBeLessThan(steps.findIndex((r) => r.kind === "route"));
    expect(new Set(steps.filter((r) => r.kind === "release").map((r) => r.host))).toEqual(new Set(names));
    expect(new Set(Object.values(await fleet.versions()))).toEqual(new Set(["r2"]));

    // Again: every host has it, with the same sha256; nothing is sent.
    const again = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "r2", "--artifact", file]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/release web1 ok .*already there \(same sha256\)/);
    expect(await sftpSessions()).toEqual(after);

    // Another build under the same version is refused on every host, nothing sent: a version names one build.
    const other = await buildArtifact(work, "r2-other", 0);
    const snap = await snapshot();
    const refused = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "r2", "--artifact", other]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/E_RELEASE.*releases\/r2 on web\d holds another build .*a version names one build, so give this one its own version/);
    expect(await snapshot()).toBe(snap);
    expect(await sftpSessions()).toEqual(after);
  });

  it("an upload cut mid-way (web2's sshd and sessions killed): no release appears there, nothing is touched, and the next deploy completes", async () => {
    const file = await buildArtifact(work, "r3", 30);
    const before = await snapshot();
    let cut = false;
    const run = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [nodropBin, "deploy", "--config", fleet.configFile, "--version", "r3", "--artifact", file], { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      const onData = (d: Buffer) => {
        out += d.toString();
        // The first progress line for web2 short of 100%: the upload is under way.
        if (!cut && /upload to web2: [\d.]+ [KM]iB of 30 MiB \((?!100)\d+%\)/.test(out)) {
          cut = true;
          void hosts.stopSshd("web2", { sessions: true });
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.on("close", (code) => resolve({ code, out }));
    });
    await hosts.startSshd("web2");
    expect(cut, run.out).toBe(true);
    expect(run.code).toBe(1);
    expect(run.out).toMatch(/error \[E_SSH_DROPPED\].*web2/);
    expect(run.out).toMatch(/recovery: the proxy kept its previous config; no serving instance was changed/);
    expect(await snapshot()).toBe(before);
    // web2 has no r3, at most the hidden upload directory the cut left (the next deploy removes it).
    expect((await entries(releasesOn("web2"))).filter((e) => !e.startsWith(".nodrop-incoming-"))).toEqual(["r2"]);

    const next = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "r3", "--artifact", file]);
    expect(next.code, next.stderr).toBe(0);
    expect(await entries(releasesOn("web2"))).toEqual(["r2", "r3"]);
    expect(new Set(Object.values(await fleet.versions()))).toEqual(new Set(["r3"]));
  });

  it("a host without room for the release (a small filesystem at web3's releases): refused before any instance leaves the pool, naming web3; nothing partial is left", async () => {
    const file = await buildArtifact(work, "r4", 20);
    const dir = path.join(hosts.host("web3").dir, "releases-small");
    const config = await withConfig("small-disk", (c) => (c.release.dir = `${hosts.dir}/{host}/releases-small`));
    // web1 and web2 keep their releases in releases-small too, on the ordinary disk.
    for (const h of names) await mkdir(path.join(hosts.host(h).dir, "releases-small"), { recursive: true });
    // `ip netns exec` gave web3's sshd a mount namespace of its own: the small filesystem is mounted
    // there (and looked into from there), where the host's sessions see it.
    const sshdPid = (await readFile(path.join(hosts.host("web3").dir, "sshd.pid"), "utf8")).trim();
    const inSshd = (...argv: string[]) => execFileP("nsenter", ["-t", sshdPid, "-m", "--", ...argv]);
    const listed = async () => (await inSshd("ls", "-A", dir)).stdout.split("\n").filter(Boolean);
    const mount = (size: string) => inSshd("mount", "-t", "tmpfs", "-o", `size=${size},mode=0755`, "tmpfs", dir);
    const before = await snapshot();
    try {
      // 10 MiB: the free-space check refuses before sending anything.
      await mount("10m");
      const small = await runNodrop(["deploy", "--config", config, "--version", "r4", "--artifact", file]);
      expect(small.code, small.stdout + small.stderr).toBe(1);
      expect(small.stderr).toMatch(/E_RELEASE.*web3 has [\d.]+ MiB free in .*releases-small, and the artifact alone is 20 MiB/);
      expect(await snapshot()).toBe(before);
      expect(await listed()).toEqual([]);
      await inSshd("umount", dir);
      // 30 MiB: the upload fits, unpacking it does not (disk full mid-way): refused, the upload removed.
      await mount("30m");
      const full = await runNodrop(["deploy", "--config", config, "--version", "r4", "--artifact", file]);
      expect(full.code).toBe(1);
      expect(full.stderr).toMatch(/E_RELEASE.*installing .*releases-small\/r4 on web3 failed/);
      expect(full.stderr).toMatch(/No space left on device/);
      expect(await snapshot()).toBe(before);
      expect(await listed()).toEqual([]);
    } finally {
      await inSshd("umount", dir).catch(() => undefined);
    }
  });

  it("the sha256 the host computes differs (a sha256sum there that lies): refused, no release appears, nothing touched", async () => {
    const file = await buildArtifact(work, "r5", 1);
    const home = hosts.host("web1").dir;
    const shim = path.join(home, "shim");
    await mkdir(shim, { recursive: true });
    await mkdir(path.join(home, ".ssh"), { recursive: true });
    await writeFile(path.join(shim, "sha256sum"), `#!/bin/sh\necho "${"0".repeat(64)}  $2"\n`);
    await chmod(path.join(shim, "sha256sum"), 0o755);
    const environment = path.join(home, ".ssh", "environment");
    await writeFile(environment, `PATH=${shim}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n`);
    const before = await snapshot();
    try {
      const run = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "r5", "--artifact", file]);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/E_RELEASE.*web1.*checksum mismatch: the file on this host has sha256 0{64}/);
      expect(await snapshot()).toBe(before);
      expect(await entries(releasesOn("web1"))).toEqual(["r2", "r3"]);
    } finally {
      await rm(environment, { force: true });
    }
  });

  it("prepare fails on web2: nothing touched and the report names web2; the next deploy prepares web2 only, the others are already prepared", async () => {
    // The prepare writes a file into the release, and fails on web2 until web2 is allowed.
    const allow = path.join(hosts.host("web2").dir, "allow-prepare");
    const config = await withConfig("prepare", (c) => (c.commands.prepare = `echo prepared-on-{host} > {release}/PREPARED && ( test {host} != web2 || test -e ${allow} )`));
    const file = await buildArtifact(work, "r6", 1);
    const before = await snapshot();
    const failed = await runNodrop(["deploy", "--config", config, "--version", "r6", "--artifact", file]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/error \[E_RELEASE\].*prepare of r6 failed on web2/);
    expect(await snapshot()).toBe(before);
    for (const h of ["web1", "web3"]) expect(await readFile(path.join(releasesOn(h), "r6", ".nodrop-release"), "utf8")).toMatch(/^prepared=[0-9a-f]{64}$/m);
    expect(await readFile(path.join(releasesOn("web2"), "r6", ".nodrop-release"), "utf8")).not.toMatch(/prepared=/);

    await writeFile(allow, "");
    const ok = await runNodrop(["deploy", "--config", config, "--version", "r6", "--artifact", file]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/release web1 ok .*already there \(same sha256\), already prepared/);
    expect(ok.stdout).toMatch(/release web2 ok .*already there \(same sha256\), prepared in \d+ ms/);
    for (const h of names) expect(await readFile(path.join(releasesOn(h), "r6", "PREPARED"), "utf8")).toBe(`prepared-on-${h}\n`);
    expect(new Set(Object.values(await fleet.versions()))).toEqual(new Set(["r6"]));
  });

  it("nodrop killed (-9) while the hosts prepare: status says the deploy did not finish, in its release phase, and resume prepares and finishes", async () => {
    // A prepare that takes a while, so the kill lands inside it.
    const config = await withConfig("slow-prepare", (c) => (c.commands.prepare = "sleep 2 && echo prepared > {release}/PREPARED"));
    const file = await buildArtifact(work, "r8", 1);
    const before = await snapshot();
    const killed = await new Promise<{ out: string; signal: NodeJS.Signals | null }>((resolve) => {
      const child = spawn(process.execPath, [nodropBin, "deploy", "--config", config, "--version", "r8", "--artifact", file], { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let sent = false;
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        // Every host has the artifact (its upload reached 100%): the prepares are what runs now.
        if (!sent && names.every((h) => new RegExp(`upload to ${h}: .*\\(100%\\)`).test(out))) {
          sent = true;
          setTimeout(() => child.kill("SIGKILL"), 300);
        }
      });
      child.on("close", (_code, signal) => resolve({ out, signal }));
    });
    expect(killed.signal, killed.out).toBe("SIGKILL");
    expect(killed.out).not.toMatch(/release web\d ok/);
    expect(await snapshot()).toBe(before);
    const status = JSON.parse((await runNodrop(["status", "--config", config, "--json"])).stdout) as { lastDeploy: { version: string; finished: boolean; lastStep?: string } };
    expect(status.lastDeploy).toMatchObject({ version: "r8", finished: false });
    expect(status.lastDeploy.lastStep).toMatch(/^release: release web\d \(start\)$/);
    // The killed deploy's lock is stale at once (its process is gone, on this machine); resume finishes.
    const resumed = await runNodrop(["resume", "--config", config, "--artifact", file, "--lock-wait", "2m"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/release web1 ok .*already there \(same sha256\), prepared in \d+ ms/);
    for (const h of names) expect(await readFile(path.join(releasesOn(h), "r8", "PREPARED"), "utf8")).toBe("prepared\n");
    expect(new Set(Object.values(await fleet.versions()))).toEqual(new Set(["r8"]));
  });

  it("a rollback uses the release already on each host and sends nothing; one that is gone is refused before anything changes", async () => {
    const before = await sftpSessions();
    const back = await runNodrop(["rollback", "--config", fleet.configFile, "--to", "r3"]);
    expect(back.code, back.stderr).toBe(0);
    expect(await sftpSessions()).toEqual(before);
    expect(new Set(Object.values(await fleet.versions()))).toEqual(new Set(["r3"]));
    await rm(path.join(releasesOn("web3"), "r2"), { recursive: true });
    const snap = await snapshot();
    const gone = await runNodrop(["rollback", "--config", fleet.configFile, "--to", "r2"]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/E_RELEASE.*releases\/r2 on web3 does not exist, and this deploy sends nothing/);
    expect(await snapshot()).toBe(snap);
  });
});

describe("releases on a local fleet: a copy, keep-N through five deploys and a rollback (real gunicorn and nginx)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    // One instance with a spare port: surge deploys take seconds, and keep-N needs several.
    fleet = await startFleet({ ports: [8731], proxyPort: 18731, slotOffset: 1000, strategy: { name: "rolling", surge: true }, releases: { keep: 3 }, health: { deadline: "8s" } });
  });
  afterAll(async () => {
    await fleet?.stop();
  });
  const releases = async () => (await readdir(path.join(fleet.dir, "releases"))).sort();
  /** A directory artifact: nodrop packs it into a tarball itself. */
  const source = async (version: string) => {
    const dir = path.join(fleet.dir, "src", version);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "VERSION"), `${version}\n`);
    return dir;
  };
  const deployed = async (args: string[]) => {
    const run = await runNodrop([...args, "--config", fleet.configFile, "--json"]);
    expect(run.code, run.stderr).toBe(0);
    return JSON.parse(run.stdout) as { releases?: { host: string; kept: string[]; removed: string[] }[] };
  };

  it("keeps the newest 3, and never the running release or the one before it, also after a rollback", async () => {
    for (const v of ["r1", "r2", "r3", "r4", "r5"]) await deployed(["deploy", "--version", v, "--artifact", await source(v)]);
    expect(await releases()).toEqual(["r3", "r4", "r5"]);
    // A directory artifact was packed and unpacked: the release is its files.
    expect(await readFile(path.join(fleet.dir, "releases", "r5", "VERSION"), "utf8")).toBe("r5\n");

    // Back to the oldest one kept: nothing is removed (r5, the version before, is the way forward again).
    const back = await deployed(["rollback", "--to", "r3"]);
    expect(back.releases).toEqual([{ host: "local", kept: ["r3", "r4", "r5"], removed: [] }]);
    expect(Object.values(await fleet.versions())).toContain("r3");

    // The next deploy: r6 and the newest two stay, and r3 too: it is what ran before r6 (the rollback target).
    const next = await deployed(["deploy", "--version", "r6", "--artifact", await source("r6")]);
    expect(next.releases).toEqual([{ host: "local", kept: ["r3", "r4", "r5", "r6"], removed: [] }]);
    const last = await deployed(["deploy", "--version", "r7", "--artifact", await source("r7")]);
    expect(last.releases).toEqual([{ host: "local", kept: ["r5", "r6", "r7"], removed: ["r3", "r4"] }]);
    expect(await releases()).toEqual(["r5", "r6", "r7"]);

    // keep 1, and r7 deployed again: r6 stays, what `nodrop rollback` would go back to (the journal's), r5 goes.
    const raw = parse(await readFile(fleet.configFile, "utf8")) as Record<string, any>;
    raw.release.keep = 1;
    const keepOne = path.join(fleet.dir, "keep-one.yaml");
    await writeFile(keepOne, stringify(raw));
    // The same directory, untouched: the same tarball, so the release on the host is this build.
    const again = await runNodrop(["deploy", "--version", "r7", "--artifact", path.join(fleet.dir, "src", "r7"), "--config", keepOne, "--json"]);
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { releases?: unknown }).releases).toEqual([{ host: "local", kept: ["r6", "r7"], removed: ["r5"] }]);
  });
});
