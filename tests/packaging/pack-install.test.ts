// The packages as a user gets them: every public package is packed with `pnpm pack` (workspace:*
// becomes a real version, as `changeset publish` does), the tarballs are installed with plain
// `npm install` into a project outside the workspace, and a program there imports each package,
// plans a deploy with every strategy, builds the adapters and runs the `nodrop` binary; `tsc`
// (nodenext) checks a file importing every package and the examples in the shipped READMEs.
// Third-party dependencies (yaml, ssh2, typescript) come from the npm registry; @nodrop/* must
// come from the tarballs only, which the test checks in the lockfile and on disk.
// Needs a build first (`pnpm test` builds before it runs).
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runActionBundle } from "../../actions/deploy/test/run-action.js";
import { type Fleet, deployUnderLoad, startFleet } from "../../examples/wsgi-fleet/src/index.js";
import { runProcess } from "../../examples/wsgi-fleet/src/under-load.js";
import { parse, stringify } from "../../examples/wsgi-fleet/node_modules/yaml/dist/index.js";
// @ts-expect-error plain-JS script without declarations: the one list of public packages
import { publicPackages } from "../../scripts/lint-packages.mjs";

const exec = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const rootPkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
const packages: { dir: string; name: string }[] = publicPackages();

// The scratch project must not inherit the pnpm run's npm_config_* (registry, store, linker ...).
const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^(npm|pnpm)_/i.test(key)));
Object.assign(env, { npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false", NO_COLOR: "1" });

const THIRD_PARTY = "nodrop-strategy-one-host";
let scratch: string;
let tarballs: Map<string, string>;
const started = performance.now();

const PROGRAM = `
import { createRequire } from "node:module";
import { NodropError, localExecutor, validateConfig } from "@nodrop/core";
import { nginxProxy } from "@nodrop/nginx";
import { sshExecutor } from "@nodrop/ssh";
import { rollingStrategy } from "@nodrop/strategy-rolling";
import { halfSplitStrategy } from "@nodrop/strategy-half-split";
import { stickyStrategy } from "@nodrop/strategy-sticky";
import { canaryStrategy } from "@nodrop/strategy-canary";
import { builtInPlugins, configReference, createDeployment, resolveConfig } from "@nodrop/deployment";

const names = JSON.parse(process.argv[2]);
const out = { exports: {}, resolved: {}, plans: {} };
for (const name of names) {
  const module = await import(name);
  out.exports[name] = Object.keys(module).length;
  out.resolved[name] = import.meta.resolve(name);
}

const fleet = [8011, 8012, 8013, 8014].map((port) => ({
  id: "web-" + port, host: "local", address: "127.0.0.1", port, version: "v1", healthy: true, inPool: true,
}));
const proxy = nginxProxy({ app: "web", configFile: "/nonexistent/nodrop/web.conf", executor: localExecutor() });
for (const strategy of [rollingStrategy(), halfSplitStrategy(), stickyStrategy(), canaryStrategy()]) {
  const options = strategy.optionsSchema.parse({}, "strategy", []);
  // The canary's gates count traffic: nginx can once proxy.accessLog is set.
  const plan = strategy.plan({ instances: fleet, version: "v2", proxy: { ...proxy.capabilities, traffic: true }, options });
  out.plans[strategy.name] = plan.phases.map((phase) => phase.name);
}

const ssh = sshExecutor({ name: "web1", address: "192.0.2.10", user: "deploy", hostKeys: { knownHosts: "" } });
out.ssh = { name: ssh.name, host: ssh.host, connectionsOpened: ssh.connectionsOpened() };
await ssh.dispose();
out.proxy = { name: proxy.name, capabilities: proxy.capabilities };

const resolved = await resolveConfig({
  raw: {
    app: "web",
    instances: fleet.map(({ port }) => ({ port })),
    commands: { stop: "true", update: "true", start: "true" },
    health: { path: "/health", versionHeader: "X-App-Version" },
    proxy: { use: "nginx", configFile: "/nonexistent/nodrop/web.conf" },
    strategy: { use: "sticky" },
  },
  baseDir: process.cwd(),
  source: "inline",
});
const deployment = await createDeployment(resolved);
out.deployment = { proxy: deployment.proxy.name, strategy: deployment.options.strategy.name, pools: Object.keys(deployment.steadyRouting.pools), affinity: Boolean(deployment.steadyRouting.affinity) };
await deployment.dispose();
out.cliStrategies = Object.keys(builtInPlugins.strategy);
out.reference = configReference().split("\\n")[0];
try {
  validateConfig({ app: "web" }, { baseDir: process.cwd() });
} catch (error) {
  out.configError = NodropError.is(error) ? error.code : "not a NodropError";
}
// CommonJS consumers: require(esm) works on Node >= 22.12 for packages without top-level await.
out.required = Object.keys(createRequire(import.meta.url)("@nodrop/strategy-rolling")).includes("rollingStrategy");
console.log(JSON.stringify(out));
`;

const TYPES = `
import { type DeployPlan, type NodropConfig, type Strategy, NodropError, localExecutor } from "@nodrop/core";
import { type NginxProxyOptions, nginxProxy } from "@nodrop/nginx";
import { type SshExecutor, sshExecutor } from "@nodrop/ssh";
import { type RollingOptions, rollingStrategy } from "@nodrop/strategy-rolling";
import { type HalfSplitOptions, halfSplitStrategy } from "@nodrop/strategy-half-split";
import { type StickyOptions, stickyStrategy } from "@nodrop/strategy-sticky";
import { type Deployment, type ResolvedConfig, configReference, createDeployment } from "@nodrop/deployment";

const options: NginxProxyOptions = { app: "web", configFile: "/etc/nginx/nodrop/web.conf", executor: localExecutor() };
const proxy = nginxProxy(options);
const ssh: SshExecutor = sshExecutor({ name: "web1", address: "192.0.2.10", user: "deploy", hostKeys: { fingerprints: [] } });
const rolling: Strategy<RollingOptions> = rollingStrategy();
const halfSplit: Strategy<HalfSplitOptions> = halfSplitStrategy();
const sticky: Strategy<StickyOptions> = stickyStrategy();
const input = { instances: [], version: "v2", proxy: proxy.capabilities };
const plans: DeployPlan[] = [rolling.plan({ ...input, options: { batchSize: "25%" } }), halfSplit.plan({ ...input, options: { split: "by-host" } }), sticky.plan({ ...input, options: { key: "cookie", keyName: "session" } })];
// The types are real, not any: a number is not a version.
// @ts-expect-error version must be a string
rolling.plan({ ...input, version: 2, options: {} });
const deploy: (config: ResolvedConfig) => Promise<Deployment> = createDeployment;
const typed: NodropConfig | undefined = undefined;
const text: string = configReference();
const code: string | undefined = NodropError.is(new Error()) ? "E_CONFIG" : undefined;
export { ssh, plans, deploy, text, code, typed };
`;

/**
 * The examples of a README that are whole programs: ```ts blocks that start with an import and
 * import only packages (not signatures, fragments, or code importing the reader's own files).
 */
function tsExamples(readme: string): string[] {
  return [...readme.matchAll(/^```ts\n([\s\S]*?)^```/gm)].map((m) => m[1]!).filter((block) => /^import /.test(block) && !/from "\.{1,2}\//.test(block));
}

beforeAll(async () => {
  const missing = packages.filter((p) => !existsSync(path.join(root, p.dir, "dist")));
  if (missing.length > 0) throw new Error(`build first (pnpm build): no dist in ${missing.map((p) => p.dir).join(", ")}`);
  scratch = mkdtempSync(path.join(os.tmpdir(), "nodrop-pack-install-"));
  const dest = path.join(scratch, "tarballs");
  mkdirSync(dest);
  tarballs = new Map();
  await Promise.all(
    packages.map(async (p) => {
      const { stdout } = await exec("pnpm", ["pack", "--json", "--pack-destination", dest], { cwd: path.join(root, p.dir) });
      tarballs.set(p.name, `file:tarballs/${path.basename(JSON.parse(stdout.slice(stdout.indexOf("{"))).filename)}`);
    }),
  );
  // A third-party strategy, packed from its own directory as its author would publish it.
  const plugin = await exec("pnpm", ["pack", "--json", "--pack-destination", dest], { cwd: path.join(root, "examples", "strategy-one-host") });
  const pluginTarball = `file:tarballs/${path.basename(JSON.parse(plugin.stdout.slice(plugin.stdout.indexOf("{"))).filename)}`;
  const local = Object.fromEntries([...tarballs].sort());
  writeFileSync(
    path.join(scratch, "package.json"),
    JSON.stringify(
      {
        name: "nodrop-scratch",
        private: true,
        type: "module",
        dependencies: { ...local, [THIRD_PARTY]: pluginTarball },
        devDependencies: { typescript: rootPkg.devDependencies.typescript, "@types/node": rootPkg.devDependencies["@types/node"] },
        // Transitive @nodrop/* (the cli's, the adapters' @nodrop/core) from the tarballs too, never the registry.
        overrides: local,
      },
      null,
      2,
    ),
  );
  // --ignore-scripts: ssh2's optional native helpers would build with node-gyp; the pure-JS path is what ships.
  await exec("npm", ["install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"], { cwd: scratch, env, timeout: 120_000 });
}, 150_000);

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  console.log(`pack-install: ${packages.length} packages packed, installed and checked in ${((performance.now() - started) / 1000).toFixed(1)} s`);
});

describe("packed packages installed with npm outside the workspace", () => {
  it("installs every @nodrop package once, from the local tarballs only", () => {
    const lock = JSON.parse(readFileSync(path.join(scratch, "package-lock.json"), "utf8"));
    const entries = Object.entries(lock.packages as Record<string, { resolved?: string; version?: string; integrity?: string }>).filter(([key]) => /(^|\/)node_modules\/@nodrop\//.test(key));
    // One copy each, at the top level: no nested duplicates (no dual-package hazard between copies).
    expect(entries.map(([key]) => key).sort()).toEqual(packages.map((p) => `node_modules/${p.name}`).sort());
    for (const [key, entry] of entries) {
      const tarball = tarballs.get(key.replace("node_modules/", ""))!;
      expect(entry.resolved, key).toBe(tarball);
      // The bytes installed are the bytes packed.
      expect(entry.integrity, key).toBe(`sha512-${createHash("sha512").update(readFileSync(path.join(scratch, tarball.slice("file:".length)))).digest("base64")}`);
    }
    // What is on disk is what was packed: no workspace:* left, the same version.
    for (const p of packages) {
      const installed = JSON.parse(readFileSync(path.join(scratch, "node_modules", p.name, "package.json"), "utf8"));
      const source = JSON.parse(readFileSync(path.join(root, p.dir, "package.json"), "utf8"));
      expect(installed.version).toBe(source.version);
      expect(JSON.stringify(installed.dependencies ?? {})).not.toContain("workspace:");
    }
    // Third-party dependencies came from the registry (npm may leave its URL out of the lockfile).
    for (const name of ["yaml", "ssh2"]) {
      const entry = lock.packages[`node_modules/${name}`];
      expect(entry?.integrity, name).toMatch(/^sha512-/);
      expect(entry?.resolved ?? "https://", name).toMatch(/^https:\/\//);
    }
  });

  it("imports every package and plans a deploy of a 4-instance fleet with each strategy", async () => {
    writeFileSync(path.join(scratch, "program.mjs"), PROGRAM);
    const { stdout } = await exec("node", ["program.mjs", JSON.stringify(packages.map((p) => p.name))], { cwd: scratch, env, timeout: 30_000 });
    const out = JSON.parse(stdout);
    for (const p of packages) {
      expect(out.exports[p.name], p.name).toBeGreaterThan(0);
      expect(out.resolved[p.name], p.name).toContain(`${scratch}/node_modules/${p.name}/`);
    }
    expect(out.plans).toEqual({
      rolling: ["batch 1/4", "batch 2/4", "batch 3/4", "batch 4/4", "finish"],
      "half-split": ["half A", "switch, half B", "finish"],
      sticky: ["batch 1/4", "batch 2/4", "batch 3/4", "batch 4/4", "finish"],
      canary: ["canary 10%", "canary 50%", "promote web-8013", "promote web-8014", "finish"],
    });
    expect(out.proxy).toEqual({ name: "nginx", capabilities: { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true, poolSlots: true, backgroundDrain: true, split: true } });
    expect(out.ssh).toEqual({ name: "ssh", host: "web1", connectionsOpened: 0 });
    expect(out.deployment).toEqual({ proxy: "nginx", strategy: "sticky", pools: ["live"], affinity: true });
    expect(out.cliStrategies).toEqual(["rolling", "half-split", "blue-green", "sticky", "canary", "canary-abort"]);
    expect(out.reference).toBe("# Configuration reference");
    expect(out.configError).toBe("E_CONFIG");
    expect(out.required).toBe(true);
  });

  it("runs the installed nodrop binary: --help, and init writing its include file", async () => {
    const help = await exec(path.join(scratch, "node_modules", ".bin", "nodrop"), ["--help"], { cwd: scratch, env });
    expect(help.stdout).toContain("nodrop plan");
    const include = path.join(scratch, "nginx", "web.conf");
    writeFileSync(
      path.join(scratch, "nodrop.yaml"),
      ["app: web", "instances: [{ port: 8011 }, { port: 8012 }]", "commands: { stop: 'true', update: 'true', start: 'true' }", `proxy: { type: nginx, configFile: ${include} }`].join("\n"),
    );
    const init = await exec(path.join(scratch, "node_modules", ".bin", "nodrop"), ["init", "--config", "nodrop.yaml"], { cwd: scratch, env });
    expect(init.stdout).toContain(`wrote ${include} (2 instances, routing of the rolling strategy at rest)`);
    expect(readFileSync(include, "utf8")).toContain("# nodrop-generation: 1");
  });

  it("type-checks with tsc (nodenext): every package, and the examples in the shipped READMEs", async () => {
    const files = ["types.ts"];
    writeFileSync(path.join(scratch, "types.ts"), TYPES);
    for (const p of packages) {
      const readme = path.join(scratch, "node_modules", p.name, "README.md");
      tsExamples(readFileSync(readme, "utf8")).forEach((block, index) => {
        const file = `readme-${p.name.replace("@nodrop/", "")}-${index + 1}.ts`;
        writeFileSync(path.join(scratch, file), block);
        files.push(file);
      });
    }
    // The strategies' and the adapters' READMEs each show an example.
    for (const name of ["core", "nginx", "ssh", "strategy-rolling", "strategy-half-split", "strategy-sticky", "strategy-canary", "deployment"]) expect(files).toContain(`readme-${name}-1.ts`);
    writeFileSync(
      path.join(scratch, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { target: "es2023", lib: ["es2023"], module: "nodenext", moduleResolution: "nodenext", strict: true, noEmit: true, skipLibCheck: false, types: ["node"] },
        files,
      }),
    );
    const tsc = await exec("node", [path.join(scratch, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], { cwd: scratch, env, timeout: 60_000 }).catch(
      (error: { stdout?: string; code?: number }) => ({ stdout: error.stdout ?? "", code: error.code }),
    );
    expect(tsc.stdout).toBe("");
  });

  describe("a third-party strategy from its tarball, against the real example fleet under load", () => {
    let fleet: Fleet;
    let config: string;
    beforeAll(async () => {
      fleet = await startFleet({ ports: [8631, 8632, 8633, 8634], proxyPort: 18631, version: "v1" });
      // The user's repository: the config in deploy/, the plugin installed at the top (npm install).
      const raw = parse(readFileSync(fleet.configFile, "utf8")) as Record<string, unknown>;
      raw.strategy = { use: THIRD_PARTY, minInPool: 2 };
      mkdirSync(path.join(scratch, "deploy"), { recursive: true });
      config = path.join(scratch, "deploy", "nodrop.yaml");
      writeFileSync(config, stringify(raw));
    }, 120_000);
    afterAll(async () => {
      await fleet?.stop();
    });

    it("installed once, with its peer range on @nodrop/core, next to nodrop's packages", () => {
      const installed = JSON.parse(readFileSync(path.join(scratch, "node_modules", THIRD_PARTY, "package.json"), "utf8"));
      expect(installed.peerDependencies).toEqual({ "@nodrop/core": "^0.1.0" });
      expect(existsSync(path.join(scratch, "node_modules", THIRD_PARTY, "node_modules"))).toBe(false);
    });

    it("the installed nodrop CLI plans with it (naming its file and version) and deploys with it: 0 failed, all on the new version", async () => {
      const bin = path.join(scratch, "node_modules", ".bin", "nodrop");
      const plan = await exec(bin, ["plan", "--config", config, "--version", "v2"], { cwd: scratch, env });
      expect(plan.stdout).toContain(`strategy ${THIRD_PARTY}: one-host 1.0.0 from ${path.join(scratch, "node_modules", THIRD_PARTY, "dist", "index.js")}`);
      expect(plan.stdout).toContain("local (1/2)");
      const run = await deployUnderLoad({ fleet, version: "v2", deployer: (options) => runProcess(bin, ["deploy", "--config", config, "--version", "v2", "--json"], options) });
      console.log(`pack-install: ${THIRD_PARTY} from the installed CLI, v1 -> v2: exit ${run.cli.code}, ${run.stats.requests} requests, ${run.stats.failed} failed, phases ${run.report?.phases.map((p) => p.name).join(", ")}`);
      expect(run.cli.code).toBe(0);
      expect(run.report?.ok).toBe(true);
      expect(run.report?.strategy).toBe("one-host");
      expect(run.report?.phases.map((p) => p.name)).toEqual(["local (1/2)", "local (2/2)", "finish"]);
      expect(run.report?.instances.map((i) => [i.version, i.inPool])).toEqual(fleet.instances.map(() => ["v2", true]));
      expect(run.stats.requests).toBeGreaterThan(300);
      expect(run.stats.failed).toBe(0);
      expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2", "v2"]);
    });

    it("the action's committed bundle uses it from that workspace, run as the runner runs it: 0 failed, all on the new version", async () => {
      const run = await deployUnderLoad({
        fleet,
        version: "v1",
        deployer: async (options) => {
          const action = await runActionBundle(path.join(root, "actions", "deploy", "dist"), "index", { config: "deploy/nodrop.yaml", version: "v1", "dry-run": "false" }, { cwd: scratch });
          if (action.stderr) options.onStderr?.(action.stderr);
          // deployUnderLoad reads a CLI's run: the report (here the action's result output) as stdout,
          // the log as stderr (here the action's log, which is its stdout).
          return { code: action.code ?? 1, stdout: action.outputs.result ?? action.stdout, stderr: action.stdout };
        },
      });
      console.log(`pack-install: ${THIRD_PARTY} from the action bundle, v2 -> v1: exit ${run.cli.code}, ${run.stats.requests} requests, ${run.stats.failed} failed`);
      expect(run.cli.stderr).toContain(`strategy ${THIRD_PARTY}: one-host 1.0.0 from ${path.join(scratch, "node_modules", THIRD_PARTY, "dist", "index.js")}`);
      expect(run.cli.code).toBe(0);
      expect(run.report?.ok).toBe(true);
      expect(run.report?.strategy).toBe("one-host");
      expect(run.report?.instances.map((i) => [i.version, i.inPool])).toEqual(fleet.instances.map(() => ["v1", true]));
      expect(run.stats.requests).toBeGreaterThan(300);
      expect(run.stats.failed).toBe(0);
      expect(Object.values(await fleet.versions())).toEqual(["v1", "v1", "v1", "v1"]);
    });
  });
});
