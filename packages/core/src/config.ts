import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import path from "node:path";
import { parse as parseYaml, YAMLParseError } from "yaml";
import { type ConfigIssue, NodropError } from "./errors.js";
import { type Infer, bool, configError, duration, int, list, mapping, object, oneOf, optional, refine, section, size, str } from "./schema.js";
import { PLAIN_ABSOLUTE_PATH, SAFE_NAME, checkTemplate } from "./template.js";
import { verifyUrlProblem } from "./verify.js";

const safeName = (doc: string) =>
  str({ pattern: SAFE_NAME, hint: "a name of letters, digits, '.', '_' or '-' (starting with a letter or digit)", doc });

// A NUL cannot be passed to a shell: refused here rather than when the command first runs, mid-deploy.
const template = (doc: string) => str({ minLength: 1, pattern: /^[^\0]+$/, hint: "a command template", doc });

export const instanceSchema = object({
  id: optional(safeName("Unique instance name; defaults to <host>-<port>.")),
  host: optional(safeName("The host whose executor runs this instance's commands."), "local"),
  address: optional(str({ hint: "an IP address (nginx resolves names only at reload)", doc: "Address that nginx and the health check use." }), "127.0.0.1"),
  port: int({ min: 1, max: 65535, doc: "The instance's port." }),
  spare: optional(int({ min: 1, max: 65535, doc: "A second port: the instance then has two slots, and a surge or blue-green deploy starts the new version on the one not serving ({port} is the slot's port)." })),
});

export const slotsSchema = object(
  {
    offset: optional(int({ min: -65534, max: 65534, doc: "Gives every instance without `spare` the spare port port + offset (8011 -> 9011 with 1000)." })),
    reserve: optional(size({ doc: "Memory a host keeps available beyond the overlap of new and old processes; preflight refuses a deploy that would cut into it." }), 128 * 1024 * 1024),
  },
  { doc: "Two slots per instance (a port and a spare), for deploys that start the new version before the old one stops." },
);

export const commandsSchema = object(
  {
    stop: template("Stops the instance gracefully and returns once it has exited. Placeholders: {id} {host} {address} {port} {version} {previous}, and {release} (<release.dir>/<version>) with a release section."),
    update: template("Puts {version} in place for the instance (it is stopped)."),
    start: template("Starts the instance; the health check then waits for it."),
    prepare: optional(
      template(
        "Run once per instance host and version, hosts side by side, before any instance leaves the pool: a virtualenv and `pip install`, compiled assets, a `git checkout` into {release} (it runs where commands do, so `cd {release}` first). Placeholders: {version} {release} {host}. Needs a release section; skipped where that release is already prepared (see release).",
      ),
    ),
    cwd: optional(str({ minLength: 1, pattern: /^[^\0]+$/, hint: "a string", doc: "Working directory for local commands, relative to the config file." })),
    timeout: optional(duration({ min: 1, doc: "Each command is ended when it runs longer." }), 60_000),
  },
  { doc: "Command templates; every placeholder value is validated and shell-quoted." },
);

export const releaseSchema = object(
  {
    dir: str({
      minLength: 2,
      pattern: /^\/[A-Za-z0-9._\/@+{}-]*$/,
      hint: "an absolute path of plain characters (it may contain {host})",
      doc: "On each instance's host, where releases live: <dir>/<version> is {release}. {host} is replaced by the host's name. One app per directory.",
    }),
    artifact: optional(
      str({
        minLength: 1,
        pattern: /^[^\0]+$/,
        hint: "a path",
        doc: "A file or a directory, relative to the config file, sent once to every host over the connection nodrop holds and checked there by its sha256. A .tar.gz, .tgz or .tar is unpacked into the release, a directory is sent as a tarball, any other file (a wheel) is put in the release as it is. `--artifact` (the action's `artifact` input) overrides it.",
      }),
    ),
    keep: optional(int({ min: 1, max: 1000, doc: "Releases each host keeps after a successful deploy, newest first; the running release, the one before it and any release an instance still runs are never removed." }), 5),
    prepareTimeout: optional(duration({ min: 1, doc: "commands.prepare is ended when it runs longer." }), 10 * 60_000),
  },
  {
    doc: "Releases on the hosts: before any instance leaves the pool, every instance host gets <dir>/<version> (the artifact, uploaded once per host through a temporary directory and a rename, so a cut connection or a full disk leaves no partial release), then commands.prepare runs there once. A host whose release records the same artifact sha256 and the same prepare command (in <dir>/<version>/.nodrop-release) skips both.",
  },
);

