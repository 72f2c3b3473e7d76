// Secrets a config names by environment variable (privateKeyEnv, passphraseEnv) are for nodrop's
// SSH connections only: the `nodrop` CLI, run as a user runs it, must not hand them to the local
// commands it runs, nor (through them) to the daemons those commands start.
import { execFileSync } from "node:child_process";
import { lstatSync, readFileSync, readdirSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { hostile } from "../../../tests/adversarial/tally.js";
import { type Fleet, runNodrop, startFleet } from "../src/index.js";

describe("secrets named by the config stay out of local commands' environments (the CLI, real nginx + gunicorn)", () => {
  const ports = [8306, 8307];
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({ ports, proxyPort: 18306 });
  });
  afterAll(async () => {
    await fleet?.stop();
  });
  const names = ["NODROP_TEST_HOST_KEY", "NODROP_TEST_HOST_PASSPHRASE", "NODROP_TEST_DEFAULT_KEY", "NODROP_TEST_DEFAULT_PASSPHRASE", "NODROP_TEST_INHERITED"];
  afterEach(() => {
    for (const name of names) delete process.env[name];
  });

  const pidOf = (port: number) => readFileSync(path.join(fleet.dir, "instances", String(port), "gunicorn.pid"), "utf8").trim();
  const filesUnder = (dir: string): string[] =>
    readdirSync(dir).flatMap((name) => {
      const file = path.join(dir, name);
      const stat = lstatSync(file);
      return stat.isDirectory() ? filesUnder(file) : stat.isFile() ? [file] : [];
    });

  it("privateKeyEnv and passphraseEnv variables (in ssh defaults and in a host) reach no command and no daemon it started", async () => {
    // A real passphrase-protected key for an SSH host the config names; no instance lives there,
    // so nodrop never connects, but it reads the variables as it always does.
    const keyFile = path.join(fleet.dir, "deploy_key");
    const passphrase = "nodrop-test-passphrase-91d0";
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-C", "nodrop-test", "-f", keyFile]);
    const key = await readFile(keyFile, "utf8");
    const material = key.split("\n")[1]!;
    const publicKey = (await readFile(`${keyFile}.pub`, "utf8")).trim().split(" ").slice(0, 2).join(" ");
    const config = parse(await readFile(fleet.configFile, "utf8")) as Record<string, unknown>;
    config.ssh = { user: "deploy", privateKeyEnv: "NODROP_TEST_DEFAULT_KEY", passphraseEnv: "NODROP_TEST_DEFAULT_PASSPHRASE" };
    config.hosts = {
      spare: { address: "192.0.2.10", knownHosts: `192.0.2.10 ${publicKey}`, privateKeyEnv: "NODROP_TEST_HOST_KEY", passphraseEnv: "NODROP_TEST_HOST_PASSPHRASE" },
    };
    const file = path.join(fleet.dir, "secrets.yaml");
    await writeFile(file, stringify(config));
    // The CLI inherits this process's environment, as from a user's shell or a CI job.
    process.env.NODROP_TEST_HOST_KEY = key;
    process.env.NODROP_TEST_HOST_PASSPHRASE = passphrase;
    process.env.NODROP_TEST_DEFAULT_KEY = `${key}\n# default`;
    process.env.NODROP_TEST_DEFAULT_PASSPHRASE = `${passphrase}-default`;
    process.env.NODROP_TEST_INHERITED = "yes";

    await hostile("config", "privateKeyEnv / passphraseEnv secrets reaching daemons started by local commands (/proc/PID/environ)", async () => {
      const before = ports.map(pidOf);
      const result = await runNodrop(["deploy", "--config", file, "--version", "v2"]);
      expect(result.stderr).not.toContain("error [");
      expect(result.code).toBe(0);
      expect(Object.values(await fleet.versions())).toEqual(["v2", "v2"]);
      const daemons = ports.map(pidOf);
      // New gunicorn masters, started by the deploy's `start` commands.
      expect(daemons.filter((pid, i) => pid !== before[i])).toHaveLength(ports.length);
      for (const pid of daemons) {
        const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean);
        // The CLI's environment did reach the daemon: what is missing was removed.
        expect(environ).toContain("NODROP_TEST_INHERITED=yes");
        expect(environ.map((v) => v.split("=")[0]).filter((name) => /^NODROP_TEST_(HOST|DEFAULT)_/.test(name!))).toEqual([]);
        for (const secret of [material, passphrase]) expect(environ.join("\n")).not.toContain(secret);
      }
      // Nothing else kept them: the journal, the lock, nginx's files, the output.
      for (const f of filesUnder(fleet.dir).filter((f) => !f.startsWith(keyFile))) for (const secret of [material, passphrase]) expect(readFileSync(f, "utf8"), f).not.toContain(secret);
      for (const secret of [material, passphrase]) expect(result.stdout + result.stderr).not.toContain(secret);
    });
  });
});
