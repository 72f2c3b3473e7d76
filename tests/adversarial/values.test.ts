// Hostile values, whatever their source (config, command line, the journal, an instance's answer),
// are refused with an error naming the field, host or instance, or end harmlessly: against a real
// nginx and gunicorn fleet, through the real CLI, and every case checks that nothing changed.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
// The repository root has no dependencies of its own: the packages' built dist (as users get them)
// and the example's yaml, by path.
import { loadDeployment } from "../../packages/deployment/dist/index.js";
import { shellQuote, singlePool } from "../../packages/core/dist/index.js";
import { parse, stringify } from "../../examples/wsgi-fleet/node_modules/yaml/dist/index.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, fleetSh, runNodrop, startFleet } from "../../examples/wsgi-fleet/src/index.js";
import { type HostileSource, hostile } from "./tally.js";

type Config = Record<string, any>;

/** Files a command injection would create; none may ever exist. */
const PWNED = "/tmp/nodrop-pwned";
const PWNED_JOURNAL = "/tmp/nodrop-pwned-journal";
const PORTS = [8461, 8462, 8463, 8464];
const HOSTILE_PORT = 8464;

let fleet: Fleet;
let base: Config;
let baseText: string;
let argvLog: string;
let stateDir: string;
let journalFile: string;

/** Everything a deploy could change: the include file, nginx's workers, the instances, the state dir, what commands ran. */
async function snapshot(): Promise<string> {
  const include = await readFile(fleet.includeFile, "utf8");
  const master = (await readFile(fleet.pidFile, "utf8")).trim();
  const workers = execFileSync("ps", ["-o", "pid=", "--ppid", master]).toString().trim();
  const pids = await Promise.all(PORTS.map((p) => readFile(path.join(fleet.dir, "instances", String(p), "gunicorn.pid"), "utf8").catch(() => "none")));
  const state = existsSync(stateDir) ? (await readdir(stateDir)).sort() : [];
  const journal = existsSync(journalFile) ? await readFile(journalFile, "utf8") : "";
  const ran = existsSync(argvLog) ? await readFile(argvLog, "utf8") : "";
  return JSON.stringify({ include, workers, pids, versions: await fleet.versions(), state, journal, ran });
}

function expectNotPwned(): void {
  expect(existsSync(PWNED)).toBe(false);
  expect(existsSync(PWNED_JOURNAL)).toBe(false);
}

interface Case {
  name: string;
  source: HostileSource;
  /** Changes a copy of the base config. */
  mutate?: (c: Config) => void;
  /** Or: the YAML text itself, from the base config's text. */
  yaml?: (text: string) => string;
  /** The CLI arguments (default: deploy --version v2). */
  args?: (file: string) => string[];
  /** The refusal, as stderr shows it. */
  expect: RegExp;
  /** Exit code (default: any non-zero). */
  code?: number;
  /** Text that must not appear in the output (a password, a raw hostile string). */
  never?: string;
  /** What stdout shows, for a harmless result. */
  stdout?: RegExp;
}