const hook = (doc: string) => optional(str({ minLength: 1, pattern: /^[^\0]+$/, hint: "a shell command", doc }));

export const hooksSchema = object(
  {
    preDeploy: hook("Before the first change (after preflight, the lock taken): a failure stops the deploy with nothing touched."),
    beforeBatch: hook("Before each batch (a phase of the strategy that changes instances: a rolling batch, a half): a failure stops the deploy there, nothing of that batch changed."),
    afterBatch: hook("After each batch's steps, its instances checked healthy on the new version (a rolling batch rejoins the pool in the next reload, with the next batch's change): a failure stops the deploy before the next phase (resume goes on)."),
    postDeploy: hook("After a deploy that succeeded: a failure leaves the fleet as deployed, is in the report, and makes the CLI exit 1."),
    onFailure: hook("After a deploy that failed, once recovery is done: its own failure is in the report."),
    timeout: optional(duration({ min: 1, doc: "A hook is ended when it runs longer." }), 5 * 60_000),
  },
  {
    doc: "Shell commands run with bash where nodrop runs (in CI: on the runner), in commands.cwd, with the deploy in NODROP_* environment variables (docs/guides/releases.md#hooks lists them; nothing is spliced into the command). Their output goes to the log, never into the outputs.",
  },
);

export const healthSchema = object(
  {
    path: optional(str({ pattern: /^\/[A-Za-z0-9._~\/?=&%-]*$/, hint: "a URL path starting with /", doc: "Probed directly on each instance." }), "/health"),
    versionHeader: optional(str({ pattern: /^[A-Za-z0-9-]+$/, hint: "an HTTP header name", doc: "Response header that carries the running version." }), "X-App-Version"),
    timeout: optional(duration({ min: 1, doc: "Per probe." }), 2000),
    interval: optional(duration({ min: 10, doc: "Between probes." }), 250),
    successes: optional(int({ min: 1, max: 100, doc: "Consecutive good probes needed." }), 2),
    deadline: optional(duration({ min: 100, doc: "An instance that is not healthy by then fails the deploy." }), 30_000),
    via: optional(oneOf(["direct", "host"] as const, { doc: "direct: nodrop probes address:port itself. host: the probe runs on the instance's host over its executor (curl), for instances only their host can reach." }), "direct"),
  },
  { doc: "Health check, probed directly against each instance for the expected version." },
);

export const verifySchema = object(
  {
    url: refine(
      str({ minLength: 1, hint: "an http:// or https:// URL", doc: "The public URL, through the proxy, as users reach the site (credentials in it are refused: reports show it)." }),
      verifyUrlProblem,
    ),
    rate: optional(int({ min: 1, max: 200, doc: "Requests started per second." }), 10),
    cookies: optional(bool({ doc: "Keep the cookies the site sets, as a browser does (version pins are cookies)." }), true),
    versionHeader: optional(str({ pattern: /^[A-Za-z0-9-]+$/, hint: "an HTTP header name", doc: "Response header naming the version that answered; defaults to health.versionHeader." })),
    timeout: optional(duration({ min: 1, doc: "Per request; no complete answer by then is a failure." }), 10_000),
    settle: optional(duration({ doc: "Keeps probing this long after the last step." }), 1000),
    maxFailed: optional(int({ min: 0, doc: "More failed requests than this fail the deploy (it stops at the next step)." }), 0),
    maxRegressions: optional(int({ min: 0, doc: "More answers from another version after the new one than this fail the deploy; unlimited when absent (a rolling deploy mixes versions by design)." })),
  },
  { doc: "A probe that sends its own requests through the proxy for the whole deploy and reports what users would have seen." },
);

