import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadConfig, validateConfig } from "./config.js";
import { NodropError } from "./errors.js";
import { int, object, optional, parseOrThrow } from "./schema.js";
import { rejected, thrown } from "./test-support.js";

function base(): Record<string, unknown> {
  return {
    app: "web",
    instances: [{ port: 8011 }, { port: 8012 }],
    commands: { stop: "./stop {port}", update: "./update {version} {previous}", start: "./start {port} {version}" },
    proxy: { type: "nginx" },
  };
}



function invalid(mutate: (config: Record<string, unknown>) => void): NodropError {
  const config = structuredClone(base());
  mutate(config);
  const error = thrown(() => validateConfig(config, { baseDir: "/srv/app", source: "nodrop.yml" }));
  expect(error.code).toBe("E_CONFIG");
  expect(error.message).toContain("nodrop.yml");
  return error;
}

const instances = (c: Record<string, unknown>) => c.instances as Record<string, unknown>[];
const section = (c: Record<string, unknown>, key: string) => c[key] as Record<string, unknown>;

describe("validateConfig: a valid config", () => {
  it("gives instances a spare port of their own, or port + slots.offset", () => {
    const config = validateConfig({ ...base(), instances: [{ port: 8011, spare: 7011 }, { port: 8012 }], slots: { offset: 1000, reserve: "1GiB" } }, { baseDir: "/srv/app" });
    expect(config.instances.map((i) => [i.id, i.port, i.spare])).toEqual([
      ["local-8011", 8011, 7011],
      ["local-8012", 8012, 9012],
    ]);
    expect(config.slots?.reserve).toBe(2 ** 30);
    expect(validateConfig(base(), { baseDir: "/srv/app" }).instances.map((i) => i.spare)).toEqual([undefined, undefined]);
  });

  it("fills in the defaults", () => {
    const config = validateConfig(base(), { baseDir: "/srv/app" });
    expect(config.app).toBe("web");
    expect(config.instances).toEqual([
      { id: "local-8011", host: "local", address: "127.0.0.1", port: 8011 },
      { id: "local-8012", host: "local", address: "127.0.0.1", port: 8012 },
    ]);
    expect(config.health.path).toBe("/health");
    expect(config.health.versionHeader).toBe("X-App-Version");
    expect(config.health.successes).toBe(2);
    expect(config.health.deadline).toBe(30_000);
    expect(config.commands.timeout).toBe(60_000);
    expect(config.commands.cwd).toBe("/srv/app");
    expect(config.strategy).toEqual({ name: "rolling" });
    expect(config.parallel).toBe(8);
    expect(config.baseDir).toBe("/srv/app");
    expect(config.source).toBe("config");
  });

  it("keeps given values and parses durations", () => {
    const raw = base();
    raw.instances = [
      { id: "a", host: "web1", address: "10.0.0.5", port: 8011 },
      { id: "b", host: "web1", address: "::1", port: 8011 },
    ];
    raw.commands = { ...section(raw, "commands"), timeout: "2m", cwd: "deploy" };
    raw.health = { path: "/ready?full=1", successes: 3, interval: "500ms" };
    raw.strategy = { name: "rolling", batchSize: "50%" };
    raw.hosts = { web1: { address: "10.0.0.5", user: "deploy" } };
    const config = validateConfig(raw, { baseDir: "/srv/app", source: "x.yml" });
    expect(config.instances.map((i) => i.id)).toEqual(["a", "b"]);
    expect(config.instances[1]?.address).toBe("::1");
    expect(config.commands.timeout).toBe(120_000);
    expect(config.commands.cwd).toBe("/srv/app/deploy");
    expect(config.health.path).toBe("/ready?full=1");
    expect(config.health.successes).toBe(3);
    expect(config.health.interval).toBe(500);
    expect(config.health.timeout).toBe(2000);
    expect(config.strategy).toEqual({ name: "rolling", batchSize: "50%" });
    expect(config.source).toBe("x.yml");
  });

  it("refuses instances, the proxy and jump hosts that name an undefined host, and redefining local", () => {
    const error = invalid((c) => {
      instances(c)[0]!.host = "web9";
      section(c, "proxy").host = "lb";
      c.hosts = { local: { address: "1.2.3.4" }, web1: { address: "10.0.0.1", jump: "bastion" } };
    });
    expect(error.issues.map((i) => i.path)).toEqual(["instances[0].host", "hosts.local", "hosts.web1.jump", "proxy.host"]);
    expect(error.message).toContain('instances[0].host: unknown host "web9" (defined: "local", "web1")');
  });

  it("fills in the verify probe's defaults", () => {
    const raw = base();
    raw.verify = { url: "https://shop.example.com/" };
    expect(validateConfig(raw, { baseDir: "/" }).verify).toEqual({ url: "https://shop.example.com/", rate: 10, cookies: true, timeout: 10_000, settle: 1000, maxFailed: 0 });
    expect(validateConfig(base(), { baseDir: "/" }).verify).toBeUndefined();
  });

  it("accepts literal braces written as {{ and }}", () => {
    const raw = base();
    raw.commands = { ...section(raw, "commands"), stop: "awk '{{print $1}}' {port}" };
    expect(validateConfig(raw, { baseDir: "/" }).commands.stop).toBe("awk '{{print $1}}' {port}");
  });
});

