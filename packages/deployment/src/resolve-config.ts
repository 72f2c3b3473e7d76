import {
  type ConfigFile,
  type ConfigIssue,
  type Executor,
  type NodropConfig,
  NodropError,
  type PluginKind,
  type ProxyCapabilities,
  checkConfig,
  pluginSpecifier,
  schema,
  sectionOptions,
  sortIssues,
  validateOptions,
} from "@nodrop/core";
import { builtInPlugin, builtInPlugins } from "./builtins.js";
import { type HostSetupOptions, sshExecutorFactories, sshHostNames } from "./hosts.js";
import { type AnyResolvedPlugin, type ResolvedPlugin, resolvePlugin } from "./resolve-plugin.js";

/** A plugin the config names, loaded, with its options validated. */
export interface ConfiguredPlugin<K extends PluginKind> {
  readonly resolved: ResolvedPlugin<K>;
  readonly options: unknown;
  /** The config path of the section (`strategy`, `proxy`, `hosts.box`), for messages. */
  readonly at: string;
}

/** A config with everything it names loaded and validated: what createDeployment wires together. */
export interface ResolvedConfig {
  readonly config: NodropConfig;
  readonly strategy: ConfiguredPlugin<"strategy">;
  readonly proxy: ConfiguredPlugin<"proxy"> & { readonly host: string };
  /** Every remote host: a factory per host (called again for the lock's heartbeat connection). */
  readonly hosts: ReadonlyMap<string, () => Executor>;
  /** Executor plugins by host, for the report of what was loaded. */
  readonly executorPlugins: ReadonlyMap<string, ConfiguredPlugin<"executor">>;
  /** Every plugin loaded, built-ins included, in config order. */
  readonly plugins: readonly AnyResolvedPlugin[];
}

export interface ResolveConfigOptions extends HostSetupOptions {
  /**
   * Another strategy than the config's (`--strategy`): a built-in short name, or the name or
   * `use` of the config's own strategy. Its options come from the config only when it is the config's.
   */
  readonly strategy?: string | undefined;
  /** nodrop's version, shown for built-in plugins. */
  readonly version?: string | undefined;
}

// nodrop's own keys in a plugin's section; the rest are the plugin's options.
const STRATEGY_KEYS = ["use", "name"];
const PROXY_KEYS = ["use", "type", "host"];
const HOST_KEYS = ["use"];

/**
 * The one validation pass: the config's own fields, every plugin it names (loaded from the config's
 * directory), each plugin's options against its schema, and every host's settings. Throws one
 * E_CONFIG error that lists every problem found, each with its path; nothing has been touched.
 */
export async function resolveConfig(file: ConfigFile, options: ResolveConfigOptions = {}): Promise<ResolvedConfig> {
  const issues: ConfigIssue[] = [];
  const config = checkConfig(file.raw, file, issues);
  const raw = (typeof file.raw === "object" && file.raw !== null ? file.raw : {}) as Record<string, unknown>;
  const load = loader(file.baseDir, options.version, issues);

  const strategyChoice = chooseStrategy(raw.strategy, options.strategy, issues);
  const proxyNamed = pluginSpecifier(raw.proxy, "type");
  const hostEntries = Object.entries(isRecord(raw.hosts) ? raw.hosts : {}).filter(([, entry]) => isRecord(entry) && typeof entry.use === "string" && entry.use !== "ssh");
  const [strategy, proxy, ...executors] = await Promise.all([
    strategyChoice && load("strategy", strategyChoice.specifier, strategyChoice.path, strategyChoice.options, "strategy"),
    proxyNamed && load("proxy", proxyNamed.specifier, `proxy.${proxyNamed.path}`, sectionOptions(raw.proxy as Record<string, unknown>, PROXY_KEYS), "proxy"),
    ...hostEntries.map(([name, entry]) => {
      const section = entry as Record<string, unknown>;
      return load("executor", section.use as string, `hosts.${name}.use`, sectionOptions(section, HOST_KEYS), `hosts.${name}`);
    }),
  ]);
  if (strategy && proxy) requiresIssues(strategy, proxy, issues);

  const hosts = new Map<string, () => Executor>();
  const executorPlugins = new Map<string, ConfiguredPlugin<"executor">>();
  if (config) {
    for (const [name, create] of sshExecutorFactories(config, sshHostNames(config), options, issues)) hosts.set(name, create);
    hostEntries.forEach(([name], index) => {
      const executor = executors[index];
      if (!executor) return;
      executorPlugins.set(name, executor);
      hosts.set(name, () => executor.resolved.plugin.create({ host: name, options: executor.options, baseDir: file.baseDir, env: options.env ?? process.env, log: options.log ?? (() => undefined) }));
    });
  }
  if (!config || !strategy || !proxy || issues.length > 0) throw schema.configError(sortIssues(issues), file.source);
  return {
    config,
    strategy,
    proxy: { ...proxy, host: typeof (raw.proxy as Record<string, unknown>).host === "string" ? ((raw.proxy as Record<string, unknown>).host as string) : "local" },
    hosts,
    executorPlugins,
    plugins: [strategy, proxy, ...executorPlugins.values()].map((p) => p.resolved),
  };
}

