import { createHash, createHmac } from "node:crypto";

/** OpenSSH's fingerprint of a raw public key blob: "SHA256:" + unpadded base64 of its SHA-256. */
export function fingerprint(keyBlob: Buffer): string {
  return `SHA256:${createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "")}`;
}

/** The key type written inside a public key blob ("ssh-ed25519", "ecdsa-sha2-nistp256", ...). */
export function keyType(keyBlob: Buffer): string {
  if (keyBlob.length < 4) return "unknown";
  const length = keyBlob.readUInt32BE(0);
  return keyBlob.subarray(4, 4 + length).toString("latin1");
}

export interface KnownHostEntry {
  readonly marker: "@revoked" | "@cert-authority" | undefined;
  readonly patterns: string;
  readonly keyType: string;
  readonly key: Buffer;
  /** 1-based line number, for messages. */
  readonly line: number;
}

/** Parses known_hosts text (plain, [host]:port, hashed |1| entries, comma lists, wildcards, markers). */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split("\n").forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry["marker"];
    if (fields[0] === "@revoked" || fields[0] === "@cert-authority") marker = fields.shift() as KnownHostEntry["marker"];
    const [patterns, type, base64] = fields;
    if (!patterns || !type || !base64) return;
    entries.push({ marker, patterns, keyType: type, key: Buffer.from(base64, "base64"), line: index + 1 });
  });
  return entries;
}

/** How OpenSSH names a host in known_hosts: "host" on port 22, "[host]:port" elsewhere. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globMatch(pattern: string, name: string): boolean {
  const regex = new RegExp(`^${pattern.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`, "i");
  return regex.test(name);
}

function patternMatches(pattern: string, name: string): boolean {
  if (pattern.startsWith("|1|")) {
    const [, , salt, hash] = pattern.split("|");
    if (!salt || !hash) return false;
    return createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64") === hash;
  }
  return globMatch(pattern, name);
}

/** Whether a comma list of patterns names the host (a negated pattern that matches wins). */
function hostMatches(patterns: string, name: string): boolean {
  let matched = false;
  for (const pattern of patterns.split(",")) {
    if (pattern.startsWith("!")) {
      if (patternMatches(pattern.slice(1), name)) return false;
    } else if (patternMatches(pattern, name)) matched = true;
  }
  return matched;
}

export type HostKeyVerdict =
  | { readonly status: "match"; readonly line: number }
  | { readonly status: "unknown" }
  | { readonly status: "mismatch"; readonly expected: readonly string[] }
  | { readonly status: "revoked"; readonly line: number };

/** Checks an offered host key against known_hosts entries for every name the host goes by. */
export function verifyKnownHost(entries: readonly KnownHostEntry[], names: readonly string[], offered: Buffer): HostKeyVerdict {
  const forHost = entries.filter((e) => names.some((n) => hostMatches(e.patterns, n)));
  const revoked = entries.find((e) => e.marker === "@revoked" && e.key.equals(offered));
  if (revoked) return { status: "revoked", line: revoked.line };
  const plain = forHost.filter((e) => e.marker === undefined);
  const match = plain.find((e) => e.key.equals(offered));
  if (match) return { status: "match", line: match.line };
  if (plain.length === 0) return { status: "unknown" };
  return { status: "mismatch", expected: plain.map((e) => `${e.keyType} ${fingerprint(e.key)} (line ${e.line})`) };
}

/** The known_hosts line that records a key for a host. */
export function knownHostsLine(name: string, keyBlob: Buffer): string {
  return `${name} ${keyType(keyBlob)} ${keyBlob.toString("base64")}`;
}
