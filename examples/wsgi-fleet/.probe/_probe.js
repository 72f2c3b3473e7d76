// src/_probe.ts
import { execFile as execFile2 } from "child_process";
import { promisify as promisify2 } from "util";

// src/fleet.ts
import { execFile } from "child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "fs/promises";
import os from "os";
import path from "path";
import { fileURLToPath } from "url";
import { promisify } from "util";
import { loadDeployment } from "@nodrop/deployment";
import { shellQuote, sleep } from "@nodrop/core";
import { stringify } from "yaml";
var run = promisify(execFile);
var exampleDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
var fleetSh = path.join(exampleDir, "fleet.sh");
function fleetCommands(fleetArg) {
  return {
    stop: `${shellQuote(fleetSh)} ${fleetArg} stop {port}`,
    update: `${shellQuote(fleetSh)} ${fleetArg} update {port} {version}`,
    start: `${shellQuote(fleetSh)} ${fleetArg} start {port} {address}`
  };
}
async function instanceVersion(instance) {
  try {
    const response = await fetch(`http://${instance.address}:${instance.port}/health`, { signal: AbortSignal.timeout(2e3) });
    return response.headers.get("x-app-version") ?? "unknown";
  } catch {
    return "down";
  }
}
async function startFleet(options = {}) {
  const ownDir = options.dir === void 0;
  const dir = options.dir ?? await mkdtemp(path.join(os.tmpdir(), "nodrop-fleet-"));
  const ports = options.ports ?? [8011, 8012, 8013, 8014];
  const proxyPort = options.proxyPort ?? 18080;
  const version = options.version ?? "v1";
  const remote = options.hosts;
  const offset2 = options.slotOffset;
  const sparePorts = offset2 === void 0 ? [] : ports.map((port) => port + offset2);
  await mkdir(path.join(dir, "nodrop"), { recursive: true });
  await mkdir(path.join(dir, "logs"), { recursive: true });
  await mkdir(path.join(dir, "tmp"), { recursive: true });
  const nginxConf = path.join(dir, "nginx.conf");
  const includeFile = path.join(dir, "nodrop", "web.conf");
  const pidFile = path.join(dir, "nginx.pid");
  const errorLog = path.join(dir, "logs", "error.log");
  const instances = remote ? remote.hosts.flatMap((h) => ports.map((port) => ({ id: `${h.name}-${port}`, host: h.name, address: h.address, port }))) : ports.map((port) => ({ id: `web-${port}`, host: "local", address: "127.0.0.1", port }));
  const fleetDir = (host) => remote ? path.join(remote.host(host).dir, "fleet") : dir;
  const onHost = (host, args) => remote ? remote.sh(host, [fleetSh, ...args].map((a) => shellQuote(a)).join(" ")) : run(fleetSh, args).then((r) => r.stdout);
  const accessLogFile = path.join(dir, "logs", "access.log");
  await writeFile(
    nginxConf,
    nginxConfText({ dir, includeFile, pidFile, errorLog, proxyPort, workers: options.nginxWorkers ?? 2, shutdownTimeout: options.workerShutdownTimeout ?? 30, ...options.accessLog ? { accessLog: accessLogFile } : {} })
  );
  const configFile = path.join(dir, "nodrop.yaml");
  const fleetArg = remote ? `${shellQuote(remote.dir)}/{host}/fleet` : shellQuote(dir);
  const config = {
    app: "web",
    ...remote ? {
      ssh: { user: "root", privateKeyFile: remote.pemKey.path, knownHosts: remote.knownHosts, ...options.ssh },
      hosts: Object.fromEntries(remote.hosts.map((h) => [h.name, { address: h.address, port: h.sshPort }]))
    } : {},
    instances: remote ? instances.map(({ id, host, address, port }) => ({ id, host, address, port })) : instances.map(({ id, port }) => ({ id, port })),
    commands: {
      ...fleetCommands(fleetArg),
      timeout: options.commandTimeout ?? "60s"
    },
    health: { path: "/health", versionHeader: "X-App-Version", interval: "100ms", successes: 2, deadline: "20s", ...options.health },
    proxy: { type: "nginx", configFile: includeFile, prefix: dir, conf: nginxConf, pidFile, errorLog, drainTimeout: "60s", ...options.proxy },
    strategy: options.strategy ?? { name: "rolling", batchSize: 1 },
    ...options.slotOffset === void 0 ? {} : { slots: { offset: options.slotOffset } },
    ...options.verify ? { verify: { url: `http://127.0.0.1:${proxyPort}/`, ...options.verify } } : {},
    stateDir: path.join(dir, "state")
  };
  await writeFile(configFile, `# nodrop config for the example fleet in ${dir}
${stringify(config)}`);
  const isSpare = (key) => sparePorts.some((port) => key === String(port) || key.endsWith(`:${port}`));
  const fleet2 = {
    dir,
    configFile,
    url: `http://127.0.0.1:${proxyPort}`,
    ports,
    sparePorts,
    instances,
    nginxConf,
    includeFile,
    pidFile,
    accessLogFile,
    nginx: (...args) => run("nginx", ["-p", dir, "-c", nginxConf, ...args]),
    async versions() {
      const slots = instances.flatMap((i) => [{ ...i, key: remote ? i.id : String(i.port) }, ...offset2 === void 0 ? [] : [{ ...i, port: i.port + offset2, key: remote ? `${i.id}:${i.port + offset2}` : String(i.port + offset2) }]]);
      const seen = await Promise.all(slots.map(instanceVersion));
      return Object.fromEntries(slots.map((slot, index) => [slot.key, seen[index]]));
    },
    async stop() {
      try {
        const pid = Number((await readFile(pidFile, "utf8")).trim());
        process.kill(pid, "SIGTERM");
        for (let i = 0; i < 100; i++) {
          try {
            process.kill(pid, 0);
            await sleep(50);
          } catch {
            break;
          }
        }
      } catch {
      }
      const all = instances.flatMap((i) => [i, ...offset2 === void 0 ? [] : [{ ...i, port: i.port + offset2 }]]);
      await Promise.all(all.map((i) => onHost(i.host, [fleetDir(i.host), "stop", String(i.port)]).catch(() => void 0)));
      if (ownDir) await rm(dir, { recursive: true, force: true });
    }
  };
  try {
    await Promise.all(
      instances.map(async (i) => {
        await onHost(i.host, [fleetDir(i.host), "update", String(i.port), version]);
        await onHost(i.host, [fleetDir(i.host), "start", String(i.port), i.address]);
      })
    );
    const specs = instances.map(({ id, host, address, port }) => ({ id, host, address, port, ...offset2 === void 0 ? {} : { slots: [port, port + offset2] } }));
    const deployment = await loadDeployment(configFile);
    await deployment.proxy.initialize(deployment.steadyRouting, specs);
    await deployment.dispose();
    await fleet2.nginx();
    await waitFor(async () => Object.entries(await fleet2.versions()).every(([key, v]) => v === version || isSpare(key)), 2e4, `instances on ${version}`);
    await waitFor(async () => (await fetch(fleet2.url, { signal: AbortSignal.timeout(2e3) })).ok, 1e4, "nginx serving");
  } catch (error) {
    await fleet2.stop();
    throw error;
  }
  return fleet2;
}
async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (; ; ) {
    try {
      if (await check()) return;
    } catch {
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
function nginxConfText(input) {
  const temp = (name) => path.join(input.dir, "tmp", name);
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
    access_log ${input.accessLog} nodrop_count;` : "access_log off;"}
    client_body_temp_path ${temp("body")};
    proxy_temp_path ${temp("proxy")};
    fastcgi_temp_path ${temp("fastcgi")};
    uwsgi_temp_path ${temp("uwsgi")};
    scgi_temp_path ${temp("scgi")};

    include ${input.includeFile};   # nodrop line 1: the file nodrop owns

    server {
        listen 127.0.0.1:${input.proxyPort};
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

// src/_probe.ts
var run2 = promisify2(execFile2);
var offset = process.argv[2] === "slots" ? 1e3 : void 0;
var fleet = await startFleet({ ports: [8741, 8742, 8743, 8744], proxyPort: 18301, strategy: { name: offset ? "blue-green" : "half-split" }, ...offset ? { slotOffset: offset } : {} });
try {
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now();
    const r = await run2("node", ["packages/cli/dist/bin.js", "plan", "--config", fleet.configFile, "--version", "v2"], { cwd: process.cwd() }).catch((e) => e);
    console.log(`plan ${(performance.now() - t0).toFixed(0)} ms`, i === 0 ? String(r.stdout).slice(0, 300) + String(r.stderr).slice(0, 300) : "");
  }
} finally {
  await fleet.stop();
}
