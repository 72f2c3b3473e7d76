import {
  type Artifact,
  type ConfigIssue,
  type ReleaseSetup,
  type HookSetup,
  HOOK_NAMES,
  type DeployOptions,
  type DeployVerifier,
  DEFAULT_OVERLAP,
  type Executor,
  type InstanceConfig,
  type InstanceSpec,
  type LocalExecutorOptions,
  type NodropConfig,
  NodropError,
  type Proxy,
  type ProxyMember,
  type Routing,
  SAFE_NAME,
  type Strategy,
  describeValue,
  isSafeName,
  commandInstance,
  hostHealthCheck,
  httpHealthCheck,
  httpVerifier,
  localExecutor,
  parseDuration,
  proxyGroup,
  readConfigFile,
  schema,
  singlePool,
} from "@nodrop/core";
import { pluginEnv, secretEnvNames } from "./hosts.js";
import { type ResolveConfigOptions, type ResolvedConfig, resolveConfig } from "./resolve-config.js";
import type { AnyResolvedPlugin } from "./resolve-plugin.js";

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
  readonly heartbeatExecutor?: Executor | undefined;
  /** On the proxy host: the deploy lock and the journal. */
  readonly stateDir: string;
  readonly executors: ReadonlyMap<string, Executor>;
  /** Every plugin the config named, where it was loaded from and its version. */
  readonly plugins: readonly AnyResolvedPlugin[];
  /** The validated config. */
  readonly config: NodropConfig;
  /**
   * The release step's setup for a deploy (`deploy`: send `artifact` and prepare as needed;
   * `existing`: a rollback, which uses the release already on each host, as does a deploy with
   * neither an artifact nor a prepare command); undefined without a release section.
   */
  releaseFor(mode: ReleaseSetup["mode"], artifact?: Artifact): ReleaseSetup | undefined;
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

export interface CreateDeploymentOptions extends ResolveConfigOptions {
  /** The verify probe's mode (default enforce; the probe runs only with a verify section). */
  readonly verify?: VerifyMode | undefined;
  /**
   * Makes the executor for commands on this machine (`local`); default core's localExecutor. The
   * action passes one that runs them through @actions/exec, so they show in the runner's log.
   */
  readonly localExecutor?: ((options: LocalExecutorOptions) => Executor) | undefined;
}

/**
 * Reads a config file and turns it into a deployment: one validation pass over the config and
 * every plugin it names (resolveConfig), then the executors, the proxy and the strategy. Throws one
 * E_CONFIG error listing every problem; nothing has been touched then.
 */
export async function loadDeployment(configFile: string, options: CreateDeploymentOptions = {}): Promise<Deployment> {
  return await createDeployment(await resolveConfig(await readConfigFile(configFile), options), options);
}

/**
 * Wires a resolved config into the engine's inputs: an executor per host, the proxy, the strategy,
 * the instances, the health check and the verify probe. A plugin factory that throws is reported
 * like a config problem, naming the plugin; the executors already made are disposed.
 */
