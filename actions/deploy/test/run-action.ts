// The runner's way of running an action bundle: `node dist/<entry>.js` with INPUT_* variables
// (upper-cased, hyphens kept) and the GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and GITHUB_STATE files.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

export interface ActionRun {
  code: number | null;
  stdout: string;
  stderr: string;
  outputs: Record<string, string>;
  summary: string;
  state: Record<string, string>;
}

/** Parses the runner's `name<<delimiter ... delimiter` file format. */
function parseFileCommands(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const match = /^([^<]+)<<(.+)$/.exec(lines[i]!);
    if (!match) continue;
    const value: string[] = [];
    for (i++; i < lines.length && lines[i] !== match[2]; i++) value.push(lines[i]!);
    out[match[1]!] = value.join("\n");
  }
  return out;
}

export interface RunActionOptions {
  /** Entries set to undefined are left out, as on a runner that does not offer them. */
  env?: Record<string, string | undefined>;
  /** The working directory (the runner's: the workspace). */
  cwd?: string;
  onStdout?: (text: string, child: ChildProcess) => void;
}

/** Runs an entry of an action bundle (`dist/index.js`, `dist/post.js`) as the runner does. */
export function runActionBundle(dist: string, entry: "index" | "post", inputs: Record<string, string>, options: RunActionOptions = {}): Promise<ActionRun> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "nodrop-action-"));
  for (const file of ["output", "summary", "state"]) writeFileSync(path.join(dir, file), "");
  const env: Record<string, string | undefined> = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "/root",
    GITHUB_OUTPUT: path.join(dir, "output"),
    GITHUB_STEP_SUMMARY: path.join(dir, "summary"),
    GITHUB_STATE: path.join(dir, "state"),
    GITHUB_SHA: "0123456789abcdef0123456789abcdef01234567",
    ...options.env,
  };
  for (const [name, value] of Object.entries(inputs)) env[`INPUT_${name.toUpperCase()}`] = value;
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(dist, `${entry}.js`)], { env, cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      options.onStdout?.(stdout, child);
    });
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) =>
      resolve({
        code,
        stdout,
        stderr,
        outputs: parseFileCommands(readFileSync(path.join(dir, "output"), "utf8")),
        summary: readFileSync(path.join(dir, "summary"), "utf8"),
        state: parseFileCommands(readFileSync(path.join(dir, "state"), "utf8")),
      }),
    );
  });
}
