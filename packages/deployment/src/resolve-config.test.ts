// Plugins named in a config, resolved from the config's directory on real files: built-ins, an
// installed package, a ./file; and every way a plugin can be bad, each refused in the one
// validation pass before anything is created, with the plugin, where nodrop looked and what was wrong.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CORE_VERSION, NodropError } from "@nodrop/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDeployment } from "./deployment.js";
import { resolveConfig } from "./resolve-config.js";

const packages = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
let dir: string;
let outside: string;

const STRATEGY = (name: string, extra = "") => `import { defineStrategy, schema, singlePool } from "@nodrop/core";
${extra}
export default defineStrategy({
  name: ${JSON.stringify(name)},
  optionsSchema: schema.object({ hold: schema.optional(schema.duration(), 0) }),
  create: () => ({
    name: ${JSON.stringify(name)},
    plan: ({ instances, version }) => ({ strategy: ${JSON.stringify(name)}, version, notes: [], phases: instances.map((i) => ({ name: i.id, instances: [i.id], onFailure: "revert", steps: [{ kind: "route", routing: singlePool(instances.filter((o) => o.id !== i.id).map((o) => o.id)), why: "out" }, { kind: "stop", instances: [i.id] }] })) }),
  }),
});
`;

function writePackage(name: string, files: Record<string, string>, manifest: Record<string, unknown> = {}, at = path.join(dir, "node_modules")): string {
  const root = path.join(at, name);
  mkdirSync(root, { recursive: true });
  writeFileSync(path.join(root, "package.json"), JSON.stringify({ name, version: "1.2.3", type: "module", exports: "./index.js", peerDependencies: { "@nodrop/core": "^0.1.0" }, ...manifest }));
  for (const [file, text] of Object.entries(files)) writeFileSync(path.join(root, file), text);
  return root;
}

function write(file: string, text: string): string {
  const target = path.join(dir, file);
  mkdirSync(path.dirname(target), { recursive: true });
  writeFileSync(target, text);
  return target;
}

const base = (fields: Record<string, unknown> = {}) => ({
  app: "shop",
  instances: [{ port: 9011 }, { port: 9012 }],
  commands: { stop: "true", update: "true", start: "true" },
  proxy: { use: "nginx", configFile: "/nonexistent/nodrop/shop.conf" },
  ...fields,
});

const resolve = (raw: unknown, options: Parameters<typeof resolveConfig>[1] = {}) => resolveConfig({ raw, baseDir: dir, source: "nodrop.yaml" }, options);

async function refused(raw: unknown, options: Parameters<typeof resolveConfig>[1] = {}): Promise<NodropError> {
  try {
    await resolve(raw, options);
  } catch (error) {
    if (NodropError.is(error)) return error;
    throw error;
  }
  throw new Error("expected the config to be refused");
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "nodrop-plugins-"));
  outside = mkdtempSync(path.join(os.tmpdir(), "nodrop-plugins-outside-"));
  // What `npm install @nodrop/core zod` leaves: the packages next to the config.
  mkdirSync(path.join(dir, "node_modules", "@nodrop"), { recursive: true });
  symlinkSync(path.join(packages, "core"), path.join(dir, "node_modules", "@nodrop", "core"));
  symlinkSync(path.join(packages, "core", "node_modules", "zod"), path.join(dir, "node_modules", "zod"));
  writePackage("@acme/one-at-a-time", { "index.js": STRATEGY("one-at-a-time") });
  write("deploy/strategy.mjs", STRATEGY("local-one"));
  writeFileSync(path.join(outside, "strategy.mjs"), STRATEGY("outside"));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});

