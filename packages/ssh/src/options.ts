import { schema } from "@nodrop/core";

const envName = (doc: string) => schema.str({ pattern: /^[A-Za-z_][A-Za-z0-9_]{0,127}$/, hint: "an environment variable name", doc });
const filePath = (doc: string) => schema.str({ pattern: /^[A-Za-z0-9._\/~@+-]+$/, hint: "a file path of plain characters", doc });

/** One entry under `hosts:` (after the top-level `ssh:` defaults are merged in). */
export const sshHostSchema = schema.object({
  address: schema.str({ pattern: /^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$/, hint: "an IP address or DNS name", doc: "Where sshd listens." }),
  port: schema.optional(schema.int({ min: 1, max: 65535, doc: "sshd's port." }), 22),
  user: schema.str({ pattern: /^[a-z_][a-z0-9_.-]{0,31}$/, hint: "a user name", doc: "Login user." }),
  privateKeyFile: schema.optional(filePath("Private key file (OpenSSH or PEM). Never printed.")),
  privateKeyEnv: schema.optional(envName("Environment variable holding the private key text (how the GitHub Action passes it).")),
  passphraseEnv: schema.optional(envName("Environment variable holding the key's passphrase.")),
  agent: schema.optional(schema.bool({ doc: "Use the ssh-agent at $SSH_AUTH_SOCK." }), false),
  knownHosts: schema.optional(schema.str({ minLength: 1, hint: "known_hosts lines", doc: "known_hosts text with this host's key." })),
  knownHostsFile: schema.optional(filePath("known_hosts file; default ~/.ssh/known_hosts when neither knownHosts nor fingerprint is given.")),
  fingerprint: schema.optional(
    schema.str({ pattern: /^SHA256:[A-Za-z0-9+/]{43}$/, hint: 'an OpenSSH fingerprint such as "SHA256:…" (ssh-keygen -lf)', doc: "Pinned host key fingerprint." }),
  ),
  hostKeyPolicy: schema.optional(
    schema.oneOf(["strict", "accept-new"] as const, { doc: "strict: unknown or changed keys are refused. accept-new: unknown keys are accepted and recorded in knownHostsFile (changed keys are still refused)." }),
    "strict",
  ),
  jump: schema.optional(schema.str({ pattern: /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, hint: "a host name from hosts", doc: "Connect through this host (like ProxyJump)." })),
  maxSessions: schema.optional(schema.int({ min: 1, max: 9, doc: "Concurrent commands on the connection (OpenSSH allows 10 by default)." }), 8),
  connectTimeout: schema.optional(schema.duration({ min: 100, doc: "SSH handshake deadline." }), 10_000),
  keepaliveInterval: schema.optional(schema.duration({ min: 100, doc: "SSH keep-alive interval." }), 5_000),
});

export type SshHostOptions = schema.Infer<typeof sshHostSchema>;
