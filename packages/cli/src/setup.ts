import {
  type ConfigIssue,
  type DeployOptions,
  type Executor,
  type NodropConfig,
  NodropError,
  type Proxy,
  type Routing,
  SAFE_NAME,
  commandInstance,
  hostHealthCheck,
  httpHealthCheck,
  httpVerifier,
  localExecutor,
  parseDuration,
  schema,
  sectionOptions,
  singlePool,
} from "@nodrop/core";
import { type HostSetupOptions, secretEnvNames, sshExecutorFactories } from "./hosts.js";
import { findProxy, findStrategy, proxies, strategies } from "./registry.js";

export interface Deployment {
  /** The routing of the fleet at rest, as the strategy wants it (affinity for sticky). */
  readonly steadyRouting: Routing;
  readonly options: Omit<DeployOptions<unknown>, "version">;
  readonly proxy: Proxy;
  /** Runs commands on the proxy's host. */
  readonly proxyExecutor: Executor;
  /**
   * A second executor for the proxy's host (over SSH, its own connection), for the deploy lock's
   * heartbeat alone: a deploy whose commands fill the main connection's sessions still beats.
   * Not in `executors`; disposed with the deployment.
   */
  readonly heartbeatExecutor?: Executor;
  /** On the proxy host: the deploy lock and the journal. */
  readonly stateDir: string;
  readonly executors: ReadonlyMap<string, Executor>;
  dispose(): Promise<void>;
}

/** What the verify probe does: stop the deploy at its thresholds, only count, or not run. */
export type VerifyMode = "enforce" | "report" | "off";

/** Checks a --verify value. */
export function checkVerifyMode(value: string | undefined, flag = "--verify"): VerifyMode | undefined {
  if (value === undefined || value === "") return undefined;
  if (value === "enforce" || value === "report" || value === "off") return value;
  throw new NodropError("E_ARGS", `${flag} ${JSON.stringify(value)}: expected enforce, report or off`);
}

/** Checks a --lock-wait value: how long to wait for a deploy holding the lock (0 when absent). */
export function checkLockWait(value: string | undefined, flag = "--lock-wait"): number {
  if (value === undefined) return 0;
  const ms = parseDuration(value);
  if (ms === undefined) throw new NodropError("E_ARGS", `${flag} ${JSON.stringify(value)}: expected a duration such as 30s or 15m (at most 24h)`);
  return ms;
}

/** Checks a version given on the command line: it reaches shell commands and nginx config. */
export function checkVersion(version: string | undefined, flag = "--version"): string {
  if (version === undefined || version === "") throw new NodropError("E_ARGS", `${flag} is required (the version to deploy, e.g. ${flag} v2)`);
  if (!SAFE_NAME.test(version)) {
    throw new NodropError("E_ARGS", `${flag} ${JSON.stringify(version)}: expected letters, digits, '.', '_' or '-' (at most 128, starting with a letter or digit)`);
  }
  return version;
}

/** Turns a validated config into the engine's inputs: executors, instances, proxy, strategy. */
export function createDeployment(
  config: NodropConfig,
  overrides: { strategy?: string | undefined; verify?: VerifyMode | undefined } = {},
  hostOptions: HostSetupOptions = {},
): Deployment {
  const issues: ConfigIssue[] = [];
  const configured = String(config.strategy.name);
  const strategyName = overrides.strategy ?? configured;
  const strategyEntry = findStrategy(strategyName);
  if (!strategyEntry) {
    const where = overrides.strategy ? "--strategy" : "strategy.name";
    throw new NodropError("E_CONFIG", `${where}: unknown strategy ${JSON.stringify(strategyName)} (available: ${Object.keys(strategies).join(", ")})`);
  }
  const strategy = strategyEntry.create();
  // Options written for another strategy do not apply to an override.
  const rawStrategyOptions = strategyName === configured ? sectionOptions(config.strategy, ["name"]) : {};
  const strategyOptions = strategy.optionsSchema.parse(rawStrategyOptions, "strategy", issues);

  const proxyType = String(config.proxy.type);
  const proxyEntry = findProxy(proxyType);
  if (!proxyEntry) throw new NodropError("E_CONFIG", `proxy.type: unknown proxy ${JSON.stringify(proxyType)} (available: ${Object.keys(proxies).join(", ")})`);
  const proxyHost = typeof config.proxy.host === "string" ? config.proxy.host : "local";
  const proxyOptions = proxyEntry.optionsSchema.parse(sectionOptions(config.proxy, ["type", "host"]), "proxy", issues);
  if (issues.length > 0) {
    throw schema.configError(issues, config.source);
  }

  const local = () => localExecutor({ cwd: config.commands.cwd, unsetEnv: secretEnvNames(config) });
  const factories = sshExecutorFactories(config, hostOptions);
  const executors = new Map<string, Executor>([["local", local()], ...[...factories].map(([name, create]) => [name, create()] as const)]);
  const executorFor = (host: string) => {
    const executor = executors.get(host);
    if (!executor) throw new NodropError("E_CONFIG", `unknown host "${host}"`);
    return executor;
  };
  const proxy = proxyEntry.create({ app: config.app, options: proxyOptions, executor: executorFor(proxyHost) });
  const instances = config.instances.map((spec) =>
    commandInstance({ spec, executor: executorFor(spec.host), commands: config.commands, timeoutMs: config.commands.timeout }),
  );
  // Created now, connected on first use (the first heartbeat).
  const heartbeatExecutor = proxyHost === "local" ? local() : factories.get(proxyHost)?.();
  const ids = config.instances.map((i) => i.id);
  return {
    steadyRouting: strategy.steadyRouting?.(ids, strategyOptions) ?? singlePool(ids),
    proxy,
    proxyExecutor: executorFor(proxyHost),
    ...(heartbeatExecutor ? { heartbeatExecutor } : {}),
    stateDir: config.stateDir ?? `/var/lib/nodrop/${config.app}`,
    executors,
    options: {
      instances,
      proxy,
      strategy,
      strategyOptions,
      health:
        config.health.via === "host"
          ? hostHealthCheck({ path: config.health.path, versionHeader: config.health.versionHeader, timeoutMs: config.health.timeout, executorFor })
          : httpHealthCheck({ path: config.health.path, versionHeader: config.health.versionHeader, timeoutMs: config.health.timeout }),
      healthWait: { successes: config.health.successes, intervalMs: config.health.interval, deadlineMs: config.health.deadline },
      parallel: config.parallel,
      ...(config.verify && overrides.verify !== "off"
        ? {
            verify: httpVerifier({
              url: config.verify.url,
              ratePerSecond: config.verify.rate,
              cookies: config.verify.cookies,
              versionHeader: config.verify.versionHeader ?? config.health.versionHeader,
              timeoutMs: config.verify.timeout,
              settleMs: config.verify.settle,
              maxFailed: config.verify.maxFailed,
              maxRegressions: config.verify.maxRegressions,
              enforce: overrides.verify !== "report",
            }),
          }
        : {}),
    },
    async dispose() {
      await Promise.all([...executors.values(), ...(heartbeatExecutor ? [heartbeatExecutor] : [])].map((e) => e.dispose?.()));
    },
  };
}

