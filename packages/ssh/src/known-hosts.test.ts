import { createHmac, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { fingerprint, keyType, knownHostsLine, knownHostsName, parseKnownHosts, verifyKnownHost } from "./known-hosts.js";

// A syntactically real ed25519 public key blob: string "ssh-ed25519" + 32 key bytes.
function blob(seed: number): Buffer {
  const type = Buffer.from("ssh-ed25519");
  const key = Buffer.alloc(32, seed);
  const out = Buffer.alloc(4 + type.length + 4 + 32);
  out.writeUInt32BE(type.length, 0);
  type.copy(out, 4);
  out.writeUInt32BE(32, 4 + type.length);
  key.copy(out, 8 + type.length);
  return out;
}

describe("known_hosts", () => {
  const a = blob(1);
  const b = blob(2);

  it("fingerprints like ssh-keygen -lf (SHA256, unpadded base64) and reads the key type", () => {
    expect(fingerprint(a)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    expect(fingerprint(a)).not.toBe(fingerprint(b));
    expect(keyType(a)).toBe("ssh-ed25519");
  });

  it("names non-22 ports as [host]:port", () => {
    expect(knownHostsName("10.0.0.1", 22)).toBe("10.0.0.1");
    expect(knownHostsName("10.0.0.1", 2222)).toBe("[10.0.0.1]:2222");
  });

  it("matches plain, comma-listed, wildcard and hashed entries", () => {
    const salt = randomBytes(20);
    const hashed = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update("web9").digest("base64")}`;
    const entries = parseKnownHosts(
      [
        "# comment",
        knownHostsLine("10.0.0.1", a),
        `web2,10.0.0.2 ssh-ed25519 ${a.toString("base64")}`,
        `*.example.org ssh-ed25519 ${a.toString("base64")}`,
        `${hashed} ssh-ed25519 ${a.toString("base64")}`,
      ].join("\n"),
    );
    expect(entries).toHaveLength(4);
    for (const name of ["10.0.0.1", "10.0.0.2", "web2", "db.example.org", "web9"]) {
      expect(verifyKnownHost(entries, [name], a).status).toBe("match");
    }
    expect(verifyKnownHost(entries, ["web10"], a).status).toBe("unknown");
  });

  it("reports a changed key as a mismatch listing the expected fingerprint", () => {
    const entries = parseKnownHosts(knownHostsLine("10.0.0.1", a));
    const verdict = verifyKnownHost(entries, ["10.0.0.1"], b);
    expect(verdict.status).toBe("mismatch");
    expect(verdict.status === "mismatch" && verdict.expected[0]).toContain(fingerprint(a));
  });

  it("refuses a revoked key even when another line accepts it, and skips negated names", () => {
    const entries = parseKnownHosts([knownHostsLine("10.0.0.1", a), `@revoked * ssh-ed25519 ${a.toString("base64")}`].join("\n"));
    expect(verifyKnownHost(entries, ["10.0.0.1"], a).status).toBe("revoked");
    const negated = parseKnownHosts(`*,!10.0.0.3 ssh-ed25519 ${a.toString("base64")}`);
    expect(verifyKnownHost(negated, ["10.0.0.3"], a).status).toBe("unknown");
    expect(verifyKnownHost(negated, ["10.0.0.4"], a).status).toBe("match");
  });
});

// Issue 13 item 1: each case below failed before the matcher followed OpenSSH (match.c, hostfile.c).
describe("known_hosts as OpenSSH matches it", () => {
  const a = blob(1);
  const b = blob(2);
  const line = (hosts: string, key: Buffer, marker = "") => `${marker ? `${marker} ` : ""}${hosts} ssh-ed25519 ${key.toString("base64")}`;
  const hashedName = (name: string, salt = randomBytes(20)) => `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update(name).digest("base64")}`;

  it("[host]:port lines (what ssh and ssh-keyscan -p write for ports other than 22) match that host and port only", () => {
    const entries = parseKnownHosts(line("[10.0.0.1]:2222", a));
    expect(verifyKnownHost(entries, ["[10.0.0.1]:2222"], a)).toEqual({ status: "match", line: 1 });
    expect(verifyKnownHost(entries, ["[10.0.0.1]:2222"], b).status).toBe("mismatch");
    expect(verifyKnownHost(entries, ["[10.0.0.1]:2223"], a).status).toBe("unknown");
    expect(verifyKnownHost(entries, ["10.0.0.1"], a).status).toBe("unknown");
    // Brackets are literal characters, not a character class.
    expect(verifyKnownHost(parseKnownHosts(line("[10.0.0.1]:2222", a)), ["1"], a).status).toBe("unknown");
    expect(verifyKnownHost(parseKnownHosts(line("[10.0.0.?]:22*", a)), ["[10.0.0.7]:2201"], a).status).toBe("match");
  });

  it("a negated pattern makes the whole line not match, also for [host]:port", () => {
    const entries = parseKnownHosts(line("*,![h]:2222", a));
    expect(verifyKnownHost(entries, ["[h]:2222"], b).status).toBe("unknown");
    expect(verifyKnownHost(entries, ["[h]:2223"], b).status).toBe("mismatch");
    // Order does not matter: a negation after the positive match still wins.
    expect(verifyKnownHost(parseKnownHosts(line("![h]:2222,*", a)), ["[h]:2222"], a).status).toBe("unknown");
    // A host known by two names (its address and its config name): negating either excludes it.
    expect(verifyKnownHost(entries, ["[h]:2222", "[web1]:2222"], b).status).toBe("unknown");
    expect(verifyKnownHost(parseKnownHosts(line("*,![web1]:2222", a)), ["[h]:2222", "[web1]:2222"], b).status).toBe("unknown");
  });

  it("hashed names cover [host]:port and lowercase names; a hash in a comma list is no hash", () => {
    const entries = parseKnownHosts([line(hashedName("[web9]:2201"), a), line(`${hashedName("web8")},web7`, a)].join("\n"));
    expect(verifyKnownHost(entries, ["[web9]:2201"], a).status).toBe("match");
    expect(verifyKnownHost(entries, ["[WEB9]:2201"], a).status).toBe("match");
    expect(verifyKnownHost(entries, ["[web9]:2202"], a).status).toBe("unknown");
    // match_maybe_hashed compares the whole field with the hash: neither web8 nor web7 matches.
    expect(verifyKnownHost(entries, ["web8"], a).status).toBe("unknown");
    expect(verifyKnownHost(entries, ["web7"], a).status).toBe("unknown");
  });

  it("host names and patterns match case-insensitively", () => {
    const entries = parseKnownHosts(line("Web1.Example.ORG", a));
    expect(verifyKnownHost(entries, ["WEB1.example.org"], a).status).toBe("match");
    expect(knownHostsLine("[Web1]:2201", a).split(" ")[0]).toBe("[web1]:2201");
  });

  it("a revoked key is refused even when it is also pinned elsewhere or listed as a plain key", () => {
    const entries = parseKnownHosts([line("[h]:2201", a), line("*", a, "@revoked")].join("\n"));
    expect(verifyKnownHost(entries, ["[h]:2201"], a)).toEqual({ status: "revoked", line: 2 });
  });

  it("@cert-authority lines count neither as a match nor as a known key for a plain key", () => {
    const entries = parseKnownHosts(line("*", a, "@cert-authority"));
    expect(verifyKnownHost(entries, ["h"], a).status).toBe("unknown");
    expect(verifyKnownHost(entries, ["h"], b).status).toBe("unknown");
  });

  it("? and * wildcards, comma lists, comments after the key and tabs", () => {
    const entries = parseKnownHosts([`web?,db*\tssh-ed25519\t${a.toString("base64")} a comment  here`].join("\n"));
    for (const name of ["web1", "webx", "db", "db-long.example"]) expect(verifyKnownHost(entries, [name], a).status).toBe("match");
    for (const name of ["web10", "web", "xdb"]) expect(verifyKnownHost(entries, [name], a).status).toBe("unknown");
  });

  it("skips lines ssh skips: bad or repeated markers, unknown types, keys that do not decode or are of another type", () => {
    const base64 = a.toString("base64");
    const entries = parseKnownHosts(
      [`@bogus h ssh-ed25519 ${base64}`, `@revoked @revoked h ssh-ed25519 ${base64}`, `h ssh-foo ${base64}`, "h ssh-ed25519 AAAA", `h ecdsa-sha2-nistp256 ${base64}`, `h ssh-ed25519 ${base64.slice(0, -4)}`, "h ssh-ed25519", "h"].join("\n"),
    );
    expect(entries).toHaveLength(0);
  });

  it("ssh's port fallback: on a port other than 22 a line for the bare name only ever accepts", () => {
    const entries = parseKnownHosts(line("h", a));
    expect(verifyKnownHost(entries, ["[h]:2201"], a, ["h"]).status).toBe("match");
    expect(verifyKnownHost(entries, ["[h]:2201"], b, ["h"]).status).toBe("unknown");
    const revoked = parseKnownHosts(line("h", a, "@revoked"));
    expect(verifyKnownHost(revoked, ["[h]:2201"], a, ["h"]).status).toBe("revoked");
  });
});
