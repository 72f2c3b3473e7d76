export { sshExecutor } from "./ssh-executor.js";
export type { SshExecutor, SshExecutorOptions, SshTarget, HostKeyOptions } from "./ssh-executor.js";
export { fingerprint, keyType, parseKnownHosts, verifyKnownHost, knownHostsName, knownHostsLine } from "./known-hosts.js";
export type { KnownHostEntry, HostKeyVerdict } from "./known-hosts.js";
export { sshHostSchema } from "./options.js";
export type { SshHostOptions } from "./options.js";
