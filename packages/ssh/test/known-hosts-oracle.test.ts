// OpenSSH as the oracle for known_hosts matching: a few thousand small random known_hosts files
// (seeded, so every run writes the same ones) with plain names, [host]:port names, comma lists,
// `*` and `?` wildcards, negations, hashed names, markers, upper case, comments, tabs, CRLF and
// broken lines; for each file and a few names, the lines `ssh-keygen -l -F NAME -f FILE` reports
// must be exactly the lines entriesFor() matches, and the verdict for an offered key must be the
// one OpenSSH's check_hostkeys_by_key_or_type() reaches from those lines.
//
// What ssh-keygen -F reports (ssh-keygen.c known_hosts_find_delete, hostfile.c
// hostkeys_foreach_file): every line whose host field matches the name, including @revoked lines
// ("REVOKED") and @cert-authority lines ("CA"); a negated pattern makes the line not match
// (match_hostname returns -1, and only 1 counts); the name is hashed as given, so it is given in
// lower case, as ssh itself looks names up. With -l the key is parsed as ssh parses it when it
// loads known_hosts, so lines whose key would not load are not reported either.
import { execFile } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type HostKeyVerdict, entriesFor, parseKnownHosts, verifyKnownHost } from "../src/known-hosts.js";

const run = promisify(execFile);
const FILES = 2000;

/** mulberry32: a small seeded PRNG, so the files are the same on every run. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(list: readonly T[]): T => list[int(list.length)]!;
  return { next, int, pick, chance: (p: number) => next() < p };
}

interface Key {
  readonly type: string;
  readonly base64: string;
  readonly blob: Buffer;
}

let dir: string;
let keys: Key[];

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-kh-oracle-"));
  const specs: [string, string[]][] = [
    ["ed1", ["-t", "ed25519"]],
    ["ed2", ["-t", "ed25519"]],
    ["ed3", ["-t", "ed25519"]],
    ["ec1", ["-t", "ecdsa", "-b", "256"]],
    ["ec2", ["-t", "ecdsa", "-b", "384"]],
    ["rsa", ["-t", "rsa", "-b", "2048"]],
  ];
  keys = await Promise.all(
    specs.map(async ([name, args]) => {
      const file = path.join(dir, name);
      await run("ssh-keygen", ["-q", ...args, "-N", "", "-C", name, "-f", file]);
      const [type, base64] = (await readFile(`${file}.pub`, "utf8")).trim().split(" ");
      return { type: type!, base64: base64!, blob: Buffer.from(base64!, "base64") };
    }),
  );
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const HOSTS = ["web1", "web2", "db", "h", "10.0.0.1", "10.0.0.12", "host.example.org", "a.example.org", "Web1", "DB"];
const PORTS = [22, 22, 2201, 2222, 65535];

interface GeneratedFile {
  readonly text: string;
  /** Line number -> the key written on it (when it has one that parses). */
  readonly keys: Map<number, Buffer>;
  readonly names: string[];
  readonly tags: Set<string>;
}