/** Sets an own key, even `__proto__`, the way a YAML or JSON parser does. */
function own(target: Config, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

const deployArgs = (file: string) => ["deploy", "--config", file, "--version", "v2", "--json"];
const huge = "9".repeat(400);

const PROTO_KEYS = ["constructor", "toString", "__proto__"];
const LEVELS: [string, string, (c: Config) => Config][] = [
  ["the top level", "", (c) => c],
  ["commands", "commands.", (c) => c.commands],
  ["health", "health.", (c) => c.health],
  ["an instance", "instances[2].", (c) => c.instances[2]],
  ["proxy", "proxy.", (c) => c.proxy],
  ["strategy", "strategy.", (c) => c.strategy],
  ["verify", "verify.", (c) => (c.verify ??= { url: fleet.url + "/" })],
];

const configCases: Case[] = [
  ...PROTO_KEYS.flatMap((key) =>
    LEVELS.map(([level, prefix, pick]): Case => ({
      name: `key ${key} in ${level} is an unknown key`,
      source: "config",
      mutate: (c) => own(pick(c), key, key === "__proto__" ? { polluted: true } : "x"),
      expect: new RegExp(`${prefix.replace(/[[\].]/g, "\\$&")}${key}: unknown key`),
    })),
  ),
  { name: "host named __proto__", source: "config", mutate: (c) => own((c.hosts = {}), "__proto__", { address: "10.9.9.9", user: "deploy", agent: true }), expect: /hosts\.__proto__: host names are letters/ },
  { name: "host named constructor without settings", source: "config", mutate: (c) => own((c.hosts = {}), "constructor", { address: "10.9.9.9" }), expect: /hosts\.constructor\.user: required/ },
  { name: "strategy.name constructor", source: "config", mutate: (c) => (c.strategy.name = "constructor"), expect: /strategy\.name: strategy "constructor": not a built-in strategy \(rolling, half-split, blue-green, sticky, canary, canary-abort\)/ },
  { name: "strategy.name toString", source: "config", mutate: (c) => (c.strategy.name = "toString"), expect: /strategy\.name: strategy "toString": not a built-in strategy/ },
  { name: "strategy.name __proto__", source: "config", mutate: (c) => (c.strategy.name = "__proto__"), expect: /strategy\.name: strategy "__proto__": not a built-in strategy/ },
  { name: "proxy.type constructor", source: "config", mutate: (c) => (c.proxy.type = "constructor"), expect: /proxy\.type: proxy "constructor": not a built-in proxy \(nginx\)/ },
  { name: "proxy.type __proto__", source: "config", mutate: (c) => (c.proxy.type = "__proto__"), expect: /proxy\.type: proxy "__proto__": not a built-in proxy/ },
  { name: "proxy.type hasOwnProperty", source: "config", mutate: (c) => (c.proxy.type = "hasOwnProperty"), expect: /proxy\.type: proxy "hasOwnProperty": not a built-in proxy/ },
  // Durations above what a timer can hold would fire at once.
  { name: "commands.timeout 1000h", source: "config", mutate: (c) => (c.commands.timeout = "1000h"), expect: /commands\.timeout: expected a duration such as 500ms, 30s or 2m \(at most 24h\), got string "1000h"/ },
  { name: "commands.timeout 25h", source: "config", mutate: (c) => (c.commands.timeout = "25h"), expect: /commands\.timeout: expected a duration .*at most 24h/ },
  { name: "commands.timeout 2^31 ms as a number", source: "config", mutate: (c) => (c.commands.timeout = 2 ** 31), expect: /commands\.timeout: expected a duration .*got number 2147483648/ },
  { name: "health.deadline of 400 digits", source: "config", mutate: (c) => (c.health.deadline = `${huge}ms`), expect: /health\.deadline: expected a duration .*at most 24h/ },
  { name: "health.timeout as a 400-digit number", source: "config", mutate: (c) => (c.health.timeout = Number(huge)), expect: /health\.timeout: expected a duration .*got number Infinity/ },
  { name: "health.interval 2147483648ms", source: "config", mutate: (c) => (c.health.interval = "2147483648ms"), expect: /health\.interval: expected a duration .*at most 24h/ },
  { name: "proxy.drainTimeout 1000h", source: "config", mutate: (c) => (c.proxy.drainTimeout = "1000h"), expect: /proxy\.drainTimeout: expected a duration .*at most 24h/ },
  { name: "strategy.soak 1000000h", source: "config", mutate: (c) => (c.strategy.soak = "1000000h"), expect: /strategy\.soak: expected a duration .*at most 24h/ },
  { name: "verify.timeout 1000h", source: "config", mutate: (c) => (c.verify = { url: `${fleet.url}/`, timeout: "1000h" }), expect: /verify\.timeout: expected a duration .*at most 24h/ },
  { name: "verify.settle with a 400-digit fraction", source: "config", mutate: (c) => (c.verify = { url: `${fleet.url}/`, settle: `1.${huge}s` }), expect: /verify\.settle: expected a duration/ },
  { name: "duration NaNs", source: "config", mutate: (c) => (c.commands.timeout = "NaNs"), expect: /commands\.timeout: expected a duration/ },
  { name: "duration Infinityms", source: "config", mutate: (c) => (c.commands.timeout = "Infinityms"), expect: /commands\.timeout: expected a duration/ },
  { name: "duration in exponent form", source: "config", mutate: (c) => (c.commands.timeout = "1e9ms"), expect: /commands\.timeout: expected a duration/ },
  { name: "duration with Arabic-Indic digits", source: "config", mutate: (c) => (c.commands.timeout = "٣s"), expect: /commands\.timeout: expected a duration/ },
  { name: "duration with fullwidth digits", source: "config", mutate: (c) => (c.commands.timeout = "３０s"), expect: /commands\.timeout: expected a duration/ },
  { name: "negative zero timeout", source: "config", mutate: (c) => (c.commands.timeout = -0), expect: /commands\.timeout: expected a duration between 1ms and 24h, got number -0/ },
  { name: "negative zero duration string", source: "config", mutate: (c) => (c.health.timeout = "-0s"), expect: /health\.timeout: expected a duration/ },
  { name: "NaN as a YAML number", source: "config", yaml: (t) => t.replace(/^ {2}timeout: 60s$/m, "  timeout: .nan"), expect: /commands\.timeout: expected a duration .*got number NaN/ },
  { name: "infinity as a YAML number", source: "config", yaml: (t) => t.replace(/^ {2}timeout: 60s$/m, "  timeout: .inf"), expect: /commands\.timeout: expected a duration .*got number Infinity/ },
  // Numbers that overflow.
  { name: "port of 400 digits", source: "config", mutate: (c) => (c.instances[0].port = Number(huge)), expect: /instances\[0\]\.port: expected an integer 1-65535, got number Infinity/ },
  { name: "parallel 1e300", source: "config", mutate: (c) => (c.parallel = 1e300), expect: /parallel: expected an integer 1-64/ },
  { name: "health.successes of 400 digits", source: "config", mutate: (c) => (c.health.successes = Number(huge)), expect: /health\.successes: expected an integer 1-100/ },
  { name: "verify.maxFailed 2^60", source: "config", mutate: (c) => (c.verify = { url: `${fleet.url}/`, maxFailed: 2 ** 60 }), expect: /verify\.maxFailed: expected an integer/ },
  { name: "port negative zero", source: "config", mutate: (c) => (c.instances[1].port = -0), expect: /instances\[1\]\.port: expected an integer 1-65535, got number -0/ },
  { name: "port as fullwidth digits", source: "config", mutate: (c) => (c.instances[1].port = "８４６２"), expect: /instances\[1\]\.port: expected an integer 1-65535, got string/ },
  // Unicode lookalikes in names.
  { name: "app with a Cyrillic e", source: "config", mutate: (c) => (c.app = "wеb"), expect: /app: expected a name of letters/ },
  { name: "instance id with a Cyrillic a", source: "config", mutate: (c) => (c.instances[0].id = "web-8461-а"), expect: /instances\[0\]\.id: expected a name of letters/ },
  { name: "address with fullwidth digits", source: "config", mutate: (c) => (c.instances[0].address = "１２７.0.0.1"), expect: /instances\[0\]\.address: expected an IP address/ },
  { name: "host name with a zero-width space", source: "config", mutate: (c) => (c.instances[0].host = "local\u200b"), expect: /instances\[0\]\.host: expected a name of letters/ },
  // Option-like values in every name field.
  ...["-x", "--upload-pack=touch /tmp/nodrop-pwned"].flatMap((value): Case[] => [
    { name: `app ${value}`, source: "config", mutate: (c) => (c.app = value), expect: /app: expected a name of letters/ },
    { name: `instance id ${value}`, source: "config", mutate: (c) => (c.instances[1].id = value), expect: /instances\[1\]\.id: expected a name of letters/ },
    { name: `instance host ${value}`, source: "config", mutate: (c) => (c.instances[1].host = value), expect: /instances\[1\]\.host: expected a name of letters/ },
    { name: `host name ${value}`, source: "config", mutate: (c) => own((c.hosts = {}), value, { address: "10.9.9.9", user: "deploy" }), expect: /hosts\..*: host names are letters/ },
    { name: `instance address ${value}`, source: "config", mutate: (c) => (c.instances[1].address = value), expect: /instances\[1\]\.address: expected an IP address/ },
    { name: `strategy.name ${value}`, source: "config", mutate: (c) => (c.strategy.name = value), expect: /strategy\.name: strategy ".*": not a built-in strategy/ },
    { name: `proxy.type ${value}`, source: "config", mutate: (c) => (c.proxy.type = value), expect: /proxy\.type: proxy ".*": not a built-in proxy/ },
    // "-x" passes nginx's program-name pattern; as the command's first word it is no option, and preflight refuses it.
    { name: `proxy.binary ${value}`, source: "config", mutate: (c) => (c.proxy.binary = value), expect: value === "-x" ? /\[E_PROXY_SETUP\]: proxy nginx is not set up for nodrop/ : /proxy\.binary: expected a program name or path/ },
    { name: `stateDir ${value}`, source: "config", mutate: (c) => (c.stateDir = value), expect: /stateDir: expected an absolute path/ },
  ]),
  // NUL bytes.
  { name: "NUL in app", source: "config", mutate: (c) => (c.app = "web\u0000"), expect: /app: expected a name of letters/ },
  { name: "NUL in a command template", source: "config", mutate: (c) => (c.commands.stop = `${c.commands.stop}\u0000; touch ${PWNED}`), expect: /commands\.stop: expected a command template, got string "/ },
  { name: "NUL in commands.cwd", source: "config", mutate: (c) => (c.commands.cwd = "dir\u0000x"), expect: /commands\.cwd: expected a string, got string "dir\\u0000x"/ },
  { name: "NUL in stateDir", source: "config", mutate: (c) => (c.stateDir = `${c.stateDir}\u0000x`), expect: /stateDir: expected an absolute path/ },
  { name: "NUL in the health path", source: "config", mutate: (c) => (c.health.path = "/health\u0000"), expect: /health\.path: expected a URL path/ },
  // Very long strings.
  { name: "app of 10000 characters", source: "config", mutate: (c) => (c.app = "a".repeat(10_000)), expect: /app: expected a name of letters.*got string "a{40}…"/ },
  { name: "instance id of 129 characters", source: "config", mutate: (c) => (c.instances[0].id = "a".repeat(129)), expect: /instances\[0\]\.id: expected a name of letters/ },
  { name: "health path of 100000 characters with a newline", source: "config", mutate: (c) => (c.health.path = `/${"a".repeat(100_000)}\n`), expect: /health\.path: expected a URL path/ },
  // Lists and mappings where scalars go.
  { name: "nested list as app", source: "config", mutate: (c) => (c.app = [["web"]]), expect: /app: expected a name of letters.*got a list/ },
  { name: "list as a port", source: "config", mutate: (c) => (c.instances[0].port = [8461]), expect: /instances\[0\]\.port: expected an integer 1-65535, got a list/ },
  { name: "nested list as a timeout", source: "config", mutate: (c) => (c.commands.timeout = [["1s"]]), expect: /commands\.timeout: expected a duration.*got a list/ },
  { name: "list as strategy.name", source: "config", mutate: (c) => (c.strategy.name = ["rolling"]), expect: /strategy\.name: expected a strategy such as rolling/ },
  { name: "list as proxy.type", source: "config", mutate: (c) => (c.proxy.type = ["nginx"]), expect: /proxy\.type: expected a proxy such as nginx/ },
  { name: "mapping as a command", source: "config", mutate: (c) => (c.commands.update = { run: "x" }), expect: /commands\.update: expected a command template, got a mapping/ },
  { name: "list as the strategy section", source: "config", mutate: (c) => (c.strategy = [{ name: "rolling" }]), expect: /strategy: expected a mapping with use/ },
  { name: "mapping as verify.url", source: "config", mutate: (c) => (c.verify = { url: { href: "http://x" } }), expect: /verify\.url: expected an http:\/\/ or https:\/\/ URL, got a mapping/ },
  // YAML features.
  {
    name: "YAML alias bomb",
    source: "config",
    yaml: (t) => `${t}bomb: &a0 [x, x, x, x, x, x, x, x, x]\n${[1, 2, 3, 4, 5, 6].map((n) => `b${n}: &a${n} [${Array(9).fill(`*a${n - 1}`).join(", ")}]`).join("\n")}\n`,
    expect: /is not valid YAML: .*Excessive alias count/,
  },
  { name: "YAML merge key in an instance", source: "config", yaml: (t) => `x-defaults: &d { host: local }\n${t}`.replace("instances:\n  - id: web-8461\n", "instances:\n  - <<: *d\n    id: web-8461\n"), expect: /x-defaults: unknown key[\s\S]*instances\[0\]\.<<: unknown key/ },
  { name: "YAML !!binary as app", source: "config", yaml: (t) => t.replace(/^app: web$/m, "app: !!binary d2Vi"), expect: /app: expected a name of letters/ },
  // verify.url echoes.
  { name: "malformed verify.url with a password is not echoed", source: "config", mutate: (c) => (c.verify = { url: "http://user:s3cret-pw@[bad" }), expect: /verify\.url: expected an http:\/\/ or https:\/\/ URL, got "http:\/\/\*\*\*@\[bad" \(credentials hidden\)/, never: "s3cret-pw" },
  { name: "verify.url with a password and a space is not echoed", source: "config", mutate: (c) => (c.verify = { url: "https://admin:s3cret-pw@exa mple.com/" }), expect: /verify\.url: .*credentials hidden/, never: "s3cret-pw" },
];

const cliCases: Case[] = [
  { name: "--version=-x", source: "cli", args: (f) => ["deploy", "--config", f, "--version=-x"], expect: /--version "-x": expected letters/ },
  { name: "--version=--upload-pack=x", source: "cli", args: (f) => ["deploy", "--config", f, "--version=--upload-pack=touch /tmp/nodrop-pwned"], expect: /--version "--upload-pack=touch \/tmp\/nodrop-pwned": expected letters/ },
  { name: "--version followed by an option-like word", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "--upload-pack=x"], expect: /--version.*argument is ambiguous|Unknown option/ },
  { name: "--version with a tab and a command", source: "cli", args: (f) => ["deploy", "--config", f, "--version", `v2\ttouch ${PWNED}`], expect: /--version "v2\\ttouch \/tmp\/nodrop-pwned": expected letters/ },
  { name: "--version with a fullwidth digit", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "v２"], expect: /--version "v２": expected letters/ },
  { name: "--version of 129 characters", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "v".repeat(129)], expect: /--version "v+": expected letters/ },
  { name: "--version __proto__", source: "cli", args: (f) => ["plan", "--config", f, "--version", "__proto__"], expect: /--version "__proto__": expected letters/ },
  { name: "--strategy __proto__", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "v2", "--strategy", "__proto__"], expect: /--strategy: "__proto__" is not a built-in strategy \(rolling, half-split, blue-green, sticky, canary, canary-abort\) nor the one the config names/ },
  { name: "--strategy constructor", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "v2", "--strategy", "constructor"], expect: /--strategy: "constructor" is not a built-in strategy/ },
  { name: "--strategy toString on plan", source: "cli", args: (f) => ["plan", "--config", f, "--version", "v2", "--strategy", "toString"], expect: /--strategy: "toString" is not a built-in strategy/ },
  { name: "--strategy valueOf on rollback is ignored (rollback always rolls)", source: "cli", args: (f) => ["rollback", "--config", f, "--strategy", "valueOf"], expect: /no deploy in the journal/ },
  { name: "--lock-wait 1000000h", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "v2", "--lock-wait", "1000000h"], expect: /--lock-wait "1000000h": expected a duration such as 30s or 15m \(at most 24h\)/ },
  { name: "--lock-wait of 400 digits", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "v2", "--lock-wait", `${huge}ms`], expect: /--lock-wait "9+ms": expected a duration/ },
  { name: "--lock-wait=-1s", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "v2", "--lock-wait=-1s"], expect: /--lock-wait "-1s": expected a duration/ },
  { name: "--lock-wait NaNms", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "v2", "--lock-wait", "NaNms"], expect: /--lock-wait "NaNms": expected a duration/ },
  { name: "--to=--upload-pack=x", source: "cli", args: (f) => ["rollback", "--config", f, "--to=--upload-pack=touch /tmp/nodrop-pwned"], expect: /--to "--upload-pack=touch \/tmp\/nodrop-pwned": expected letters/ },
  { name: "--to with a shell injection", source: "cli", args: (f) => ["rollback", "--config", f, "--to", `v1'; touch ${PWNED}; echo '`], expect: /--to "v1'; touch \/tmp\/nodrop-pwned; echo '": expected letters/ },
  { name: "--to __proto__", source: "cli", args: (f) => ["rollback", "--config", f, "--to", "__proto__"], expect: /--to "__proto__": expected letters/ },
  { name: "--to -x", source: "cli", args: (f) => ["rollback", "--config", f, "--to=-x"], expect: /--to "-x": expected letters/ },
  { name: "--to empty", source: "cli", args: (f) => ["rollback", "--config", f, "--to="], expect: /--to is required/ },
  // Names of Object.prototype members that are safe version strings: ordinary versions, harmless.
  ...([["constructor", "rolling"], ["toString", "sticky"], ["hasOwnProperty", "half-split"]] as const).map(([version, strategy]): Case => ({
    name: `plan --version ${version} --strategy ${strategy} is an ordinary plan`,
    source: "cli",
    args: (f) => ["plan", "--config", f, "--version", version, "--strategy", strategy],
    expect: /^(?![\s\S]*\[E_)/,
    code: 0,
    stdout: new RegExp(`^strategy ${strategy}, deploying ${version}\n[\\s\\S]*web-8464 +127\\.0\\.0\\.1:8464 +v1`),
  })),
  { name: "--verify __proto__", source: "cli", args: (f) => ["deploy", "--config", f, "--version", "v2", "--verify", "__proto__"], expect: /--verify "__proto__": expected enforce, report or off/ },
];

