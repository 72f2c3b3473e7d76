import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { loadDeployment } from "@nodrop/deployment";
import { type InstanceSpec, shellQuote, sleep } from "@nodrop/core";
import { NODROP_LOG_FORMAT } from "@nodrop/nginx";
import { type TestHosts, stopNginx } from "@nodrop/testhosts";
import { stringify } from "yaml";

const run = promisify(execFile);

/** examples/wsgi-fleet, where fleet.sh, app/ and releases/ live. */
export const exampleDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The script that controls one instance: `fleet.sh FLEET_DIR start PORT [ADDRESS] | stop PORT | update PORT VERSION`. */
export const fleetSh = path.join(exampleDir, "fleet.sh");

/** The config's command templates for instances whose state lives in `fleetArg` (already shell-quoted; may hold {host}). */
export function fleetCommands(fleetArg: string, releases = false): { stop: string; update: string; start: string } {
  return {
    stop: `${shellQuote(fleetSh)} ${fleetArg} stop {port}`,
    update: `${shellQuote(fleetSh)} ${fleetArg} update {port} {version}${releases ? " {release}" : ""}`,
    start: `${shellQuote(fleetSh)} ${fleetArg} start {port} {address}`,
  };
}

/**
 * The version an instance reports on /health, probed directly: "down" when it does not answer.
 * A probe that timed out is tried again (up to three times, 5 s each): test files run side by
 * side, and a busy machine must not make a running instance look down in a before/after snapshot.
 * A refused connection is "down" at once.
 */
export async function instanceVersion(instance: { readonly address: string; readonly port: number }): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await fetch(`http://${instance.address}:${instance.port}/health`, { signal: AbortSignal.timeout(5000) });
      return response.headers.get("x-app-version") ?? "unknown";
    } catch (error) {
      const timedOut = (error as Error).name === "TimeoutError";
      if (!timedOut || attempt >= 3) return "down";
    }
  }
}

export interface FleetOptions {
  /** Working directory; a fresh temporary one by default. */
  dir?: string;
  /** Instance ports (default 8011-8014; on each host when `hosts` is given). */
  ports?: readonly number[];
  /** nginx listens here on 127.0.0.1 (default 18080). */
  proxyPort?: number;
  /** Version the instances start on (default v1). */
  version?: string;
  /** Strategy section written into the config (default rolling, one at a time). */
  strategy?: Record<string, unknown>;
  /** nginx worker processes (default 2). */
  nginxWorkers?: number;
  /** Health settings merged into the config's health section. */
  health?: Record<string, unknown>;
  /** Run the instances on these SSH test hosts instead of this machine; nodrop reaches them over SSH. */
  hosts?: TestHosts;
  /** SSH settings merged into every host entry (e.g. a wrong key, for tests). */
  ssh?: Record<string, unknown>;
  /** Proxy settings merged into the config's proxy section (e.g. drainTimeout). */
  proxy?: Record<string, unknown>;
  /** nginx's worker_shutdown_timeout in seconds (default 30). */
  workerShutdownTimeout?: number;
  /**
   * A release section: each host keeps releases in its own directory (`releasesDir`), and update
   * links the instance to `{release}` instead of the repository's ./releases/<version>. With
   * `prepare`, that is commands.prepare.
   */
  releases?: { prepare?: string; artifact?: string; keep?: number };
  /** gunicorn's --graceful-timeout in whole seconds, the longest a stop waits for requests (default 10). */
  gracefulTimeout?: number;
  /** commands.timeout in the config (default 60s). */
  commandTimeout?: string;
  /** A verify section for the config; its url defaults to the fleet's public URL. */
  verify?: Record<string, unknown>;
  /** nginx writes an access log (logs/access.log: status, user agent, version that answered), for counting requests. */
  accessLog?: boolean;
  /** nginx also writes nodrop's own access log (logs/nodrop.log, NODROP_LOG_FORMAT), set as proxy.accessLog: a canary's gates read it. */
  canaryLog?: boolean;
  /** Gives every instance a spare port, port + offset (config `slots.offset`): two slots each. */
  slotOffset?: number;
  /**
   * With `hosts`: run nginx on these test hosts (each its own prefix, on its own address and
   * `proxyPort`), several proxies in front of the fleet (config `proxy.hosts`); the instances run on
   * the other hosts. The first keeps the deploy lock and the journal.
   */
  proxyHosts?: readonly string[];
  /** With `proxyHosts`: adapter options of one proxy host, over the shared ones (e.g. another nginx binary). */
  proxyHostOptions?: Readonly<Record<string, Record<string, unknown>>>;
}

