import { createHash, createHmac } from "node:crypto";

// known_hosts as OpenSSH reads it. Each rule below follows openssh-portable: hostfile.c
// (hostkeys_foreach_file, check_markers, match_maybe_hashed, check_hostkeys_by_key_or_type),
// match.c (match_pattern, match_pattern_list, match_hostname) and sshkey.c (sshkey_read). The
// integration test packages/ssh/test/known-hosts-oracle.test.ts compares this file with
// `ssh-keygen -l -F NAME -f FILE` on thousands of generated files.

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
  /** The host field: a comma list of patterns, or one hashed name (|1|salt|hash). */
  readonly patterns: string;
  readonly keyType: string;
  readonly key: Buffer;
  /** 1-based line number, for messages. */
  readonly line: number;
}

/** Reads the SSH wire strings of a blob; undefined when it is not a whole number of them. */
function wireStrings(blob: Buffer): Buffer[] | undefined {
  const out: Buffer[] = [];
  for (let at = 0; at < blob.length; ) {
    if (at + 4 > blob.length) return undefined;
    const length = blob.readUInt32BE(at);
    if (at + 4 + length > blob.length) return undefined;
    out.push(blob.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return out;
}

const ECDSA_POINT: Record<string, number> = { nistp256: 65, nistp384: 97, nistp521: 133 };

/**
 * Whether `blob` is a public key OpenSSH would load for a line whose key type field is `type`
 * (sshkey_read: the field names a known type, the blob decodes, is of that same type and has no
 * trailing bytes). Plain key types are checked for their structure; certificates for their type.
 */
function keyBlobValid(type: string, blob: Buffer): boolean {
  const parts = wireStrings(blob);
  if (!parts || parts.length === 0) return false;
  const inner = parts[0]!.toString("latin1");
  // rsa-sha2-256/512 are signature names of ssh-rsa keys; sshkey_read takes them as RSA.
  const want = type === "rsa-sha2-256" || type === "rsa-sha2-512" ? "ssh-rsa" : type;
  if (inner !== want) return false;
  switch (inner) {
    case "ssh-ed25519":
      return parts.length === 2 && parts[1]!.length === 32;
    case "sk-ssh-ed25519@openssh.com":
      return parts.length === 3 && parts[1]!.length === 32;
    case "ssh-rsa":
      return parts.length === 3 && parts[2]!.length > 0;
    case "ssh-dss":
      return parts.length === 5;
    case "ecdsa-sha2-nistp256":
    case "ecdsa-sha2-nistp384":
    case "ecdsa-sha2-nistp521": {
      const curve = inner.slice("ecdsa-sha2-".length);
      return parts.length === 3 && parts[1]!.toString("latin1") === curve && parts[2]!.length === ECDSA_POINT[curve] && parts[2]![0] === 4;
    }
    case "sk-ecdsa-sha2-nistp256@openssh.com":
      return parts.length === 4 && parts[1]!.toString("latin1") === "nistp256" && parts[2]!.length === 65 && parts[2]![0] === 4;
    default:
      return KNOWN_TYPES.has(inner) && inner.endsWith("-cert-v01@openssh.com");
  }
}

const KNOWN_TYPES = new Set([
  "ssh-ed25519",
  "sk-ssh-ed25519@openssh.com",
  "ssh-rsa",
  "rsa-sha2-256",
  "rsa-sha2-512",
  "ssh-dss",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ecdsa-sha2-nistp256@openssh.com",
  ...["ssh-ed25519", "sk-ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "sk-ecdsa-sha2-nistp256"].map(
    (t) => `${t}-cert-v01@openssh.com`,
  ),
]);

/** Base64 that OpenSSH's b64_pton decodes, in its one canonical spelling (anything else is refused or never equal). */
function decodeBase64(text: string): Buffer | undefined {
  // b64_pton skips white space other than the field separators (a CR of a CRLF file, say).
  const compact = text.replace(/[\r\n\v\f]/g, "");
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(compact) || compact === "") return undefined;
  const decoded = Buffer.from(compact, "base64");
  // Non-zero bits after the last whole byte: b64_pton refuses them.
  return decoded.toString("base64") === compact ? decoded : undefined;
}

const isBlank = (c: string | undefined) => c === " " || c === "\t";

/** check_markers: at most one marker, each ended by a space (else a tab); anything else spoils the line. */
function readMarker(line: string, at: number): { marker: KnownHostEntry["marker"]; at: number } | undefined {
  let marker: KnownHostEntry["marker"];
  while (line[at] === "@") {
    if (marker !== undefined) return undefined;
    let end = line.indexOf(" ", at);
    if (end < 0) end = line.indexOf("\t", at);
    if (end < 0 || end <= at + 1 || end >= at + 32) return undefined;
    const word = line.slice(at, end);
    if (word === "@cert-authority" || word === "@revoked") marker = word;
    else return undefined;
    at = end;
    while (isBlank(line[at])) at++;
  }
  return { marker, at };
}

/**
 * Parses known_hosts text the way ssh loads it (plain, [host]:port, hashed |1| entries, comma
 * lists, wildcards, markers, comments after the key). Lines OpenSSH skips are skipped: comments,
 * unknown or repeated markers, lines without a key, unknown key types, keys that do not decode.
 */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split("\n").forEach((line, index) => {
    let at = 0;
    while (isBlank(line[at])) at++;
    if (at === line.length || line[at] === "#") return;
    const marked = readMarker(line, at);
    if (!marked) return;
    at = marked.at;
    const hostEnd = line.slice(at).search(/[ \t]/);
    if (hostEnd < 0) return;
    const patterns = line.slice(at, at + hostEnd);
    at += hostEnd;
    while (isBlank(line[at])) at++;
    if (at === line.length || line[at] === "#") return;
    const typeEnd = line.slice(at).search(/[ \t]/);
    if (typeEnd < 0) return;
    const type = line.slice(at, at + typeEnd);
    if (!KNOWN_TYPES.has(type)) return;
    at += typeEnd;
    while (isBlank(line[at])) at++;
    if (at === line.length) return;
    const blobEnd = line.slice(at).search(/[ \t]/);
    const key = decodeBase64(blobEnd < 0 ? line.slice(at) : line.slice(at, at + blobEnd));
    if (!key || !keyBlobValid(type, key)) return;
    entries.push({ marker: marked.marker, patterns, keyType: keyType(key), key, line: index + 1 });
  });
  return entries;
}

