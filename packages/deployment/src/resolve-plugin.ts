import { createHash } from "node:crypto";
import { readFile, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { CORE_VERSION, NodropError, PLUGIN_CONTRACT, type PluginKind, type PluginOf, definitionProblem, describeValue, isPlugin } from "@nodrop/core";
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
// Subpath segments are names: no ".", ".." or "node_modules" (they would walk out of the package).
const PACKAGE = /^(?:@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*(?:\/(?!\.{1,2}(?:\/|$))(?!node_modules(?:\/|$))[A-Za-z0-9._~-]+)*$/;

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
    version = await digest(file).catch((error: unknown) => {
      throw refuse(`cannot read ${file}: ${firstLine(error)}`);
    });
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
  const isFile = await stat(real).then((st) => st.isFile(), (error: unknown) => {
    throw refuse(`cannot read ${real}: ${firstLine(error)}`);
  });
  if (!isFile) throw refuse(`${real} is not a file`);
  return real;
}

async function digest(file: string): Promise<string> {
  return `sha256:${createHash("sha256").update(await readFile(file)).digest("hex").slice(0, 12)}`;
}

/** Text from a plugin's files (a version, a range) as it may be printed: plain, or quoted with its escapes. */
export function printable(value: string): string {
  return /^[\w.+~^<>=| -]{1,100}$/.test(value) ? value : JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}…` : value);
}

const outside = (base: string, target: string) => {
  const relative = path.relative(base, target);
  return relative === "" || relative.startsWith(`..${path.sep}`) || relative === ".." || path.isAbsolute(relative);
};

/**
 * A package resolved from the config's directory. Its directory is the first `node_modules/<name>`
 * on Node's search path; the module it resolves to must lie inside that directory (after every
 * symlink: a `main` of "../../x.js" is refused), and that directory's package.json is the one whose
 * range on @nodrop/core is checked, before any of the package's code runs.
 */
async function packageFile(specifier: string, baseDir: string, refuse: (problem: string) => NodropError): Promise<{ file: string; version: string }> {
  const name = specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0]!;
  const looked = searchPath(baseDir);
  const root = await firstExisting(looked.map((dir) => path.join(dir, name)));
  if (!root) throw refuse(`not found: no package ${name} in ${looked.join(", ")} (install it in the project that holds the config: npm install ${name})`);
  let json: Manifest;
  try {
    json = JSON.parse(await readFile(path.join(root, "package.json"), "utf8")) as Manifest;
  } catch (error) {
    throw refuse(`${root} has no readable package.json: ${firstLine(error)}`);
  }
  const version = printable(typeof json.version === "string" ? json.version : "(no version)");
  const where = `${name} ${version} at ${root}`;
  const range = json.peerDependencies?.["@nodrop/core"] ?? json.dependencies?.["@nodrop/core"];
  // workspace:, file: or link: is a local link (a monorepo's own plugin), not a published range.
  if (range !== undefined && !(typeof range === "string" && /^(workspace|file|link):/.test(range))) {
    if (typeof range !== "string" || semver.validRange(range) === null) throw refuse(`${where} declares ${describeValue(range)} for @nodrop/core, which is not a version range`);
    if (!semver.satisfies(CORE_VERSION, range, { includePrerelease: true })) {
      throw refuse(`${where} supports @nodrop/core ${printable(range)}; this nodrop runs @nodrop/core ${CORE_VERSION} (use a release of ${name} made for it, or a nodrop that satisfies ${printable(range)})`);
    }
  }
  let url: string;
  try {
    url = resolveSpecifier(specifier, pathToFileURL(path.join(baseDir, "nodrop.config")).href);
  } catch (error) {
    throw refuse(`${where} is installed, but ${JSON.stringify(specifier)} does not resolve to a module: ${firstLine(error)} (is the package built?)`);
  }
  if (!url.startsWith("file:")) throw refuse(`resolves to ${url}, not a file`);
  const file = fileURLToPath(url);
  const exists = await stat(file).then((st) => st.isFile(), () => false);
  if (!exists) throw refuse(`${where} is installed, but ${JSON.stringify(specifier)} resolves to ${file}, which is not a file (is the package built?)`);
  const [realFile, realRoot] = await Promise.all([realpath(file).catch(() => file), realpath(root).catch(() => root)]);
  if (realFile !== realRoot && !realFile.startsWith(`${realRoot}${path.sep}`)) throw refuse(`${where} resolves to ${realFile}, outside its own directory ${realRoot}`);
  return { file: realFile, version };
}

interface Manifest {
  version?: unknown;
  peerDependencies?: Record<string, unknown>;
  dependencies?: Record<string, unknown>;
}

async function firstExisting(dirs: readonly string[]): Promise<string | undefined> {
  for (const dir of dirs) {
    try {
      if ((await stat(dir)).isDirectory()) return dir;
    } catch {
      // Not here: the next one up.
    }
  }
  return undefined;
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
  if (exported.kind !== kind) throw refuse(`${file} is a ${plain(exported.kind)} plugin (${plain(exported.name)}), not a ${kind}`);
  if (exported.contract !== PLUGIN_CONTRACT) {
    throw refuse(
      `${file} (${plain(exported.name)}) was written for nodrop's plugin contract ${plain(exported.contract)} (its @nodrop/core ${plain(exported.coreVersion)}); this nodrop implements contract ${PLUGIN_CONTRACT} (@nodrop/core ${CORE_VERSION})`,
    );
  }
  // The brand is a registered symbol anyone can copy: the shape is checked again.
  const problem = definitionProblem(kind, exported);
  if (problem) throw refuse(`${file} is not a usable ${kind} plugin: ${problem}`);
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
