// Bad config and arguments are refused before anything is touched, with an error naming the field.
import { mkdir, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
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
  { name: "verify URL with a password (never echoed)", mutate: (c) => (c.verify = { url: "http://admin:s3cret-pw@127.0.0.1:18141/" }), expect: /^(?![\s\S]*s3cret-pw)[\s\S]*verify\.url: credentials in the URL are not supported/ },
  { name: "verify URL that does not answer: refused before any change", mutate: (c) => (c.verify = { url: "http://127.0.0.1:1/" }), expect: /\[E_VERIFY\][\s\S]*verify: http:\/\/127\.0\.0\.1:1\/ does not answer before the deploy \(ECONNREFUSED\); nothing was changed/ },
  { name: "--verify with an unknown mode", args: (file) => ["deploy", "--config", file, "--version", "v2", "--verify", "strict"], expect: /--verify "strict": expected enforce, report or off/ },
  { name: "bad duration", mutate: (c) => (c.commands.timeout = "30 seconds"), expect: /commands\.timeout: expected a duration/ },
  { name: "missing proxy type", mutate: (c) => delete c.proxy.type, expect: /proxy\.use: required/ },
  { name: "unknown proxy option", mutate: (c) => (c.proxy.confFile = "/etc/nginx/x.conf"), expect: /proxy\.confFile: unknown key/ },
  { name: "relative proxy path", mutate: (c) => (c.proxy.configFile = "nodrop/web.conf"), expect: /proxy\.configFile: expected an absolute path/ },
  { name: "unknown strategy", mutate: (c) => (c.strategy.name = "yolo"), expect: /strategy\.name: strategy "yolo": not a built-in strategy \(rolling, half-split, blue-green, sticky, canary, canary-abort\), and not found: no package yolo in / },
  { name: "strategy option of the wrong type", mutate: (c) => (c.strategy.batchSize = "half"), expect: /strategy\.batchSize: expected a count/ },
  { name: "batch that would empty the pool", mutate: (c) => (c.strategy.batchSize = 4), expect: /strategy\.batchSize: a batch of 4 out of 4 instances leaves 0 serving/ },
  { name: "unknown host", mutate: (c) => (c.instances[1].host = "web9"), expect: /instances\[1\]\.host: unknown host "web9"/ },
  { name: "port negative", mutate: (c) => (c.instances[0].port = -1), expect: /instances\[0\]\.port: expected an integer 1-65535/ },
  { name: "IPv6-looking address that injects", mutate: (c) => (c.instances[1].address = "::1]; server evil:80; #"), expect: /instances\[1\]\.address: expected an IP address/ },
  { name: "empty stop command", mutate: (c) => (c.commands.stop = ""), expect: /commands\.stop: expected a command template/ },
  { name: "stray brace in a command", mutate: (c) => (c.commands.start = "start {port"), expect: /commands\.start: stray "\{"/ },
  { name: "health path without a slash", mutate: (c) => (c.health.path = "health"), expect: /health\.path: expected a URL path starting with \// },
  { name: "health successes zero", mutate: (c) => (c.health.successes = 0), expect: /health\.successes: expected an integer 1-100/ },
  { name: "health header with a space", mutate: (c) => (c.health.versionHeader = "X App"), expect: /health\.versionHeader: expected an HTTP header name/ },
  { name: "health via unknown", mutate: (c) => (c.health.via = "proxy"), expect: /health\.via: expected one of "direct", "host"/ },
  { name: "parallel zero", mutate: (c) => (c.parallel = 0), expect: /parallel: expected an integer 1-64/ },
  { name: "proxy file that climbs out with ..", mutate: (c) => (c.proxy.configFile = "/etc/nginx/nodrop/../../passwd"), expect: /proxy\.configFile: expected an absolute path of plain characters without \.\./ },
  { name: "state directory that climbs out with ..", mutate: (c) => (c.stateDir = "/var/lib/nodrop/../../../etc"), expect: /stateDir: expected an absolute path of plain characters without \.\./ },
  { name: "relative state directory", mutate: (c) => (c.stateDir = "state"), expect: /stateDir: expected an absolute path/ },
  { name: "proxy cookie name that injects a header", mutate: (c) => (c.proxy.versionCookie = "v; Domain=evil"), expect: /proxy\.versionCookie: expected a cookie name/ },
  { name: "proxy binary with a semicolon", mutate: (c) => (c.proxy.binary = "nginx;reboot"), expect: /proxy\.binary: expected a program name or path/ },
  { name: "proxy pid file with a space", mutate: (c) => (c.proxy.pidFile = "/run/ngi nx.pid"), expect: /proxy\.pidFile: expected an absolute path/ },
  { name: "proxy drain timeout not a duration", mutate: (c) => (c.proxy.drainTimeout = "forever"), expect: /proxy\.drainTimeout: expected a duration/ },
  { name: "proxy drain policy unknown", mutate: (c) => (c.proxy.onDrainTimeout = "ignore"), expect: /proxy\.onDrainTimeout: expected one of "cut", "fail"/ },
  { name: "proxy sudo as a string", mutate: (c) => (c.proxy.sudo = "yes"), expect: /proxy\.sudo: expected true or false/ },
  { name: "rolling soak not a duration", mutate: (c) => (c.strategy.soak = "a while"), expect: /strategy\.soak: expected a duration/ },
  { name: "rolling batch of 0%", mutate: (c) => (c.strategy.batchSize = "0%"), expect: /strategy\.batchSize: expected a count/ },
  { name: "half-split half below minimum", mutate: (c) => (c.strategy = { name: "half-split", minHalf: 3 }), expect: /strategy\.minHalf: halves of 2 and 2 serving instances/ },
  { name: "sticky mode unknown", mutate: (c) => (c.strategy = { name: "sticky", mode: "magic" }), expect: /strategy\.mode: expected one of "both", "instance", "version"/ },
  { name: "sticky cookie key without a name", mutate: (c) => (c.strategy = { name: "sticky", key: "cookie" }), expect: /strategy\.keyName is required with key: cookie/ },
  { name: "ssh host without a user", mutate: (c) => (c.hosts = { web9: { address: "10.9.9.9", privateKeyFile: "/nonexistent" } }), expect: /hosts\.web9\.user: required/ },
  { name: "ssh fingerprint in the wrong form", mutate: (c) => (c.hosts = { web9: { address: "10.9.9.9", user: "deploy", fingerprint: "aa:bb:cc" } }), expect: /hosts\.web9\.fingerprint: expected an OpenSSH fingerprint/ },
  { name: "ssh key variable not set", mutate: (c) => (c.hosts = { web9: { address: "10.9.9.9", user: "deploy", privateKeyEnv: "NODROP_TEST_UNSET_KEY" } }), expect: /hosts\.web9\.privateKeyEnv: environment variable NODROP_TEST_UNSET_KEY is not set/ },
  { name: "ssh jump host undefined", mutate: (c) => (c.hosts = { web9: { address: "10.9.9.9", user: "deploy", agent: true, jump: "bastion" } }), expect: /hosts\.web9\.jump: unknown host "bastion"/ },
  { name: "ssh host key policy unknown", mutate: (c) => (c.hosts = { web9: { address: "10.9.9.9", user: "deploy", hostKeyPolicy: "yolo" } }), expect: /hosts\.web9\.hostKeyPolicy: expected one of "strict", "accept-new"/ },
  { name: "redefining local", mutate: (c) => (c.hosts = { local: { address: "10.9.9.9", user: "deploy" } }), expect: /hosts\.local: "local" is this machine/ },
  { name: "version with a newline", args: (f) => ["deploy", "--config", f, "--version", "v2\nrm -rf /"], expect: /--version "v2\\nrm -rf \/": expected letters/ },
  { name: "lock wait not a duration", args: (f) => ["deploy", "--config", f, "--version", "v2", "--lock-wait", "soon"], expect: /--lock-wait "soon": expected a duration/ },
  { name: "unknown command", args: (f) => ["destroy", "--config", f], expect: /unknown command "destroy"/ },
  { name: "unknown flag", args: (f) => ["deploy", "--config", f, "--version", "v2", "--force"], expect: /Unknown option '--force'/ },
  { name: "version with shell metacharacters", args: (f) => ["deploy", "--config", f, "--version", "v2; rm -rf /"], expect: /--version "v2; rm -rf \/": expected letters/ },
  { name: "version with a quote", args: (f) => ["deploy", "--config", f, "--version", "v2'"], expect: /--version "v2'": expected letters/ },
  { name: "missing version", args: (f) => ["deploy", "--config", f], expect: /--version is required/ },
  { name: "unknown strategy flag value", args: (f) => ["deploy", "--config", f, "--version", "v2", "--strategy", "nope"], expect: /--strategy: "nope" is not a built-in strategy \(rolling, half-split, blue-green, sticky, canary, canary-abort\) nor the one the config names/ },
  { name: "missing config file", args: () => ["deploy", "--config", "/nonexistent/nodrop.yaml", "--version", "v2"], expect: /cannot read config file \/nonexistent\/nodrop\.yaml/ },
];

const coreDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../packages/core");
const STRATEGY = `import { defineStrategy, schema } from "@nodrop/core";
export default defineStrategy({ name: "mine", optionsSchema: schema.object({ batch: schema.int({ min: 1 }) }), create: () => ({ name: "mine", plan: () => { throw new Error("never planned"); } }) });`;

/** Plugins a config can name, each bad in its own way, written next to the case's config (the fleet's dir). */
async function writeBadPlugins(dir: string): Promise<string> {
  const file = async (name: string, text: string) => {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), text);
  };
  await mkdir(path.join(dir, "node_modules", "@nodrop"), { recursive: true });
  await symlink(coreDir, path.join(dir, "node_modules", "@nodrop", "core"));
  await file("plugins/not-a-plugin.mjs", "export default { name: 'mine', plan() { return { phases: [] }; } };");
  await file("plugins/mine.mjs", STRATEGY);
  await file("plugins/factory-throws.mjs", `import { defineProxy, schema } from "@nodrop/core";
export default defineProxy({ name: "lb", optionsSchema: schema.object({}), capabilities: { versionPinning: false, timedSwitch: false, affinity: false }, create: () => { throw new Error("the load balancer refused the API token"); } });`);
  await file("node_modules/@acme/future/package.json", JSON.stringify({ name: "@acme/future", version: "2.0.0", type: "module", exports: "./index.js", peerDependencies: { "@nodrop/core": ">=1.0.0" } }));
  await file("node_modules/@acme/future/index.js", STRATEGY);
  const outside = await import("node:fs/promises").then((fs) => fs.mkdtemp(path.join(os.tmpdir(), "nodrop-outside-")));
  await writeFile(path.join(outside, "mine.mjs"), STRATEGY);
  await symlink(path.join(outside, "mine.mjs"), path.join(dir, "plugins", "linked.mjs"));
  return outside;
}