/** How OpenSSH names a host in known_hosts: "host" on port 22, "[host]:port" elsewhere. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** OpenSSH lowercases with tolower() in the C locale: ASCII letters only. */
const lowerAscii = (text: string) => text.replace(/[A-Z]/g, (c) => c.toLowerCase());

/** match_pattern: `*` is any run of characters, `?` any one character, everything else (`[`, `]`, `\` ...) itself. */
export function matchPattern(name: string, pattern: string): boolean {
  let n = 0;
  let p = 0;
  let star = -1;
  let resume = 0;
  while (n < name.length) {
    if (p < pattern.length && (pattern[p] === "?" || (pattern[p] !== "*" && pattern[p] === name[n]))) {
      n++;
      p++;
    } else if (p < pattern.length && pattern[p] === "*") {
      star = p++;
      resume = n;
    } else if (star >= 0) {
      p = star + 1;
      n = ++resume;
    } else return false;
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}

/**
 * match_hostname: the name (lowercased) against a comma list of patterns (lowercased), each
 * possibly negated with `!`. -1 when a negated pattern matches (the whole list then does not
 * match, whatever else matches), 1 when a plain pattern matches, 0 otherwise.
 */
export function matchHostname(name: string, patterns: string): -1 | 0 | 1 {
  const host = lowerAscii(name);
  let positive = false;
  for (let i = 0; i < patterns.length; ) {
    const negated = patterns[i] === "!";
    if (negated) i++;
    let end = patterns.indexOf(",", i);
    if (end < 0) end = patterns.length;
    // match_pattern_list gives up on a subpattern of 1023 characters or more: no match.
    if (end - i >= 1023) return 0;
    const sub = lowerAscii(patterns.slice(i, end));
    i = end < patterns.length ? end + 1 : end;
    if (matchPattern(host, sub)) {
      if (negated) return -1;
      positive = true;
    }
  }
  return positive ? 1 : 0;
}

/**
 * match_maybe_hashed: a host field that starts with "|" is one hashed name, |1|base64(salt)|
 * base64(HMAC-SHA1(salt, name)), compared whole; any other field is a pattern list that must match
 * positively.
 */
export function hostFieldMatches(field: string, name: string): boolean {
  return hostFieldMatch(field, name) === 1;
}

/** As hostFieldMatches, keeping a negative match apart (-1) from no match (0). */
function hostFieldMatch(field: string, name: string): -1 | 0 | 1 {
  if (field.startsWith("|")) {
    if (!field.startsWith("|1|")) return 0;
    const end = field.indexOf("|", 3);
    if (end < 0 || end === 3 || end - 3 > 1024) return 0;
    const salt = Buffer.from(field.slice(3, end), "base64");
    if (salt.length !== 20) return 0;
    // The name is hashed as given; ssh lowercases it first (verifyKnownHost does too).
    const hash = createHmac("sha1", salt).update(name).digest("base64");
    return field === `|1|${salt.toString("base64")}|${hash}` ? 1 : 0;
  }
  return matchHostname(name, field);
}

/** The entries whose host field names `name` (what `ssh-keygen -F name` lists, markers included). */
export function entriesFor(entries: readonly KnownHostEntry[], name: string): KnownHostEntry[] {
  const host = lowerAscii(name);
  return entries.filter((e) => hostFieldMatches(e.patterns, host));
}

export type HostKeyVerdict =
  | { readonly status: "match"; readonly line: number }
  | { readonly status: "unknown" }
  | { readonly status: "mismatch"; readonly expected: readonly string[] }
  | { readonly status: "revoked"; readonly line: number };

/**
 * Checks an offered host key against known_hosts entries for every name the host goes by (its
 * address, and the name nodrop's config gives it), as
 * check_hostkeys_by_key_or_type does: `@revoked` lines for the host refuse the key whatever else
 * says; `@cert-authority` lines vouch only for certificates, so for a plain key they count neither
 * as a match nor as a known key; otherwise a line with the same key matches, and lines with other
 * keys make it a mismatch (a changed key).
 *
 * `fallbackNames` are names to try when no plain line names the host at all: ssh, connecting to a
 * port other than 22, also accepts the key of a line for the bare host name ("checking without
 * port identifier" in sshconnect.c); such lines only ever accept, never refuse. Revocations under
 * those names refuse too.
 */
export function verifyKnownHost(entries: readonly KnownHostEntry[], names: readonly string[], offered: Buffer, fallbackNames: readonly string[] = []): HostKeyVerdict {
  // A line names the host when it matches one of its names and negates none of them (like
  // match_host_and_ip: "!address" on a line excludes the host even when `*` matches another name).
  const lines = (list: readonly string[]) => {
    const hosts = list.map(lowerAscii);
    return entries.filter((e) => {
      const results = hosts.map((n) => hostFieldMatch(e.patterns, n));
      return results.includes(1) && !results.includes(-1);
    });
  };
  const forHost = lines(names);
  const forFallback = lines(fallbackNames);
  const revoked = [...forHost, ...forFallback].find((e) => e.marker === "@revoked" && e.key.equals(offered));
  if (revoked) return { status: "revoked", line: revoked.line };
  const plain = forHost.filter((e) => e.marker === undefined);
  const match = plain.find((e) => e.key.equals(offered));
  if (match) return { status: "match", line: match.line };
  if (plain.length > 0) return { status: "mismatch", expected: plain.map((e) => `${e.keyType} ${fingerprint(e.key)} (line ${e.line})`) };
  const fallback = forFallback.find((e) => e.marker === undefined && e.key.equals(offered));
  if (fallback) return { status: "match", line: fallback.line };
  return { status: "unknown" };
}

/** The known_hosts line that records a key for a host (the name lowercased, as ssh writes it). */
export function knownHostsLine(name: string, keyBlob: Buffer): string {
  return `${lowerAscii(name)} ${keyType(keyBlob)} ${keyBlob.toString("base64")}`;
}