export const configSchema = object({
  app: safeName("Application name; names the generated upstreams."),
  instances: list(instanceSchema, { min: 1, doc: "The fleet." }),
  commands: commandsSchema,
  health: section(healthSchema),
  hosts: optional(mapping({ hint: "a mapping of host names to SSH settings", doc: "Remote hosts by name; instances and the proxy name one (or \"local\"). Each is reached over SSH, or by the executor plugin its `use` names (a package name or a ./file)." })),
  ssh: optional(mapping({ hint: "SSH settings shared by every host", doc: "Defaults merged into every entry of hosts (user, privateKeyFile, knownHostsFile, ...)." })),
  proxy: mapping({
    hint: "a mapping with use (nginx, a package name or a ./file)",
    doc: "The proxy adapter (`use`: nginx, an npm package or a ./file next to this config; `type` is the older name of `use`), `host`, and the adapter's options. Several proxies in front of the fleet (an HA pair, DNS round robin): `hosts`, a list of host names or of mappings with `host` and that proxy's own options over the section's; every routing change goes to all of them, and the first one keeps the deploy lock and the journal.",
  }),
  strategy: optional(
    mapping({
      hint: "a mapping with use (rolling, half-split, blue-green, sticky, canary, a package name or a ./file)",
      doc: "The strategy (`use`: rolling, half-split, blue-green, sticky, canary, an npm package or a ./file next to this config; `name` is the older name of `use`) and its options.",
    }),
    { name: "rolling" },
  ),
  slots: optional(slotsSchema),
  release: optional(releaseSchema),
  hooks: optional(hooksSchema),
  parallel: optional(int({ min: 1, max: 64, doc: "Most commands and checks run at once on one host; hosts work side by side." }), 8),
  verify: optional(verifySchema),
  stateDir: optional(
    str({ pattern: PLAIN_ABSOLUTE_PATH, hint: "an absolute path of plain characters without ..", doc: "On the proxy host (the first of proxy.hosts): where the deploy lock and the journal live. Default /var/lib/nodrop/<app>." }),
  ),
});

type RawConfig = Infer<typeof configSchema>;
export type InstanceConfig = Infer<typeof instanceSchema> & { readonly id: string };

export interface NodropConfig extends Omit<RawConfig, "instances" | "health" | "strategy" | "commands"> {
  readonly instances: readonly InstanceConfig[];
  readonly commands: Infer<typeof commandsSchema> & { cwd: string };
  readonly health: Infer<typeof healthSchema>;
  readonly strategy: Record<string, unknown>;
  /** Directory of the config file; relative paths are resolved from it. */
  readonly baseDir: string;
  /** Where the config came from, for messages. */
  readonly source: string;
}

/** Validates a parsed config object. Throws one E_CONFIG error listing every problem with its path. */
export function validateConfig(raw: unknown, options: { baseDir: string; source?: string }): NodropConfig {
  const issues: ConfigIssue[] = [];
  const config = checkConfig(raw, options, issues);
  if (config === undefined || issues.length > 0) throw configError(sortIssues(issues), options.source ?? "config");
  return config;
}

/**
 * Validates a parsed config object, recording every problem in `issues` (so that a caller can add
 * the problems it finds in the same pass, such as a plugin's options); the config when there was none.
 */
export function checkConfig(raw: unknown, options: { baseDir: string; source?: string }, issues: ConfigIssue[]): NodropConfig | undefined {
  const before = issues.length;
  const parsed = configSchema.parse(raw, "", issues);
  crossFieldIssues(raw, issues);
  if (parsed === undefined || issues.length > before) return undefined;
  return {
    ...parsed,
    instances: parsed.instances.map((i) => withSpare({ ...i, id: instanceId(i)! }, parsed.slots?.offset)),
    strategy: parsed.strategy ?? { name: "rolling" },
    commands: { ...parsed.commands, cwd: path.resolve(options.baseDir, parsed.commands.cwd ?? ".") },
    baseDir: options.baseDir,
    source: options.source ?? "config",
  };
}

/** Issues in config order (top-level key order), so one listing reads like the file. */
export function sortIssues(issues: readonly ConfigIssue[]): ConfigIssue[] {
  return [...issues].sort((x, y) => issueOrder(x.path) - issueOrder(y.path));
}