describe("validateConfig: invalid configs name the exact path", () => {
  const cases: [string, (c: Record<string, unknown>) => void, string][] = [
    ["unknown top-level key (typo)", (c) => (c.instance = [{ port: 1 }]), "instance: unknown key (known keys: app, instances,"],
    ["missing app", (c) => delete c.app, "app: required: a name of letters"],
    ["app with a space", (c) => (c.app = "my app"), 'app: expected a name of letters, digits, \'.\', \'_\' or \'-\' (starting with a letter or digit), got string "my app"'],
    ["app with a shell metacharacter", (c) => (c.app = "web;rm"), 'app: expected a name of letters, digits, \'.\', \'_\' or \'-\' (starting with a letter or digit), got string "web;rm"'],
    ["instances empty", (c) => (c.instances = []), "instances: expected at least 1 item, got 0"],
    ["instances not a list", (c) => (c.instances = { port: 8011 }), "instances: expected a list, got a mapping"],
    ["port 0", (c) => (instances(c)[1]!.port = 0), "instances[1].port: expected an integer 1-65535, got number 0"],
    ["port 70000", (c) => (instances(c)[0]!.port = 70000), "instances[0].port: expected an integer 1-65535, got number 70000"],
    ["port as a string", (c) => (instances(c)[1]!.port = "8011"), 'instances[1].port: expected an integer 1-65535, got string "8011"'],
    ["port not an integer", (c) => (instances(c)[1]!.port = 80.5), "instances[1].port: expected an integer 1-65535, got number 80.5"],
    ["missing port", (c) => delete instances(c)[0]!.port, "instances[0].port: required: an integer 1-65535"],
    [
      "duplicate ids",
      (c) => {
        instances(c)[0]!.id = "same";
        instances(c)[1]!.id = "same";
      },
      'instances[1].id: duplicate instance id "same" (also instances[0])',
    ],
    ["duplicate address:port", (c) => (c.instances = [{ id: "a", port: 8011 }, { id: "b", port: 8011 }]), "instances[1].port: duplicate address 127.0.0.1:8011 (also instances[0])"],
    ["spare port equal to the port", (c) => (instances(c)[0]!.spare = instances(c)[0]!.port), "instances[0].spare: the spare port must differ from the port (8011)"],
    ["spare port that is another instance's port", (c) => (c.instances = [{ id: "a", port: 8011, spare: 8012 }, { id: "b", port: 8012 }]), "instances[1].port: duplicate address 127.0.0.1:8012 (also instances[0].spare)"],
    ["slots.offset past the last port", (c) => {
        c.instances = [{ port: 8011 }];
        c.slots = { offset: 60000 };
      },
      "instances[0].spare: port 8011 + slots.offset 60000 is 68011, not a port"],
    ["slots.reserve that is not a size", (c) => (c.slots = { offset: 1000, reserve: "lots" }), 'slots.reserve: expected a size such as 128MiB or 2GiB, got string "lots"'],
    ["slots.reserve below zero (it would switch the memory check off)", (c) => (c.slots = { offset: 1000, reserve: -1_000_000 }), "slots.reserve: expected a size such as 128MiB or 2GiB, got number -1000000"],
    ["address that is a hostname", (c) => (instances(c)[1]!.address = "localhost"), 'instances[1].address: expected an IP address, got "localhost"'],
    ["address with an injection", (c) => (instances(c)[0]!.address = "127.0.0.1; deny all"), 'instances[0].address: expected an IP address, got "127.0.0.1; deny all"'],
    ["instance id with a newline", (c) => (instances(c)[0]!.id = "web\n"), 'instances[0].id: expected a name of letters, digits, \'.\', \'_\' or \'-\' (starting with a letter or digit), got string "web\\n"'],
    ["instance id with a quote", (c) => (instances(c)[1]!.id = 'we"b'), "instances[1].id: expected a name of letters"],
    ["host with a space", (c) => (instances(c)[1]!.host = "web 1"), "instances[1].host: expected a name of letters"],
    ["unknown key in an instance", (c) => (instances(c)[1]!.adress = "10.0.0.1"), "instances[1].adress: unknown key (known keys: id, host, address, port, spare)"],
    ["unknown placeholder", (c) => (section(c, "commands").stop = "./stop {verison}"), "commands.stop: unknown placeholder {verison} (known: {version}, {previous}, {host}, {address}, {port}, {id}, {release})"],
    ["stray brace", (c) => (section(c, "commands").start = "./start {port"), 'commands.start: stray "{" at 8 (write {{ or }} for a literal brace)'],
    ["empty command", (c) => (section(c, "commands").update = ""), 'commands.update: expected a command template, got string ""'],
    ["missing command", (c) => delete section(c, "commands").start, "commands.start: required: a command template"],
    ["bad duration", (c) => (section(c, "commands").timeout = "30 seconds"), 'commands.timeout: expected a duration such as 500ms, 30s or 2m (at most 24h), got string "30 seconds"'],
    ["zero timeout", (c) => (section(c, "commands").timeout = "0s"), 'commands.timeout: expected a duration between 1ms and 24h, got string "0s"'],
    ["health.path without a leading slash", (c) => (c.health = { path: "health" }), 'health.path: expected a URL path starting with /, got string "health"'],
    ["health.successes 0", (c) => (c.health = { successes: 0 }), "health.successes: expected an integer 1-100, got number 0"],
    ["health not a mapping", (c) => (c.health = "yes"), 'health: expected a mapping, got string "yes"'],
    ["missing proxy", (c) => delete c.proxy, "proxy: required: a mapping with use (nginx, a package name or a ./file)"],
    ["missing proxy.use", (c) => (c.proxy = { configFile: "/etc/nginx/nodrop.conf" }), "proxy.use: required: a proxy such as nginx, a package name or a ./file"],
    ["proxy with use and type", (c) => (c.proxy = { use: "nginx", type: "nginx" }), "proxy.use: give use or type, not both (use is the newer name of type)"],
    ["proxy.use not a string", (c) => (c.proxy = { use: 3 }), "proxy.use: expected a proxy such as nginx, a package name or a ./file, got 3"],
    ["strategy without use", (c) => (c.strategy = { batchSize: 2 }), "strategy.use: required: a strategy such as rolling, a package name or a ./file"],
    ["strategy.name empty", (c) => (c.strategy = { name: "" }), 'strategy.name: expected a strategy such as rolling, a package name or a ./file, got ""'],
    ["strategy as a list", (c) => (c.strategy = ["rolling"]), "strategy: expected a mapping with use (rolling, half-split, blue-green, sticky, canary, a package name or a ./file), got a list"],
    ["parallel 0", (c) => (c.parallel = 0), "parallel: expected an integer 1-64, got number 0"],
    ["verify without url", (c) => (c.verify = { rate: 5 }), "verify.url: required: an http:// or https:// URL"],
    ["verify.url not http", (c) => (c.verify = { url: "ftp://example.com/" }), "verify.url: expected an http:// or https:// URL, got a ftp: URL"],
    ["verify.url with credentials", (c) => (c.verify = { url: "https://admin:hunter2@example.com/" }), "verify.url: credentials in the URL are not supported (they would appear in reports)"],
    ["verify.rate 0", (c) => (c.verify = { url: "http://127.0.0.1/", rate: 0 }), "verify.rate: expected an integer 1-200, got number 0"],
    ["verify.maxFailed negative", (c) => (c.verify = { url: "http://127.0.0.1/", maxFailed: -1 }), "verify.maxFailed: expected an integer"],
    ["unknown key in verify", (c) => (c.verify = { url: "http://127.0.0.1/", treshold: 1 }), "verify.treshold: unknown key (known keys: url, rate, cookies, versionHeader, timeout, settle, maxFailed, maxRegressions)"],
  ];

  it.each(cases)("%s", (_name, mutate, expected) => {
    const error = invalid(mutate);
    expect(error.message).toContain(`  ${expected}`);
    expect(error.issues).toHaveLength(1);
    const [path] = expected.split(": ");
    expect(error.issues[0]?.path).toBe(path);
  });

  it("a config that is not a mapping names the top level", () => {
    const error = thrown(() => validateConfig(["app"], { baseDir: "/" }));
    expect(error.code).toBe("E_CONFIG");
    expect(error.issues).toEqual([{ path: "(top level)", message: "expected a mapping, got a list" }]);
  });

  it("lists every schema problem in one error", () => {
    const error = invalid((c) => {
      delete c.app;
      c.instance = [];
      instances(c)[0]!.port = 0;
      instances(c)[1]!.port = "x";
      c.health = { successes: 0, path: "nope" };
    });
    expect(error.issues.map((i) => i.path).sort()).toEqual(
      ["app", "health.path", "health.successes", "instance", "instances[0].port", "instances[1].port"].sort(),
    );
    for (const issue of error.issues) expect(error.message).toContain(`  ${issue.path}: ${issue.message}`);
  });

  it("lists every cross-field problem in one error", () => {
    const error = invalid((c) => {
      c.instances = [
        { id: "a", port: 8011, address: "localhost" },
        { id: "a", port: 8012 },
        { id: "c", port: 8012 },
      ];
      section(c, "commands").stop = "{verison}";
      section(c, "commands").update = "x }";
      c.proxy = {};
      c.strategy = {};
    });
    expect(error.issues.map((i) => i.path)).toEqual([
      "instances[0].address",
      "instances[1].id",
      "instances[2].port",
      "commands.stop",
      "commands.update",
      "proxy.use",
      "strategy.use",
    ]);
  });
  // Bug (contract): validateConfig promises "one E_CONFIG error listing every problem", but the
  // cross-field checks (IP addresses, duplicates, placeholders, proxy.type, strategy.name) run only
  // when the schema pass found nothing, so a typo elsewhere hides them until the next run.
  it("lists schema and cross-field problems together", () => {
    const error = invalid((c) => {
      c.instance = [];
      section(c, "commands").stop = "./stop {verison}";
    });
    expect(error.issues.map((i) => i.path)).toEqual(["instance", "commands.stop"]);
  });
});

