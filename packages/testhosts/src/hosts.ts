import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const sshd = "/usr/sbin/sshd";

export interface TestHost {
  /** Name in nodrop's config ("web1"). */
  readonly name: string;
  /** Where sshd and the host's services listen. */
  readonly address: string;
  readonly sshPort: number;
  /** The network namespace, in namespace mode. */
  readonly netns: string | undefined;
  readonly dir: string;
  /**
   * The host key's known_hosts line, as `ssh-keyscan -p <sshPort> <address>` printed it
   * ("10.201.1.10 ssh-ed25519 ..." on port 22, "[10.201.1.10]:2201 ssh-ed25519 ..." elsewhere).
   */
  readonly knownHostsLine: string;
  readonly fingerprint: string;
}

export interface TestHosts {
  readonly mode: "netns" | "loopback";
  readonly hosts: readonly TestHost[];
  /** known_hosts text for every host. */
  readonly knownHosts: string;
  /** The client key every host accepts for root: OpenSSH format with this passphrase. */
  readonly clientKey: { readonly path: string; readonly privateKey: string; readonly passphrase: string };
  /** Another key in PEM format without a passphrase, also accepted. */
  readonly pemKey: { readonly path: string; readonly privateKey: string };
  /** A key no host accepts. */
  readonly strangerKey: { readonly path: string; readonly privateKey: string };
  readonly dir: string;
  host(name: string): TestHost;
  /** Runs a command on a host directly (not over SSH), for checks. */
  sh(name: string, command: string): Promise<string>;
  /** Kills the host's sshd; with `sessions`, also every open SSH session (the host drops off the network for SSH). */
  stopSshd(name: string, options?: { sessions?: boolean }): Promise<void>;
  startSshd(name: string): Promise<void>;
  stop(): Promise<void>;
}

export interface TestHostsOptions {
  /** Host names (default web1..web3). */
  names?: readonly string[];
  /** "auto" (default) tries network namespaces first. */
  mode?: "auto" | "netns" | "loopback";
  /**
   * sshd's port: one for every host, or one per host in `names` order. Default 22 in namespace
   * mode, 2222 on loopback addresses.
   */
  sshPort?: number | readonly number[];
  /** sshd offers SFTP (default true; false: a host without the subsystem). */
  sftp?: boolean;
}

async function canUseNetns(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  const probe = `ndprobe${process.pid % 100000}`;
  try {
    await run("ip", ["netns", "add", probe]);
    await run("ip", ["netns", "del", probe]);
    return true;
  } catch {
    return false;
  }
}

