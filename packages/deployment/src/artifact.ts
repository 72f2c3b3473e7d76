import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdtemp, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { type Artifact, NodropError, type ReleaseSetup, describeValue } from "@nodrop/core";
import type { Deployment } from "./deployment.js";

const execFileP = promisify(execFile);

/** An artifact ready to send, and what removes the tarball a directory was packed into. */
export interface PackedArtifact extends Artifact {
  dispose(): Promise<void>;
}

/** File names an artifact may have: they reach a shell command on every host. */
const PLAIN_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

/**
 * The artifact a deploy sends (`release.artifact`, `--artifact`, the action's `artifact` input):
 * a tarball (.tar.gz, .tgz, .tar) is unpacked into the release, any other file is put there as it
 * is, and a directory is packed into a tarball first. The directory's tarball is the same bytes
 * for the same files (sorted names, no owners, gzip without a timestamp), so a `resume` that packs
 * it again finds the release it sent.
 */
export async function packArtifact(given: string, from: string, what: string): Promise<PackedArtifact> {
  const file = path.resolve(from, given);
  const seen = await lstat(file).catch((error: NodeJS.ErrnoException) => {
    throw new NodropError("E_RELEASE", `${what} ${describeValue(given)}: ${error.code === "ENOENT" ? "no such file or directory" : error.message} (resolved to ${file})`);
  });
  if (seen.isDirectory()) return packDirectory(file, what);
  if (!seen.isFile()) throw new NodropError("E_RELEASE", `${what} ${describeValue(given)} is not a file or a directory`);
  const name = path.basename(file);
  if (!PLAIN_FILE_NAME.test(name)) throw new NodropError("E_RELEASE", `${what} ${describeValue(given)}: its name must be letters, digits, '.', '_', '+' or '-' (it is used on every host)`);
  return { file, name, bytes: seen.size, sha256: await sha256Of(file), unpack: unpackOf(name), dispose: async () => undefined };
}

function unpackOf(name: string): Artifact["unpack"] {
  if (/\.(tar\.gz|tgz)$/.test(name)) return "tar.gz";
  if (name.endsWith(".tar")) return "tar";
  return "none";
}

async function packDirectory(dir: string, what: string): Promise<PackedArtifact> {
  const tmp = await mkdtemp(path.join(os.tmpdir(), "nodrop-artifact-"));
  const base = PLAIN_FILE_NAME.test(path.basename(dir)) ? path.basename(dir) : "release";
  const file = path.join(tmp, `${base}.tar.gz`);
  try {
    // GNU tar's options for the same bytes from the same files (the gnu format has no atime or
    // ctime headers); `gzip -n` leaves out name and time. A release's own marker is never sent.
    await execFileP("bash", ["-c", 'set -o pipefail; tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --exclude=./.nodrop-release -C "$1" -cf - . | gzip -n > "$2"', "pack", dir, file]);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw new NodropError("E_RELEASE", `${what}: packing ${dir} into a tarball failed: ${(error as { stderr?: string }).stderr?.trim() || (error as Error).message}`);
  }
  const { size } = await stat(file);
  return { file, name: path.basename(file), bytes: size, sha256: await sha256Of(file), unpack: "tar.gz", dispose: () => rm(tmp, { recursive: true, force: true }) };
}

/** The file's sha256, read as a stream (an artifact can be large). */
export async function sha256Of(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** A deploy's release setup, with the artifact packed; `dispose` removes what packing made. */
export interface DeployRelease {
  readonly release: ReleaseSetup | undefined;
  dispose(): Promise<void>;
}

/**
 * The release for a command: a deploy (or resume) sends the artifact (`override`, given on the
 * command line or as the action's input, else the config's `release.artifact`); a rollback
 * (`existing`) sends nothing, since the configured artifact is the newer version's.
 */
export async function deployRelease(
  deployment: Pick<Deployment, "config" | "releaseFor">,
  o: { mode: ReleaseSetup["mode"]; override?: string | undefined; overrideName?: string; cwd?: string },
): Promise<DeployRelease> {
  const section = deployment.config.release;
  const none = { release: undefined, dispose: async () => undefined };
  if (!section) {
    if (o.override !== undefined) throw new NodropError("E_ARGS", `${o.overrideName ?? "--artifact"} needs a release section in the config (release.dir: where each host keeps its releases)`);
    return none;
  }
  if (o.mode === "existing") {
    if (o.override !== undefined) throw new NodropError("E_ARGS", `${o.overrideName ?? "--artifact"} is not used here: going back to a version that ran before uses the release already on each host`);
    return { release: deployment.releaseFor("existing"), dispose: none.dispose };
  }
  const given = o.override ?? section.artifact;
  const packed = given === undefined ? undefined : await packArtifact(given, o.override !== undefined ? (o.cwd ?? process.cwd()) : deployment.config.baseDir, o.override !== undefined ? (o.overrideName ?? "--artifact") : "release.artifact");
  return { release: deployment.releaseFor("deploy", packed), dispose: async () => packed?.dispose() };
}