function generate(r: ReturnType<typeof prng>, allKeys: readonly Key[]): GeneratedFile {
  const tags = new Set<string>();
  const names: string[] = [];
  const hostName = () => {
    const host = r.pick(HOSTS);
    const port = r.pick(PORTS);
    const name = port === 22 ? host : `[${host}]:${port}`;
    names.push(name);
    if (port !== 22) tags.add("port");
    return name;
  };
  const caseChange = (s: string) => [...s].map((c) => (r.chance(0.2) ? c.toUpperCase() : c)).join("");
  const wildcard = (s: string) => {
    tags.add("wildcard");
    const chars = [...s];
    const n = 1 + r.int(2);
    for (let i = 0; i < n; i++) {
      const at = r.int(chars.length);
      if (r.chance(0.5)) chars[at] = "?";
      else chars.splice(at, r.int(Math.min(4, chars.length - at) + 1), "*");
    }
    return chars.join("");
  };
  const subpattern = (): string => {
    const roll = r.next();
    let p: string;
    if (roll < 0.5) p = hostName();
    else if (roll < 0.8) p = wildcard(hostName());
    else p = r.pick(["*", "*:2201", "[*]:2222", "[10.0.0.?]:22*", "*.example.org", "10.0.0.1?", "web?", "", "**", "[web1]", "web1]:2201", "?"]);
    if (r.chance(0.25)) p = caseChange(p);
    if (r.chance(0.2)) {
      tags.add("negation");
      p = `!${p}`;
    }
    return p;
  };
  const hashed = () => {
    tags.add("hashed");
    const name = hostName();
    const salt = Buffer.from(Array.from({ length: 20 }, () => r.int(256)));
    const hashedOf = (n: string) => `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update(n).digest("base64")}`;
    const roll = r.next();
    if (roll < 0.7) return hashedOf(name.toLowerCase());
    if (roll < 0.8) return hashedOf(caseChange(name)); // ssh looks names up in lower case: no match unless unchanged
    if (roll < 0.9) return `${hashedOf(name.toLowerCase())},${r.pick(HOSTS)}`; // a hash is the whole field
    return `|1|${salt.subarray(0, 10).toString("base64")}|${createHmac("sha1", salt).update(name).digest("base64")}`; // bad salt length
  };
  const lines: string[] = [];
  const lineKeys = new Map<number, Buffer>();
  const count = 1 + r.int(6);
  for (let i = 0; i < count; i++) {
    const roll = r.next();
    if (roll < 0.06) {
      lines.push(r.pick(["# a comment", "", "   ", "\t# indented comment"]));
      continue;
    }
    const host = r.chance(0.2) ? hashed() : Array.from({ length: 1 + r.int(4) }, subpattern).join(",");
    if (host.includes(",")) tags.add("list");
    let marker = "";
    const m = r.next();
    if (m < 0.12) marker = "@revoked ";
    else if (m < 0.22) marker = "@cert-authority ";
    else if (m < 0.25) marker = r.pick(["@bogus ", "@revoked @revoked ", "@revoked\t"]);
    if (marker) tags.add(marker.trim());
    const key = r.pick(allKeys);
    let type = key.type;
    let base64 = key.base64;
    let valid = true;
    const c = r.next();
    if (c < 0.03) [type, valid] = ["ssh-foo", false];
    else if (c < 0.06) [type, valid] = [r.pick(allKeys.filter((k) => k.type !== key.type)).type, false];
    else if (c < 0.08) [base64, valid] = [base64.slice(0, -8), false];
    else if (c < 0.1) [base64, valid] = [`${base64}AAAA`, false];
    const sep = () => r.pick([" ", " ", " ", "\t", "  ", " \t"]);
    const lead = r.chance(0.1) ? r.pick([" ", "\t", "  "]) : "";
    const comment = r.chance(0.3) ? `${sep()}${r.pick(["root@web1", "a comment with  spaces", "#x"])}` : "";
    const keyPart = c < 0.1 && c >= 0.09 && r.chance(0.5) ? type : `${type}${sep()}${base64}${comment}`;
    lines.push(`${lead}${marker}${host}${sep()}${keyPart}${r.chance(0.05) ? "\r" : ""}`);
    if (valid) lineKeys.set(lines.length, key.blob);
  }
  const text = lines.join("\n") + (r.chance(0.8) ? "\n" : "");
  return { text, keys: lineKeys, names, tags };
}

/** What OpenSSH decides for an offered plain key from the lines that matched (hostfile.c check_hostkeys_by_key_or_type). */
function opensshVerdict(found: readonly { line: number; marker: string }[], keyOf: Map<number, Buffer>, offered: Buffer): HostKeyVerdict["status"] {
  const same = (line: number) => keyOf.get(line)?.equals(offered) ?? false;
  if (found.some((f) => f.marker === "REVOKED" && same(f.line))) return "revoked";
  const plain = found.filter((f) => f.marker === "");
  if (plain.some((f) => same(f.line))) return "match";
  return plain.length > 0 ? "mismatch" : "unknown";
}

/** Runs `ssh-keygen -l -F name -f file` for every job, in a couple of shell loops (one process per lookup, no Node spawn each). */
async function oracle(jobs: readonly { name: string; file: string }[], workers = 2): Promise<Map<string, { line: number; marker: string }[]>> {
  const results = new Map<string, { line: number; marker: string }[]>();
  const chunks = Array.from({ length: workers }, (_, w) => jobs.filter((_, i) => i % workers === w));
  await Promise.all(
    chunks.map(async (chunk, w) => {
      const list = path.join(dir, `jobs-${w}`);
      await writeFile(list, chunk.map((j) => `${j.name}\t${j.file}\n`).join(""));
      const script = `while IFS="$(printf '\\t')" read -r name file; do printf '@@@ %s\\t%s\\n' "$name" "$file"; ssh-keygen -l -F "$name" -f "$file" 2>/dev/null; done < "$1"`;
      const { stdout } = await run("bash", ["-c", script, "oracle", list], { maxBuffer: 256 << 20 });
      let current: { line: number; marker: string }[] | undefined;
      for (const line of stdout.split("\n")) {
        if (line.startsWith("@@@ ")) {
          current = [];
          results.set(line.slice(4), current);
          continue;
        }
        const found = /^# Host .* found: line (\d+) ?(CA|REVOKED)?$/.exec(line);
        if (found && current) current.push({ line: Number(found[1]), marker: found[2] ?? "" });
      }
    }),
  );
  return results;
}