describe("plugins a config names", () => {
  it("built-in short names, with use or the older name/type keys", async () => {
    for (const [strategy, name] of [[{ use: "sticky" }, "sticky"], [{ name: "half-split" }, "half-split"], [undefined, "rolling"]] as const) {
      const resolved = await resolve(base(strategy ? { strategy } : {}));
      expect(resolved.strategy.resolved).toMatchObject({ source: "built-in", file: undefined, plugin: { name } });
    }
    const legacy = await resolve(base({ proxy: { type: "nginx", configFile: "/x/y.conf" } }));
    expect(legacy.proxy.resolved.plugin.name).toBe("nginx");
    expect(legacy.plugins.map((p) => `${p.kind}:${p.plugin.name}:${p.source}`)).toEqual(["strategy:rolling:built-in", "proxy:nginx:built-in"]);
  });

  it("an installed package, from the config's directory: its file and version, options validated, plan runs", async () => {
    const resolved = await resolve(base({ strategy: { use: "@acme/one-at-a-time", hold: "2s" } }));
    expect(resolved.strategy.resolved).toMatchObject({ source: "package", version: "1.2.3", file: path.join(dir, "node_modules/@acme/one-at-a-time/index.js") });
    expect(resolved.strategy.options).toEqual({ hold: 2000 });
    const deployment = await createDeployment(resolved);
    expect(deployment.options.strategy.name).toBe("one-at-a-time");
    await deployment.dispose();
  });

  it("a ./file inside the config's directory, its version a digest of its content", async () => {
    const resolved = await resolve(base({ strategy: { use: "./deploy/strategy.mjs" } }));
    expect(resolved.strategy.resolved.source).toBe("file");
    expect(resolved.strategy.resolved.version).toMatch(/^sha256:[0-9a-f]{12}$/);
    expect(resolved.strategy.resolved.file).toBe(path.join(dir, "deploy/strategy.mjs"));
  });

  it("two copies of @nodrop/core: a plugin with its own nested copy (another version) is recognised and works", async () => {
    const root = writePackage("@acme/twin", { "index.js": STRATEGY("twin") });
    const nested = path.join(root, "node_modules", "@nodrop", "core");
    mkdirSync(nested, { recursive: true });
    cpSync(path.join(packages, "core", "dist"), path.join(nested, "dist"), { recursive: true });
    // Another version of core: its version is compiled into its dist.
    const index = path.join(nested, "dist", "index.js");
    const code = readFileSync(index, "utf8");
    expect(code).toMatch(/var CORE_VERSION = [^;]*"\d+\.\d+\.\d+[^"]*"/);
    writeFileSync(index, code.replace(/var CORE_VERSION = [^;]*;/, 'var CORE_VERSION = "0.1.99";'));
    const manifest = JSON.parse(readFileSync(path.join(packages, "core", "package.json"), "utf8"));
    writeFileSync(path.join(nested, "package.json"), JSON.stringify({ ...manifest, version: "0.1.99", dependencies: {} }));
    // Its copy's own dependency (yaml) from the workspace's install.
    mkdirSync(path.join(nested, "node_modules"), { recursive: true });
    symlinkSync(path.join(packages, "core", "node_modules", "yaml"), path.join(nested, "node_modules", "yaml"));
    const resolved = await resolve(base({ strategy: { use: "@acme/twin" } }));
    // The plugin was defined by the other copy, and is recognised by this one.
    expect(resolved.strategy.resolved.plugin.coreVersion).toBe("0.1.99");
    expect(CORE_VERSION).not.toBe("0.1.99");
    expect(resolved.strategy.resolved.file).toBe(path.join(root, "index.js"));
    const strategy = resolved.strategy.resolved.plugin.create();
    const plan = strategy.plan({ instances: [{ id: "a", host: "local", address: "127.0.0.1", port: 1, version: "v1", healthy: true, inPool: true }], version: "v2", proxy: { versionPinning: false, timedSwitch: false, affinity: false }, options: {} });
    expect(plan.phases[0]!.steps[0]).toEqual({ kind: "route", routing: { pools: { all: [] }, defaultPool: "all", pins: {} }, why: "out" });
  });
});

