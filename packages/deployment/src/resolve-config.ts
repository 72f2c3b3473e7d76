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
import { type HostSetupOptions, pluginEnv, splitHosts, sshExecutorFactories } from "./hosts.js";
import { type AnyResolvedPlugin, type ResolvedPlugin, resolvePlugin } from "./resolve-plugin.js";

/** A plugin the config names, loaded, with its options validated. */
export interface ConfiguredPlugin<K extends PluginKind> {
  readonly resolved: ResolvedPlugin<K>;
  readonly options: unknown;
}

/** A config with everything it names loaded and validated: what createDeployment wires together. */
export interface ResolvedConfig {
  readonly config: NodropConfig;
  readonly strategy: ConfiguredPlugin<"strategy">;
  /**
   * The proxy plugin, on `host` (the first of `proxy.hosts`: the deploy lock and the journal live
   * there), and every proxy host with its options: one member, or one per entry of `proxy.hosts`.
   */
  readonly proxy: ConfiguredPlugin<"proxy"> & { readonly host: string; readonly members: readonly ProxyMemberConfig[] };
  /** Every remote host: a factory per host (called again for the lock's heartbeat connection). */
  readonly hosts: ReadonlyMap<string, () => Executor>;
  /** Executor plugins by host, for the report of what was loaded. */
  readonly executorPlugins: ReadonlyMap<string, ConfiguredPlugin<"executor">>;
  /** Every plugin loaded, built-ins included, in config order. */
  readonly plugins: readonly AnyResolvedPlugin[];
}

/** One proxy host of the config and its adapter options (the section's, with that host's own over them). */
export interface ProxyMemberConfig {
  readonly host: string;
  readonly options: unknown;
}

export interface ResolveConfigOptions extends HostSetupOptions {
  /**
   * Another strategy than the config's (`--strategy`): a built-in short name, or the name or
   * `use` of the config's own strategy. Its options come from the config only when it is the config's.
   */
  readonly strategy?: string | undefined;
  /**
   * A rollback: rolling, as a surge (`surge: true`) when every instance has a spare port, so that old
   * slots kept for it (`keepOld`) are swapped back in one reload and full capacity holds otherwise.
   */
  readonly rollback?: boolean | undefined;
  /** `nodrop abort`: the canary-abort strategy (every client back at once, then the canary's instances). */
  readonly abort?: boolean | undefined;
  /** nodrop's version, shown for built-in plugins. */
  readonly version?: string | undefined;
}

// nodrop's own keys in a plugin's section; the rest are the plugin's options.
const STRATEGY_KEYS = ["use", "name"];
const PROXY_KEYS = ["use", "type", "host", "hosts"];
const HOST_KEYS = ["use"];

/**
 * The one validation pass: the config's own fields, every plugin it names (loaded from the config's
 * directory), each plugin's options against its schema, and every host's settings. Throws one
 * E_CONFIG error that lists every problem found, each with its path; nothing has been touched.
 */
export async function resolveConfig(file: ConfigFile, options: ResolveConfigOptions = {}): Promise<ResolvedConfig> {
  const issues: ConfigIssue[] = [];
  const config = checkConfig(file.raw, file, issues);
  const raw = (isRecord(file.raw) ? file.raw : {}) as Record<string, unknown>;
  const env = options.env ?? process.env;
  // Loaded side by side; each load records its problems apart, added in config order afterwards.
  const load = loader(file.baseDir, options.version);

  const strategyChoice = options.abort
    ? { specifier: "canary-abort", path: "abort", options: {} }
    : options.rollback
      ? rollbackStrategy(config)
      : chooseStrategy(raw.strategy ?? undefined, options.strategy, issues);
  const proxyNamed = pluginSpecifier(raw.proxy, "type");
  const split = splitHosts(raw.hosts, issues);
  // The plugin is loaded with the first proxy host's options; the others are validated apart.
  const firstProxy = proxyOptionsAt(isRecord(raw.proxy) ? raw.proxy : {}, 0);
  const loads = await Promise.all([
    strategyChoice ? load("strategy", strategyChoice.specifier, strategyChoice.path, strategyChoice.options, "strategy") : undefined,
    proxyNamed ? load("proxy", proxyNamed.specifier, `proxy.${proxyNamed.path}`, firstProxy.options, firstProxy.at) : undefined,
    ...split.plugins.map(([name, use]) => load("executor", use, `hosts.${name}.use`, sectionOptions((raw.hosts as Record<string, Record<string, unknown>>)[name]!, HOST_KEYS), `hosts.${name}`)),
  ]);
  for (const loaded of loads) issues.push(...(loaded?.issues ?? []));
  const [strategy, proxy, ...executors] = loads.map((loaded) => loaded?.plugin) as [ConfiguredPlugin<"strategy"> | undefined, ConfiguredPlugin<"proxy"> | undefined, ...(ConfiguredPlugin<"executor"> | undefined)[]];
  if (strategy && proxy) requiresIssues(strategy, proxy, issues);

  const hosts = new Map<string, () => Executor>();
  const executorPlugins = new Map<string, ConfiguredPlugin<"executor">>();
  if (config) {
    for (const [name, create] of sshExecutorFactories(config, split.ssh, options, issues)) hosts.set(name, create);
    split.plugins.forEach(([name], index) => {
      const executor = executors[index];
      if (!executor) return;
      executorPlugins.set(name, executor);
      const section = (config.hosts?.[name] ?? {}) as Record<string, unknown>;
      hosts.set(name, () => executor.resolved.plugin.create({ host: name, options: executor.options, baseDir: file.baseDir, env: pluginEnv(env, config, section), log: options.log ?? (() => undefined) }));
    });
  }
  const members = proxy ? await proxyMembers(proxy, raw.proxy as Record<string, unknown>, issues) : [];
  if (!config || !strategy || !proxy || issues.length > 0) throw schema.configError(sortIssues(issues), file.source);
  return {
    config,
    strategy,
    proxy: { ...proxy, host: members[0]!.host, members },
    hosts,
    executorPlugins,
    plugins: [strategy, proxy, ...executorPlugins.values()].map((p) => p.resolved),
  };
}