export async function createDeployment(resolved: ResolvedConfig, options: CreateDeploymentOptions = {}): Promise<Deployment> {
  const { config } = resolved;
  const makeLocal = options.localExecutor ?? localExecutor;
  const local = () => makeLocal({ cwd: config.commands.cwd, unsetEnv: secretEnvNames(config) });
  const executors = new Map<string, Executor>([["local", local()]]);
  const issues: ConfigIssue[] = [];
  const hostPlugin = (host: string) => resolved.executorPlugins.get(host)?.resolved;
  for (const [name, create] of resolved.hosts) {
    const executor = created(issues, `hosts.${name}`, hostPlugin(name), create, (e) => executorProblem(e, name));
    if (executor) executors.set(name, executor);
  }
  const proxyExecutor = executors.get(resolved.proxy.host);
  const strategy = created(issues, "strategy", resolved.strategy.resolved, () => resolved.strategy.resolved.plugin.create(), strategyProblem);
  const env = pluginEnv(options.env ?? process.env, config, config.proxy);
  // One adapter per proxy host; several are driven as one group (the engine sees one proxy).
  const several = resolved.proxy.members.length > 1;
  const members = resolved.proxy.members.map((member, index) => {
    const executor = executors.get(member.host);
    const at = several ? `proxy.hosts[${index}]` : "proxy";
    const made = executor && created(issues, at, resolved.proxy.resolved, () => resolved.proxy.resolved.plugin.create({ app: config.app, options: member.options, executor, baseDir: config.baseDir, env, log: options.log ?? (() => undefined) }), proxyProblem);
    return made && { label: member.host, proxy: made };
  });
  const made = members.filter((m): m is ProxyMember => m !== undefined);
  const proxy = made.length === members.length && made.length > 0 ? (several ? proxyGroup(made) : made[0]!.proxy) : undefined;
  // Created now, connected on first use (the first heartbeat).
  const proxyHost = resolved.proxy.host;
  const heartbeatExecutor =
    proxyExecutor && created(issues, `hosts.${proxyHost}`, hostPlugin(proxyHost), () => (proxyHost === "local" ? local() : resolved.hosts.get(proxyHost)!()), (e) => executorProblem(e, proxyHost));
  const all = [...executors.values(), ...(heartbeatExecutor ? [heartbeatExecutor] : [])];
  const dispose = async () => {
    await Promise.allSettled([...all.map((e) => e.dispose?.()), ...made.map((m) => m.proxy.dispose?.())]);
  };
  if (!strategy || !proxy || !proxyExecutor || issues.length > 0) {
    await dispose();
    throw schema.configError(issues, config.source);
  }
  try {
    return assemble({ resolved, executors, proxy, proxyExecutor, heartbeatExecutor, strategy, dispose, verify: options.verify });
  } catch (error) {
    // A strategy's steadyRouting() that throws, say: nothing may stay connected.
    await dispose();
    throw error;
  }
}

/** The engine's inputs from what was created. */
function assemble(parts: {
  resolved: ResolvedConfig;
  executors: Map<string, Executor>;
  proxy: Proxy;
  proxyExecutor: Executor;
  heartbeatExecutor: Executor | undefined;
  strategy: Strategy<unknown>;
  dispose: () => Promise<void>;
  verify: VerifyMode | undefined;
}): Deployment {
  const { resolved, executors, proxy, proxyExecutor, heartbeatExecutor, strategy, dispose } = parts;
  const { config } = resolved;
  const options = { verify: parts.verify };
  const executorFor = (host: string) => {
    const executor = executors.get(host);
    if (!executor) throw new NodropError("E_CONFIG", `unknown host "${host}"`);
    return executor;
  };
  const releaseDirOf = (host: string) => config.release!.dir.replaceAll("{host}", host);
  const instances = config.instances.map((entry) =>
    commandInstance({
      spec: instanceSpec(entry),
      executor: executorFor(entry.host),
      commands: config.commands,
      timeoutMs: config.commands.timeout,
      ...(config.release ? { releaseDir: releaseDirOf(entry.host) } : {}),
    }),
  );
  const releaseFor = (mode: ReleaseSetup["mode"], artifact?: Artifact): ReleaseSetup | undefined => {
    if (!config.release) return undefined;
    // Nothing to send or prepare (a resume without --artifact, say): every host must have the release already.
    const actual = mode === "deploy" && !artifact && !config.commands.prepare ? "existing" : mode;
    return { dirOf: releaseDirOf, artifact: actual === "deploy" ? artifact : undefined, prepare: config.commands.prepare, prepareTimeoutMs: config.release.prepareTimeout, keep: config.release.keep, mode: actual, executorFor };
  };
  const ids = config.instances.map((i) => i.id);
  const strategyOptions = resolved.strategy.options;
  return {
    steadyRouting: strategy.steadyRouting?.(ids, strategyOptions) ?? singlePool(ids),
    proxy,
    proxyExecutor,
    heartbeatExecutor,
    stateDir: config.stateDir ?? `/var/lib/nodrop/${config.app}`,
    executors,
    plugins: resolved.plugins,
    config,
    releaseFor,
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
      overlap: { ...DEFAULT_OVERLAP, reserveBytes: config.slots?.reserve ?? DEFAULT_OVERLAP.reserveBytes },
      ...(config.hooks ? { hooks: hookSetup(config.hooks, config.app, executorFor("local")) } : {}),
      ...(config.verify && options.verify !== "off" ? { verify: verifier(config.verify, config.health.versionHeader, options.verify !== "report") } : {}),
    },
    dispose,
  };
}

