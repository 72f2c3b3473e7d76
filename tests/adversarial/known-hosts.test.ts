// Hostile known_hosts against real OpenSSH servers on ports other than 22 (2201-2203), with the
// known_hosts lines `ssh-keyscan -p` printed for them. Each hostile case asserts the outcome (a
// clear E_SSH_HOSTKEY naming the host, or a harmless result) and that nothing changed: no command
// ran on the host, no connection was kept, the known_hosts file is as it was.
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { execFile } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type SshExecutorOptions, fingerprint, parseKnownHosts, sshExecutor } from "../../packages/ssh/dist/index.js";
import { type TestHosts, startTestHosts } from "../../packages/testhosts/dist/index.js";
import { hostile } from "./tally.js";

const run = promisify(execFile);
const PORTS = [2201, 2202, 2203];
let hosts: TestHosts;
let scratch: string;

beforeAll(async () => {
  hosts = await startTestHosts({ names: ["web1", "web2", "web3"], sshPort: PORTS });
  scratch = await mkdtemp(path.join(os.tmpdir(), "nodrop-kh-adv-"));
});
afterAll(async () => {
  await hosts?.stop();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

function target(name: string, hostKeys: SshExecutorOptions["hostKeys"], log?: (m: string) => void): SshExecutorOptions {
  const h = hosts.host(name);
  return { name, address: h.address, port: h.sshPort, user: "root", privateKey: hosts.pemKey.privateKey, hostKeys, connectAttempts: 3, ...(log ? { log } : {}) };
}

async function failure(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error("expected a failure");
}

/** "type base64" of a host's key, from its ssh-keyscan line. */
const keyOf = (name: string) => hosts.host(name).knownHostsLine.split(" ").slice(1).join(" ");
const bracketed = (name: string) => `[${hosts.host(name).address}]:${hosts.host(name).sshPort}`;

/** Tries a command that would leave a mark on the host; asserts it was refused and left none. */
async function refusedWithoutTrace(name: string, hostKeys: SshExecutorOptions["hostKeys"], mark: string) {
  const ssh = sshExecutor(target(name, hostKeys));
  const markFile = path.join(hosts.host(name).dir, `ran-${mark}`);
  const error = await failure(ssh.exec(`touch ${markFile}`));
  expect(error.code).toBe("E_SSH_HOSTKEY");
  expect(error.message).toContain(name);
  expect(error.message).toContain(`${hosts.host(name).address}:${hosts.host(name).sshPort}`);
  expect(error.message).toContain(hosts.host(name).fingerprint);
  expect(ssh.connectionsOpened()).toBe(0);
  expect(existsSync(markFile)).toBe(false);
  await ssh.dispose();
  return error;
}

describe("three hosts with sshd on ports 2201-2203", () => {
  it("known_hosts from ssh-keyscan -p names them [address]:port; strict verification passes and a command runs on each", async () => {
    for (const [i, h] of hosts.hosts.entries()) {
      expect(h.sshPort).toBe(PORTS[i]);
      expect(h.knownHostsLine.startsWith(`[${h.address}]:${PORTS[i]} ssh-ed25519 `)).toBe(true);
    }
    // What ssh-keyscan prints, exactly: what an operator would put in knownHostsFile.
    const scanned = await Promise.all(hosts.hosts.map(async (h) => (await run("ssh-keyscan", ["-t", "ed25519", "-p", String(h.sshPort), h.address])).stdout.trim()));
    expect(scanned).toEqual(hosts.hosts.map((h) => h.knownHostsLine));
    const results = await Promise.all(
      hosts.hosts.map(async (h) => {
        const ssh = sshExecutor(target(h.name, { knownHosts: hosts.knownHosts, policy: "strict" }));
        try {
          const out = await ssh.exec("echo ran");
          return { out: out.stdout, opened: ssh.connectionsOpened() };
        } finally {
          await ssh.dispose();
        }
      }),
    );
    expect(results).toEqual(hosts.hosts.map(() => ({ out: "ran\n", opened: 1 })));
  });

  it("hostile known_hosts is refused or harmless, and changes nothing", async () => {
    await hostile("known-hosts", "changed key for [host]:port under accept-new", async () => {
      const file = path.join(scratch, "changed_known_hosts");
      const text = `${bracketed("web1")} ${keyOf("web2")}\n`;
      await writeFile(file, text);
      const error = await refusedWithoutTrace("web1", { knownHosts: text, policy: "accept-new", recordTo: file }, "changed-accept-new");
      expect(error.message).toContain("CHANGED");
      expect(error.message).toContain(hosts.host("web2").fingerprint);
      expect(await readFile(file, "utf8")).toBe(text);
    });

    await hostile("known-hosts", "changed key for [host]:port under strict", async () => {
      const error = await refusedWithoutTrace("web2", { knownHosts: `${bracketed("web2")} ${keyOf("web3")}\n` }, "changed-strict");
      expect(error.message).toContain("CHANGED");
    });

    await hostile("known-hosts", "a negated [host]:port excludes the host from a wildcard line with its key", async () => {
      // Both the [address]:port name and the bare address are negated: off port 22 ssh also tries
      // the bare name ("checking without port identifier"), which `*` alone would match.
      const h = hosts.host("web1");
      const error = await refusedWithoutTrace("web1", { knownHosts: `*,!${bracketed("web1")},!${h.address} ${keyOf("web1")}\n` }, "negated");
      expect(error.message).toContain("is unknown");
    });

    await hostile("known-hosts", "a revoked key that is also pinned", async () => {
      const error = await refusedWithoutTrace("web2", { knownHosts: `@revoked * ${keyOf("web2")}\n`, fingerprints: [hosts.host("web2").fingerprint] }, "pinned-revoked");
      expect(error.message).toContain("revoked");
    });

    await hostile("ssh-server", "host key differs on reconnect within one run under accept-new", async () => {
      const file = path.join(scratch, "reconnect_known_hosts");
      const said: string[] = [];
      const ssh = sshExecutor(target("web3", { knownHosts: "", policy: "accept-new", recordTo: file }, (m) => said.push(m)));
      expect((await ssh.exec("echo first")).stdout).toBe("first\n");
      await ssh.dispose();
      const recorded = await readFile(file, "utf8");
      expect(recorded).toBe(`${hosts.host("web3").knownHostsLine}\n`);
      // The host now presents another key (an impostor on its address and port).
      const restore = await rekey("web3");
      try {
        const markFile = path.join(hosts.host("web3").dir, "ran-reconnect");
        const again = await failure(ssh.exec(`touch ${markFile}`));
        expect(again.code).toBe("E_SSH_HOSTKEY");
        expect(again.message).toContain("web3");
        expect(again.message).toContain("accepted earlier in this run");
        expect(again.message).toContain(hosts.host("web3").fingerprint);
        // Another executor in the same run: the same answer.
        const other = sshExecutor(target("web3", { knownHosts: "", policy: "accept-new", recordTo: file }));
        expect((await failure(other.exec(`touch ${markFile}`))).code).toBe("E_SSH_HOSTKEY");
        expect(existsSync(markFile)).toBe(false);
        expect(ssh.connectionsOpened()).toBe(1);
        expect(other.connectionsOpened()).toBe(0);
        expect(await readFile(file, "utf8")).toBe(recorded);
        expect(said.filter((m) => m.includes("recorded"))).toHaveLength(1);
      } finally {
        await restore();
      }
    });

    await hostile("known-hosts", "accept-new records into a file whose last line has no newline", async () => {
      const file = path.join(scratch, "no_newline_known_hosts");
      const before = `other.example.org ${keyOf("web1")}`;
      await writeFile(file, before);
      const ssh = sshExecutor(target("web2", { knownHosts: before, policy: "accept-new", recordTo: file }));
      expect((await ssh.exec("echo recorded")).stdout).toBe("recorded\n");
      await ssh.dispose();
      const after = await readFile(file, "utf8");
      expect(after).toBe(`${before}\n${hosts.host("web2").knownHostsLine}\n`);
      // Both entries are whole: the old one unchanged, the new one verifies strictly.
      expect(parseKnownHosts(after).map((e) => e.patterns)).toEqual(["other.example.org", bracketed("web2")]);
      const strict = sshExecutor(target("web2", { knownHosts: after }));
      expect((await strict.exec("echo strict")).stdout).toBe("strict\n");
      await strict.dispose();
    });

    await hostile("known-hosts", "accept-new with a known_hosts file in a missing directory", async () => {
      // As ssh does: the key is accepted, the failure to record it is said (naming the host and
      // the file), nothing is created, the connection works.
      const missing = path.join(scratch, "no-such-dir");
      const file = path.join(missing, "known_hosts");
      const said: string[] = [];
      const ssh = sshExecutor(target("web1", { knownHosts: "", policy: "accept-new", recordTo: file }, (m) => said.push(m)));
      expect((await ssh.exec("echo still-works")).stdout).toBe("still-works\n");
      await ssh.dispose();
      const message = said.find((m) => m.includes("could not record"));
      expect(message).toContain("web1");
      expect(message).toContain(file);
      expect(message).toContain(hosts.host("web1").fingerprint);
      expect(existsSync(missing)).toBe(false);
      expect(ssh.connectionsOpened()).toBe(1);
    });
  });
});

/** Gives a host a new host key (restarting its sshd); returns how to put the old one back. */
async function rekey(name: string): Promise<() => Promise<void>> {
  const h = hosts.host(name);
  const config = path.join(h.dir, "sshd_config");
  const original = await readFile(config, "utf8");
  const newKey = path.join(h.dir, "ssh_host_ed25519_key_rekeyed");
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", newKey]);
  const pub = (await readFile(`${newKey}.pub`, "utf8")).split(" ")[1]!;
  expect(fingerprint(Buffer.from(pub, "base64"))).not.toBe(h.fingerprint);
  await hosts.stopSshd(name);
  await writeFile(config, original.replace(/^HostKey .*$/m, `HostKey ${newKey}`));
  await hosts.startSshd(name);
  return async () => {
    await hosts.stopSshd(name);
    await writeFile(config, original);
    await hosts.startSshd(name);
  };
}
