import * as core from "@actions/core";

export interface ActionInputs {
  config: string;
  version: string;
  strategy: string | undefined;
  sshPrivateKey: string | undefined;
  sshPassphrase: string | undefined;
  knownHosts: string | undefined;
  dryRun: boolean;
  /** enforce, report or off; checked where it is used. */
  verify: string | undefined;
  /** A duration; checked where it is used. */
  lockWait: string | undefined;
  /** A file or directory sent to every host as the release; checked where it is used. */
  artifact: string | undefined;
  /** deploy, promote or abort; checked where it is used. */
  command: string;
}

/**
 * Reads the inputs; every secret is masked before anything else can print it, and the runner's
 * INPUT_SSH-* variables leave the environment at once: every local command (and any daemon it
 * starts, e.g. an app server) would inherit them, readable in /proc/PID/environ.
 */
export function readInputs(env: NodeJS.ProcessEnv = process.env): ActionInputs {
  const sshPrivateKey = core.getInput("ssh-private-key") || undefined;
  const sshPassphrase = core.getInput("ssh-passphrase") || undefined;
  if (sshPrivateKey) core.setSecret(sshPrivateKey);
  if (sshPassphrase) core.setSecret(sshPassphrase);
  for (const name of Object.keys(process.env)) if (/^INPUT_SSH[-_]/i.test(name)) delete process.env[name];
  const version = core.getInput("version") || env.GITHUB_SHA || "";
  return {
    config: core.getInput("config", { required: true }),
    version,
    strategy: core.getInput("strategy") || undefined,
    sshPrivateKey: sshPrivateKey ? `${sshPrivateKey.trim()}\n` : undefined,
    sshPassphrase,
    knownHosts: core.getInput("known-hosts") || undefined,
    dryRun: core.getBooleanInput("dry-run"),
    verify: core.getInput("verify") || undefined,
    lockWait: core.getInput("lock-wait") || undefined,
    artifact: core.getInput("artifact") || undefined,
    command: core.getInput("command") || "deploy",
  };
}