describe("hostile values are refused or harmless (real fleet)", () => {
  beforeAll(async () => {
    await rm(PWNED, { force: true });
    await rm(PWNED_JOURNAL, { force: true });
    fleet = await startFleet({ ports: PORTS, proxyPort: 18461, health: { deadline: "3s" } });
    stateDir = path.join(fleet.dir, "state");
    journalFile = path.join(stateDir, "journal.jsonl");
    // Every command goes through a wrapper that logs its argv, so a test sees what reached a command.
    argvLog = path.join(fleet.dir, "argv.log");
    const wrapper = path.join(fleet.dir, "argv-log.sh");
    await writeFile(wrapper, `#!/usr/bin/env bash\nfor a in "$@"; do printf '[%s]' "$a"; done >> ${shellQuote(argvLog)}\necho >> ${shellQuote(argvLog)}\nexec ${shellQuote(fleetSh)} "\${@:1:4}"\n`);
    await chmod(wrapper, 0o755);
    const config = parse(await readFile(fleet.configFile, "utf8")) as Config;
    const w = `${shellQuote(wrapper)} ${shellQuote(fleet.dir)}`;
    config.commands = { ...config.commands, stop: `${w} stop {port}`, update: `${w} update {port} {version} {previous}`, start: `${w} start {port} {address}` };
    base = config;
    baseText = stringify(config);
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  async function runCase(c: Case): Promise<void> {
    await hostile(c.source, c.name, async () => {
      const file = path.join(fleet.dir, "case.yaml");
      let text = baseText;
      if (c.mutate) {
        const config = structuredClone(base);
        c.mutate(config);
        text = stringify(config);
      } else if (c.yaml) text = c.yaml(baseText);
      await writeFile(file, text);
      const before = await snapshot();
      const result = await runNodrop((c.args ?? deployArgs)(file));
      expect(result.stderr).toMatch(c.expect);
      if (c.code !== undefined) expect(result.code).toBe(c.code);
      else expect(result.code).not.toBe(0);
      if (c.never) expect(result.stdout + result.stderr).not.toContain(c.never);
      if (c.stdout) expect(result.stdout).toMatch(c.stdout);
      // A refusal is one clear line, never a stack trace or a raw TypeError.
      expect(result.stderr).not.toMatch(/TypeError|\n\s+at /);
      expect(await snapshot()).toBe(before);
      expectNotPwned();
    });
  }

  it("has many cases", () => {
    expect(configCases.length + cliCases.length).toBeGreaterThanOrEqual(80);
  });

  it.each(configCases)("config: $name", (c) => runCase(c));
  it.each(cliCases)("cli: $name", (c) => runCase(c));

  describe("the journal is read back with suspicion", () => {
    const at = "2026-12-01T12:00:00.000Z";
    const deployLine = (over: Record<string, unknown>) => JSON.stringify({ at, type: "deploy", id: "j1", version: "v2", strategy: "rolling", instances: PORTS.map((p) => ({ id: `web-${p}`, from: "v1" })), ...over });
    const inject = `v1'; touch ${PWNED_JOURNAL}; echo '`;
    const journalCases: { name: string; lines: string[]; args: string[]; expect: RegExp; code?: number; stdout?: RegExp }[] = [
      { name: "resume with a shell-injecting version", lines: [deployLine({ version: inject })], args: ["resume"], expect: /\[E_JOURNAL\]: the journal's last deploy has version "v1'; touch \/tmp\/nodrop-pwned-journal; echo '", which is not a safe version string; refusing to use it/ },
      { name: "resume with an option-like version", lines: [deployLine({ version: "--upload-pack=x" })], args: ["resume"], expect: /\[E_JOURNAL\]: the journal's last deploy has version "--upload-pack=x"/ },
      { name: "resume with a version that is a list", lines: [deployLine({ version: ["v2"] })], args: ["resume"], expect: /\[E_JOURNAL\]: the journal's last deploy has version "\[\\"v2\\"\]"/ },
      { name: "resume with a version hidden in __proto__", lines: [deployLine({}).replace('"version":"v2",', '"__proto__":{"version":"v2"},')], args: ["resume"], expect: /\[E_JOURNAL\]: the journal's last deploy has version "undefined"/ },
      { name: "resume with instance id __proto__", lines: [deployLine({ instances: [{ id: "__proto__", from: "v1" }] })], args: ["resume"], expect: /instances\[0\]\.id "__proto__", which is not an instance id/ },
      { name: "resume with instances as a mapping", lines: [deployLine({ instances: { id: "web-8461" } })], args: ["resume"], expect: /the journal's last deploy has instances .*which is not a list/ },
      { name: "rollback with an option-like previous version", lines: [deployLine({ instances: PORTS.map((p) => ({ id: `web-${p}`, from: "--upload-pack=x" })) })], args: ["rollback"], expect: /instances\[0\]\.from \(web-8461\) "--upload-pack=x", which is not a safe version string/ },
      { name: "rollback with a shell-injecting previous version", lines: [deployLine({ instances: [{ id: "web-8461", from: inject }] })], args: ["rollback"], expect: /instances\[0\]\.from \(web-8461\) "v1'; touch/ },
      { name: "rollback --to v1 after a hostile deploy record", lines: [deployLine({ version: "--upload-pack=x" })], args: ["rollback", "--to", "v1"], expect: /\[E_JOURNAL\]: the journal's last deploy has version "--upload-pack=x"/ },
      { name: "status with a hostile version", lines: [deployLine({ version: inject })], args: ["status"], expect: /\[E_JOURNAL\]: the journal's last deploy has version/ },
      { name: "status --json with a terminal escape in the strategy", lines: [deployLine({ strategy: "\u001b[2Jrolling" })], args: ["status", "--json"], expect: /strategy "\\u001b\[2Jrolling", which is not a strategy name/ },
      {
        name: "status shows a step with terminal escapes escaped",
        lines: [deployLine({}), JSON.stringify({ at, type: "step", id: "j1", phase: "batch\u001b[2J 1", kind: "stop", instance: "web-8461\u001b[31m", status: "start" })],
        args: ["status"],
        expect: /^(?![\s\S]*\[E_)/,
        code: 1,
        stdout: /last deploy: v2 \(rolling\) at .* DID NOT FINISH; last step: "batch\\u001b\[2J 1": stop "web-8461\\u001b\[31m" \(start\)/,
      },
      { name: "status with garbage and a cut line", lines: ["{not json", deployLine({}).slice(0, 40)], args: ["status", "--json"], expect: /^(?![\s\S]*\[E_)/, code: 0, stdout: /"routing"/ },
    ];

    it.each(journalCases)("journal: $name", async (c) => {
      await hostile("journal", c.name, async () => {
        await mkdir(stateDir, { recursive: true });
        const text = `${c.lines.join("\n")}\n`;
        await writeFile(journalFile, text);
        try {
          const before = await snapshot();
          const result = await runNodrop([...c.args.slice(0, 1), "--config", fleet.configFile, ...c.args.slice(1)]);
          expect(result.stderr).toMatch(c.expect);
          if (c.stdout) expect(result.stdout).toMatch(c.stdout);
          if (c.code !== undefined) expect(result.code).toBe(c.code);
          else expect(result.code).not.toBe(0);
          expect(result.stdout + result.stderr).not.toContain("\u001b");
          expect(result.stderr).not.toMatch(/TypeError|\n\s+at /);
          expect(await snapshot()).toBe(before);
          expect(await readFile(journalFile, "utf8")).toBe(text);
          expectNotPwned();
        } finally {
          await rm(journalFile, { force: true });
        }
      });
    });
  });

  describe("a hostile instance answering the health check", () => {
    let server: net.Server;
    /** The raw header lines the hostile instance sends. */
    let headerLines = "";
    beforeAll(async () => {
      // The gunicorn instance on this port makes way for a raw TCP server that answers anything.
      execFileSync(fleetSh, [fleet.dir, "stop", String(HOSTILE_PORT)]);
      server = net.createServer((socket) => {
        socket.once("data", () => {
          socket.end(Buffer.concat([Buffer.from("HTTP/1.1 200 OK\r\n"), Buffer.from(headerLines, "utf8"), Buffer.from("Content-Length: 2\r\nConnection: close\r\n\r\nok")]));
        });
        socket.on("error", () => undefined);
      });
      await new Promise<void>((resolve) => server.listen(HOSTILE_PORT, "127.0.0.1", resolve));
      // The other instances answer before the first case takes its snapshot: an earlier case may
      // have restarted them, and one still starting would differ between "before" and "after".
      const deadline = Date.now() + 30_000;
      while (Object.entries(await fleet.versions()).some(([port, version]) => port !== String(HOSTILE_PORT) && version === "down")) {
        if (Date.now() > deadline) throw new Error("the fleet's other instances did not answer within 30 s");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    });
    afterAll(async () => {
      await new Promise<void>((resolve) => server?.close(() => resolve()));
    });

    const headers: { name: string; lines: string; raw: string }[] = [
      { name: "a shell injection", raw: `v1'; touch ${PWNED}; echo '`, lines: `X-App-Version: v1'; touch ${PWNED}; echo '\r\n` },
      { name: "an option", raw: "--upload-pack=touch /tmp/nodrop-pwned", lines: "X-App-Version: --upload-pack=touch /tmp/nodrop-pwned\r\n" },
      { name: "a short option", raw: "-v2", lines: "X-App-Version: -v2\r\n" },
      { name: "a command substitution", raw: `$(touch ${PWNED})`, lines: `X-App-Version: $(touch ${PWNED})\r\n` },
      { name: "10000 characters", raw: `v${"1".repeat(9999)}`, lines: `X-App-Version: v${"1".repeat(9999)}\r\n` },
      { name: "a CRLF that adds a second version header", raw: "v1; touch", lines: "X-App-Version: v1\r\nX-App-Version: v1; touch\r\n" },
      { name: "a bare CR inside the value", raw: "v1\rtouch", lines: "X-App-Version: v1\rtouch\r\n" },
      { name: "fullwidth unicode", raw: "v２", lines: "X-App-Version: v２\r\n" },
      { name: "a terminal escape", raw: "\u001b[2Jv1", lines: "X-App-Version: \u001b[2Jv1\r\n" },
      { name: "__proto__", raw: "__proto__", lines: "X-App-Version: __proto__\r\n" },
      { name: "an empty value", raw: "", lines: "X-App-Version: \r\n" },
      { name: "nginx config injection", raw: 'v1"; } server { listen 80; #', lines: 'X-App-Version: v1"; } server { listen 80; #\r\n' },
    ];

    const commands: { name: string; args: (file: string) => string[]; check: (result: { code: number | null; stdout: string; stderr: string }) => void }[] = [
      {
        name: "status",
        args: (f) => ["status", "--config", f, "--json"],
        check: (r) => {
          expect(r.code).toBe(1);
          const status = JSON.parse(r.stdout) as { instances: { id: string; version?: string; healthy: boolean }[] };
          const target = status.instances.find((i) => i.id === `web-${HOSTILE_PORT}`)!;
          expect(target.version).toBeUndefined();
          expect(target.healthy).toBe(false);
          expect(status.instances.filter((i) => i.healthy).map((i) => i.version)).toEqual(["v1", "v1", "v1"]);
        },
      },
      {
        name: "plan",
        args: (f) => ["plan", "--config", f, "--version", "v2", "--json"],
        check: (r) => {
          expect(r.code).toBe(1);
          expect(r.stderr).toMatch(/\[E_PREFLIGHT\]: refusing to deploy: web-8464 \(127\.0\.0\.1:8464\) in the pool but not healthy/);
        },
      },
      {
        name: "deploy",
        args: (f) => ["deploy", "--config", f, "--version", "v2", "--json"],
        check: (r) => {
          expect(r.code).toBe(1);
          expect(r.stderr).toMatch(/\[E_PREFLIGHT\]: refusing to deploy: web-8464 \(127\.0\.0\.1:8464\) in the pool but not healthy/);
          const report = JSON.parse(r.stdout) as { ok: boolean; instances: { id: string; from?: string; version?: string }[] };
          expect(report.ok).toBe(false);
          expect(report.instances.find((i) => i.id === `web-${HOSTILE_PORT}`)).toMatchObject({ outcome: "not-reached" });
          for (const i of report.instances) {
            expect(i.from).toBeUndefined();
            expect(i.version).toBeUndefined();
          }
        },
      },
    ];

    const matrix = headers.flatMap((h) => commands.map((c) => ({ ...c, header: h, label: `${c.name} with a version of ${h.name}` })));
    it.each(matrix)("instance: $label", async ({ header, args, check, label }) => {
      await hostile("instance-response", label, async () => {
        headerLines = header.lines;
        const file = path.join(fleet.dir, "case.yaml");
        await writeFile(file, baseText);
        const before = await snapshot();
        const result = await runNodrop(args(file));
        check(result);
        // The raw value reaches no output (nor the journal, the include file or a command: the snapshot).
        if (header.raw.length > 2) expect(result.stdout + result.stderr).not.toContain(header.raw);
        expect(result.stdout + result.stderr).not.toContain("\u001b");
        expect(result.stderr).not.toMatch(/TypeError|\n\s+at /);
        expect(await snapshot()).toBe(before);
        expectNotPwned();
      });
    });

    it("a version named constructor is an ordinary version: status and plan are harmless", async () => {
      for (const command of ["status", "plan"] as const) {
        await hostile("instance-response", `${command} with a version named constructor`, async () => {
          headerLines = "X-App-Version: constructor\r\n";
          const before = await snapshot();
          const result = await runNodrop(command === "status" ? ["status", "--config", fleet.configFile, "--json"] : ["plan", "--config", fleet.configFile, "--version", "v2", "--json"]);
          expect(result.code).toBe(0);
          const out = JSON.parse(result.stdout) as { instances?: { id: string; version: string }[]; observed?: { id: string; version: string }[] };
          expect((out.instances ?? out.observed)!.find((i) => i.id === `web-${HOSTILE_PORT}`)!.version).toBe("constructor");
          expect(await snapshot()).toBe(before);
          expectNotPwned();
        });
      }
    });

    it("out of the pool, a hostile instance's version never becomes {previous}, a pin, the journal or the report", async () => {
      await hostile("instance-response", "deploy that repairs a hostile instance out of the pool", async () => {
        const raw = `v1'; touch ${PWNED}; echo '`;
        headerLines = `X-App-Version: ${raw}\r\n`;
        const file = path.join(fleet.dir, "case.yaml");
        await writeFile(file, baseText);
        // The pool without the hostile instance, as a failed earlier deploy would leave it.
        const deployment = await loadDeployment(file);
        const specs = fleet.instances.map(({ id, host, address, port }) => ({ id, host, address, port, version: id === `web-${HOSTILE_PORT}` ? undefined : "v1" }));
        await deployment.proxy.apply(singlePool(specs.filter((s) => s.port !== HOSTILE_PORT).map((s) => s.id)), specs);
        await deployment.dispose();
        const pidsBefore = await Promise.all(PORTS.slice(0, 3).map((p) => readFile(path.join(fleet.dir, "instances", String(p), "gunicorn.pid"), "utf8")));
        const result = await runNodrop(["deploy", "--config", file, "--version", "v2", "--json"]);
        const report = JSON.parse(result.stdout) as { ok: boolean; instances: { id: string; from?: string; version?: string; outcome: string; inPool: boolean; error?: string }[] };
        const target = report.instances.find((i) => i.id === `web-${HOSTILE_PORT}`)!;
        // It was repaired first (it was out of the pool): its update had no {previous} to give, so it failed there.
        expect(result.code).toBe(1);
        expect(report.ok).toBe(false);
        expect(target.from).toBeUndefined();
        expect(target.inPool).toBe(false);
        expect(target.error).toContain("commands.update: placeholder {previous} has no value here");
        // The others were not touched: same processes, still v1, still serving.
        expect(await Promise.all(PORTS.slice(0, 3).map((p) => readFile(path.join(fleet.dir, "instances", String(p), "gunicorn.pid"), "utf8")))).toEqual(pidsBefore);
        expect(Object.values(await fleet.versions()).slice(0, 3)).toEqual(["v1", "v1", "v1"]);
        // Every sink: output, journal, nginx include, the commands' argv.
        const journal = readFileSync(journalFile, "utf8");
        const records = journal.trim().split("\n").map((l) => JSON.parse(l) as { type: string; instances?: { id: string; from?: string; version?: string }[] });
        const start = records.find((r) => r.type === "deploy")!;
        expect(start.instances!.find((i) => i.id === `web-${HOSTILE_PORT}`)!.from).toBeUndefined();
        for (const r of records) for (const i of r.instances ?? []) expect([i.from, i.version]).not.toContain(raw);
        for (const text of [result.stdout, result.stderr, journal, await readFile(fleet.includeFile, "utf8"), await readFile(argvLog, "utf8")]) {
          expect(text).not.toContain(raw);
          expect(text).not.toContain("nodrop-pwned");
        }
        expectNotPwned();
      });
    });
  });
});