describe("known_hosts matching agrees with OpenSSH (ssh-keygen -F as the oracle)", () => {
  it(`matches the same lines and reaches the same verdict on ${FILES} generated files`, async () => {
    const r = prng(20261201);
    const files = Array.from({ length: FILES }, () => generate(r, keys));
    const jobs: { name: string; file: string; raw: string; index: number; offered: Buffer }[] = [];
    const anyName = () => (r.pick(PORTS) === 22 ? r.pick(HOSTS) : `[${r.pick(HOSTS)}]:${r.pick(PORTS)}`);
    files.forEach((f, index) => {
      const file = path.join(dir, `kh-${index}`);
      const asked = [f.names.length > 0 ? r.pick(f.names) : anyName(), f.names.length > 0 && r.chance(0.5) ? r.pick(f.names) : anyName()];
      for (const raw of new Set(asked)) {
        // Upper case sometimes: ssh lowercases the name, so the oracle is asked in lower case.
        const name = r.chance(0.2) ? raw.toUpperCase() : raw;
        const withKey = [...f.keys.values()];
        const offered = withKey.length > 0 && r.chance(0.7) ? r.pick(withKey) : r.pick(keys).blob;
        jobs.push({ name: name.toLowerCase(), file, raw: name, index, offered });
      }
    });
    await Promise.all(files.map((f, index) => writeFile(path.join(dir, `kh-${index}`), f.text)));
    const answers = await oracle(jobs);

    const disagreements: string[] = [];
    const seen = { matchedLines: 0, lookupsWithMatch: 0, verdicts: new Map<string, number>(), tags: new Map<string, number>() };
    for (const job of jobs) {
      const file = files[job.index]!;
      const expected = answers.get(`${job.name}\t${job.file}`);
      if (!expected) {
        disagreements.push(`no oracle answer for ${job.name} in ${job.file}`);
        continue;
      }
      const entries = parseKnownHosts(file.text);
      const ours = entriesFor(entries, job.raw).map((e) => ({ line: e.line, marker: e.marker === "@revoked" ? "REVOKED" : e.marker === "@cert-authority" ? "CA" : "" }));
      const verdict = verifyKnownHost(entries, [job.raw], job.offered).status;
      const want = opensshVerdict(expected, file.keys, job.offered);
      if (JSON.stringify(ours) !== JSON.stringify(expected) || verdict !== want) {
        disagreements.push(`${job.file} (${JSON.stringify(file.text)}) name ${job.raw}: ssh-keygen ${JSON.stringify(expected)} / ${want}, ours ${JSON.stringify(ours)} / ${verdict}`);
      }
      seen.matchedLines += expected.length;
      if (expected.length > 0) seen.lookupsWithMatch += 1;
      seen.verdicts.set(want, (seen.verdicts.get(want) ?? 0) + 1);
      if (expected.length > 0) for (const tag of file.tags) seen.tags.set(tag, (seen.tags.get(tag) ?? 0) + 1);
    }
    console.log(
      `known_hosts oracle: ${FILES} files, ${jobs.length} lookups compared with ssh-keygen -F (${seen.lookupsWithMatch} matched ${seen.matchedLines} lines; verdicts ${JSON.stringify(Object.fromEntries(seen.verdicts))}), ${disagreements.length} disagreements`,
    );
    expect(disagreements.slice(0, 5)).toEqual([]);
    expect(answers.size).toBe(new Set(jobs.map((j) => `${j.name}\t${j.file}`)).size);
    // The files exercise what they are meant to: every feature appears in files where lines matched.
    for (const tag of ["port", "wildcard", "negation", "hashed", "list", "@revoked", "@cert-authority"]) expect(seen.tags.get(tag) ?? 0).toBeGreaterThan(50);
    for (const status of ["match", "mismatch", "unknown", "revoked"]) expect(seen.verdicts.get(status) ?? 0).toBeGreaterThan(20);
  });
});