const TOP_LEVEL = Object.keys(configSchema.fields);
function issueOrder(path: string): number {
  const key = /^[A-Za-z]+/.exec(path)?.[0] ?? "";
  const index = TOP_LEVEL.indexOf(key);
  return index < 0 ? -1 : index;
}

/** An instance's spare port: its own `spare`, else its port + slots.offset. */
function withSpare<I extends { port: number; spare?: number | undefined }>(instance: I, offset: number | undefined): I {
  const spare = instance.spare ?? (offset === undefined ? undefined : instance.port + offset);
  return spare === undefined ? instance : { ...instance, spare };
}

function instanceId(i: { id?: unknown; host?: unknown; port?: unknown }): string | undefined {
  if (typeof i.id === "string") return i.id;
  return typeof i.port === "number" ? `${typeof i.host === "string" ? i.host : "local"}-${i.port}` : undefined;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Checks that span fields (duplicates) or need more than the field's type (IP literals,
 * placeholders, required keys of adapter sections). They run on the raw input, next to the
 * schema pass, so a single run lists every problem.
 */
function crossFieldIssues(raw: unknown, issues: ConfigIssue[]): void {
  if (!isRecord(raw)) return;
  if (Array.isArray(raw.instances)) {
    const ids = new Map<string, number>();
    const endpoints = new Map<string, string>();
    raw.instances.forEach((instance: unknown, index) => {
      if (!isRecord(instance)) return;
      const at = `instances[${index}]`;
      const address = instance.address ?? "127.0.0.1";
      if (typeof address === "string" && isIP(address) === 0) issues.push({ path: `${at}.address`, message: `expected an IP address, got ${JSON.stringify(address)}` });
      const id = instanceId(instance);
      const seen = id === undefined ? undefined : ids.get(id);
      if (seen !== undefined) issues.push({ path: `${at}.id`, message: `duplicate instance id "${id}" (also instances[${seen}])` });
      else if (id !== undefined) ids.set(id, index);
      const offset = isRecord(raw.slots) && typeof raw.slots.offset === "number" ? raw.slots.offset : undefined;
      const spare = typeof instance.spare === "number" ? instance.spare : typeof instance.port === "number" && offset !== undefined ? instance.port + offset : undefined;
      if (spare !== undefined && (spare < 1 || spare > 65535)) issues.push({ path: `${at}.spare`, message: `port ${instance.port} + slots.offset ${offset} is ${spare}, not a port` });
      if (spare !== undefined && spare === instance.port) issues.push({ path: `${at}.spare`, message: `the spare port must differ from the port (${spare})` });
      // Both slots of every instance are addresses nginx routes to: no two may share one.
      for (const [key, port] of [["port", instance.port], ["spare", spare]] as const) {
        if (typeof address !== "string" || typeof port !== "number" || (key === "spare" && port === instance.port)) continue;
        const endpoint = `${address}:${port}`;
        const twin = endpoints.get(endpoint);
        if (twin !== undefined) issues.push({ path: `${at}.${key}`, message: `duplicate address ${endpoint} (also ${twin})` });
        else endpoints.set(endpoint, `instances[${index}]${key === "spare" ? ".spare" : ""}`);
      }
    });
  }
  if (isRecord(raw.commands)) {
    for (const key of ["stop", "update", "start", "prepare"] as const) {
      const template = raw.commands[key];
      if (typeof template === "string") for (const problem of checkTemplate(template)) issues.push({ path: `commands.${key}`, message: problem });
    }
  }
  releaseIssues(raw, issues);
  // Every host an instance or the proxy names must be defined (or be this machine).
  const hostNames = new Set(["local", ...(isRecord(raw.hosts) ? Object.keys(raw.hosts) : [])]);
  const known = () => [...hostNames].map((h) => JSON.stringify(h)).join(", ");
  if (Array.isArray(raw.instances)) {
    raw.instances.forEach((instance: unknown, index) => {
      if (isRecord(instance) && typeof instance.host === "string" && SAFE_NAME.test(instance.host) && !hostNames.has(instance.host)) {
        issues.push({ path: `instances[${index}].host`, message: `unknown host "${instance.host}" (defined: ${known()})` });
      }
    });
  }
  if (isRecord(raw.proxy) && raw.proxy.host !== undefined && typeof raw.proxy.host !== "string") {
    issues.push({ path: "proxy.host", message: `expected a host name (local or one under hosts), got ${JSON.stringify(raw.proxy.host)}` });
  }
  if (isRecord(raw.proxy) && typeof raw.proxy.host === "string" && !hostNames.has(raw.proxy.host)) {
    issues.push({ path: "proxy.host", message: `unknown host "${raw.proxy.host}" (defined: ${known()})` });
  }
  if (isRecord(raw.proxy) && raw.proxy.hosts !== undefined) proxyHostsIssues(raw.proxy, hostNames, known, issues);
  if (isRecord(raw.hosts)) {
    for (const [name, entry] of Object.entries(raw.hosts)) {
      if (name === "local") issues.push({ path: "hosts.local", message: '"local" is this machine and cannot be redefined' });
      else if (!SAFE_NAME.test(name)) issues.push({ path: `hosts.${name}`, message: "host names are letters, digits, '.', '_' or '-'" });
      if (isRecord(entry) && typeof entry.jump === "string" && !hostNames.has(entry.jump)) {
        issues.push({ path: `hosts.${name}.jump`, message: `unknown host "${entry.jump}" (defined: ${known()})` });
      }
    }
  }
  if (isRecord(raw.strategy)) pluginKeyIssues(raw.strategy, "strategy", "name", "a strategy such as rolling, a package name or a ./file", issues);
  if (isRecord(raw.proxy)) pluginKeyIssues(raw.proxy, "proxy", "type", "a proxy such as nginx, a package name or a ./file", issues);
}

