import { createHash } from "node:crypto";
import { readFile, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { CORE_VERSION, NodropError, PLUGIN_CONTRACT, type PluginKind, type PluginOf, describeValue, isPlugin } from "@nodrop/core";
import { resolve as resolveSpecifier } from "import-meta-resolve";
import semver from "semver";
import { builtInPlugin, builtInPlugins } from "./builtins.js";

/** A plugin a config named, loaded, with where it came from (`nodrop plan` prints this). */
export interface ResolvedPlugin<K extends PluginKind = PluginKind> {
  readonly kind: K;
  /** As the config wrote it: a short name, a package name or a ./file. */
  readonly specifier: string;
  readonly plugin: PluginOf<K>;
  readonly source: "built-in" | "package" | "file";
  /** The module loaded (absolute path); undefined for a built-in. */
  readonly file: string | undefined;
  /** The package's version, nodrop's for a built-in, or `sha256:<digest>` of a local file. */
  readonly version: string;
}

/** A resolved plugin of any kind. */
export type AnyResolvedPlugin = ResolvedPlugin<"strategy"> | ResolvedPlugin<"proxy"> | ResolvedPlugin<"executor">;

export interface ResolvePluginOptions {
  /** The config file's directory: packages and ./files are resolved from it. */
  readonly baseDir: string;
  /** nodrop's own version, shown for built-ins. */
  readonly builtInVersion?: string;
}

// A package name as npm allows it, optionally with a subpath: `@acme/nodrop-canary`, `pkg/strategy`.
const PACKAGE = /^(?:@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*(?:\/[A-Za-z0-9._~-]+)*$/;

/**
 * Loads the plugin a config names. Built-in short names come from a static table; a `./file` must
 * stay inside the config's directory (after every symlink); a package is resolved from the config's
 * directory with Node's ESM resolution, as linters and formatters resolve theirs, and nothing is
 * ever fetched. A package declaring a range on @nodrop/core that this core does not satisfy is
 * refused before its code runs. Throws E_PLUGIN naming the plugin, where nodrop looked and what was wrong.
 */
export async function resolvePlugin<K extends PluginKind>(kind: K, specifier: string, options: ResolvePluginOptions): Promise<ResolvedPlugin<K>> {
  const builtIn = builtInPlugin(kind, specifier);
  if (builtIn) return { kind, specifier, plugin: builtIn, source: "built-in", file: undefined, version: options.builtInVersion ?? CORE_VERSION };
  const refuse = (problem: string) => new NodropError("E_PLUGIN", `${kind} ${JSON.stringify(specifier)}: ${problem}`);
  let file: string;
  let version: string;
  let source: "package" | "file";
  if (specifier.startsWith("./")) {
    file = await localFile(specifier, options.baseDir, refuse);
    version = `sha256:${createHash("sha256").update(await readFile(file)).digest("hex").slice(0, 12)}`;
    source = "file";
  } else if (PACKAGE.test(specifier)) {
    const names = Object.keys(builtInPlugins[kind]);
    const notBuiltIn = names.length > 0 && !specifier.includes("/") ? `not a built-in ${kind} (${names.join(", ")}), and ` : "";
    const found = await packageFile(specifier, options.baseDir, (problem) => refuse(`${notBuiltIn}${problem}`));
    file = found.file;
    version = found.version;
    source = "package";
  } else {
    const names = Object.keys(builtInPlugins[kind]);
    throw refuse(
      `not a built-in ${kind}${names.length > 0 ? ` (${names.join(", ")})` : ""}, a package name, or a ./file inside the config's directory` +
        (path.isAbsolute(specifier) || specifier.startsWith("../") ? "; an absolute path or ../ is refused: plugins live next to the config" : ""),
    );
  }
  const plugin = await importPlugin(kind, file, refuse);
  return { kind, specifier, plugin, source, file, version };
}

/** A ./file: inside the config's directory, written and after resolving every symlink. */
async function localFile(specifier: string, baseDir: string, refuse: (problem: string) => NodropError): Promise<string> {
  const written = path.resolve(baseDir, specifier);
  if (outside(baseDir, written)) throw refuse(`escapes the config's directory ${baseDir} through ..`);
  let real: string;
  let realBase: string;
  try {
    [real, realBase] = await Promise.all([realpath(written), realpath(baseDir)]);
  } catch (error) {
    throw refuse(`not found: no file ${written} (${(error as NodeJS.ErrnoException).code ?? "error"})`);
  }
  if (outside(realBase, real)) throw refuse(`escapes the config's directory ${realBase}: a symlink leads to ${real}`);
  if (!(await stat(real)).isFile()) throw refuse(`${real} is not a file`);
  return real;
}

const outside = (base: string, target: string) => {
  const relative = path.relative(base, target);
  return relative === "" || relative.startsWith(`..${path.sep}`) || relative === ".." || path.isAbsolute(relative);
};

/** A package resolved from the config's directory; its range on @nodrop/core checked before any of its code runs. */
async function packageFile(specifier: string, baseDir: string, refuse: (problem: string) => NodropError): Promise<{ file: string; version: string }> {
  const name = specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0]!;
  let url: string;
  try {
    url = resolveSpecifier(specifier, pathToFileURL(path.join(baseDir, "nodrop.config")).href);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ERR_MODULE_NOT_FOUND") {
      throw refuse(`not found: no package ${name} in ${searchPath(baseDir).join(", ")} (install it in the project that holds the config: npm install ${name})`);
    }
    throw refuse(`cannot be resolved from ${baseDir}: ${firstLine(error)}`);
  }
  if (!url.startsWith("file:")) throw refuse(`resolves to ${url}, not a file`);
  const file = fileURLToPath(url);
  const manifest = await packageManifest(file, name);
  if (!manifest) throw refuse(`resolved to ${file}, but no package.json named ${name} is above it`);
  const range = manifest.json.peerDependencies?.["@nodrop/core"] ?? manifest.json.dependencies?.["@nodrop/core"];
  const where = `${name} ${manifest.json.version ?? "(no version)"} at ${manifest.dir}`;
  // workspace:, file: or link: is a local link (a monorepo's own plugin), not a published range.
  if (range !== undefined && !(typeof range === "string" && /^[a-z]+:/.test(range))) {
    if (typeof range !== "string" || semver.validRange(range) === null) throw refuse(`${where} declares ${describeValue(range)} for @nodrop/core, which is not a version range`);
    if (!semver.satisfies(CORE_VERSION, range, { includePrerelease: true })) {
      throw refuse(`${where} supports @nodrop/core ${range}; this nodrop runs @nodrop/core ${CORE_VERSION} (use a release of ${name} made for it, or a nodrop that satisfies ${range})`);
    }
  }
  return { file, version: typeof manifest.json.version === "string" ? manifest.json.version : "(no version)" };
}

