import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import {
  type DeployReport,
  type Executor,
  NodropError,
  deploy,
  loadConfig,
  observeInstances,
  planDeploy,
  servingInstances,
  toNodropError,
} from "@nodrop/core";
import { initNginxConfig, nginxProxy } from "@nodrop/nginx";
import type { SshExecutor } from "@nodrop/ssh";
import { type Output, fleetConverged, formatPlan, formatReport, progressReporter, table } from "./reporter.js";
import { checkVersion, createDeployment } from "./setup.js";

export const USAGE = `nodrop: deploy new code to app instances behind nginx without dropping a request

usage:
  nodrop deploy --config FILE --version V [--strategy S] [--json]
  nodrop plan   --config FILE --version V [--strategy S] [--json]   prints the steps; touches nothing
  nodrop status --config FILE [--json]                              versions, health and pool membership
  nodrop init   --config FILE                                       writes the proxy file nodrop owns, once
  nodrop --version | --help

deploy exits 0 only when every instance runs V and is in the pool.`;

export interface Io {
  stdout: Output;
  stderr: Output;
  signal?: AbortSignal;
}

const VERSION: string = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

/** Runs the CLI and returns the exit code. */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (error) {
    const e = toNodropError(error, "E_ARGS");
    io.stderr.write(`nodrop: error [${e.code}]: ${e.message}\n`);
    return e.code === "E_ARGS" || e.code === "E_CONFIG" ? 2 : 1;
  }
}

async function dispatch(argv: readonly string[], io: Io): Promise<number> {
  // `--version` alone prints nodrop's version; with a command it is the version to deploy.
  if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-V")) {
    io.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: "string", short: "c" },
      version: { type: "string" },
      strategy: { type: "string", short: "s" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const command = positionals[0];
  if (values.help || command === "help") {
    io.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (command === undefined) throw new NodropError("E_ARGS", `a command is required\n${USAGE}`);
  if (positionals.length > 1) throw new NodropError("E_ARGS", `unexpected argument "${positionals[1]}"`);
  if (!["deploy", "plan", "status", "init"].includes(command)) throw new NodropError("E_ARGS", `unknown command "${command}"\n${USAGE}`);
  if (!values.config) throw new NodropError("E_ARGS", "--config is required (the nodrop YAML file)");
  const config = await loadConfig(values.config);
  const deployment = createDeployment(config, { strategy: values.strategy }, { log: (message) => io.stderr.write(`nodrop: ${message}\n`) });
  try {
    switch (command) {
      case "plan": {
        const version = checkVersion(values.version);
        const { plan, observed } = await planDeploy({ ...deployment.options, version, signal: io.signal });
        io.stdout.write(values.json ? `${JSON.stringify({ plan, observed }, null, 2)}\n` : `${formatPlan(plan, observed)}\n`);
        return 0;
      }
      case "deploy": {
        const version = checkVersion(values.version);
        const report: DeployReport = await deploy({
          ...deployment.options,
          version,
          signal: io.signal,
          onEvent: progressReporter(values.json ? io.stderr : io.stdout),
        });
        const ssh = sshConnections(deployment.executors);
        if (values.json) io.stdout.write(`${JSON.stringify(ssh ? { ...report, ssh } : report, null, 2)}\n`);
        else io.stdout.write(`\n${formatReport(report)}${ssh ? `\nssh: ${ssh.connections} connections to ${ssh.hosts} hosts` : ""}\n`);
        if (report.error) io.stderr.write(`nodrop: error [${report.error.code}]: ${report.error.message}\n`);
        return fleetConverged(report) ? 0 : 1;
      }
      case "status": {
        const check = await deployment.proxy.check({ signal: io.signal });
        const routing = await deployment.proxy.current({ signal: io.signal });
        const observed = await observeInstances(deployment.options.instances, deployment.options.health, { signal: io.signal });
        const serving = routing ? servingInstances(routing) : undefined;
        const instances = observed.map((i) => ({ ...i, inPool: serving ? serving.has(i.id) : undefined }));
        if (values.json) {
          io.stdout.write(`${JSON.stringify({ proxy: check, routing, instances }, null, 2)}\n`);
        } else {
          const rows = instances.map((i) => [i.id, `${i.address}:${i.port}`, i.version ?? "?", i.healthy ? "healthy" : "unhealthy", i.inPool === undefined ? "?" : i.inPool ? "yes" : "no"]);
          io.stdout.write(`${table([["instance", "address", "version", "health", "in pool"], ...rows]).join("\n")}\n`);
          io.stdout.write(`proxy ${deployment.proxy.name}: ${check.ok ? "ready" : "NOT READY"}\n  ${check.details.join("\n  ")}\n`);
        }
        return check.ok && instances.every((i) => i.healthy) ? 0 : 1;
      }
      case "init": {
        const proxy = deployment.proxy as ReturnType<typeof nginxProxy>;
        const specs = config.instances;
        const wrote = await initNginxConfig(proxy, deployment.proxyExecutor, deployment.steadyRouting, specs);
        io.stdout.write(
          `${wrote ? `wrote ${proxy.file} (all ${specs.length} instances in one pool)` : `${proxy.file} exists; left as it is`}\n` +
            `one-time nginx setup, then reload nginx yourself:\n  inside http {}:        include ${proxy.file};\n  in your location:      proxy_pass http://$nodrop_${config.app.replace(/[^A-Za-z0-9_]/g, "_")}_pool;\n`,
        );
        return 0;
      }
    }
    return 2;
  } finally {
    await deployment.dispose();
  }
}

/** SSH connections the deploy opened, for the report (one per host touched is the goal). */
function sshConnections(executors: ReadonlyMap<string, Executor>): { connections: number; hosts: number } | undefined {
  let connections = 0;
  let hosts = 0;
  for (const executor of executors.values()) {
    const count = (executor as Partial<SshExecutor>).connectionsOpened?.();
    if (count === undefined) continue;
    connections += count;
    if (count > 0) hosts += 1;
  }
  return hosts > 0 ? { connections, hosts } : undefined;
}