describe("executor plugins: a host reached another way than SSH", () => {
  it("a host with use gets its plugin's executor, with validated options, once per connection (the heartbeat has its own)", async () => {
    write(
      "deploy/executor.mjs",
      `import { defineExecutor, schema } from "@nodrop/core";
globalThis.nodropExecutorCalls = [];
export default defineExecutor({
  name: "agent",
  optionsSchema: schema.object({ endpoint: schema.str({ pattern: /^https:\\/\\// }), retries: schema.optional(schema.int({ min: 0 }), 2) }),
  create: ({ host, options }) => {
    globalThis.nodropExecutorCalls.push({ host, options });
    return { name: "agent", host, exec: async (command) => ({ code: 0, stdout: command, stderr: "", durationMs: 0 }) };
  },
});
`,
    );
    const raw = base({
      hosts: { box: { use: "./deploy/executor.mjs", endpoint: "https://box.example/agent" } },
      // The ssh defaults are for SSH hosts only: they are not the plugin's options.
      ssh: { user: "deploy" },
      instances: [{ host: "box", port: 9011 }, { host: "box", port: 9012 }],
      proxy: { use: "nginx", host: "box", configFile: "/etc/nginx/nodrop/shop.conf" },
    });
    const resolved = await resolve(raw);
    expect(resolved.plugins.map((p) => `${p.kind}:${p.plugin.name}:${p.source}`)).toEqual(["strategy:rolling:built-in", "proxy:nginx:built-in", "executor:agent:file"]);
    const deployment = await createDeployment(resolved);
    const calls = (globalThis as { nodropExecutorCalls?: unknown[] }).nodropExecutorCalls;
    expect(calls).toEqual([
      { host: "box", options: { endpoint: "https://box.example/agent", retries: 2 } },
      { host: "box", options: { endpoint: "https://box.example/agent", retries: 2 } },
    ]);
    expect(deployment.executors.get("box")?.name).toBe("agent");
    expect(deployment.proxyExecutor).toBe(deployment.executors.get("box"));
    expect(deployment.heartbeatExecutor).not.toBe(deployment.proxyExecutor);
    expect(deployment.heartbeatExecutor?.name).toBe("agent");
    await deployment.dispose();
  });

  it("its options fail its schema at their path; an SSH host cannot jump through it", async () => {
    const error = await refused(
      base({
        hosts: { box: { use: "./deploy/executor.mjs", endpoint: "ftp://x" }, web1: { address: "10.0.0.1", user: "deploy", agent: true, jump: "box" } },
        instances: [{ host: "box", port: 9011 }, { host: "web1", port: 9012 }],
      }),
      { env: { SSH_AUTH_SOCK: "/tmp/agent.sock" } },
    );
    expect(error.issues.map((i) => i.path)).toEqual(["hosts.box.endpoint", "hosts.web1.jump"]);
    expect(error.issues[1]!.message).toBe('"box" is not an SSH host (its entry names an executor plugin): a jump host is reached over SSH');
  });
});