/** `{release}` and `commands.prepare` need a release section; its dir takes `{host}` only, and is a plain absolute path for every host. */
function releaseIssues(raw: Record<string, unknown>, issues: ConfigIssue[]): void {
  const commands = isRecord(raw.commands) ? raw.commands : {};
  if (!isRecord(raw.release)) {
    for (const key of ["stop", "update", "start", "prepare"]) {
      const template = commands[key];
      if (typeof template === "string" && template.includes("{release}")) issues.push({ path: `commands.${key}`, message: "{release} needs a release section (release.dir: where each host keeps its releases)" });
    }
    if (typeof commands.prepare === "string") issues.push({ path: "commands.prepare", message: "needs a release section (release.dir: where each host keeps its releases)" });
    return;
  }
  if (typeof commands.prepare === "string") {
    const unknown = [...commands.prepare.matchAll(/\{([a-z]+)\}/g)].map((m) => m[1]!).filter((name) => !["version", "release", "host"].includes(name));
    for (const name of new Set(unknown)) issues.push({ path: "commands.prepare", message: `{${name}} has no value in prepare, which runs once per host (it has {version}, {release} and {host})` });
  }
  const dir = raw.release.dir;
  if (typeof dir !== "string") return;
  const tokens = [...dir.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]);
  for (const token of new Set(tokens)) if (token !== "host") issues.push({ path: "release.dir", message: `{${token}}: the only placeholder here is {host}` });
  if (/[{}]/.test(dir.replaceAll("{host}", ""))) issues.push({ path: "release.dir", message: "a stray brace (the only placeholder is {host})" });
  else if (!PLAIN_ABSOLUTE_PATH.test(dir.replaceAll("{host}", "h")) || dir.replaceAll("{host}", "h").split("/").includes("..")) issues.push({ path: "release.dir", message: `${JSON.stringify(dir)} is not an absolute path of plain characters without ..` });
  else if (/^\/+$/.test(dir)) issues.push({ path: "release.dir", message: "not the root directory: releases are removed from it" });
}

/**
 * `proxy.hosts`: several proxies in front of the fleet, each a host name or a mapping with `host`
 * and that proxy's own options (over the section's). Each host once; not beside `proxy.host`.
 */