describe("parseOrThrow", () => {
  it("prefixes paths with the given root path", () => {
    const schema = object({ size: optional(int({ min: 1 }), 1) });
    expect(parseOrThrow(schema, {}, "strategy")).toEqual({ size: 1 });
    const error = thrown(() => parseOrThrow(schema, { size: 0, extra: true }, "strategy"));
    expect(error.code).toBe("E_CONFIG");
    expect(error.issues.map((i) => i.path)).toEqual(["strategy.extra", "strategy.size"]);
    expect(error.message).toContain("strategy.size: expected an integer >= 1, got number 0");
  });
});

describe("loadConfig", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "nodrop-config-test-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    writeFileSync(file, text);
    return file;
  };
  const validYaml = [
    "app: web",
    "instances:",
    "  - port: 8011",
    "  - port: 8012",
    "commands:",
    "  stop: ./stop {port}",
    "  update: ./update {version}",
    "  start: ./start {port}",
    "  cwd: bin",
    "proxy:",
    "  type: nginx",
    "",
  ].join("\n");

  it("loads a valid YAML file relative to its directory", async () => {
    const file = write("good.yml", validYaml);
    const config = await loadConfig(file);
    expect(config.source).toBe(file);
    expect(config.baseDir).toBe(dir);
    expect(config.commands.cwd).toBe(path.join(dir, "bin"));
    expect(config.instances.map((i) => i.id)).toEqual(["local-8011", "local-8012"]);
  });

  it("invalid YAML syntax is E_CONFIG naming the file", async () => {
    const file = write("syntax.yml", "app: web\ninstances: [port: 8011\n");
    const error = await rejected(loadConfig(file));
    expect(error.code).toBe("E_CONFIG");
    expect(error.message).toContain(`config file ${file} is not valid YAML`);
  });

  it("duplicate keys are E_CONFIG naming the file", async () => {
    const file = write("dupes.yml", validYaml.replace("app: web", "app: web\napp: other"));
    const error = await rejected(loadConfig(file));
    expect(error.code).toBe("E_CONFIG");
    expect(error.message).toContain(`config file ${file} is not valid YAML`);
  });

  it("a validation problem names the file and the path", async () => {
    const file = write("bad.yml", validYaml.replace("port: 8012", "port: 0"));
    const error = await rejected(loadConfig(file));
    expect(error.code).toBe("E_CONFIG");
    expect(error.message).toContain(`invalid config in ${file}`);
    expect(error.issues).toEqual([{ path: "instances[1].port", message: "expected an integer 1-65535, got number 0" }]);
  });

  it("a missing file is E_CONFIG naming the file", async () => {
    const file = path.join(dir, "missing.yml");
    const error = await rejected(loadConfig(file));
    expect(error.code).toBe("E_CONFIG");
    expect(error.message).toContain(`cannot read config file ${file}`);
  });
});