// A bad plugin is refused in the same pass as the config: nothing on the fleet, nginx or the lock changes.
const pluginCases: { name: string; mutate: (c: Config) => void; expect: RegExp }[] = [
  { name: "strategy package not installed", mutate: (c) => (c.strategy = { use: "@acme/canary" }), expect: /strategy\.use: strategy "@acme\/canary": not found: no package @acme\/canary in \S+\/node_modules, / },
  { name: "default export that is not a plugin", mutate: (c) => (c.strategy = { use: "./plugins/not-a-plugin.mjs" }), expect: /strategy\.use: .*not-a-plugin\.mjs is not a nodrop plugin: its default export is an object with keys name, plan/ },
  { name: "proxy plugin whose factory throws", mutate: (c) => (c.proxy = { use: "./plugins/factory-throws.mjs" }), expect: /proxy: proxy plugin lb \(\S+factory-throws\.mjs\) failed to start: the load balancer refused the API token/ },
  { name: "plugin options that fail its schema", mutate: (c) => (c.strategy = { use: "./plugins/mine.mjs", batch: 0 }), expect: /strategy\.batch: expected an integer >= 1, got number 0/ },
  { name: "a core version out of the plugin's range", mutate: (c) => (c.strategy = { use: "@acme/future" }), expect: /@acme\/future 2\.0\.0 at \S+ supports @nodrop\/core >=1\.0\.0; this nodrop runs @nodrop\/core 0\./ },
  { name: "a path that escapes through ..", mutate: (c) => (c.strategy = { use: "./plugins/../../mine.mjs" }), expect: /strategy\.use: strategy "\.\/plugins\/\.\.\/\.\.\/mine\.mjs": escapes the config's directory/ },
  { name: "a path that escapes through a symlink", mutate: (c) => (c.strategy = { use: "./plugins/linked.mjs" }), expect: /strategy\.use: strategy "\.\/plugins\/linked\.mjs": escapes the config's directory \S+: a symlink leads to \S+nodrop-outside-/ },
];

describe("invalid input is refused before anything is touched (real fleet)", () => {
  let fleet: Fleet;
  let base: Config;
  let snapshot: () => Promise<string>;
  let outsideDir: string | undefined;
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
      // The deploy lock and the journal: a refused config takes neither.
      const state = await readdir(path.join(fleet.dir, "state")).catch(() => []);
      return JSON.stringify({ include, workers, pids, versions: await fleet.versions(), state });
    };
    outsideDir = await writeBadPlugins(fleet.dir);
  });
  afterAll(async () => {
    await fleet?.stop();
    if (outsideDir) await rm(outsideDir, { recursive: true, force: true });
  });

  it("has at least 40 cases", () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
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

  it.each(pluginCases)("bad plugin: $name", async ({ mutate, expect: pattern }) => {
    const config = structuredClone(base);
    mutate(config);
    const file = path.join(fleet.dir, "case.yaml");
    await writeFile(file, stringify(config));
    const before = await snapshot();
    const result = await runNodrop(["deploy", "--config", file, "--version", "v2"]);
    expect(result.stderr).toMatch(/^nodrop: error \[E_CONFIG\]: invalid config in /);
    expect(result.stderr).toMatch(pattern);
    expect(result.code).toBe(2);
    expect(await snapshot()).toBe(before);
  });
});
