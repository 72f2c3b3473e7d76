// Starts what the tests run against: real gunicorn instances of the example fleet (examples/wsgi-fleet)
// behind a real HAProxy with its own config, stats sockets and pid file in a temporary directory.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { type ProxyInstance, shellQuote, sleep } from "@nodrop/core";
import { fleetCommands, fleetSh, instanceVersion } from "@nodrop/example-wsgi-fleet";

const run = promisify(execFile);


export interface HaproxyFleetOptions {
  ports: readonly number[];
  /** HAProxy's frontend listens here on 127.0.0.1. */
  proxyPort: number;
  /** The version the instances start on. */
  version: string;
}

export interface HaproxyFleet {
  readonly dir: string;
  /** The stats socket at level admin, which the adapter uses. */
  readonly socket: string;
  /** A second stats socket at level operator, to see check() refuse it. */
  readonly operatorSocket: string;
  readonly backend: string;
  /** The public URL, through HAProxy. */
  readonly url: string;
  readonly instances: readonly ProxyInstance[];
  /** The command templates a nodrop config would hold (the example fleet's, from fleetCommands). */
  readonly commands: { readonly stop: string; readonly update: string; readonly start: string };
  readonly haproxyVersion: string;
  readonly config: string;
  /** HAProxy's own view, read with raw commands: srv_admin_state from `show servers state`, status and scur from `show stat`. */
  servers(): Promise<Record<string, { admin: number; status: string; sessions: number }>>;
  /** Each instance's version, asked directly (not through HAProxy); "down" when it does not answer. */
  versions(): Promise<Record<string, string>>;
  /** Stops HAProxy and every instance and removes the directory. Safe to call twice. */
  stop(): Promise<void>;
}

function haproxyBinary(): string {
  for (const candidate of ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]) if (existsSync(candidate)) return candidate;
  return "haproxy";
}

/** The one-time haproxy.cfg a user writes: a backend with one server per instance, named by its id, and an admin stats socket. */
export function haproxyConfig(input: { dir: string; proxyPort: number; backend: string; instances: readonly ProxyInstance[] }): string {
  return `# HAProxy for the custom-adapter example (written by the test; the README explains each line)
global
    stats socket ${input.dir}/admin.sock mode 600 level admin
    stats socket ${input.dir}/operator.sock mode 600 level operator
    pidfile ${input.dir}/haproxy.pid
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 60s
    timeout http-keep-alive 30s
    # A refused connection is retried on another server; nothing else is (no retry-on: never a POST).
    retries 3
    option redispatch 1

frontend www
    bind 127.0.0.1:${input.proxyPort}
    default_backend ${input.backend}

backend ${input.backend}
    balance roundrobin
    # One request per server connection, as nginx does by default: gunicorn closes idle keep-alive
    # connections after 2 s, and HAProxy would not resend a POST sent into one just as it closed.
    option http-server-close
${input.instances.map((i) => `    server ${i.id} ${i.address}:${i.port}`).join("\n")}
`;
}

/** One raw runtime API command (independent of the adapter's client). */
function ask(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const connection = net.createConnection(socket);
    let answer = "";
    connection.setTimeout(5000, () => connection.destroy(new Error(`no answer to ${command}`)));
    connection.on("connect", () => connection.write(`${command}\n`));
    connection.on("data", (chunk) => (answer += chunk.toString()));
    connection.on("end", () => resolve(answer));
    connection.on("error", reject);
  });
}

