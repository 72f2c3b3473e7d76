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