/** One nginx of a fleet with several proxies. */
export interface FleetProxy {
  readonly host: string;
  readonly url: string;
  readonly includeFile: string;
  readonly pidFile: string;
  readonly dir: string;
  /** Runs nginx with this proxy's prefix and conf, on its host (its network namespace). */
  nginx(...args: string[]): Promise<string>;
}

export interface FleetInstance {
  readonly id: string;
  readonly host: string;
  readonly address: string;
  readonly port: number;
}

export interface Fleet {
  readonly dir: string;
  /** The nodrop config for this fleet. */
  readonly configFile: string;
  /** The public URL through nginx (the first proxy's, with several). */
  readonly url: string;
  /** With `proxyHosts`: each proxy, in order; empty otherwise. */
  readonly proxies: readonly FleetProxy[];
  readonly ports: readonly number[];
  /** The spare ports, with `slotOffset` (port + offset, in the order of `ports`); none otherwise. */
  readonly sparePorts: readonly number[];
  readonly instances: readonly FleetInstance[];
  readonly nginxConf: string;
  readonly includeFile: string;
  readonly pidFile: string;
  /** nginx's access log when `accessLog` was set: `<status> <version or -> "<user agent>"` per request. */
  readonly accessLogFile: string;
  /** nodrop's access log when `canaryLog` was set (NODROP_LOG_FORMAT). */
  readonly canaryLogFile: string;
  /** Runs nginx with this fleet's prefix and conf. */
  nginx(...args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** Each instance's version, probed directly ("down" when it does not answer), by port (local) or id; with slots, both ports (local) or `id:port`. */
  versions(): Promise<Record<string, string>>;
  /** Stops nginx and every instance, and removes the directory it created. */
  stop(): Promise<void>;
}

/**
 * Starts the example fleet: gunicorn instances on v1 behind a user-owned nginx prefix, on this
 * machine or on SSH test hosts.
 */
export async function startFleet(options: FleetOptions = {}): Promise<Fleet> {
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? (await mkdtemp(path.join(os.tmpdir(), "nodrop-fleet-")));
  const ports = options.ports ?? [8011, 8012, 8013, 8014];
  const proxyPort = options.proxyPort ?? 18080;
  const version = options.version ?? "v1";
  const remote = options.hosts;
  const offset = options.slotOffset;
  const sparePorts = offset === undefined ? [] : ports.map((port) => port + offset);
  await mkdir(path.join(dir, "nodrop"), { recursive: true });
  await mkdir(path.join(dir, "logs"), { recursive: true });
  await mkdir(path.join(dir, "tmp"), { recursive: true });
  const nginxConf = path.join(dir, "nginx.conf");
  const includeFile = path.join(dir, "nodrop", "web.conf");
  const pidFile = path.join(dir, "nginx.pid");
  const errorLog = path.join(dir, "logs", "error.log");

  const proxyHosts = options.proxyHosts ?? [];
  if (proxyHosts.length > 0 && !remote) throw new Error("startFleet: proxyHosts needs hosts");
  const instances: FleetInstance[] = remote
    ? remote.hosts.filter((h) => !proxyHosts.includes(h.name)).flatMap((h) => ports.map((port) => ({ id: `${h.name}-${port}`, host: h.name, address: h.address, port })))
    : ports.map((port) => ({ id: `web-${port}`, host: "local", address: "127.0.0.1", port }));
  // Each host keeps its instances' state in its own directory (hosts share this machine's disk).
  const fleetDir = (host: string) => (remote ? path.join(remote.host(host).dir, "fleet") : dir);
  const onHost = (host: string, args: string[]) =>
    remote ? remote.sh(host, [fleetSh, ...args].map((a) => shellQuote(a)).join(" ")) : run(fleetSh, args).then((r) => r.stdout);

  const accessLogFile = path.join(dir, "logs", "access.log");
  const canaryLogFile = path.join(dir, "logs", "nodrop.log");
  await writeFile(
    nginxConf,
    nginxConfText({ dir, includeFile, pidFile, errorLog, proxyPort, workers: options.nginxWorkers ?? 2, shutdownTimeout: options.workerShutdownTimeout ?? 30, ...(options.accessLog ? { accessLog: accessLogFile } : {}), ...(options.canaryLog ? { canaryLog: canaryLogFile } : {}) }),
  );
  const proxies = await Promise.all(proxyHosts.map((name) => fleetProxy(remote!, name, proxyPort, { workers: options.nginxWorkers ?? 2, shutdownTimeout: options.workerShutdownTimeout ?? 30 })));
  const configFile = path.join(dir, "nodrop.yaml");
  // On remote hosts each host's fleet directory differs; the template reads it from the host name.
  const fleetArg = remote ? `${shellQuote(remote.dir)}/{host}/fleet` : shellQuote(dir);
  const config: Record<string, unknown> = {
    app: "web",
    ...(remote
      ? {
          ssh: { user: "root", privateKeyFile: remote.pemKey.path, knownHosts: remote.knownHosts, ...options.ssh },
          hosts: Object.fromEntries(remote.hosts.map((h) => [h.name, { address: h.address, port: h.sshPort }])),
        }
      : {}),
    instances: remote ? instances.map(({ id, host, address, port }) => ({ id, host, address, port })) : instances.map(({ id, port }) => ({ id, port })),
    commands: {
      ...fleetCommands(fleetArg, options.releases !== undefined),
      ...(options.releases?.prepare ? { prepare: options.releases.prepare } : {}),
      timeout: options.commandTimeout ?? "60s",
    },
    ...(options.releases
      ? { release: { dir: remote ? `${remote.dir}/{host}/releases` : path.join(dir, "releases"), ...(options.releases.artifact ? { artifact: options.releases.artifact } : {}), ...(options.releases.keep ? { keep: options.releases.keep } : {}) } }
      : {}),
    health: { path: "/health", versionHeader: "X-App-Version", interval: "100ms", successes: 2, deadline: "20s", ...options.health },
    proxy:
      proxies.length > 0
        ? { type: "nginx", drainTimeout: "60s", hosts: proxies.map((p) => ({ host: p.host, configFile: p.includeFile, prefix: p.dir, conf: path.join(p.dir, "nginx.conf"), pidFile: p.pidFile, errorLog: path.join(p.dir, "logs", "error.log"), ...options.proxyHostOptions?.[p.host] })), ...options.proxy }
        : { type: "nginx", configFile: includeFile, prefix: dir, conf: nginxConf, pidFile, errorLog, drainTimeout: "60s", ...(options.canaryLog ? { accessLog: canaryLogFile } : {}), ...options.proxy },
    strategy: options.strategy ?? { name: "rolling", batchSize: 1 },
    ...(options.slotOffset === undefined ? {} : { slots: { offset: options.slotOffset } }),
    ...(options.verify ? { verify: { url: `http://127.0.0.1:${proxyPort}/`, ...options.verify } } : {}),
    stateDir: path.join(dir, "state"),
  };
  await writeFile(configFile, `# nodrop config for the example fleet in ${dir}\n${stringify(config)}`);

  const isSpare = (key: string) => sparePorts.some((port) => key === String(port) || key.endsWith(`:${port}`));
  const fleet: Fleet = {
    dir,
    configFile,
    url: proxies[0]?.url ?? `http://127.0.0.1:${proxyPort}`,
    proxies,
    ports,
    sparePorts,
    instances,
    nginxConf,
    includeFile,
    pidFile,
    accessLogFile,
    canaryLogFile,
    nginx: (...args) => run("nginx", ["-p", dir, "-c", nginxConf, ...args]),
    async versions() {
      const slots = instances.flatMap((i) => [{ ...i, key: remote ? i.id : String(i.port) }, ...(offset === undefined ? [] : [{ ...i, port: i.port + offset, key: remote ? `${i.id}:${i.port + offset}` : String(i.port + offset) }])]);
      const seen = await Promise.all(slots.map(instanceVersion));
      // Keys in instance order, so two snapshots compare equal when nothing changed.
      return Object.fromEntries(slots.map((slot, index) => [slot.key, seen[index]!]));
    },
    async stop() {
      await Promise.all(proxies.map((p) => stopNginx(p.pidFile)));
      await stopNginx(pidFile);
      const all = instances.flatMap((i) => [i, ...(offset === undefined ? [] : [{ ...i, port: i.port + offset }])]);
      await Promise.all(all.map((i) => onHost(i.host, [fleetDir(i.host), "stop", String(i.port)]).catch(() => undefined)));
      if (ownDir) await rm(dir, { recursive: true, force: true });
    },
  };

  try {
    if (options.gracefulTimeout !== undefined) {
      if (!Number.isInteger(options.gracefulTimeout) || options.gracefulTimeout < 0) throw new Error(`startFleet: gracefulTimeout ${options.gracefulTimeout} is not a whole number of seconds`);
      // Hosts share this machine's disk, so their fleet directories are written from here.
      for (const host of new Set(instances.map((i) => i.host))) {
        await mkdir(fleetDir(host), { recursive: true });
        await writeFile(path.join(fleetDir(host), "graceful-timeout"), `${options.gracefulTimeout}\n`);
      }
    }
    await Promise.all(
      instances.map(async (i) => {
        await onHost(i.host, [fleetDir(i.host), "update", String(i.port), version]);
        await onHost(i.host, [fleetDir(i.host), "start", String(i.port), i.address]);
      }),
    );
    // The one-time setup a user does: create the include file nodrop owns, then start nginx.
    const specs: InstanceSpec[] = instances.map(({ id, host, address, port }) => ({ id, host, address, port, ...(offset === undefined ? {} : { slots: [port, port + offset] as const }) }));
    // What `nodrop init` does: write the strategy's routing at rest (a consistent-hash ring for sticky).
    const deployment = await loadDeployment(configFile);
    await deployment.proxy.initialize!(deployment.steadyRouting, specs);
    await deployment.dispose();
    if (proxies.length > 0) await Promise.all(proxies.map((p) => p.nginx()));
    else await fleet.nginx();
    await waitFor(async () => Object.entries(await fleet.versions()).every(([key, v]) => v === version || isSpare(key)), 20_000, `instances on ${version}`);
    for (const url of proxies.length > 0 ? proxies.map((p) => p.url) : [fleet.url]) await waitFor(async () => (await fetch(url, { signal: AbortSignal.timeout(2000) })).ok, 10_000, `nginx serving at ${url}`);
  } catch (error) {
    await fleet.stop();
    throw error;
  }
  return fleet;
}

/** Sets up an nginx prefix on a test host, listening on its address (started later, in its namespace). */
async function fleetProxy(remote: TestHosts, name: string, proxyPort: number, settings: { workers: number; shutdownTimeout: number }): Promise<FleetProxy> {
  const host = remote.host(name);
  const dir = path.join(host.dir, "nginx");
  for (const sub of ["nodrop", "logs", "tmp"]) await mkdir(path.join(dir, sub), { recursive: true });
  const conf = path.join(dir, "nginx.conf");
  const includeFile = path.join(dir, "nodrop", "web.conf");
  const pidFile = path.join(dir, "nginx.pid");
  await writeFile(conf, nginxConfText({ dir, includeFile, pidFile, errorLog: path.join(dir, "logs", "error.log"), proxyPort, listenAddress: host.address, ...settings }));
  const address = host.address.includes(":") ? `[${host.address}]` : host.address;
  return {
    host: name,
    url: `http://${address}:${proxyPort}`,
    includeFile,
    pidFile,
    dir,
    nginx: (...args) => remote.sh(name, ["nginx", "-p", dir, "-c", conf, ...args].map((a) => shellQuote(a)).join(" ")),
  };
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

interface NginxConfInput {
  dir: string;
  includeFile: string;
  pidFile: string;
  errorLog: string;
  proxyPort: number;
  /** Where nginx listens (default 127.0.0.1). */
  listenAddress?: string;
  workers: number;
  shutdownTimeout: number;
  /** Where to write an access log; none when absent (the default: it costs time under load). */
  accessLog?: string;
  /** Where to write nodrop's access log (a canary's gates read it). */
  canaryLog?: string;
}

/**
 * The site config a user writes once. Its two nodrop lines: the include of the file nodrop owns,
 * and proxy_pass to the pool variable that file defines.
 */
export function nginxConfText(input: NginxConfInput): string {
  const temp = (name: string) => path.join(input.dir, "tmp", name);
  return `# nginx for the nodrop example fleet (user-owned prefix; started with -p and -c)
worker_processes ${input.workers};
pid ${input.pidFile};
# notice: nodrop reads reload failures ([emerg]) from here
error_log ${input.errorLog} notice;
# bounds every drain; above the longest legitimate request
worker_shutdown_timeout ${input.shutdownTimeout}s;

events { worker_connections 4096; }

http {
    ${input.accessLog ? `log_format nodrop_count '$status $upstream_http_x_app_version "$http_user_agent"';
    access_log ${input.accessLog} nodrop_count;` : input.canaryLog ? "" : "access_log off;"}
    ${input.canaryLog ? `${NODROP_LOG_FORMAT}   # nodrop's format: a canary's gates read it
    access_log ${input.canaryLog} nodrop;` : ""}
    client_body_temp_path ${temp("body")};
    proxy_temp_path ${temp("proxy")};
    fastcgi_temp_path ${temp("fastcgi")};
    uwsgi_temp_path ${temp("uwsgi")};
    scgi_temp_path ${temp("scgi")};

    include ${input.includeFile};   # nodrop line 1: the file nodrop owns

    server {
        listen ${input.listenAddress ?? "127.0.0.1"}:${input.proxyPort};
        keepalive_timeout 30s;
        keepalive_requests 100000;
        location / {
            proxy_pass http://$nodrop_web_pool;   # nodrop line 2: the pool nodrop steers
            add_header Set-Cookie $nodrop_web_cookie always;  # nodrop line 3: pins a client to the version that served it
            proxy_next_upstream error timeout;     # the default: never add non_idempotent
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
        }
    }
}
`;
}
