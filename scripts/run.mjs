#!/usr/bin/env node
// `pnpm test` and `pnpm demo` start here: they check what a fresh clone needs (Node >= 22,
// installed packages, nginx and gunicorn), install or build what is missing, then run.
// Plain Node with no dependencies, because it runs before anything is installed.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const task = process.argv[2];
const extra = process.argv.slice(3);
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1" };

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit", env, ...options });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function must(command, args) {
  const status = run(command, args);
  if (status !== 0) {
    console.error(`nodrop: \`${command} ${args.join(" ")}\` failed (exit ${status})`);
    process.exit(status);
  }
}

const has = (program) => spawnSync("bash", ["-c", `command -v ${program}`], { stdio: "ignore" }).status === 0;

const major = Number(process.versions.node.split(".")[0]);
if (major < 22) {
  console.error(`nodrop needs Node >= 22 (this is ${process.version}). Install Node 22 or 24, or run \`bash .ci/run\`, which installs Node 24 into ~/.cache/nodrop.`);
  process.exit(1);
}

// System packages the fleet and the tests run for real.
const system = [
  ["nginx", "nginx-light"],
  ["gunicorn", "gunicorn"],
  ["ps", "procps"],
  ["curl", "curl"],
  ["sshd", "openssh-server", "/usr/sbin/sshd"],
  ["ssh-keygen", "openssh-client"],
  ["ip", "iproute2"],
  // The custom-adapter example runs against a real HAProxy.
  ["haproxy", "haproxy", "/usr/sbin/haproxy"],
];
const missing = system.filter(([program, , file]) => !has(program) && !(file && existsSync(file))).map(([, pkg]) => pkg);
if (missing.length > 0) {
  const command = `apt-get update && apt-get install -y ${missing.join(" ")}`;
  if (process.getuid?.() === 0 && has("apt-get")) {
    console.log(`nodrop: installing ${missing.join(", ")} with apt-get`);
    must("bash", ["-c", `DEBIAN_FRONTEND=noninteractive ${command.replace("install -y", "install -y -qq")} >/dev/null`]);
  } else {
    console.error(`nodrop: ${missing.join(", ")} missing. Install with:\n  sudo ${command.replaceAll("apt-get", "apt-get")}`);
    process.exit(1);
  }
}

if (!existsSync(path.join(root, "node_modules", ".modules.yaml"))) must("pnpm", ["install", "--frozen-lockfile"]);
must("pnpm", ["exec", "turbo", "run", "build", "--output-logs=errors-only"]);

switch (task) {
  case "test":
    must("pnpm", ["exec", "turbo", "run", "typecheck", "--output-logs=errors-only"]);
    // Every public package as it would be published: publint, are-the-types-wrong, package rules.
    must("node", ["scripts/lint-packages.mjs"]);
    process.exit(run("pnpm", ["exec", "vitest", "run", "--reporter=default", "--reporter=json", "--outputFile.json=.vitest-results.json", ...extra]));
    break;
  case "demo":
    process.exit(run("node", ["examples/wsgi-fleet/dist/demo.js", ...extra]));
    break;
  case "bench":
    process.exit(run("node", ["examples/wsgi-fleet/dist/bench.js", ...extra]));
    break;
  default:
    console.error("usage: node scripts/run.mjs test|demo|bench [args]");
    process.exit(2);
}