export async function startHaproxyFleet(options: HaproxyFleetOptions): Promise<HaproxyFleet> {
  const binary = haproxyBinary();
  const version = await run(binary, ["-v"]).catch(() => {
    throw new Error("haproxy is not installed: apt-get install -y haproxy (bash .ci/run installs it)");
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-haproxy-"));
  const backend = "web";
  const instances: ProxyInstance[] = options.ports.map((port) => ({ id: `web-${port}`, host: "local", address: "127.0.0.1", port }));
  const configFile = path.join(dir, "haproxy.cfg");
  const config = haproxyConfig({ dir, proxyPort: options.proxyPort, backend, instances });
  const socket = path.join(dir, "admin.sock");
  let haproxy: ChildProcess | undefined;
  let output = "";
  let stopped = false;

  const fleet: HaproxyFleet = {
    dir,
    socket,
    operatorSocket: path.join(dir, "operator.sock"),
    backend,
    url: `http://127.0.0.1:${options.proxyPort}`,
    instances,
    commands: fleetCommands(shellQuote(dir)),
    haproxyVersion: /version (\S+)/.exec(version.stdout)?.[1] ?? version.stdout.split("\n")[0]!,
    config,
    async servers() {
      const state = (await ask(socket, `show servers state ${backend}`)).split("\n").filter((l) => /^\d+ /.test(l) && l.split(" ").length > 6);
      const csv = (await ask(socket, `show stat ${backend} 4 -1`)).split("\n");
      const header = csv[0]!.slice(2).split(",");
      const stat = csv.slice(1).filter((l) => l.includes(","));
      const out: Record<string, { admin: number; status: string; sessions: number }> = {};
      for (const line of state) {
        const f = line.split(" ");
        out[f[3]!] = { admin: Number(f[6]), status: "", sessions: 0 };
      }
      for (const line of stat) {
        const f = line.split(",");
        const entry = out[f[header.indexOf("svname")]!];
        if (entry) {
          entry.status = f[header.indexOf("status")]!;
          entry.sessions = Number(f[header.indexOf("scur")]);
        }
      }
      return out;
    },
    async versions() {
      const seen = await Promise.all(instances.map(instanceVersion));
      return Object.fromEntries(instances.map((i, index) => [i.id, seen[index]!]));
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (haproxy && haproxy.exitCode === null && haproxy.signalCode === null) {
        const exited = new Promise((resolve) => haproxy!.once("exit", resolve));
        haproxy.kill("SIGTERM");
        if (!(await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]))) {
          haproxy.kill("SIGKILL");
          await exited;
        }
      }
      await Promise.all(options.ports.map((port) => run(fleetSh, [dir, "stop", String(port)]).catch(() => undefined)));
      await rm(dir, { recursive: true, force: true });
    },
  };

  try {
    await Promise.all(
      options.ports.map(async (port) => {
        await run(fleetSh, [dir, "update", String(port), options.version]);
        await run(fleetSh, [dir, "start", String(port), "127.0.0.1"]);
      }),
    );
    await writeFile(configFile, config);
    await run(binary, ["-c", "-q", "-f", configFile]);
    // In the foreground (-db): a child of this process, ended by stop().
    haproxy = spawn(binary, ["-db", "-f", configFile], { stdio: ["ignore", "pipe", "pipe"] });
    haproxy.stdout!.on("data", (d: Buffer) => (output += d.toString()));
    haproxy.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    await waitFor(async () => (await ask(socket, "show cli level")).trim() === "admin", 10_000, () => `HAProxy's stats socket (${output.trim()})`);
    await waitFor(async () => Object.values(await fleet.versions()).every((v) => v === options.version), 20_000, () => `instances on ${options.version}`);
    await waitFor(async () => (await get(fleet.url, "/")).status === 200, 10_000, () => "HAProxy serving");
  } catch (error) {
    await fleet.stop();
    throw error;
  }
  return fleet;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
    await sleep(100);
  }
}

/** One GET on its own connection; resolves with the status and the instance that answered. */
export function get(base: string, pathname: string): Promise<{ status: number; instance: string | undefined; version: string | undefined }> {
  return new Promise((resolve, reject) => {
    const request = http.get(`${base}${pathname}`, { agent: false, timeout: 10_000 }, (response) => {
      response.resume();
      response.on("end", () =>
        resolve({
          status: response.statusCode ?? 0,
          instance: response.headers["x-app-instance"] as string | undefined,
          version: response.headers["x-app-version"] as string | undefined,
        }),
      );
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error(`no answer from ${base}${pathname}`)));
    request.on("error", reject);
  });
}

/** Sends `count` GETs through the proxy, 4 at a time; counts answers by instance and status. */
export async function spread(base: string, count: number): Promise<{ byInstance: Record<string, number>; byStatus: Record<string, number> }> {
  const byInstance: Record<string, number> = {};
  const byStatus: Record<string, number> = {};
  let next = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < count) {
        next += 1;
        const answer = await get(base, "/");
        byStatus[answer.status] = (byStatus[answer.status] ?? 0) + 1;
        if (answer.instance) byInstance[answer.instance] = (byInstance[answer.instance] ?? 0) + 1;
      }
    }),
  );
  return { byInstance, byStatus };
}