interface Manifest {
  version?: unknown;
  peerDependencies?: Record<string, unknown>;
  dependencies?: Record<string, unknown>;
}

/** The package.json of the package that holds `file`: the nearest one above it with that name. */
async function packageManifest(file: string, name: string): Promise<{ dir: string; json: Manifest } | undefined> {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    try {
      const json = JSON.parse(await readFile(path.join(dir, "package.json"), "utf8")) as Manifest & { name?: unknown };
      if (json.name === name) return { dir, json };
    } catch {
      // No package.json here (or not JSON): keep going up.
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** The node_modules directories Node's resolution tries from the config's directory, nearest first. */
function searchPath(baseDir: string): string[] {
  const dirs: string[] = [];
  for (let dir = baseDir; ; dir = path.dirname(dir)) {
    if (path.basename(dir) !== "node_modules") dirs.push(path.join(dir, "node_modules"));
    if (path.dirname(dir) === dir) return dirs;
  }
}

/** Imports the module and checks that its default export is a plugin of this kind and contract. */
async function importPlugin<K extends PluginKind>(kind: K, file: string, refuse: (problem: string) => NodropError): Promise<PluginOf<K>> {
  let module: { default?: unknown };
  try {
    module = (await import(pathToFileURL(file).href)) as { default?: unknown };
  } catch (error) {
    throw refuse(`failed to load ${file}: ${firstLine(error)}`);
  }
  const exported = module.default;
  if (!isPlugin(exported)) {
    const what = exported === undefined ? "it has no default export" : `its default export is ${describeExport(exported)}`;
    throw refuse(`${file} is not a nodrop plugin: ${what} (a plugin module does \`export default define${capitalized(kind)}({ ... })\` with @nodrop/core)`);
  }
  if (exported.kind !== kind) throw refuse(`${file} is a ${exported.kind} plugin (${exported.name}), not a ${kind}`);
  if (exported.contract !== PLUGIN_CONTRACT) {
    throw refuse(
      `${file} (${exported.name}) was written for nodrop's plugin contract ${plain(exported.contract)} (its @nodrop/core ${plain(exported.coreVersion)}); this nodrop implements contract ${PLUGIN_CONTRACT} (@nodrop/core ${CORE_VERSION})`,
    );
  }
  return exported as PluginOf<K>;
}

function describeExport(value: unknown): string {
  if (typeof value === "function") return `a function${value.name ? ` (${value.name})` : ""}, not the object a define function returns`;
  if (typeof value === "object" && value !== null) return `an object with keys ${Object.keys(value).slice(0, 6).join(", ") || "(none)"}, not made by a define function`;
  return describeValue(value);
}

/** A value from a plugin, for a message: numbers and plain version strings as they are, the rest described. */
const plain = (value: unknown) => (typeof value === "number" || (typeof value === "string" && /^[\w.+-]{1,64}$/.test(value)) ? String(value) : describeValue(value));
const capitalized = (kind: PluginKind) => `${kind[0]!.toUpperCase()}${kind.slice(1)}`;
const firstLine = (error: unknown) => (error instanceof Error ? error.message : String(error)).split("\n")[0]!;
