// Bad config and arguments are refused before anything is touched, with an error naming the field.
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, runNodrop, startFleet } from "../src/index.js";

type Config = Record<string, any>;

const cases: { name: string; mutate?: (c: Config) => void; args?: (file: string) => string[]; expect: RegExp }[] = [
  { name: "unknown top-level key", mutate: (c) => (c.instance = c.instances), expect: /instance: unknown key/ },
  { name: "port out of range", mutate: (c) => (c.instances[2].port = 70000), expect: /instances\[2\]\.port: expected an integer 1-65535/ },
  { name: "port as a string", mutate: (c) => (c.instances[0].port = "8141"), expect: /instances\[0\]\.port: expected an integer 1-65535/ },
  { name: "duplicate instance id", mutate: (c) => (c.instances[1].id = c.instances[0].id), expect: /instances\[1\]\.id: duplicate instance id "web-8141"/ },
  { name: "duplicate address and port", mutate: (c) => c.instances.push({ id: "again", port: 8141 }), expect: /instances\[4\]\.port: duplicate address 127\.0\.0\.1:8141/ },
  { name: "empty fleet", mutate: (c) => (c.instances = []), expect: /instances: expected at least 1 item/ },
  { name: "address that injects nginx directives", mutate: (c) => (c.instances[0].address = "127.0.0.1; } server { listen 80"), expect: /instances\[0\]\.address: expected an IP address/ },
  { name: "id with a newline", mutate: (c) => (c.instances[3].id = "web\nbad"), expect: /instances\[3\]\.id: expected a name/ },
  { name: "app name with shell metacharacters", mutate: (c) => (c.app = "web$(id)"), expect: /app: expected a name/ },
  { name: "unknown placeholder", mutate: (c) => (c.commands.stop = "stop {prot}"), expect: /commands\.stop: unknown placeholder \{prot\}/ },
  { name: "bad duration", mutate: (c) => (c.commands.timeout = "30 seconds"), expect: /commands\.timeout: expected a duration/ },
  { name: "missing proxy type", mutate: (c) => delete c.proxy.type, expect: /proxy\.type: required/ },
  { name: "unknown proxy option", mutate: (c) => (c.proxy.confFile = "/etc/nginx/x.conf"), expect: /proxy\.confFile: unknown key/ },
  { name: "relative proxy path", mutate: (c) => (c.proxy.configFile = "nodrop/web.conf"), expect: /proxy\.configFile: expected an absolute path/ },
  { name: "unknown strategy", mutate: (c) => (c.strategy.name = "yolo"), expect: /strategy\.name: unknown strategy "yolo"/ },
  { name: "strategy option of the wrong type", mutate: (c) => (c.strategy.batchSize = "half"), expect: /strategy\.batchSize: expected a count/ },
  { name: "batch that would empty the pool", mutate: (c) => (c.strategy.batchSize = 4), expect: /strategy\.batchSize: a batch of 4 out of 4 instances leaves 0 serving/ },
  { name: "unknown host", mutate: (c) => (c.instances[1].host = "web9"), expect: /instances\[1\]\.host: unknown host "web9"/ },
  { name: "version with shell metacharacters", args: (f) => ["deploy", "--config", f, "--version", "v2; rm -rf /"], expect: /--version "v2; rm -rf \/": expected letters/ },
  { name: "version with a quote", args: (f) => ["deploy", "--config", f, "--version", "v2'"], expect: /--version "v2'": expected letters/ },
  { name: "missing version", args: (f) => ["deploy", "--config", f], expect: /--version is required/ },
  { name: "unknown strategy flag value", args: (f) => ["deploy", "--config", f, "--version", "v2", "--strategy", "nope"], expect: /--strategy: unknown strategy "nope"/ },
  { name: "missing config file", args: () => ["deploy", "--config", "/nonexistent/nodrop.yaml", "--version", "v2"], expect: /cannot read config file \/nonexistent\/nodrop\.yaml/ },
];

describe("invalid input is refused before anything is touched (real fleet)", () => {
  let fleet: Fleet;
  let base: Config;
  let snapshot: () => Promise<string>;
  beforeAll(async () => {
    fleet = await startFleet({ ports: [8141, 8142, 8143, 8144], proxyPort: 18141 });
    base = parse(await readFile(fleet.configFile, "utf8")) as Config;
    // Everything a deploy could change: the include file, nginx's workers, the instances' versions and processes.
    snapshot = async () => {
      const { execFileSync } = await import("node:child_process");
      const include = await readFile(fleet.includeFile, "utf8");
      const master = (await readFile(fleet.pidFile, "utf8")).trim();
      const workers = execFileSync("ps", ["-o", "pid=", "--ppid", master]).toString().trim();
      const pids = await Promise.all(fleet.ports.map((p) => readFile(path.join(fleet.dir, "instances", String(p), "gunicorn.pid"), "utf8")));
      return JSON.stringify({ include, workers, pids, versions: await fleet.versions() });
    };
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("has at least 20 cases", () => {
    expect(cases.length).toBeGreaterThanOrEqual(20);
  });

  it.each(cases)("$name", async ({ mutate, args, expect: pattern }) => {
    const config = structuredClone(base);
    mutate?.(config);
    const file = path.join(fleet.dir, "case.yaml");
    await writeFile(file, stringify(config));
    const before = await snapshot();
    const result = await runNodrop(args ? args(file) : ["deploy", "--config", file, "--version", "v2"]);
    expect(result.stderr).toMatch(pattern);
    expect(result.code).not.toBe(0);
    expect(await snapshot()).toBe(before);
  });
});