/** Loads a plugin and validates its options, recording what went wrong at the config path. */
function loader(baseDir: string, version: string | undefined, issues: ConfigIssue[]) {
  return async <K extends PluginKind>(kind: K, specifier: string, usePath: string, rawOptions: unknown, at: string): Promise<ConfiguredPlugin<K> | undefined> => {
    let resolved: ResolvedPlugin<K>;
    try {
      resolved = await resolvePlugin(kind, specifier, { baseDir, builtInVersion: version });
    } catch (error) {
      if (!NodropError.is(error) || error.code !== "E_PLUGIN") throw error;
      issues.push({ path: usePath, message: error.message });
      return undefined;
    }
    const options = await validateOptions(resolved.plugin.optionsSchema, rawOptions, at, issues);
    return options === undefined ? undefined : { resolved, options, at };
  };
}

/** The strategy to load: the config's, or the one `--strategy` names (with its defaults unless it is the config's). */
function chooseStrategy(section: unknown, override: string | undefined, issues: ConfigIssue[]): { specifier: string; path: string; options: unknown } | undefined {
  const named = section === undefined ? { specifier: "rolling", path: "name" } : pluginSpecifier(section, "name");
  const options = isRecord(section) ? sectionOptions(section, STRATEGY_KEYS) : {};
  if (override === undefined) return named && { specifier: named.specifier, path: `strategy.${named.path}`, options };
  const same = named !== undefined && override === named.specifier;
  // Only what the config names is loaded from disk: an override picks a built-in or the config's own.
  if (!same && !builtInPlugin("strategy", override)) {
    issues.push({ path: "--strategy", message: `${JSON.stringify(override)} is not a built-in strategy (${Object.keys(builtInPlugins.strategy).join(", ")}) nor the one the config names; name a plugin in the config to use it` });
    return undefined;
  }
  // Options written for another strategy do not apply to an override.
  return { specifier: override, path: "--strategy", options: same ? options : {} };
}

/** A strategy that declares what it needs from every proxy, paired with a proxy that lacks it. */
function requiresIssues(strategy: ConfiguredPlugin<"strategy">, proxy: ConfiguredPlugin<"proxy">, issues: ConfigIssue[]): void {
  const needs = strategy.resolved.plugin.requires ?? {};
  const missing = (Object.keys(needs) as (keyof ProxyCapabilities)[]).filter((flag) => needs[flag] === true && proxy.resolved.plugin.capabilities[flag] !== true);
  if (missing.length > 0) {
    issues.push({ path: "strategy", message: `strategy ${strategy.resolved.plugin.name} needs ${missing.join(", ")} from the proxy, which ${proxy.resolved.plugin.name} does not offer` });
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