describe("bad plugins, each refused in the one pass before anything is created", () => {
  it("a package that is not installed: where nodrop looked", async () => {
    const error = await refused(base({ strategy: { use: "@acme/nope" } }));
    expect(error.code).toBe("E_CONFIG");
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]!.path).toBe("strategy.use");
    expect(error.issues[0]!.message).toContain('strategy "@acme/nope": not found: no package @acme/nope in ');
    expect(error.issues[0]!.message).toContain(`${dir}/node_modules, `);
    expect(error.issues[0]!.message).toContain("npm install @acme/nope");
  });

  it("a ./file that does not exist", async () => {
    const error = await refused(base({ proxy: { use: "./deploy/haproxy.js", socket: "x" } }));
    expect(error.issues.map((i) => [i.path, i.message])).toEqual([["proxy.use", `proxy "./deploy/haproxy.js": not found: no file ${path.join(dir, "deploy/haproxy.js")} (ENOENT)`]]);
  });

  it.each([
    ["an object", "export default { name: 'x', plan() {} };", "its default export is an object with keys name, plan, not made by a define function"],
    ["a function", "export default function rolling() {}", "its default export is a function (rolling), not the object a define function returns"],
    ["nothing", "export const plugin = 1;", "it has no default export"],
  ])("a default export that is not a plugin: %s", async (_case, source, what) => {
    const file = write(`bad/${_case.replace(/ /g, "-")}.mjs`, source);
    const error = await refused(base({ strategy: { use: `./bad/${path.basename(file)}` } }));
    expect(error.issues[0]!.message).toContain(`${file} is not a nodrop plugin: ${what}`);
    expect(error.issues[0]!.message).toContain("export default defineStrategy({ ... })");
  });

  it("a plugin of another kind", async () => {
    write("bad/proxy-as-strategy.mjs", `import { defineProxy, schema } from "@nodrop/core"; export default defineProxy({ name: "p", optionsSchema: schema.object({}), capabilities: { versionPinning: false, timedSwitch: false, affinity: false }, create: () => { throw new Error("never"); } });`);
    const error = await refused(base({ strategy: { use: "./bad/proxy-as-strategy.mjs" } }));
    expect(error.issues[0]!.message).toContain("is a proxy plugin (p), not a strategy");
  });

  it("a module that fails to load", async () => {
    write("bad/throws.mjs", `throw new Error("the plugin's top level broke");`);
    const error = await refused(base({ strategy: { use: "./bad/throws.mjs" } }));
    expect(error.issues[0]!.message).toContain("failed to load");
    expect(error.issues[0]!.message).toContain("the plugin's top level broke");
  });

  it("a plugin whose factory throws: named with its file, and every executor made is disposed", async () => {
    write("bad/factory.mjs", `import { defineProxy, schema } from "@nodrop/core"; export default defineProxy({ name: "broken", optionsSchema: schema.object({}), capabilities: { versionPinning: false, timedSwitch: false, affinity: false }, create: () => { throw new Error("cannot reach the load balancer API"); } });`);
    const resolved = await resolve(base({ proxy: { use: "./bad/factory.mjs" } }));
    let disposed = 0;
    let error: unknown;
    try {
      await createDeployment(resolved, { localExecutor: () => ({ name: "local", host: "local", exec: async () => ({ code: 0, stdout: "", stderr: "", durationMs: 0 }), dispose: async () => void (disposed += 1) }) });
    } catch (e) {
      error = e;
    }
    expect(NodropError.is(error) && error.code).toBe("E_CONFIG");
    expect((error as NodropError).issues).toEqual([{ path: "proxy", message: `proxy plugin broken (${path.join(dir, "bad/factory.mjs")}) failed to start: cannot reach the load balancer API` }]);
    // The local executor and the heartbeat's: disposed before the error is thrown.
    expect(disposed).toBe(2);
  });

  it("options that fail the plugin's schema (core's, and zod's), listed with the config's other problems", async () => {
    write("zod-strategy.mjs", `import { defineStrategy } from "@nodrop/core"; import { z } from "zod";
export default defineStrategy({ name: "canary", optionsSchema: z.object({ steps: z.array(z.object({ weight: z.number().int().min(1).max(100) })) }).strict(), create: () => ({ name: "canary", plan: () => { throw new Error("unused"); } }) });`);
    const error = await refused({ ...base({ strategy: { use: "./zod-strategy.mjs", steps: [{ weight: 10 }, { weight: 400 }] } }), parallel: 0, proxy: { use: "nginx", configFile: "relative.conf", drainTimeout: "soon" } });
    const paths = error.issues.map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(["parallel", "strategy.steps[1].weight", "proxy.configFile", "proxy.drainTimeout"]));
    expect(paths).toHaveLength(4);
    expect(error.message).toMatch(/strategy\.steps\[1\]\.weight: Too big/);
  });

  it("a package built for another @nodrop/core: refused by its peer range before any of its code runs", async () => {
    const marker = path.join(dir, "ran-future");
    writePackage("@acme/future", { "index.js": STRATEGY("future", `import { writeFileSync } from "node:fs"; writeFileSync(${JSON.stringify(marker)}, "ran");`) }, { version: "3.0.0", peerDependencies: { "@nodrop/core": "^9.0.0" } });
    const error = await refused(base({ strategy: { use: "@acme/future" } }));
    expect(error.issues[0]!.message).toContain(`@acme/future 3.0.0 at ${path.join(dir, "node_modules/@acme/future")} supports @nodrop/core ^9.0.0; this nodrop runs @nodrop/core ${CORE_VERSION}`);
    expect(existsSync(marker)).toBe(false);
    writePackage("@acme/garbled", { "index.js": STRATEGY("garbled") }, { peerDependencies: { "@nodrop/core": "whatever you have" } });
    expect((await refused(base({ strategy: { use: "@acme/garbled" } }))).issues[0]!.message).toContain('declares "whatever you have" for @nodrop/core, which is not a version range');
  });

  it("a plugin object of another plugin contract", async () => {
    write("bad/contract.mjs", `export default { [Symbol.for("@nodrop/core/plugin")]: true, kind: "strategy", name: "later", contract: 2, coreVersion: "1.0.0", create() {}, optionsSchema: {} };`);
    const error = await refused(base({ strategy: { use: "./bad/contract.mjs" } }));
    expect(error.issues[0]!.message).toContain("was written for nodrop's plugin contract 2 (its @nodrop/core 1.0.0); this nodrop implements contract 1");
  });

  it("a path that escapes the config's directory: ../, absolute, or through a symlink", async () => {
    symlinkSync(path.join(outside, "strategy.mjs"), path.join(dir, "deploy", "linked.mjs"));
    symlinkSync(outside, path.join(dir, "linked-dir"));
    const cases: [string, string][] = [
      ["../outside/strategy.mjs", "an absolute path or ../ is refused"],
      [path.join(outside, "strategy.mjs"), "an absolute path or ../ is refused"],
      ["./deploy/../../strategy.mjs", `escapes the config's directory ${dir} through ..`],
      ["./deploy/linked.mjs", `: a symlink leads to ${path.join(outside, "strategy.mjs")}`],
      ["./linked-dir/strategy.mjs", `: a symlink leads to ${path.join(outside, "strategy.mjs")}`],
      ["file:///etc/passwd", "a package name, or a ./file inside the config's directory"],
    ];
    for (const [use, message] of cases) {
      const error = await refused(base({ strategy: { use } }));
      expect(error.issues.map((i) => i.path), use).toEqual(["strategy.use"]);
      expect(error.issues[0]!.message, use).toContain(message);
    }
  });

  it("a package that leads outside its own directory: a subpath with .., a main of ../..; an unbuilt one", async () => {
    writePackage("@acme/escape", {}, { exports: undefined, main: `../../../../${path.basename(outside)}/strategy.mjs` });
    writeFileSync(path.join(outside, "strategy.mjs"), STRATEGY("outside"));
    expect((await refused(base({ strategy: { use: "@acme/one-at-a-time/../../../x.mjs" } }))).issues[0]!.message).toContain("a package name, or a ./file inside the config's directory");
    expect((await refused(base({ strategy: { use: "@acme/one-at-a-time/node_modules/x" } }))).issues[0]!.message).toContain("a package name, or a ./file inside the config's directory");
    const escape = await refused(base({ strategy: { use: "@acme/escape" } }));
    expect(escape.issues[0]!.message).toMatch(/@acme\/escape 1\.2\.3 at \S+ resolves to \S+, outside its own directory /);
    writePackage("@acme/unbuilt", {}, { exports: "./dist/index.js" });
    const unbuilt = await refused(base({ strategy: { use: "@acme/unbuilt" } }));
    expect(unbuilt.issues[0]!.message).toContain(`@acme/unbuilt 1.2.3 at ${path.join(dir, "node_modules/@acme/unbuilt")} is installed, but "@acme/unbuilt" resolves to ${path.join(dir, "node_modules/@acme/unbuilt/dist/index.js")}, which is not a file`);
    expect(unbuilt.issues[0]!.message).toContain("(is the package built?)");
  });

  it("what a factory makes is checked: no executor, a strategy named to break the journal, a proxy without apply", async () => {
    write("bad/made.mjs", `import { defineExecutor, defineProxy, defineStrategy, schema } from "@nodrop/core";
export const exec = defineExecutor({ name: "e", optionsSchema: schema.object({}), create: () => undefined });
export default defineStrategy({ name: "s", optionsSchema: schema.object({}), create: () => ({ name: "one host\\n", plan: () => ({}) }) });`);
    write("bad/made-exec.mjs", `export { exec as default } from "./made.mjs";`);
    write("bad/made-proxy.mjs", `import { defineProxy, schema } from "@nodrop/core";
export default defineProxy({ name: "p", optionsSchema: schema.object({}), capabilities: {}, create: () => ({ name: "p", capabilities: {}, check: async () => ({ ok: true, details: [] }), current: async () => undefined }) });`);
    const resolved = await resolve(base({ strategy: { use: "./bad/made.mjs" }, proxy: { use: "./bad/made-proxy.mjs" }, hosts: { box: { use: "./bad/made-exec.mjs" } } }));
    let error: unknown;
    try {
      await createDeployment(resolved);
    } catch (e) {
      error = e;
    }
    expect(NodropError.is(error) && error.issues.map((i) => `${i.path}: ${i.message.replace(dir, "DIR")}`)).toEqual([
      "hosts.box: executor plugin e (DIR/bad/made-exec.mjs) made no executor (an object with exec())",
      'strategy: strategy plugin s (DIR/bad/made.mjs) made a strategy named "one host\\n"; a name is letters, digits, \'.\', \'_\' or \'-\'',
      "proxy: proxy plugin p (DIR/bad/made-proxy.mjs) made no proxy (an object with check(), apply() and current())",
    ]);
  });

  it("strategy: null is the default; a host's use that is not a name is a problem at its path", async () => {
    expect((await resolve(base({ strategy: null }))).strategy.resolved.plugin.name).toBe("rolling");
    const error = await refused(base({ hosts: { box: { use: 42 } }, instances: [{ host: "box", port: 9011 }, { port: 9012 }] }));
    expect(error.issues).toEqual([{ path: "hosts.box.use", message: "expected ssh, a package name or a ./file, got \"42\"" }]);
    const host = await refused(base({ proxy: { use: "nginx", host: 1, configFile: "/x/y.conf" } }));
    expect(host.issues.map((i) => i.path)).toEqual(["proxy.host"]);
  });

  it("proxy.hosts: each host once, known, not beside proxy.host; each entry's own options over the section's, validated at its path", async () => {
    const hosts = { lb1: { address: "10.0.0.5", user: "deploy", agent: true }, lb2: { address: "10.0.0.6", user: "deploy", agent: true } };
    const agent = { env: { SSH_AUTH_SOCK: "/run/agent.sock" } };
    const resolved = await resolve(base({ hosts, proxy: { use: "nginx", configFile: "/etc/nginx/nodrop/shop.conf", hosts: ["lb1", { host: "lb2", configFile: "/opt/nginx/nodrop/shop.conf" }] } }), agent);
    expect(resolved.proxy.host).toBe("lb1");
    expect(resolved.proxy.members.map((m) => [m.host, (m.options as { configFile: string }).configFile])).toEqual([
      ["lb1", "/etc/nginx/nodrop/shop.conf"],
      ["lb2", "/opt/nginx/nodrop/shop.conf"],
    ]);
    const error = await refused(
      base({ hosts, proxy: { use: "nginx", host: "lb1", configFile: "/etc/nginx/nodrop/shop.conf", hosts: ["lb1", "lb1", "lb9", { host: "lb2", configFile: "relative.conf", use: "nginx" }, 7] } }),
      agent,
    );
    expect(error.issues.map((i) => `${i.path}: ${i.message}`).sort()).toEqual([
      "proxy.hosts: give either proxy.host (one proxy) or proxy.hosts (several), not both",
      'proxy.hosts[1]: host "lb1" is listed twice: each proxy host once',
      'proxy.hosts[2]: unknown host "lb9" (defined: "local", "lb1", "lb2")',
      'proxy.hosts[3].configFile: expected an absolute path of plain characters without .., got string "relative.conf"',
      "proxy.hosts[3].use: use belongs to the proxy section, not to one of its hosts",
      "proxy.hosts[4]: expected a host name (local or one under hosts), got 7",
    ]);
    // The version cookie is one for all: a client the next request takes to another proxy carries it.
    const cookie = await refused(base({ hosts, proxy: { use: "nginx", configFile: "/etc/nginx/nodrop/shop.conf", hosts: ["lb1", { host: "lb2", versionCookie: "shop_v" }] } }), agent);
    expect(cookie.issues).toEqual([
      { path: "proxy.hosts[1].versionCookie", message: 'must be the same on every proxy host (a client the next request takes to another proxy carries it): lb2 has "shop_v", lb1 "nodrop_version"' },
    ]);
    // Given alike on each host, or once for all, it is fine.
    const alike = await resolve(base({ hosts, proxy: { use: "nginx", versionCookie: "shop_v", hosts: [{ host: "lb1", configFile: "/a/x.conf" }, { host: "lb2", configFile: "/b/x.conf", versionCookie: "shop_v" }] } }), agent);
    expect(alike.proxy.members.map((m) => (m.options as { versionCookie: string }).versionCookie)).toEqual(["shop_v", "shop_v"]);
    // Without a configFile of its own or shared, the host that lacks it is named.
    const missing = await refused(base({ hosts, proxy: { use: "nginx", hosts: [{ host: "lb1", configFile: "/etc/nginx/nodrop/shop.conf" }, "lb2"] } }), agent);
    expect(missing.issues.map((i) => i.path)).toEqual(["proxy.configFile"]);
  });

  it("a Standard Schema whose output is undefined is valid options, not a silent failure", async () => {
    write("undefined-options.mjs", `import { defineStrategy } from "@nodrop/core";
export default defineStrategy({ name: "u", optionsSchema: { "~standard": { version: 1, vendor: "test", validate: () => ({ value: undefined }) } }, create: () => ({ name: "u", plan: () => ({ strategy: "u", version: "v", phases: [], notes: [] }) }) });`);
    const resolved = await resolve(base({ strategy: { use: "./undefined-options.mjs" } }));
    expect(resolved.strategy.options).toBeUndefined();
  });

  it("--strategy loads only a built-in or the config's own strategy", async () => {
    const error = await refused(base({ strategy: { use: "./deploy/strategy.mjs" } }), { strategy: "@acme/one-at-a-time" });
    expect(error.issues).toEqual([{ path: "--strategy", message: expect.stringContaining('"@acme/one-at-a-time" is not a built-in strategy (rolling, half-split, blue-green, sticky, canary, canary-abort) nor the one the config names') }]);
    expect((await resolve(base({ strategy: { use: "./deploy/strategy.mjs", hold: "1s" } }), { strategy: "./deploy/strategy.mjs" })).strategy.options).toEqual({ hold: 1000 });
    expect((await resolve(base({ strategy: { use: "./deploy/strategy.mjs", hold: "1s" } }), { strategy: "rolling" })).strategy.resolved.plugin.name).toBe("rolling");
  });
});