/** The adapter options of the `index`th proxy host (the section's, with the entry's own over them), and where an issue with them is. */
function proxyOptionsAt(section: Record<string, unknown>, index: number): { options: Record<string, unknown>; at: string } {
  const shared = sectionOptions(section, PROXY_KEYS);
  const entry = Array.isArray(section.hosts) ? section.hosts[index] : undefined;
  // `use`, `type` and `hosts` inside an entry are refused where the config is checked, not taken for options.
  const own = isRecord(entry) ? sectionOptions(entry, ["host", ...PROXY_KEYS]) : {};
  return Object.keys(own).length === 0 ? { options: shared, at: "proxy" } : { options: { ...shared, ...own }, at: `proxy.hosts[${index}]` };
}

/**
 * The proxy hosts and each one's options: the section's own host (default local), or one per entry
 * of `proxy.hosts`, whose keys other than `host` go over the section's options (validated for
 * that host: an issue's path names the entry). The first is the one the plugin was loaded with.
 */
async function proxyMembers(proxy: ConfiguredPlugin<"proxy">, section: Record<string, unknown>, issues: ConfigIssue[]): Promise<ProxyMemberConfig[]> {
  if (!Array.isArray(section.hosts)) return [{ host: typeof section.host === "string" ? section.host : "local", options: proxy.options }];
  const members: ProxyMemberConfig[] = [];
  const firstOwn = proxyOptionsAt(section, 0).at !== "proxy";
  for (const [index, entry] of section.hosts.entries()) {
    const host = typeof entry === "string" ? entry : isRecord(entry) && typeof entry.host === "string" ? entry.host : undefined;
    if (host === undefined) continue;
    const { options, at } = proxyOptionsAt(section, index);
    // The plugin was loaded with the first host's options; a host with none of its own shares them
    // when the first has none either (validated once, so one bad option is one issue).
    const shared = index === 0 || (at === "proxy" && !firstOwn);
    const parsed = shared ? proxy.options : await validateOptions(proxy.resolved.plugin.optionsSchema, options, at, issues);
    if (members[0]) sharedOptionIssues(proxy, members[0], { host, options: parsed }, at, issues);
    members.push({ host, options: parsed });
  }
  return members;
}

/** A proxy host whose own options make one the plugin says all must share differ from the first host's. */
function sharedOptionIssues(proxy: ConfiguredPlugin<"proxy">, first: ProxyMemberConfig, member: ProxyMemberConfig, at: string, issues: ConfigIssue[]): void {
  if (!isRecord(first.options) || !isRecord(member.options)) return;
  for (const key of proxy.resolved.plugin.sharedOptions ?? []) {
    const [mine, theirs] = [member.options[key], first.options[key]];
    if (JSON.stringify(mine) === JSON.stringify(theirs)) continue;
    issues.push({
      path: `${at}.${key}`,
      message: `must be the same on every proxy host (a client the next request takes to another proxy carries it): ${member.host} has ${JSON.stringify(mine)}, ${first.host} ${JSON.stringify(theirs)}`,
    });
  }
}

/** Loads a plugin and validates its options; what went wrong is recorded at its config path. */
function loader(baseDir: string, version: string | undefined) {
  return async <K extends PluginKind>(kind: K, specifier: string, usePath: string, rawOptions: unknown, at: string): Promise<{ plugin: ConfiguredPlugin<K> | undefined; issues: ConfigIssue[] }> => {
    const issues: ConfigIssue[] = [];
    let resolved: ResolvedPlugin<K>;
    try {
      resolved = await resolvePlugin(kind, specifier, { baseDir, builtInVersion: version });
    } catch (error) {
      if (!NodropError.is(error) || error.code !== "E_PLUGIN") throw error;
      return { plugin: undefined, issues: [{ path: usePath, message: error.message }] };
    }
    // A schema may validly output undefined: a problem is an issue, not the value.
    const options = await validateOptions(resolved.plugin.optionsSchema, rawOptions, at, issues);
    return { plugin: issues.length === 0 ? { resolved, options } : undefined, issues };
  };
}

/** Rolling with the drain rules, one batch at a time; a surge on a fleet where every instance has two slots. */
function rollbackStrategy(config: NodropConfig | undefined): { specifier: string; path: string; options: unknown } {
  const slotted = config !== undefined && config.instances.every((i) => i.spare !== undefined);
  return { specifier: "rolling", path: "rollback", options: slotted ? { surge: true } : {} };
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