describe("validateConfig: the release section and commands.prepare", () => {
  const issues = (error: NodropError) => error.issues!.map((i) => `${i.path}: ${i.message}`);

  it("accepts a release directory with {host}, an artifact and prepare, with their defaults", () => {
    const config = validateConfig(
      { ...base(), release: { dir: "/srv/{host}/releases", artifact: "./dist" }, commands: { ...section(base(), "commands"), update: "ln -sfn {release} /srv/app/current-{port}", prepare: "cd {release} && make {version} on {host}" } },
      { baseDir: "/srv/app" },
    );
    expect(config.release).toEqual({ dir: "/srv/{host}/releases", artifact: "./dist", keep: 5, prepareTimeout: 600_000 });
    expect(config.commands.prepare).toBe("cd {release} && make {version} on {host}");
  });

  it("refuses {release} and prepare without a release section, naming the command", () => {
    const error = invalid((c) => (c.commands = { ...section(c, "commands"), start: "./start {release}", prepare: "make" }));
    expect(issues(error)).toEqual([
      "commands.start: {release} needs a release section (release.dir: where each host keeps its releases)",
      "commands.prepare: needs a release section (release.dir: where each host keeps its releases)",
    ]);
  });

  it("refuses a prepare placeholder that has no value once per host", () => {
    const error = invalid((c) => {
      c.release = { dir: "/srv/r" };
      c.commands = { ...section(c, "commands"), prepare: "make {port} {id}" };
    });
    expect(issues(error)).toEqual([
      "commands.prepare: {port} has no value in prepare, which runs once per host (it has {version}, {release} and {host})",
      "commands.prepare: {id} has no value in prepare, which runs once per host (it has {version}, {release} and {host})",
    ]);
  });

  it("refuses a release directory that is relative, climbs out, is the root, or has another placeholder", () => {
    for (const [dir, message] of [
      ["srv/r", /expected an absolute path of plain characters/],
      ["/srv/../etc", /is not an absolute path of plain characters without \.\./],
      ["/", /not the root directory/],
      ["/srv/{app}/r", /\{app\}: the only placeholder here is \{host\}/],
      ["/srv/$(id)", /expected an absolute path of plain characters/],
    ] as const) {
      const error = invalid((c) => (c.release = { dir }));
      expect(issues(error).join("\n")).toMatch(message);
      expect(error.issues![0]!.path).toBe("release.dir");
    }
  });
});
