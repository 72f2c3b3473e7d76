import { existsSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { type ConfigIssue, type Executor, type NodropConfig, describeValue } from "@nodrop/core";
import { type SshHostOptions, type SshTarget, sshExecutor, sshHostSchema } from "@nodrop/ssh";

export interface HostSetupOptions {
  /** Where secrets named by `privateKeyEnv` / `passphraseEnv` are read from. */
  env?: NodeJS.ProcessEnv;
  log?: (message: string) => void;
  /**
   * SSH settings laid over the config's `ssh` defaults (a host's own settings still win): the
   * action's ssh-private-key and known-hosts inputs.
   */
  sshOverrides?: Record<string, unknown>;
}

/** Where the GitHub Action hands its ssh-private-key and ssh-passphrase inputs to nodrop. */
export const ACTION_SECRET_ENV = ["NODROP_ACTION_SSH_KEY", "NODROP_ACTION_SSH_PASSPHRASE"] as const;

/**
 * The environment variables that hold secrets for this config: every `privateKeyEnv` and
 * `passphraseEnv` (in `ssh` and in each host), every `...Env` option of an executor plugin's host
 * (`tokenEnv`) or of the proxy's section, and the action's. Local commands must not inherit
 * them (nor the daemons those commands start).
 */
export function secretEnvNames(config: NodropConfig): string[] {
  const names = new Set<string>(ACTION_SECRET_ENV);
  // privateKeyEnv, passphraseEnv, and any option of a plugin named the same way (tokenEnv).
  for (const entry of [config.ssh, config.proxy, config.strategy, ...Object.values(config.hosts ?? {})]) for (const name of envOptionNames(entry)) names.add(name);
  return [...names];
}

const expand = (file: string, baseDir: string) => (file.startsWith("~/") ? path.join(os.homedir(), file.slice(2)) : path.resolve(baseDir, file));

/**
 * The hosts of a config, by how they are reached: over SSH (no `use`, or `use: ssh`), or by an
 * executor plugin (`use: <package or ./file>`). A `use` that is neither is a problem at its path,
 * and that host is in neither list.
 */
export function splitHosts(hosts: unknown, issues: ConfigIssue[] = []): { ssh: string[]; plugins: [name: string, use: string][] } {
  const ssh: string[] = [];
  const plugins: [string, string][] = [];
  if (typeof hosts !== "object" || hosts === null || Array.isArray(hosts)) return { ssh, plugins };
  for (const [name, entry] of Object.entries(hosts)) {
    const use = typeof entry === "object" && entry !== null ? (entry as Record<string, unknown>).use : undefined;
    if (use === undefined || use === "ssh") ssh.push(name);
    else if (typeof use === "string" && use !== "") plugins.push([name, use]);
    else issues.push({ path: `hosts.${name}.use`, message: `expected ssh, a package name or a ./file, got ${describeValue(use)}` });
  }
  return { ssh, plugins };
}

/**
 * The environment an executor plugin reads its secrets from: nodrop's, without the secrets of other
 * hosts and of the action (SSH keys), plus the variables its own `...Env` options name.
 */
export function pluginEnv(env: NodeJS.ProcessEnv, config: NodropConfig, section: Record<string, unknown>): Record<string, string | undefined> {
  const own = new Set(envOptionNames(section));
  const hidden = new Set(secretEnvNames(config).filter((name) => !own.has(name)));
  return Object.fromEntries(Object.entries(env).filter(([name]) => !hidden.has(name)));
}

/** The variable names a section's `...Env` options hold (`privateKeyEnv: DEPLOY_KEY`), at any depth. */
function envOptionNames(section: unknown, depth = 0): string[] {
  if (typeof section !== "object" || section === null || depth > 8) return [];
  return Object.entries(section as Record<string, unknown>).flatMap(([field, value]) =>
    /Env$/.test(field) && typeof value === "string" && value !== "" ? [value] : envOptionNames(value, depth + 1),
  );
}

/**
 * Validates the SSH hosts named (with the `ssh` defaults merged in), recording every problem in
 * `issues`, and returns a factory per host: each call creates a new executor, so a second one for
 * the same host (its own connection: the deploy lock's heartbeat) has the same options.
 */
export function sshExecutorFactories(config: NodropConfig, names: readonly string[], options: HostSetupOptions, issues: ConfigIssue[]): Map<string, () => Executor> {
  const env = options.env ?? process.env;
  const parsed = new Map<string, SshHostOptions>();
  for (const name of names) {
    const { use: _ssh, ...entry } = (config.hosts?.[name] ?? {}) as Record<string, unknown>;
    const merged = { ...(config.ssh ?? {}), ...(options.sshOverrides ?? {}), ...entry };
    const host = sshHostSchema.parse(merged, `hosts.${name}`, issues);
    if (host) parsed.set(name, host);
  }
  const targets = new Map<string, SshTarget>();
  const resolving = new Set<string>();
  const target = (name: string): SshTarget | undefined => {
    const done = targets.get(name);
    if (done) return done;
    const host = parsed.get(name);
    if (!host) return undefined;
    const at = `hosts.${name}`;
    if (resolving.has(name)) {
      issues.push({ path: `${at}.jump`, message: `jump hosts form a loop through "${name}"` });
      return undefined;
    }
    resolving.add(name);
    if (host.jump && !names.includes(host.jump)) {
      issues.push({ path: `${at}.jump`, message: `"${host.jump}" is not an SSH host (its entry names an executor plugin): a jump host is reached over SSH` });
    }
    let privateKey: string | undefined;
    if (host.privateKeyFile) {
      const file = expand(host.privateKeyFile, config.baseDir);
      try {
        privateKey = readFileSync(file, "utf8");
      } catch (error) {
        issues.push({ path: `${at}.privateKeyFile`, message: `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? "error"}` });
      }
    }
    if (host.privateKeyEnv) {
      privateKey = env[host.privateKeyEnv];
      if (!privateKey) issues.push({ path: `${at}.privateKeyEnv`, message: `environment variable ${host.privateKeyEnv} is not set` });
    }
    let passphrase: string | undefined;
    if (host.passphraseEnv) {
      passphrase = env[host.passphraseEnv];
      if (passphrase === undefined) issues.push({ path: `${at}.passphraseEnv`, message: `environment variable ${host.passphraseEnv} is not set` });
    }
    const agent = host.agent ? env.SSH_AUTH_SOCK : undefined;
    if (host.agent && !agent) issues.push({ path: `${at}.agent`, message: "SSH_AUTH_SOCK is not set: no ssh-agent to use" });
    if (!privateKey && !host.agent) issues.push({ path: at, message: "no credentials: set privateKeyFile, privateKeyEnv or agent: true" });

    let knownHosts = host.knownHosts ?? "";
    let recordTo: string | undefined;
    const defaultFile = !host.knownHosts && !host.knownHostsFile && !host.fingerprint ? "~/.ssh/known_hosts" : undefined;
    const knownFile = host.knownHostsFile ?? defaultFile;
    if (knownFile) {
      const file = expand(knownFile, config.baseDir);
      recordTo = file;
      if (existsSync(file)) knownHosts += `\n${readFileSync(file, "utf8")}`;
      else if (host.knownHostsFile && host.hostKeyPolicy !== "accept-new") {
        issues.push({ path: `${at}.knownHostsFile`, message: `${file} does not exist` });
      }
    }
    const jump = host.jump ? target(host.jump) : undefined;
    const result: SshTarget = {
      name,
      address: host.address,
      port: host.port,
      user: host.user,
      privateKey,
      passphrase,
      agent,
      hostKeys: { knownHosts, fingerprints: host.fingerprint ? [host.fingerprint] : [], policy: host.hostKeyPolicy, recordTo },
      jump,
      connectTimeoutMs: host.connectTimeout,
      keepaliveIntervalMs: host.keepaliveInterval,
    };
    resolving.delete(name);
    targets.set(name, result);
    return result;
  };
  for (const name of parsed.keys()) target(name);
  const factories = new Map<string, () => Executor>();
  for (const [name, t] of targets) factories.set(name, () => sshExecutor({ ...t, maxSessions: parsed.get(name)!.maxSessions, log: options.log }));
  return factories;
}