/** The config's hooks, run by this machine's executor (the one that keeps the secrets out of their environment). */
function hookSetup(hooks: NonNullable<NodropConfig["hooks"]>, app: string, executor: Executor): HookSetup {
  const commands = Object.fromEntries(HOOK_NAMES.filter((name) => hooks[name] !== undefined).map((name) => [name, hooks[name]!]));
  return { commands, timeoutMs: hooks.timeout, executor, app };
}

/** An instance of the config as core knows it: with two slots when it has a spare port. */
export function instanceSpec(entry: InstanceConfig): InstanceSpec {
  const { id, host, address, port, spare } = entry;
  return { id, host, address, port, ...(spare === undefined ? {} : { slots: [port, spare] as const }) };
}

/**
 * Calls a plugin's factory and checks what it made; what it throws, or makes wrong, becomes a
 * problem at the plugin's config path, naming it: before anything is touched, not at the first use.
 */
function created<T>(issues: ConfigIssue[], at: string, plugin: AnyResolvedPlugin | undefined, create: () => T, problemOf: (made: unknown) => string | undefined): T | undefined {
  const who = plugin ? `${plugin.kind} plugin ${plugin.plugin.name} (${plugin.file ?? "built-in"})` : undefined;
  let made: T;
  try {
    made = create();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    issues.push({ path: at, message: who ? `${who} failed to start: ${message}` : message });
    return undefined;
  }
  const problem = problemOf(made);
  if (problem) {
    issues.push({ path: at, message: `${who ?? "it"} made ${problem}` });
    return undefined;
  }
  return made;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;
const fn = (v: Record<string, unknown>, key: string) => typeof v[key] === "function";

function executorProblem(made: unknown, host: string): string | undefined {
  if (!isObject(made) || !fn(made, "exec")) return "no executor (an object with exec())";
  if (typeof made.name !== "string" || made.host !== host) return `an executor for host ${describeValue(made.host)}, not "${host}"`;
  return undefined;
}

function strategyProblem(made: unknown): string | undefined {
  if (!isObject(made) || !fn(made, "plan")) return "no strategy (an object with plan())";
  // The name reaches the journal and the report: a name nodrop can read back.
  if (!isSafeName(made.name)) return `a strategy named ${describeValue(made.name)}; a name is letters, digits, '.', '_' or '-'`;
  return undefined;
}

function proxyProblem(made: unknown): string | undefined {
  if (!isObject(made) || !["check", "apply", "current"].every((key) => fn(made, key))) return "no proxy (an object with check(), apply() and current())";
  if (!isObject(made.capabilities)) return "a proxy without capabilities";
  if (!isSafeName(made.name)) return `a proxy named ${describeValue(made.name)}; a name is letters, digits, '.', '_' or '-'`;
  return undefined;
}

function verifier(verify: NonNullable<NodropConfig["verify"]>, healthHeader: string, enforce: boolean): DeployVerifier {
  return httpVerifier({
    url: verify.url,
    ratePerSecond: verify.rate,
    cookies: verify.cookies,
    versionHeader: verify.versionHeader ?? healthHeader,
    timeoutMs: verify.timeout,
    settleMs: verify.settle,
    maxFailed: verify.maxFailed,
    maxRegressions: verify.maxRegressions,
    enforce,
  });
}
