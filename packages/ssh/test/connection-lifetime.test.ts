// The life of one SSH connection after it is ready: errors, late closes and jump hosts, against
// real OpenSSH servers. Where a fault must hit one connection and not another, a TCP relay in
// front of the real sshd injects it (corrupt bytes, a reset, a connection frozen then cut).
import { NodropError } from "@nodrop/core";
import { type TestHosts, startTestHosts, tcpRelay } from "@nodrop/testhosts";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { hostile } from "../../../tests/adversarial/tally.js";
import { type SshExecutorOptions, sshExecutor } from "../src/index.js";

let hosts: TestHosts;

beforeAll(async () => {
  hosts = await startTestHosts({ names: ["web1", "web2"] });
});
afterAll(async () => {
  await hosts?.stop();
});

// An unhandled 'error' event on a connection is thrown out of a socket callback: it lands here.
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);
beforeEach(() => {
  uncaught.length = 0;
  process.on("uncaughtException", onUncaught);
});
afterEach(() => {
  process.off("uncaughtException", onUncaught);
});

function target(name: string, overrides: Partial<SshExecutorOptions> = {}): SshExecutorOptions {
  const h = hosts.host(name);
  return {
    name,
    address: h.address,
    port: h.sshPort,
    user: "root",
    privateKey: hosts.pemKey.privateKey,
    hostKeys: { knownHosts: hosts.knownHosts },
    connectAttempts: 1,
    ...overrides,
  };
}

