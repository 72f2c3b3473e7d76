// sshExecutor against real OpenSSH servers started by the test (network namespaces, or loopback
// addresses where namespaces are not allowed), with keys generated on the spot.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { NodropError } from "@nodrop/core";
import { type TestHosts, startTestHosts } from "@nodrop/testhosts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type SshExecutorOptions, sshExecutor } from "../src/index.js";

let hosts: TestHosts;

beforeAll(async () => {
  hosts = await startTestHosts({ names: ["web1", "web2"] });
});
afterAll(async () => {
  await hosts?.stop();
});

function target(name: string, overrides: Partial<SshExecutorOptions> = {}): SshExecutorOptions {
  const h = hosts.host(name);
  return {
    name,
    address: h.address,
    port: h.sshPort,
    user: "root",
    privateKey: hosts.clientKey.privateKey,
    passphrase: hosts.clientKey.passphrase,
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

/** No error may carry key material: neither private key's body nor the passphrase. */
function expectNoSecrets(text: string) {
  for (const key of [hosts.clientKey.privateKey, hosts.pemKey.privateKey, hosts.strangerKey.privateKey]) {
    const body = key.split("\n").filter((l) => l && !l.startsWith("-----"));
    for (const line of body) expect(text).not.toContain(line);
  }
  expect(text).not.toContain(hosts.clientKey.passphrase);
}

describe("sshExecutor against real sshd", () => {
  it("runs commands: exit codes, stdout, stderr and stdin", async () => {
    const ssh = sshExecutor(target("web1"));
    try {
      const ok = await ssh.exec("echo out; echo err >&2; exit 3");
      expect(ok).toMatchObject({ code: 3, stdout: "out\n", stderr: "err\n" });
      const echoed = await ssh.exec("cat", { input: "line one\nline two\n" });
      expect(echoed.stdout).toBe("line one\nline two\n");
      const quoted = await ssh.exec(`printf '%s' "it's \\$HOME"`);
      expect(quoted.stdout).toBe("it's $HOME");
    } finally {
      await ssh.dispose();
    }
  });

  it("shares one connection and keeps concurrent sessions at or below maxSessions", async () => {
    const ssh = sshExecutor(target("web1", { maxSessions: 4 }));
    const dir = path.join(hosts.host("web1").dir, "concurrency");
    try {
      await ssh.exec(`mkdir -p ${dir} && rm -f ${dir}/*`);
      // Each command marks itself present, records how many are present, and lingers.
      const results = await Promise.all(
        Array.from({ length: 24 }, (_, i) => ssh.exec(`touch ${dir}/run${i}; ls ${dir} | grep -c run >> ${dir}/../concurrency.log; sleep 0.2; rm ${dir}/run${i}`)),
      );
      expect(results.every((r) => r.code === 0)).toBe(true);
      const seen = (await readFile(path.join(hosts.host("web1").dir, "concurrency.log"), "utf8")).trim().split("\n").map(Number);
      expect(seen).toHaveLength(24);
      expect(Math.max(...seen)).toBeLessThanOrEqual(4);
      expect(Math.max(...seen)).toBeGreaterThan(1);
      expect(ssh.connectionsOpened()).toBe(1);
    } finally {
      await ssh.dispose();
    }
  });

  it("accepts a PEM key without passphrase and an OpenSSH key with one", async () => {
    const pem = sshExecutor(target("web2", { privateKey: hosts.pemKey.privateKey, passphrase: undefined }));
    expect((await pem.exec("echo pem")).stdout).toBe("pem\n");
    await pem.dispose();
    const openssh = sshExecutor(target("web2"));
    expect((await openssh.exec("echo openssh")).stdout).toBe("openssh\n");
    await openssh.dispose();
  });

  it("refuses an unknown host key, naming the host and the fingerprint seen", async () => {
    const ssh = sshExecutor(target("web1", { hostKeys: { knownHosts: hosts.host("web2").knownHostsLine } }));
    const error = await failure(ssh.exec("touch /tmp/should-not-exist"));
    expect(error.code).toBe("E_SSH_HOSTKEY");
    expect(error.message).toContain("web1");
    expect(error.message).toContain("is unknown");
    expect(error.message).toContain(hosts.host("web1").fingerprint);
    expect(ssh.connectionsOpened()).toBe(0);
  });

  it("refuses a changed host key (known_hosts names the address with another key)", async () => {
    const web1 = hosts.host("web1");
    const otherKey = hosts.host("web2").knownHostsLine.split(" ").slice(1).join(" ");
    const forged = `${web1.knownHostsLine.split(" ")[0]} ${otherKey}`;
    const error = await failure(sshExecutor(target("web1", { hostKeys: { knownHosts: forged } })).exec("true"));
    expect(error.code).toBe("E_SSH_HOSTKEY");
    expect(error.message).toContain("CHANGED");
    expect(error.message).toContain(web1.fingerprint);
    expect(error.message).toContain(hosts.host("web2").fingerprint);
  });

  it("accepts a pinned fingerprint and refuses a wrong one", async () => {
    const pinned = sshExecutor(target("web1", { hostKeys: { fingerprints: [hosts.host("web1").fingerprint] } }));
    expect((await pinned.exec("echo pinned")).stdout).toBe("pinned\n");
    await pinned.dispose();
    const wrong = await failure(sshExecutor(target("web1", { hostKeys: { fingerprints: [hosts.host("web2").fingerprint] } })).exec("true"));
    expect(wrong.code).toBe("E_SSH_HOSTKEY");
  });

  it("accept-new records the key it trusted and says so; the record then verifies strictly", async () => {
    const file = path.join(hosts.dir, "recorded_known_hosts");
    const said: string[] = [];
    const first = sshExecutor(target("web2", { hostKeys: { policy: "accept-new", recordTo: file }, log: (m) => said.push(m) }));
    expect((await first.exec("echo first")).stdout).toBe("first\n");
    await first.dispose();
    expect(said.join("\n")).toContain(hosts.host("web2").fingerprint);
    expect(said.join("\n")).toContain(file);
    const recorded = await readFile(file, "utf8");
    const strict = sshExecutor(target("web2", { hostKeys: { knownHosts: recorded } }));
    expect((await strict.exec("echo strict")).stdout).toBe("strict\n");
    await strict.dispose();
  });

  it("refuses a key the host does not accept, and a wrong passphrase, without printing key material", async () => {
    const stranger = await failure(sshExecutor(target("web1", { privateKey: hosts.strangerKey.privateKey, passphrase: undefined })).exec("true"));
    expect(stranger.code).toBe("E_SSH_AUTH");
    expect(stranger.message).toContain("root@");
    expectNoSecrets(stranger.message);
    const badPassphrase = await failure(sshExecutor(target("web1", { passphrase: "not it" })).exec("true"));
    expect(badPassphrase.code).toBe("E_SSH_AUTH");
    expectNoSecrets(badPassphrase.message);
  });

  it("ends a command that runs past its timeout on the host itself", async () => {
    const ssh = sshExecutor(target("web1"));
    try {
      const marker = `nodrop-hang-${process.pid}`;
      const error = await failure(ssh.exec(`exec -a ${marker} sleep 300`, { timeoutMs: 1000 }));
      expect(error.code).toBe("E_TIMEOUT");
      expect(error.message).toContain("web1");
      // "^": the marker starts the process's own command line, not the pgrep's shell.
      const left = await hosts.sh("web1", `pgrep -f '^${marker}' || true`);
      expect(left.trim()).toBe("");
    } finally {
      await ssh.dispose();
    }
  });

  it("an abort ends the remote command", async () => {
    const ssh = sshExecutor(target("web1"));
    try {
      const marker = `nodrop-abort-${process.pid}`;
      const controller = new AbortController();
      const running = ssh.exec(`exec -a ${marker} sleep 300`, { signal: controller.signal, timeoutMs: 60_000 });
      await new Promise((r) => setTimeout(r, 500));
      controller.abort(new Error("test abort"));
      expect((await failure(running)).code).toBe("E_ABORTED");
      let left = "";
      for (let i = 0; i < 20; i++) {
        left = (await hosts.sh("web1", `pgrep -f '^${marker}' || true`)).trim();
        if (!left) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(left).toBe("");
    } finally {
      await ssh.dispose();
    }
  });

  it("reaches a host through a jump host", async () => {
    const ssh = sshExecutor(target("web2", { jump: target("web1") }));
    try {
      const result = await ssh.exec("cat /proc/sys/kernel/hostname >/dev/null; echo via-jump");
      expect(result.stdout).toBe("via-jump\n");
      if (hosts.mode === "netns") {
        // web2 saw the connection come from web1's address, not from this machine.
        const log = await readFile(path.join(hosts.host("web2").dir, "sshd.log"), "utf8");
        expect(log).toContain(`from ${hosts.host("web1").address}`);
      }
    } finally {
      await ssh.dispose();
    }
  });

  it("a dropped connection fails the running command as outcome unknown", async () => {
    const ssh = sshExecutor(target("web2"));
    try {
      await ssh.exec("true");
      const running = failure(ssh.exec("sleep 20", { timeoutMs: 60_000 }));
      await new Promise((r) => setTimeout(r, 500));
      await hosts.stopSshd("web2", { sessions: true });
      const error = await running;
      expect(error.code).toBe("E_SSH_DROPPED");
      expect(error.message).toContain("unknown");
    } finally {
      await ssh.dispose();
      await hosts.startSshd("web2");
    }
  });
});

describe("health checks from the instance's host", () => {
  it("probes an instance that only its host can reach, over the SSH connection", async () => {
    const { hostHealthCheck, waitHealthy } = await import("@nodrop/core");
    const ssh = sshExecutor(target("web1"));
    const port = 18999;
    // A server bound to 127.0.0.1 inside the host: this machine cannot reach it directly in namespace mode.
    const server = `import http.server as h
class H(h.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("X-App-Version", "v7"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
h.HTTPServer(("127.0.0.1", ${port}), H).serve_forever()`;
    try {
      await hosts.sh("web1", `cat > ${hosts.host("web1").dir}/health.py <<'PY'\n${server}\nPY\nnohup python3 ${hosts.host("web1").dir}/health.py >/dev/null 2>&1 &`);
      const check = hostHealthCheck({ path: "/health", versionHeader: "X-App-Version", timeoutMs: 2000, executorFor: () => ssh });
      const instance = { id: "web1-local", host: "web1", address: "127.0.0.1", port };
      await waitHealthy(check, instance, "v7", { successes: 2, intervalMs: 100, deadlineMs: 10_000 });
      const probe = await check.probe(instance);
      expect(probe).toMatchObject({ ok: true, version: "v7" });
      expect(probe.detail).toContain("from web1");
      const closed = await check.probe({ ...instance, port: port + 1 });
      expect(closed.ok).toBe(false);
    } finally {
      await hosts.sh("web1", `pkill -f '^python3 ${hosts.host("web1").dir}/health.py' || true`);
      await ssh.dispose();
    }
  });
});