function proxyHostsIssues(proxy: Record<string, unknown>, hostNames: ReadonlySet<string>, known: () => string, issues: ConfigIssue[]): void {
  const list = proxy.hosts;
  if (proxy.host !== undefined) issues.push({ path: "proxy.hosts", message: "give either proxy.host (one proxy) or proxy.hosts (several), not both" });
  if (!Array.isArray(list) || list.length === 0) {
    issues.push({ path: "proxy.hosts", message: `expected a list of at least one host (a name, or a mapping with host and that proxy's options), got ${JSON.stringify(list)}` });
    return;
  }
  const seen = new Set<string>();
  list.forEach((entry: unknown, index) => {
    const at = `proxy.hosts[${index}]`;
    const host = typeof entry === "string" ? entry : isRecord(entry) ? entry.host : undefined;
    if (typeof host !== "string") {
      issues.push({ path: isRecord(entry) ? `${at}.host` : at, message: `expected a host name (local or one under hosts), got ${JSON.stringify(isRecord(entry) ? entry.host : entry)}` });
      return;
    }
    if (!hostNames.has(host)) issues.push({ path: `${at}${isRecord(entry) ? ".host" : ""}`, message: `unknown host "${host}" (defined: ${known()})` });
    else if (seen.has(host)) issues.push({ path: at, message: `host "${host}" is listed twice: each proxy host once` });
    seen.add(host);
    if (isRecord(entry)) for (const key of ["use", "type", "hosts"]) if (key in entry) issues.push({ path: `${at}.${key}`, message: `${key} belongs to the proxy section, not to one of its hosts` });
  });
}

/** A plugin section names its plugin with `use`, or with its older key (`strategy.name`, `proxy.type`). */
function pluginKeyIssues(section: Record<string, unknown>, at: string, legacy: string, hint: string, issues: ConfigIssue[]): void {
  const hasUse = section.use !== undefined;
  const hasLegacy = section[legacy] !== undefined;
  if (hasUse && hasLegacy) issues.push({ path: `${at}.use`, message: `give use or ${legacy}, not both (use is the newer name of ${legacy})` });
  else if (!hasUse && !hasLegacy) issues.push({ path: `${at}.use`, message: `required: ${hint}` });
  else {
    const key = hasUse ? "use" : legacy;
    if (typeof section[key] !== "string" || section[key] === "") issues.push({ path: `${at}.${key}`, message: `expected ${hint}, got ${JSON.stringify(section[key])}` });
  }
}

/**
 * What a plugin section names: `use`, or its older key (`strategy.name`, `proxy.type`), with the
 * config path it came from; undefined when it names none (checkConfig reports that).
 */
export function pluginSpecifier(section: unknown, legacy: "name" | "type"): { specifier: string; path: string } | undefined {
  if (!isRecord(section)) return undefined;
  const at = (key: string) => (typeof section[key] === "string" && section[key] !== "" ? (section[key] as string) : undefined);
  const use = at("use");
  if (use !== undefined) return { specifier: use, path: "use" };
  const older = at(legacy);
  return older === undefined ? undefined : { specifier: older, path: legacy };
}

/** Reads and validates a YAML (or JSON) config file. */
export async function loadConfig(file: string): Promise<NodropConfig> {
  const { raw, baseDir, source } = await readConfigFile(file);
  return validateConfig(raw, { baseDir, source });
}

/** A config file parsed but not yet validated, with the directory its relative paths start from. */
export interface ConfigFile {
  readonly raw: unknown;
  /** The config file's directory (absolute). */
  readonly baseDir: string;
  /** The file as named, for messages. */
  readonly source: string;
}

/** Reads and parses a YAML (or JSON) config file; the caller validates it. */
export async function readConfigFile(file: string): Promise<ConfigFile> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new NodropError("E_CONFIG", `cannot read config file ${file}: ${(error as Error).message}`, { cause: error });
  }
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (error) {
    const message = error instanceof YAMLParseError ? error.message.split("\n")[0] : String(error);
    throw new NodropError("E_CONFIG", `config file ${file} is not valid YAML: ${message}`, { cause: error });
  }
  return { raw, baseDir: path.dirname(path.resolve(file)), source: file };
}

/** Separates a section's own keys (`type`, `name`, `host`) from the options its owner validates. */
export function sectionOptions(section: Record<string, unknown>, ownKeys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(section).filter(([key]) => !ownKeys.includes(key)));
}