async function failure(promise: Promise<unknown>): Promise<NodropError> {
  try {
    await promise;
  } catch (error) {
    if (NodropError.is(error)) return error;
    throw error;
  }
  throw new Error("expected a failure");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for a condition (bounded); returns its last value. */
async function until<T>(value: () => Promise<T>, ok: (v: T) => boolean, bound = 10_000): Promise<T> {
  const deadline = Date.now() + bound;
  for (;;) {
    const v = await value();
    if (ok(v) || Date.now() > deadline) return v;
    await sleep(50);
  }
}

/** Established SSH connections on a host's sshd, counted on the host itself. */
const sshdConnections = async (name: string) => {
  const h = hosts.host(name);
  const out = await hosts.sh(name, `ss -Htn state established '( sport = :${h.sshPort} )' src ${h.address} || true`);
  return out.split("\n").filter((l) => l.trim()).length;
};

/** A TCP relay on 127.0.0.1 in front of a host's sshd; each accepted connection is one pair. */
const relayTo = (name: string) => tcpRelay(hosts.host(name).address, hosts.host(name).sshPort);

/** The relay stands where the host was: a pinned key, since known_hosts names the real address. */
const viaRelay = (name: string, port: number): Partial<SshExecutorOptions> => ({
  address: "127.0.0.1",
  port,
  hostKeys: { fingerprints: [hosts.host(name).fingerprint] },
});

describe("an SSH connection's life after it is ready", () => {
  it("a connection that errors twice fails its command as dropped, naming the host, and the next command reconnects", async () => {
    const relay = await relayTo("web1");
    const ssh = sshExecutor(target("web1", viaRelay("web1", relay.port)));
    try {
      await hostile("ssh-server", "connection errors twice after ready (corrupt bytes, then a reset)", async () => {
        expect((await ssh.exec("echo first")).stdout).toBe("first\n");
        const running = failure(ssh.exec("sleep 20", { timeoutMs: 60_000 }));
        await sleep(300);
        relay.corrupt(relay.pairs[0]!);
        const error = await running;
        expect(error.code).toBe("E_SSH_DROPPED");
        expect(error.message).toContain("web1");
        expect(error.message).toContain("unknown");
        // The process saw every error as a drop: none escaped as an unhandled 'error' event.
        expect(uncaught).toEqual([]);
        // Recovery: the next command opens a new connection and runs.
        expect((await ssh.exec("echo again")).stdout).toBe("again\n");
        expect(ssh.connectionsOpened()).toBe(2);
        expect(uncaught).toEqual([]);
      });
    } finally {
      await ssh.dispose();
      await relay.close();
    }
  });

  it("sshd killed twice: each running command fails as dropped, naming the host; commands succeed once sshd is back", async () => {
    const ssh = sshExecutor(target("web2"));
    try {
      await hostile("ssh-server", "sshd and its sessions killed twice on one executor", async () => {
        for (const round of [1, 2]) {
          expect((await ssh.exec(`echo round${round}`)).stdout).toBe(`round${round}\n`);
          const running = failure(ssh.exec("sleep 20", { timeoutMs: 60_000 }));
          await sleep(300);
          await hosts.stopSshd("web2", { sessions: true });
          const error = await running;
          expect(error.code).toBe("E_SSH_DROPPED");
          expect(error.message).toContain("web2");
          // While sshd is down a command fails to connect (and says where), nothing hangs.
          const down = await failure(ssh.exec("true"));
          expect(down.code).toBe("E_SSH_CONNECT");
          expect(down.message).toContain("web2");
          await hosts.startSshd("web2");
        }
        expect((await ssh.exec("echo back")).stdout).toBe("back\n");
        expect(ssh.connectionsOpened()).toBe(3);
        expect(uncaught).toEqual([]);
      });
    } finally {
      await ssh.dispose();
      await hosts.startSshd("web2").catch(() => undefined);
    }
  });

  it("a late close of an old connection does not fail a command on the new one, nor drop the new one", async () => {
    const relay = await relayTo("web1");
    const ssh = sshExecutor(target("web1", viaRelay("web1", relay.port)));
    const flag = `${hosts.host("web1").dir}/late-close-go`;
    try {
      await hostile("ssh-server", "old connection closes after the new one is in use", async () => {
        await hosts.sh("web1", `rm -f ${flag} ${flag}-started`);
        expect((await ssh.exec("echo old")).stdout).toBe("old\n");
        // The old connection stops answering, so its end (dispose) cannot finish yet.
        const old = relay.pairs[0]!;
        relay.freeze(old);
        await ssh.dispose();
        // A command on a new connection, held on the host until the flag appears.
        const running = ssh.exec(`touch ${flag}-started; while [ ! -e ${flag} ]; do sleep 0.05; done; echo new`, { timeoutMs: 60_000 }).catch((error: unknown) => error);
        expect(await until(() => hosts.sh("web1", `test -e ${flag}-started && echo started || true`), (s) => s.includes("started"))).toContain("started");
        expect(relay.pairs).toHaveLength(2);
        // Now the old connection closes, late.
        relay.cut(old);
        expect(await until(() => relay.open(), (n) => n === 1)).toBe(1);
        await sleep(100);
        await hosts.sh("web1", `touch ${flag}`);
        expect(await running).toMatchObject({ code: 0, stdout: "new\n" });
        // The new connection is still the one in use.
        expect((await ssh.exec("echo still")).stdout).toBe("still\n");
        expect(ssh.connectionsOpened()).toBe(2);
        expect(uncaught).toEqual([]);
      });
    } finally {
      await ssh.dispose();
      await relay.close();
    }
  });
});

describe("jump hosts", () => {
  it("a jump host that cannot reach the target: a clear error, and no connection left open on the jump host", async () => {
    await until(() => sshdConnections("web1"), (n) => n === 0);
    const before = await sshdConnections("web1");
    expect(before).toBe(0);
    // web2's address on a port nothing listens on: web1 refuses to forward there.
    const ssh = sshExecutor(target("web2", { port: 1, jump: target("web1") }));
    await hostile("ssh-server", "jump host's forwardOut refused", async () => {
      const error = await failure(ssh.exec("touch /tmp/should-not-exist"));
      expect(error.code).toBe("E_SSH_CONNECT");
      expect(error.message).toContain("web1");
      expect(error.message).toContain("web2");
      expect(ssh.connectionsOpened()).toBe(0);
      // The jump connection was ended: web1's sshd serves nothing for it.
      expect(await until(() => sshdConnections("web1"), (n) => n === 0)).toBe(0);
    });
    await ssh.dispose();
  });

  it("a jump host dropped mid-command fails the command as dropped, naming the hosts; it runs again once the jump host is back", async () => {
    const ssh = sshExecutor(target("web2", { jump: target("web1") }));
    try {
      await hostile("ssh-server", "jump host's sshd and sessions killed mid-command", async () => {
        expect((await ssh.exec("echo via")).stdout).toBe("via\n");
        const running = failure(ssh.exec("sleep 20", { timeoutMs: 60_000 }));
        await sleep(300);
        await hosts.stopSshd("web1", { sessions: true });
        const error = await running;
        expect(error.code).toBe("E_SSH_DROPPED");
        expect(error.message).toContain("web2");
        await hosts.startSshd("web1");
        expect((await ssh.exec("echo back")).stdout).toBe("back\n");
        expect(ssh.connectionsOpened()).toBe(2);
        expect(uncaught).toEqual([]);
      });
    } finally {
      await ssh.dispose();
      await hosts.startSshd("web1").catch(() => undefined);
    }
  });

  it("a jump connection that errors twice fails the command as dropped and leaves nothing open", async () => {
    const relay = await relayTo("web1");
    const ssh = sshExecutor(target("web2", { jump: target("web1", viaRelay("web1", relay.port)) }));
    try {
      await hostile("ssh-server", "jump connection errors twice mid-command (corrupt bytes, then a reset)", async () => {
        expect((await ssh.exec("echo via")).stdout).toBe("via\n");
        const running = failure(ssh.exec("sleep 20", { timeoutMs: 60_000 }));
        await sleep(300);
        relay.corrupt(relay.pairs[0]!);
        const error = await running;
        expect(error.code).toBe("E_SSH_DROPPED");
        expect(error.message).toContain("web2");
        expect(error.message).toContain("web1");
        expect(uncaught).toEqual([]);
        expect(await until(() => relay.open(), (n) => n === 0)).toBe(0);
        expect((await ssh.exec("echo again")).stdout).toBe("again\n");
        expect(ssh.connectionsOpened()).toBe(2);
        expect(uncaught).toEqual([]);
      });
    } finally {
      await ssh.dispose();
      await relay.close();
    }
  });
});
