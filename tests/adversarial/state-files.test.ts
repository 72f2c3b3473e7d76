// Files nodrop keeps on the proxy host (the state directory with the deploy lock and the journal,
// and the nginx include file with its temp and previous copies) against links and owners planted
// there: every path is refused with an error naming it and the host, or the plant is harmless, and
// nothing changes (the link's target byte for byte, the include file, nginx's workers, the
// instances). Against a real nginx and gunicorn fleet, through the real CLI, locally and over SSH.
import { execFileSync } from "node:child_process";
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, statSync } from "node:fs";
import { chmod, chown, link, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
// Bare package names do not resolve from tests/ (no package.json here): the built dist, by path.
import { type TestHosts, startTestHosts } from "../../packages/testhosts/dist/index.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, runNodrop, startFleet } from "../../examples/wsgi-fleet/src/index.js";
import { hostile } from "./tally.js";

// Two instances: every test that deploys pays two batches, not three.
const PORTS = [8471, 8472];
const NOBODY = 65534;

let fleet: Fleet;
let stateDir: string;
let journalFile: string;
let lockDir: string;
let holderFile: string;
/** Files and directories outside nodrop's paths that a planted link points at. */
let victimDir: string;
let victimFile: string;
const VICTIM_TEXT = "precious: nodrop must never write here\n";

const mode = (file: string) => (statSync(file).mode & 0o7777).toString(8);

/** Everything a refused command could change: the include file, nginx's workers, the instances. */
async function snapshot(): Promise<string> {
  const include = await readFile(fleet.includeFile, "utf8");
  const master = (await readFile(fleet.pidFile, "utf8")).trim();
  const workers = execFileSync("ps", ["-o", "pid=", "--ppid", master]).toString().trim();
  const pids = await Promise.all(PORTS.map((p) => readFile(path.join(fleet.dir, "instances", String(p), "gunicorn.pid"), "utf8")));
  return JSON.stringify({ include, workers, pids, versions: await fleet.versions() });
}

/** The victims: a file and a directory with one file, byte for byte. */
function victims(): string {
  return JSON.stringify({ file: readFileSync(victimFile, "utf8"), dir: readdirSync(victimDir).sort(), inDir: readFileSync(path.join(victimDir, "keep.txt"), "utf8") });
}

async function resetState(): Promise<void> {
  await rm(stateDir, { recursive: true, force: true });
  await mkdir(stateDir, { mode: 0o700 });
  await chmod(stateDir, 0o700);
}

async function serving(): Promise<boolean> {
  return (await fetch(fleet.url, { signal: AbortSignal.timeout(5000) })).ok;
}

/**
 * Runs `args`, expects a refusal naming `what` and `host` with `code`, and that nothing changed:
 * the victims, the fleet (include file, nginx workers, instances) and nginx still serving.
 */
async function expectRefused(args: string[], code: RegExp, what: string, host: string, why: RegExp): Promise<void> {
  const before = await snapshot();
  const beforeVictims = victims();
  const result = await runNodrop(args);
  expect(result.code, result.stderr).not.toBe(0);
  const out = result.stderr + result.stdout;
  expect(out).toMatch(code);
  expect(out).toContain(what);
  expect(out).toContain(` on ${host}`);
  expect(out).toMatch(why);
  expect(victims()).toBe(beforeVictims);
  expect(await snapshot()).toBe(before);
  expect(await serving()).toBe(true);
}

const deployArgs = (config: string, version = "v2") => ["deploy", "--config", config, "--version", version];

beforeAll(async () => {
  fleet = await startFleet({ ports: PORTS, proxyPort: 18471 });
  stateDir = path.join(fleet.dir, "state");
  journalFile = path.join(stateDir, "journal.jsonl");
  lockDir = path.join(stateDir, "lock");
  holderFile = path.join(lockDir, "holder.json");
  victimDir = path.join(fleet.dir, "victim-dir");
  victimFile = path.join(fleet.dir, "victim.txt");
  await mkdir(victimDir);
  await writeFile(path.join(victimDir, "keep.txt"), VICTIM_TEXT);
  await writeFile(victimFile, VICTIM_TEXT);
});
afterAll(async () => {
  await fleet?.stop();
});

describe("state files on the proxy host, local executor (real nginx + gunicorn)", () => {
  it("after a normal deploy the state dir is 0700 and the journal 0600; holder.json is 0600 while held; older modes are tightened", async () => {
    await rm(stateDir, { recursive: true, force: true });
    // While a deploy holds the lock, holder.json exists: look at it then.
    const deploying = runNodrop(deployArgs(fleet.configFile));
    let holderMode: string | undefined;
    let lockMode: string | undefined;
    for (let i = 0; i < 2000 && holderMode === undefined; i++) {
      try {
        if (lstatSync(holderFile).isFile() && statSync(holderFile).size > 0) {
          holderMode = mode(holderFile);
          lockMode = mode(lockDir);
        }
      } catch {
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    const result = await deploying;
    expect(result.code, result.stderr).toBe(0);
    expect(holderMode).toBe("600");
    expect(lockMode).toBe("700");
    expect(mode(stateDir)).toBe("700");
    expect(mode(journalFile)).toBe("600");
    expect(readdirSync(stateDir)).toEqual(["journal.jsonl"]);

    // A state dir and journal an older nodrop left with the default modes are tightened.
    await chmod(stateDir, 0o755);
    await chmod(journalFile, 0o644);
    expect((await runNodrop(deployArgs(fleet.configFile, "v1"))).code).toBe(0);
    expect(mode(stateDir)).toBe("700");
    expect(mode(journalFile)).toBe("600");
    expect(Object.values(await fleet.versions())).toEqual(["v1", "v1"]);
  });

  it("the state directory itself is a symlink: deploy, status and lock refuse it (E_STATE / E_JOURNAL), nothing written through it", async () => {
    await rm(stateDir, { recursive: true, force: true });
    await symlink(victimDir, stateDir);
    try {
      await hostile("proxy-host-file", "state dir is a symlink (deploy)", () =>
        expectRefused(deployArgs(fleet.configFile), /E_STATE/, `${stateDir} is a symbolic link (to ${victimDir})`, "local", /refusing the state directory/),
      );
      await hostile("proxy-host-file", "state dir is a symlink (status)", () =>
        expectRefused(["status", "--config", fleet.configFile], /E_JOURNAL/, `${stateDir} is a symbolic link`, "local", /refusing the journal/),
      );
      await hostile("proxy-host-file", "state dir is a symlink (lock status)", () =>
        expectRefused(["lock", "status", "--config", fleet.configFile], /E_STATE/, `${stateDir} is a symbolic link`, "local", /refusing the deploy lock/),
      );
      await hostile("proxy-host-file", "state dir is a symlink (lock release)", () =>
        expectRefused(["lock", "release", "--config", fleet.configFile], /E_STATE/, `${stateDir} is a symbolic link`, "local", /refusing the deploy lock/),
      );
      expect(readlinkSync(stateDir)).toBe(victimDir);
      expect(readdirSync(victimDir)).toEqual(["keep.txt"]);
    } finally {
      await rm(stateDir, { force: true });
      await resetState();
    }
  });

  it("the journal is a symlink to a file elsewhere: deploy stops before any change (E_JOURNAL), status refuses it", async () => {
    await resetState();
    await symlink(victimFile, journalFile);
    await hostile("proxy-host-file", "journal is a symlink (deploy)", async () => {
      await expectRefused(deployArgs(fleet.configFile), /E_JOURNAL/, `${journalFile} is a symbolic link (to ${victimFile})`, "local", /refusing the journal/);
      // The lock was released again.
      expect(existsSync(lockDir)).toBe(false);
    });
    await hostile("proxy-host-file", "journal is a symlink (status)", () =>
      expectRefused(["status", "--config", fleet.configFile], /E_JOURNAL/, `${journalFile} is a symbolic link`, "local", /refusing the journal/),
    );
    await hostile("proxy-host-file", "journal is a symlink (resume)", () =>
      expectRefused(["resume", "--config", fleet.configFile], /E_JOURNAL/, `${journalFile} is a symbolic link`, "local", /refusing the journal/),
    );
    expect(readlinkSync(journalFile)).toBe(victimFile);
  });

  it("the journal is a hard link to a file elsewhere: refused, the file unchanged", async () => {
    await resetState();
    await link(victimFile, journalFile);
    await hostile("proxy-host-file", "journal is a hard link", () =>
      expectRefused(deployArgs(fleet.configFile), /E_JOURNAL/, `${journalFile} has 2 hard links`, "local", /refusing the journal/),
    );
  });

  it("the lock dir is a symlink: deploy and lock status refuse it (E_STATE)", async () => {
    await resetState();
    await symlink(victimDir, lockDir);
    await hostile("proxy-host-file", "lock dir is a symlink (deploy)", () =>
      expectRefused(deployArgs(fleet.configFile), /E_STATE/, `${lockDir} is a symbolic link (to ${victimDir})`, "local", /refusing the deploy lock/),
    );
    await hostile("proxy-host-file", "lock dir is a symlink (lock status)", () =>
      expectRefused(["lock", "status", "--config", fleet.configFile], /E_STATE/, `${lockDir} is a symbolic link`, "local", /refusing the deploy lock/),
    );
    expect(readlinkSync(lockDir)).toBe(victimDir);
  });

  it("holder.json is a symlink: deploy and lock status refuse it (E_STATE)", async () => {
    await resetState();
    await mkdir(lockDir, { mode: 0o700 });
    await symlink(victimFile, holderFile);
    await hostile("proxy-host-file", "holder.json is a symlink (deploy)", () =>
      expectRefused(deployArgs(fleet.configFile), /E_STATE/, `${holderFile} is a symbolic link (to ${victimFile})`, "local", /refusing the deploy lock/),
    );
    await hostile("proxy-host-file", "holder.json is a symlink (lock status)", () =>
      expectRefused(["lock", "status", "--config", fleet.configFile], /E_STATE/, `${holderFile} is a symbolic link`, "local", /refusing the deploy lock/),
    );
    expect(readlinkSync(holderFile)).toBe(victimFile);
  });

  it("a state dir owned by another uid, or writable by others, is refused (E_STATE)", async () => {
    await resetState();
    await writeFile(journalFile, "", { mode: 0o600 });
    await chown(stateDir, NOBODY, NOBODY);
    await hostile("proxy-host-file", "state dir owned by nobody (deploy)", async () => {
      await expectRefused(deployArgs(fleet.configFile), /E_STATE/, `${stateDir} is owned by uid ${NOBODY}, not by uid 0`, "local", /refusing the state directory/);
      expect(statSync(stateDir).uid).toBe(NOBODY);
      expect(readdirSync(stateDir)).toEqual(["journal.jsonl"]);
    });
    await hostile("proxy-host-file", "state dir owned by nobody (status)", () =>
      expectRefused(["status", "--config", fleet.configFile], /E_JOURNAL/, `${stateDir} is owned by uid ${NOBODY}`, "local", /refusing the journal/),
    );
    await chown(stateDir, 0, 0);
    await chown(journalFile, NOBODY, NOBODY);
    await hostile("proxy-host-file", "journal owned by nobody (deploy)", () =>
      expectRefused(deployArgs(fleet.configFile), /E_JOURNAL/, `${journalFile} is owned by uid ${NOBODY}`, "local", /refusing the journal/),
    );
    await chown(journalFile, 0, 0);
    await chmod(stateDir, 0o777);
    await hostile("proxy-host-file", "state dir is world-writable (deploy)", async () => {
      await expectRefused(deployArgs(fleet.configFile), /E_STATE/, `${stateDir} is writable by others (mode 777)`, "local", /refusing the state directory/);
      expect(mode(stateDir)).toBe("777");
      expect(readFileSync(journalFile, "utf8")).toBe("");
    });
    await resetState();
  });

  it("links planted at the old fixed temp names (holder.json.tmp, .nodrop-tmp, .nodrop-prev) are never followed; temp names are random and cleaned up", async () => {
    await resetState();
    const includeDir = path.dirname(fleet.includeFile);
    const oldTmp = `${fleet.includeFile}.nodrop-tmp`;
    const oldPrev = `${fleet.includeFile}.nodrop-prev`;
    const oldHolderTmp = `${holderFile}.tmp`;
    // A mktemp on PATH that records every name handed out, then runs the real one.
    const shimDir = path.join(fleet.dir, "shim");
    const names = path.join(fleet.dir, "mktemp-names.log");
    await mkdir(shimDir, { recursive: true });
    await writeFile(path.join(shimDir, "mktemp"), `#!/bin/bash\nn=$(/usr/bin/mktemp "$@") || exit $?\necho "$n" >> ${names}\necho "$n"\n`, { mode: 0o755 });
    const savedPath = process.env.PATH;
    process.env.PATH = `${shimDir}:${savedPath}`;
    try {
      // (An older nodrop left a regular .nodrop-prev behind: the plant replaces it.)
      await rm(oldTmp, { force: true });
      await rm(oldPrev, { force: true });
      await symlink(victimFile, oldTmp);
      await symlink(victimFile, oldPrev);
      await hostile("proxy-host-file", "links at the include file's old temp and prev names", async () => {
        const beforeVictims = victims();
        for (const version of ["v2", "v1"]) {
          const result = await runNodrop(deployArgs(fleet.configFile, version));
          expect(result.code, result.stderr).toBe(0);
        }
        expect(victims()).toBe(beforeVictims);
        expect(readlinkSync(oldTmp)).toBe(victimFile);
        expect(readlinkSync(oldPrev)).toBe(victimFile);
        expect(lstatSync(fleet.includeFile).isFile()).toBe(true);
        expect(readFileSync(fleet.includeFile, "utf8")).toContain("web-8471");
        expect(Object.values(await fleet.versions())).toEqual(["v1", "v1"]);
        expect(await serving()).toBe(true);
        // Nothing left beside the include file but the planted links.
        expect(readdirSync(includeDir).sort()).toEqual(["web.conf", "web.conf.nodrop-prev", "web.conf.nodrop-tmp"]);
      });
      const handed = readFileSync(names, "utf8").split("\n").filter(Boolean);
      const includeTemps = handed.filter((n) => n.startsWith(`${fleet.includeFile}.`));
      // The lock's temps: the directory prepared for it (lock.new.X), the claim of its release
      // (lock/.release.X), where it is moved to be removed (lock.released.X), heartbeats (lock/beat-<token>.X).
      const holderTemps = handed.filter((n) => n.startsWith(`${lockDir}.`) || n.startsWith(`${lockDir}/`));
      // Two deploys: each reload makes a temp and a previous copy; each lock taken and released three.
      expect(includeTemps.length).toBeGreaterThanOrEqual(4);
      expect(holderTemps.length).toBeGreaterThanOrEqual(6);
      expect(new Set(handed).size).toBe(handed.length);
      for (const name of includeTemps) expect(name).toMatch(/\/web\.conf\.nodrop-(tmp|prev)\.[A-Za-z0-9]{10}$/);
      for (const name of holderTemps) expect(name).toMatch(/\/lock(\.new|\.released|\/\.release|\/\.take|\/beat-[0-9a-f-]{36})\.[A-Za-z0-9]{10}$/);
      for (const name of handed) expect(existsSync(name)).toBe(false);

      // holder.json.tmp: a link there while a deploy holds the lock (the heartbeat rewrites holder.json).
      await hostile("proxy-host-file", "link at holder.json's old temp name", async () => {
        const beforeVictims = victims();
        const deploying = runNodrop(deployArgs(fleet.configFile, "v2"));
        let planted = false;
        for (let i = 0; i < 3000 && !planted; i++) {
          if (existsSync(holderFile)) {
            await symlink(victimFile, oldHolderTmp);
            planted = true;
          } else await new Promise((r) => setTimeout(r, 10));
        }
        expect(planted).toBe(true);
        const result = await deploying;
        expect(result.code, result.stderr).toBe(0);
        expect(victims()).toBe(beforeVictims);
        expect(existsSync(lockDir)).toBe(false);
      });
      const lockTemps = readFileSync(names, "utf8").split("\n").filter((n) => n.startsWith(`${lockDir}`));
      expect(lockTemps).not.toContain(oldHolderTmp);
      expect((await runNodrop(deployArgs(fleet.configFile, "v1"))).code).toBe(0);
    } finally {
      process.env.PATH = savedPath;
      await rm(oldTmp, { force: true });
      await rm(oldPrev, { force: true });
    }
  });

  it("links planted at the names of the include file's unconfirmed-change records are never written through, and a link there is never read as a record", async () => {
    await resetState();
    const generation = Number(/^# nodrop-generation: (\d+)$/m.exec(readFileSync(fleet.includeFile, "utf8"))?.[1]);
    expect(generation).toBeGreaterThan(0);
    // The names the next two changes would write their records at, and one far ahead that no change reaches.
    const planted = [1, 2].flatMap((k) => [`${fleet.includeFile}.nodrop-unconfirmed.${generation + k}`, `${fleet.includeFile}.nodrop-unconfirmed-new.${generation + k}`]);
    const ahead = `${fleet.includeFile}.nodrop-unconfirmed.${generation + 1000}`;
    for (const name of [...planted, ahead]) {
      await rm(name, { force: true });
      await symlink(victimFile, name);
    }
    try {
      await hostile("proxy-host-file", "links at the unconfirmed-change record names", async () => {
        const beforeVictims = victims();
        for (const version of ["v2", "v1"]) {
          const result = await runNodrop(deployArgs(fleet.configFile, version));
          expect(result.code, result.stderr).toBe(0);
          // A link is no record: the deploy had nothing to put into effect first.
          expect(result.stdout).not.toContain("never confirmed");
        }
        expect(victims()).toBe(beforeVictims);
        // The written names were replaced by records (rename replaces the link, never its target) and cleared after each drain.
        for (const name of planted.filter((n) => !n.includes("-new."))) expect(existsSync(name)).toBe(false);
        // The links no change wrote to (no reload was left unconfirmed, and one far ahead) are still there, unread.
        for (const name of [...planted.filter((n) => n.includes("-new.")), ahead]) expect(readlinkSync(name)).toBe(victimFile);
        const status = await runNodrop(["status", "--config", fleet.configFile, "--json"]);
        expect((JSON.parse(status.stdout) as { unconfirmed?: unknown }).unconfirmed).toBeUndefined();
        expect(await serving()).toBe(true);
      });
    } finally {
      for (const name of [...planted, ahead]) await rm(name, { force: true });
    }
  });

  it("the include file itself is a symlink: refused by deploy and reported by status (E_PROXY_SETUP), the link's target unchanged", async () => {
    await resetState();
    // The user's real file elsewhere, the include path a link to it.
    const elsewhere = path.join(victimDir, "web.conf");
    const text = readFileSync(fleet.includeFile, "utf8");
    await writeFile(elsewhere, text);
    await rm(fleet.includeFile);
    await symlink(elsewhere, fleet.includeFile);
    try {
      await hostile("proxy-host-file", "include file is a symlink (deploy)", async () => {
        await expectRefused(deployArgs(fleet.configFile), /E_PROXY_SETUP/, `${fleet.includeFile} is a symbolic link (to ${elsewhere})`, "local", /does not write through links/);
        expect(readFileSync(elsewhere, "utf8")).toBe(text);
        expect(readlinkSync(fleet.includeFile)).toBe(elsewhere);
      });
      await hostile("proxy-host-file", "include file is a symlink (status)", async () => {
        const before = await snapshot();
        const status = await runNodrop(["status", "--config", fleet.configFile]);
        expect(status.code).toBe(1);
        expect(status.stdout).toContain("proxy nginx: NOT READY");
        expect(status.stdout).toContain(`${fleet.includeFile} is a symbolic link (to ${elsewhere})`);
        expect(readFileSync(elsewhere, "utf8")).toBe(text);
        expect(await snapshot()).toBe(before);
      });
      await hostile("proxy-host-file", "include file is a symlink (init)", async () => {
        const before = await snapshot();
        const init = await runNodrop(["init", "--config", fleet.configFile]);
        expect(init.code).not.toBe(0);
        expect(init.stderr).toMatch(/E_PROXY_SETUP/);
        expect(init.stderr).toContain(`${fleet.includeFile} is a symbolic link`);
        expect(init.stderr).toContain(" on local");
        expect(readFileSync(elsewhere, "utf8")).toBe(text);
        expect(await snapshot()).toBe(before);
      });
    } finally {
      await rm(fleet.includeFile, { force: true });
      await writeFile(fleet.includeFile, text);
      await rm(elsewhere, { force: true });
    }
    expect((await runNodrop(deployArgs(fleet.configFile, "v1"))).code).toBe(0);
  });
});

describe("state files on the proxy host over SSH (the shell path: real sshd)", () => {
  let hosts: TestHosts;
  let sshConfig: string;
  beforeAll(async () => {
    hosts = await startTestHosts({ names: ["web1"] });
    // The same fleet, its proxy host reached over SSH: the lock and the journal go through bash.
    // (JSON is YAML: the new sections are appended as JSON, proxy.host goes under proxy:.)
    const text = await readFile(fleet.configFile, "utf8");
    expect(text).toMatch(/^proxy:\n/m);
    const h = hosts.host("web1");
    const ssh = { user: "root", privateKeyFile: hosts.pemKey.path, knownHosts: hosts.knownHosts };
    const hostEntries = { web1: { address: h.address, port: h.sshPort } };
    sshConfig = path.join(fleet.dir, "ssh.yaml");
    await writeFile(sshConfig, `${text.replace(/^proxy:\n/m, "proxy:\n  host: web1\n")}\nssh: ${JSON.stringify(ssh)}\nhosts: ${JSON.stringify(hostEntries)}\n`);
  });
  afterAll(async () => {
    await hosts?.stop();
  });

  it("a deploy over SSH creates the state dir 0700 and the journal 0600", async () => {
    await rm(stateDir, { recursive: true, force: true });
    const result = await runNodrop(deployArgs(sshConfig));
    expect(result.code, result.stderr).toBe(0);
    expect(mode(stateDir)).toBe("700");
    expect(mode(journalFile)).toBe("600");
    expect(readFileSync(journalFile, "utf8").split("\n").filter(Boolean).length).toBeGreaterThan(2);
    expect((await runNodrop(deployArgs(sshConfig, "v1"))).code).toBe(0);
  });

  it("the journal is a symlink: refused over SSH (E_JOURNAL naming the path and web1), the target unchanged", async () => {
    await resetState();
    await symlink(victimFile, journalFile);
    await hostile("proxy-host-file", "journal is a symlink over SSH (deploy)", async () => {
      await expectRefused(deployArgs(sshConfig), /E_JOURNAL/, `${journalFile} is a symbolic link (to ${victimFile})`, "web1", /refusing the journal/);
      expect(existsSync(lockDir)).toBe(false);
    });
    await hostile("proxy-host-file", "journal is a symlink over SSH (status)", () =>
      expectRefused(["status", "--config", sshConfig], /E_JOURNAL/, `${journalFile} is a symbolic link`, "web1", /refusing the journal/),
    );
    expect(readlinkSync(journalFile)).toBe(victimFile);
  });

  it("the state dir, lock dir and holder.json as symlinks, a foreign owner and a world-writable dir: refused over SSH (E_STATE)", async () => {
    await rm(stateDir, { recursive: true, force: true });
    await symlink(victimDir, stateDir);
    await hostile("proxy-host-file", "state dir is a symlink over SSH (deploy)", () =>
      expectRefused(deployArgs(sshConfig), /E_STATE/, `${stateDir} is a symbolic link (to ${victimDir})`, "web1", /refusing the state directory/),
    );
    await rm(stateDir);
    await resetState();
    await symlink(victimDir, lockDir);
    await hostile("proxy-host-file", "lock dir is a symlink over SSH (lock status)", () =>
      expectRefused(["lock", "status", "--config", sshConfig], /E_STATE/, `${lockDir} is a symbolic link (to ${victimDir})`, "web1", /refusing the deploy lock/),
    );
    await rm(lockDir);
    await mkdir(lockDir, { mode: 0o700 });
    await symlink(victimFile, holderFile);
    await hostile("proxy-host-file", "holder.json is a symlink over SSH (deploy)", () =>
      expectRefused(deployArgs(sshConfig), /E_STATE/, `${holderFile} is a symbolic link (to ${victimFile})`, "web1", /refusing the deploy lock/),
    );
    await resetState();
    await chown(stateDir, NOBODY, NOBODY);
    await hostile("proxy-host-file", "state dir owned by nobody over SSH (deploy)", async () => {
      await expectRefused(deployArgs(sshConfig), /E_STATE/, `${stateDir} is owned by uid ${NOBODY}, not by uid 0`, "web1", /refusing the state directory/);
      expect(readdirSync(stateDir)).toEqual([]);
    });
    await chown(stateDir, 0, 0);
    await writeFile(journalFile, "", { mode: 0o600 });
    await chown(journalFile, NOBODY, NOBODY);
    await chmod(stateDir, 0o700);
    // The lock passes (the dir is fine); the journal's first line is refused.
    await hostile("proxy-host-file", "journal owned by nobody over SSH (deploy)", () =>
      expectRefused(deployArgs(sshConfig), /E_JOURNAL/, `${journalFile} is owned by uid ${NOBODY}`, "web1", /refusing the journal/),
    );
    await chown(journalFile, 0, 0);
    await chmod(stateDir, 0o777);
    await hostile("proxy-host-file", "state dir world-writable over SSH (deploy)", async () => {
      await expectRefused(deployArgs(sshConfig), /E_STATE/, `${stateDir} is writable by others (mode 777)`, "web1", /refusing the state directory/);
      expect(readFileSync(journalFile, "utf8")).toBe("");
    });
    await resetState();
  });
});
