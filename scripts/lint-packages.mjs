#!/usr/bin/env node
// `pnpm lint:packages`: checks every public workspace package as it would be published. Each is
// packed with `pnpm pack` (as `changeset publish` does: workspace:* becomes a real version), and the
// tarball goes through publint (every message counts, suggestions included), are-the-types-wrong
// with the esm-only profile (the packages are ESM only: CommonJS `require` is not a target), and
// this project's own rules for what a published package carries. Exits 1 on any problem.
// Needs a build first; `pnpm test` runs it after the build.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { publint } from "publint";
import { formatMessage } from "publint/utils";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => path.join(root, "node_modules", ".bin", name);

/** Workspace directories (the globs of pnpm-workspace.yaml are all "dir/*") whose package is not private. */
export function publicPackages() {
  const globs = [...readFileSync(path.join(root, "pnpm-workspace.yaml"), "utf8").matchAll(/^\s*-\s*"?([\w.-]+)\/\*"?\s*$/gm)].map((m) => m[1]);
  const found = [];
  for (const parent of globs) {
    const base = path.join(root, parent);
    if (!existsSync(base)) continue;
    for (const name of readdirSync(base).sort()) {
      const file = path.join(base, name, "package.json");
      if (!existsSync(file)) continue;
      const pkg = JSON.parse(readFileSync(file, "utf8"));
      if (pkg.private !== true) found.push({ dir: `${parent}/${name}`, name: pkg.name });
    }
  }
  return found;
}

function run(command, args, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, FORCE_COLOR: "0", NO_COLOR: "1" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, out: `${stdout}${stderr}` }));
  });
}

/** This project's rules for a published package, read from the packed package.json and file list. */
function policyProblems(dir, pkg, files) {
  const problems = [];
  const need = (ok, message) => ok || problems.push(message);
  need(pkg.type === "module", `"type" must be "module" (ESM only)`);
  const entry = pkg.exports?.["."];
  need(entry && typeof entry === "object" && Object.keys(entry)[0] === "types" && entry.default, `"exports"["."] must be { types, default }, types first`);
  need(Array.isArray(pkg.files) && pkg.files.length > 0, `"files" must list what is published`);
  need(pkg.engines?.node === ">=22.12", `"engines".node must be ">=22.12" (is ${JSON.stringify(pkg.engines?.node)})`);
  need(typeof pkg.license === "string", `"license" is missing`);
  need(typeof pkg.description === "string" && pkg.description.length > 0, `"description" is missing`);
  need(Array.isArray(pkg.keywords) && pkg.keywords.length > 0, `"keywords" is missing`);
  need(pkg.repository?.directory === dir && /^git\+https:\/\/github\.com\//.test(pkg.repository?.url ?? ""), `"repository" must have a git+https GitHub url and directory "${dir}"`);
  need(pkg.publishConfig?.access === "public" && pkg.publishConfig?.provenance === true, `"publishConfig" must be { access: "public", provenance: true }`);
  for (const field of ["dependencies", "peerDependencies", "optionalDependencies"]) {
    for (const [name, range] of Object.entries(pkg[field] ?? {})) need(!/^(workspace|file|link):/.test(range), `${field}.${name} is "${range}" in the tarball`);
  }
  for (const file of ["README.md", "LICENSE"]) need(files.includes(file), `${file} is not in the tarball`);
  const stray = files.filter((f) => /^(src|test)\//.test(f) || /\.test\.[cm]?[jt]s$/.test(f) || f.endsWith(".tsbuildinfo"));
  need(stray.length === 0, `sources or tests in the tarball: ${stray.join(", ")}`);
  return problems;
}

/** Lints one package; returns a summary line and its problems (none when clean). */
export async function lintPackage({ dir, name }, out) {
  const cwd = path.join(root, dir);
  const packed = await run("pnpm", ["pack", "--json", "--pack-destination", out], cwd);
  if (packed.code !== 0) return { line: `FAIL ${name} (${dir}): pnpm pack failed`, problems: [packed.out.trim()] };
  const { filename, files } = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("{")));
  const problems = [];

  const tarball = readFileSync(filename);
  const lint = await publint({ pack: { tarball: tarball.buffer.slice(tarball.byteOffset, tarball.byteOffset + tarball.byteLength) }, level: "suggestion", strict: true });
  for (const message of lint.messages) problems.push(`publint ${message.type} ${message.code}: ${formatMessage(message, lint.pkg, { color: false }) ?? ""}`);

  // --no-definitely-typed: the packages ship their own types; no @types look-up on the registry.
  const attw = await run(bin("attw"), [filename, "--profile", "esm-only", "--no-definitely-typed", "--no-emoji", "--no-color", "--format", "table"], cwd);
  if (attw.code !== 0) problems.push(`attw --profile esm-only:\n${attw.out.trim()}`);

  const pkg = JSON.parse((await run("tar", ["-xzOf", filename, "package/package.json"], cwd)).stdout);
  problems.push(...policyProblems(dir, pkg, files.map((f) => f.path)).map((p) => `package.json rules: ${p}`));
  const line = `${problems.length === 0 ? "ok  " : "FAIL"} ${name} (${dir}): ${files.length} files; publint ${lint.messages.length} messages; attw ${attw.code === 0 ? "ok" : "problems"}`;
  return { line, problems };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = mkdtempSync(path.join(os.tmpdir(), "nodrop-lint-packages-"));
  try {
    const packages = publicPackages();
    const results = new Array(packages.length);
    let next = 0;
    const worker = async () => {
      while (next < packages.length) {
        const index = next++;
        results[index] = await lintPackage(packages[index], out);
      }
    };
    await Promise.all(Array.from({ length: Math.min(os.availableParallelism(), 4) }, worker));
    let failed = 0;
    packages.forEach((p, index) => {
      const { line, problems } = results[index];
      console.log(line);
      if (problems.length > 0) failed += 1;
      for (const problem of problems) console.error(`  ${p.name}: ${problem.replaceAll("\n", "\n    ")}`);
    });
    console.log(`lint:packages: ${packages.length - failed} of ${packages.length} public packages clean (publint, attw --profile esm-only, package rules)`);
    process.exitCode = failed === 0 ? 0 : 1;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}