/** The host's known_hosts line as `ssh-keyscan -p` prints it; `key` ("type base64") is what it must show. */
async function keyscan(address: string, port: number, key: string): Promise<string> {
  let last = "";
  // sshd may still be binding its socket: a few tries, 100 ms apart.
  for (let attempt = 0; attempt < 100; attempt++) {
    last = (await run("ssh-keyscan", ["-t", "ed25519", "-p", String(port), address]).catch((e: { stdout?: string }) => e)).stdout ?? "";
    const line = last.split("\n").find((l) => l.trim() && !l.startsWith("#"));
    if (line) {
      if (line.split(" ").slice(1).join(" ") !== key) throw new Error(`ssh-keyscan -p ${port} ${address} printed another key: ${line}`);
      return line;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`ssh-keyscan -p ${port} ${address} printed no key: ${JSON.stringify(last)}`);
}

async function keygen(file: string, type: "ed25519" | "rsa", passphrase = "", format: "openssh" | "pem" = "openssh"): Promise<string> {
  const args = ["-q", "-t", type, "-N", passphrase, "-f", file, "-C", path.basename(file)];
  if (type === "rsa") args.push("-b", "2048");
  if (format === "pem") args.push("-m", "PEM");
  await run("ssh-keygen", args);
  return readFile(file, "utf8");
}

const netClaim = (net: number) => path.join(os.tmpdir(), `nodrop-testnet-${net}`);

/**
 * Picks the N of this harness's 10.201.N.0/24 (or 127.0.N.x) and claims it with a file created
 * exclusively, because test files run side by side and two harnesses on one subnet would answer
 * for each other's addresses. A claim whose process is gone is stale and taken over.
 */
async function claimNet(): Promise<number> {
  const start = Math.floor(Math.random() * 250);
  for (let i = 0; i < 250; i++) {
    const net = 1 + ((start + i) % 250);
    if (await claim(netClaim(net))) return net;
    // An empty claim is one being written: taken. A claim whose process is gone is stale.
    const owner = Number(await readFile(netClaim(net), "utf8").catch(() => "0"));
    if (owner === 0 || isAlive(owner)) continue;
    await rm(netClaim(net), { force: true });
    if (await claim(netClaim(net))) return net;
  }
  throw new Error(`no free 10.201.N.0/24 for test hosts: every N is claimed in ${os.tmpdir()}`);
}

const claim = (file: string) =>
  writeFile(file, String(process.pid), { flag: "wx" }).then(
    () => true,
    () => false,
  );

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts one OpenSSH server per host. In namespace mode each host is a network namespace on a
 * bridge the harness creates (10.201.N.0/24); otherwise hosts are distinct loopback addresses
 * (127.0.N.x), each with its own sshd. Everything is removed by stop().
 */
export async function startTestHosts(options: TestHostsOptions = {}): Promise<TestHosts> {
  const names = options.names ?? ["web1", "web2", "web3"];
  const mode = options.mode === "loopback" ? "loopback" : options.mode === "netns" || (await canUseNetns()) ? "netns" : "loopback";
  const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-hosts-"));
  await mkdir("/run/sshd", { recursive: true }).catch(() => undefined);
  const net = await claimNet();
  const tag = `${process.pid % 1000}${net}`.slice(-6);
  const bridge = `ndbr${tag}`;
  const cleanups: (() => Promise<unknown>)[] = [() => rm(netClaim(net), { force: true })];

  const clientKeyPath = path.join(dir, "id_client");
  const passphrase = "correct horse battery staple";
  const privateKey = await keygen(clientKeyPath, "ed25519", passphrase);
  const pemPath = path.join(dir, "id_pem");
  const pemKey = await keygen(pemPath, "rsa", "", "pem");
  const strangerPath = path.join(dir, "id_stranger");
  const strangerKey = await keygen(strangerPath, "ed25519");
  const authorized = (await readFile(`${clientKeyPath}.pub`, "utf8")) + (await readFile(`${pemPath}.pub`, "utf8"));

  if (mode === "netns") {
    await run("ip", ["link", "add", bridge, "type", "bridge"]);
    cleanups.push(() => run("ip", ["link", "del", bridge]).catch(() => undefined));
    await run("ip", ["addr", "add", `10.201.${net}.1/24`, "dev", bridge]);
    await run("ip", ["link", "set", bridge, "up"]);
  }

  const hosts: (Omit<TestHost, "knownHostsLine"> & { knownHostsLine: string })[] = [];
  const inHost = (host: { netns: string | undefined }, argv: string[]) => (host.netns ? ["ip", ["netns", "exec", host.netns, ...argv]] : [argv[0]!, argv.slice(1)]) as [string, string[]];

  for (const [index, name] of names.entries()) {
    const hostDir = path.join(dir, name);
    await mkdir(hostDir, { recursive: true });
    let address: string;
    let netns: string | undefined;
    if (mode === "netns") {
      netns = `nd${tag}h${index}`;
      address = `10.201.${net}.${10 + index}`;
      const outside = `ndv${tag}${index}a`.slice(0, 15);
      const inside = `ndv${tag}${index}b`.slice(0, 15);
      await run("ip", ["netns", "add", netns]);
      const ns = netns;
      // A host of its own has its own root home: `ip netns exec` bind-mounts /etc/netns/<ns>/passwd
      // over /etc/passwd, so sshd's sessions start in hostDir instead of this machine's /root, whose
      // shell start-up files (a pyenv init here) would cost every SSH command ~300 ms of CPU.
      const etc = path.join("/etc/netns", ns);
      await mkdir(etc, { recursive: true });
      const passwd = await readFile("/etc/passwd", "utf8");
      await writeFile(path.join(etc, "passwd"), passwd.replace(/^root:([^:]*):0:0:([^:]*):[^:]*:/m, `root:$1:0:0:$2:${hostDir}:`));
      cleanups.push(() => rm(etc, { recursive: true, force: true }));
      cleanups.push(async () => {
        // Processes left in the namespace (sshd, gunicorn) die with it only if killed first.
        const pids = await run("ip", ["netns", "pids", ns]).then((r) => r.stdout.split(/\s+/).filter(Boolean)).catch(() => []);
        for (const pid of pids) process.kill(Number(pid), "SIGKILL");
        await run("ip", ["netns", "del", ns]).catch(() => undefined);
      });
      await run("ip", ["link", "add", outside, "type", "veth", "peer", "name", inside]);
      await run("ip", ["link", "set", outside, "master", bridge]);
      await run("ip", ["link", "set", outside, "up"]);
      await run("ip", ["link", "set", inside, "netns", netns]);
      await run("ip", ["netns", "exec", netns, "ip", "addr", "add", `${address}/24`, "dev", inside]);
      await run("ip", ["netns", "exec", netns, "ip", "link", "set", inside, "up"]);
      await run("ip", ["netns", "exec", netns, "ip", "link", "set", "lo", "up"]);
      await run("ip", ["netns", "exec", netns, "ip", "route", "add", "default", "via", `10.201.${net}.1`]);
    } else {
      address = `127.0.${net}.${10 + index}`;
    }
    const sshPort = (Array.isArray(options.sshPort) ? options.sshPort[index] : options.sshPort) ?? (mode === "netns" ? 22 : 2222);
    const hostKeyPath = path.join(hostDir, "ssh_host_ed25519_key");
    await keygen(hostKeyPath, "ed25519");
    const hostPub = (await readFile(`${hostKeyPath}.pub`, "utf8")).trim().split(/\s+/);
    const fp = (await run("ssh-keygen", ["-l", "-E", "sha256", "-f", `${hostKeyPath}.pub`])).stdout.split(/\s+/)[1]!;
    await writeFile(path.join(hostDir, "authorized_keys"), authorized, { mode: 0o600 });
    await writeFile(
      path.join(hostDir, "sshd_config"),
      [
        `ListenAddress ${address}:${sshPort}`,
        `HostKey ${hostKeyPath}`,
        `PidFile ${path.join(hostDir, "sshd.pid")}`,
        `AuthorizedKeysFile ${path.join(hostDir, "authorized_keys")}`,
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM no",
        "StrictModes no",
        "AllowTcpForwarding yes",
        // Artifacts go over SFTP (OpenSSH's own server, in sshd's process: no binary to find).
        ...(options.sftp === false ? [] : ["Subsystem sftp internal-sftp"]),
        // A test may give one host's sessions another PATH (~/.ssh/environment: a shimmed `date` for clock skew).
        "PermitUserEnvironment PATH",
        "LogLevel VERBOSE",
        "",
      ].join("\n"),
    );
    // Filled in from ssh-keyscan once sshd runs; the key must be this one.
    hosts.push({ name, address, sshPort, netns, dir: hostDir, knownHostsLine: `${hostPub[0]} ${hostPub[1]}`, fingerprint: fp });
  }

  const host = (name: string) => {
    const found = hosts.find((h) => h.name === name);
    if (!found) throw new Error(`no test host ${name}`);
    return found;
  };
  const startSshd = async (name: string) => {
    const h = host(name);
    const [cmd, args] = inHost(h, [sshd, "-f", path.join(h.dir, "sshd_config"), "-E", path.join(h.dir, "sshd.log")]);
    await run(cmd, args);
    // sshd daemonizes before it binds its listener, so its exit does not mean the port is open yet.
    const [ssCmd, ssArgs] = inHost(h, ["ss", "-Htln", `( sport = :${h.sshPort} )`]);
    for (let attempt = 0; attempt < 200; attempt++) {
      const listening = await run(ssCmd, ssArgs).then((r) => r.stdout.includes(`${h.address}:${h.sshPort}`)).catch(() => false);
      if (listening) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`sshd on ${name} (${h.address}:${h.sshPort}) did not start listening within 10 s; see ${path.join(h.dir, "sshd.log")}`);
  };
  const stopSshd = async (name: string, options: { sessions?: boolean } = {}) => {
    const h = host(name);
    // The listener first, so nothing reconnects in between.
    const pid = Number((await readFile(path.join(h.dir, "sshd.pid"), "utf8").catch(() => "0")).trim());
    if (pid > 0) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    if (options.sessions) {
      // Session processes are sshd children serving established connections to this host's port.
      const out = await result.sh(name, `ss -Htnp state established '( sport = :${h.sshPort} )' src ${h.address} || true`);
      for (const match of out.matchAll(/pid=(\d+)/g)) {
        try {
          process.kill(Number(match[1]), "SIGKILL");
        } catch {
          // gone already
        }
      }
    }
  };
  const result: TestHosts = {
    mode,
    hosts,
    dir,
    get knownHosts() {
      return `${hosts.map((h) => h.knownHostsLine).join("\n")}\n`;
    },
    clientKey: { path: clientKeyPath, privateKey, passphrase },
    pemKey: { path: pemPath, privateKey: pemKey },
    strangerKey: { path: strangerPath, privateKey: strangerKey },
    host,
    async sh(name, command) {
      const [cmd, args] = inHost(host(name), ["bash", "-c", command]);
      return (await run(cmd, args)).stdout;
    },
    stopSshd,
    startSshd,
    async stop() {
      for (const h of hosts) await stopSshd(h.name);
      // Sessions started over SSH (and what they started) may outlive sshd: end them too.
      if (mode === "loopback") {
        await run("pkill", ["-KILL", "-f", dir]).catch(() => undefined);
      }
      for (const cleanup of cleanups.reverse()) await cleanup();
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    for (const h of hosts) await startSshd(h.name);
    for (const h of hosts) h.knownHostsLine = await keyscan(h.address, h.sshPort, h.knownHostsLine);
  } catch (error) {
    await result.stop();
    throw error;
  }
  return result;
}
