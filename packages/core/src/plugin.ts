import { NodropError } from "./errors.js";
import type { Executor } from "./executor.js";
import type { Schema } from "./schema.js";
import { type StandardSchemaV1, isStandardSchema } from "./standard-schema.js";
import { SAFE_NAME } from "./template.js";
import type { Proxy, ProxyCapabilities, Strategy } from "./types.js";
import { CORE_VERSION } from "./version.js";

/**
 * The plugin contract this core implements. A plugin records the contract of the core that defined
 * it; nodrop refuses one written for another contract before it is used. Raised only when what a
 * plugin may rely on changes incompatibly (a major version of @nodrop/core).
 */
export const PLUGIN_CONTRACT = 1;

// A registered symbol, not a class: a plugin built against another copy of core (its own
// node_modules, or the action's bundle next to the user's install) carries the same brand.
const BRAND = Symbol.for("@nodrop/core/plugin");

export type PluginKind = "strategy" | "proxy" | "executor";

/**
 * How a plugin's options are validated: core's schema helpers (`schema.object(...)`, which also
 * document the options in the config reference) or any Standard Schema validator (zod 4, valibot,
 * arktype).
 */
export type OptionsSchema<Options> = Schema<Options> | StandardSchemaV1<unknown, Options>;

interface PluginBase<Kind extends PluginKind, Options> {
  readonly kind: Kind;
  /** The plugin's name, for messages and reports (letters, digits, '.', '_', '-'). */
  readonly name: string;
  /** Validates the options the config gives the plugin (its section, less nodrop's own keys). */
  readonly optionsSchema: OptionsSchema<Options>;
  /** The plugin contract of the core that defined it (PLUGIN_CONTRACT there). */
  readonly contract: number;
  /** The version of the @nodrop/core copy that defined it. */
  readonly coreVersion: string;
}

export interface StrategyPlugin<Options = any> extends PluginBase<"strategy", Options> {
  /** Creates the strategy; its plan() gets the validated options. */
  readonly create: () => Strategy<Options>;
  /**
   * Proxy capabilities every plan of this strategy needs; a config pairing it with a proxy that
   * lacks one is refused before anything is touched. What depends on the options, plan() checks.
   */
  readonly requires?: Partial<ProxyCapabilities> | undefined;
}

/** What every plugin factory that takes input gets (a proxy's, an executor's). */
export interface PluginInput<Options> {
  /** The plugin's options from the config, as its schema parsed them. */
  readonly options: Options;
  /** The config file's directory: relative paths in the options are resolved from it. */
  readonly baseDir: string;
  /**
   * Where secrets named in the options are read from. Name such options `...Env` (`tokenEnv:
   * AGENT_TOKEN`): nodrop then keeps those variables out of every local command's environment.
   */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly log: (message: string) => void;
}

export interface ProxyPluginInput<Options> extends PluginInput<Options> {
  /** The config's `app`: names what the proxy owns (nginx: its upstreams). */
  readonly app: string;
  /** Runs commands on the proxy's host (`proxy.host`). */
  readonly executor: Executor;
}

export interface ProxyPlugin<Options = any> extends PluginBase<"proxy", Options> {
  /** What every proxy this plugin creates can do; strategies plan from these. */
  readonly capabilities: ProxyCapabilities;
  /**
   * Options every proxy of a group (`proxy.hosts`) must have alike, as parsed: what a client carries
   * from one proxy to another (nginx: the version cookie's name). A host's entry that makes one
   * differ is refused, naming the option and both values.
   */
  readonly sharedOptions?: readonly string[];
  readonly create: (input: ProxyPluginInput<Options>) => Proxy;
}

export interface ExecutorPluginInput<Options> extends PluginInput<Options> {
  /** The host's name in the config (`hosts.<name>`). */
  readonly host: string;
}

export interface ExecutorPlugin<Options = any> extends PluginBase<"executor", Options> {
  /** Called once per host, and again for the deploy lock's heartbeat (its own connection). */
  readonly create: (input: ExecutorPluginInput<Options>) => Executor;
}

export type NodropPlugin = StrategyPlugin | ProxyPlugin | ExecutorPlugin;
export type PluginOf<Kind extends PluginKind> = Extract<NodropPlugin, { kind: Kind }>;

type Definition<P extends NodropPlugin> = Omit<P, "kind" | "contract" | "coreVersion">;

/** Defines a strategy plugin: `export default defineStrategy({ name, optionsSchema, create })`. */
export function defineStrategy<Options>(definition: Definition<StrategyPlugin<Options>>): StrategyPlugin<Options> {
  return brand("strategy", definition);
}

/** Defines a proxy adapter plugin: `export default defineProxy({ name, optionsSchema, capabilities, create })`. */
export function defineProxy<Options>(definition: Definition<ProxyPlugin<Options>>): ProxyPlugin<Options> {
  return brand("proxy", definition);
}

/** Defines an executor plugin (how commands reach a host): `export default defineExecutor({ name, optionsSchema, create })`. */
export function defineExecutor<Options>(definition: Definition<ExecutorPlugin<Options>>): ExecutorPlugin<Options> {
  return brand("executor", definition);
}

function brand<P extends NodropPlugin>(kind: P["kind"], definition: Definition<P>): P {
  const problem = definitionProblem(kind, definition);
  const name: unknown = (definition as { name?: unknown }).name;
  if (problem) throw new NodropError("E_PLUGIN", `${kind} plugin ${typeof name === "string" && SAFE_NAME.test(name) ? JSON.stringify(name) : typeof name === "string" ? JSON.stringify(name.slice(0, 60)) : "(unnamed)"}: ${problem}`);
  return Object.freeze({ ...definition, kind, contract: PLUGIN_CONTRACT, coreVersion: CORE_VERSION, [BRAND]: true }) as unknown as P;
}

/**
 * What is wrong with a plugin definition, or undefined. define* refuse such a definition, and nodrop
 * checks a loaded plugin again (its brand can be copied onto anything).
 */
export function definitionProblem(kind: PluginKind, definition: unknown): string | undefined {
  if (kind !== "strategy" && kind !== "proxy" && kind !== "executor") return `unknown plugin kind ${JSON.stringify(String(kind))}`;
  if (typeof definition !== "object" || definition === null) return "a plugin is an object";
  const d = definition as Record<string, unknown>;
  if (typeof d.name !== "string" || !SAFE_NAME.test(d.name)) return "name must be letters, digits, '.', '_' or '-' (starting with a letter or digit)";
  if (typeof d.create !== "function") return "create must be a function";
  if (!isOptionsSchema(d.optionsSchema)) return "optionsSchema must be a core schema (schema.object(...)) or a Standard Schema validator (zod, valibot, arktype)";
  if (kind === "proxy" && (typeof d.capabilities !== "object" || d.capabilities === null)) return "capabilities must be an object of flags";
  if (kind === "proxy" && d.sharedOptions !== undefined && !(Array.isArray(d.sharedOptions) && d.sharedOptions.every((o) => typeof o === "string"))) return "sharedOptions must be a list of option names";
  return undefined;
}

function isOptionsSchema(value: unknown): value is OptionsSchema<unknown> {
  const core = value as Partial<Schema<unknown>> | null;
  // Core's schemas are validated by their parse(), so one that says it is core's must have it.
  if (isStandardSchema(value)) return value["~standard"].vendor !== "nodrop" || typeof core?.parse === "function";
  return typeof value === "object" && value !== null && typeof core?.parse === "function" && typeof core.describe === "function";
}

/** Whether a value was made by defineStrategy, defineProxy or defineExecutor (of any copy of core). */
export function isPlugin(value: unknown): value is NodropPlugin {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
}
