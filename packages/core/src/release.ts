import { createHash } from "node:crypto";
import type { RunContext } from "./deploy-options.js";
import { NodropError, toNodropError } from "./errors.js";
import { type Executor, execOrThrow } from "./executor.js";
import {
  type ReleaseState,
  type Unpack,
  UPLOADED_NAME,
  emptyReleaseScript,
  incomingScript,
  inspectScript,
  installScript,
  isIncomingPath,
  listReleasesScript,
  markPreparedScript,
  parseInspection,
  parseReleaseList,
  releasePath,
  removeReleasesScript,
} from "./release-scripts.js";
import { describeValue, renderTemplate, shellQuote } from "./template.js";
import type { ExecutorFor, InstanceControl, PlanPhase } from "./types.js";
import { formatBytes, throttledProgress, uploadFile } from "./upload.js";

/** A file every host gets once, checked by its sha256 there (a directory is packed into a tarball first). */
export interface Artifact {
  /** The local file sent. */
  readonly file: string;
  /** Its name, for messages and for a file kept as it is (`unpack: "none"`). */
  readonly name: string;
  readonly sha256: string;
  readonly bytes: number;
  readonly unpack: Unpack;
}

/**
 * Releases on the instances' hosts (the config's `release` section and `commands.prepare`): before
 * any instance leaves the pool, every host gets `<dir>/<version>` (the artifact, uploaded once and
 * unpacked) and runs the prepare command once for it, side by side.
 */
export interface ReleaseSetup {
  /** Each host's releases directory, an absolute path. */
  readonly dirOf: (host: string) => string;
  readonly artifact?: Artifact | undefined;
  /** Run once per host and version in the release (`{version}`, `{release}`, `{host}`). */
  readonly prepare?: string | undefined;
  readonly prepareTimeoutMs: number;
  /**
   * "existing": the release must already be on every host, and no artifact is sent (a rollback: the
   * configured artifact is the newer version's). "deploy": sent and prepared as needed.
   */
  readonly mode: "deploy" | "existing";
  /** Releases each host keeps after a successful deploy (see `releasesToRemove`); none are removed without it. */
  readonly keep?: number | undefined;
  /**
   * The rollback target before this deploy (the journal's): never pruned when this deploy changes no
   * version (a deploy of the version running), since it then stays what a rollback goes back to.
   */
  readonly rollbackTarget?: string | undefined;
  readonly executorFor: ExecutorFor;
}

/** The hosts that run instances, each once, in config order: where releases go. */
export function instanceHosts(instances: readonly InstanceControl[]): string[] {
  return [...new Set(instances.map((i) => i.spec.host))];
}

/** The phase that puts the release on every host; nothing leaves the pool in it, so a failure there touched nothing. */
export function releasePhase(hosts: readonly string[]): PlanPhase {
  return { name: "release", instances: [], steps: [{ kind: "release", hosts, instances: [] }], onFailure: "isolate", added: "release" };
}

/** What a host must do for the release. */
export interface ReleaseAction {
  readonly send: "upload" | "create" | "none";
  readonly prepare: boolean;
  /** Prepare is due (another command, or never), but instances run the release: it is not run under them. */
  readonly preparedInUse?: boolean;
}

/** Which prepare a release has had: the command and what it ran on. A change of either prepares again. */
export function preparedHash(prepare: string, sha256: string | undefined): string {
  return createHash("sha256").update(`${prepare}\n${sha256 ?? "none"}`).digest("hex");
}

/**
 * Decides, from what the host has, whether to send the artifact and whether to prepare. A version
 * names one build: a release that holds another one is never replaced (files changed under a
 * running process, or under a rollback target, are what releases exist to avoid), and neither is a
 * directory nodrop did not make for that version.
 */
export function releaseAction(state: ReleaseState, setup: Pick<ReleaseSetup, "artifact" | "prepare" | "mode">, where: string, version: string, inUse: readonly string[]): ReleaseAction {
  if (state.kind === "refused") throw new NodropError("E_RELEASE", `${state.why}: nodrop neither uses nor replaces it; remove it`);
  if (state.kind === "present" && state.marker.version !== version) {
    const says = state.marker.version ? `its marker names ${state.marker.version}` : "it has no marker of nodrop's";
    throw new NodropError("E_RELEASE", `${where} exists, but ${says}: nodrop did not make it for ${version}, and neither uses nor replaces it; remove it`);
  }
  const sha = state.kind === "present" ? state.marker.sha256 : undefined;
  const prepare = (held: string | undefined): Pick<ReleaseAction, "prepare" | "preparedInUse"> => {
    const due = setup.prepare !== undefined && (state.kind !== "present" || state.marker.prepared !== preparedHash(setup.prepare, held));
    // Never under running processes: they were started from the release as it is.
    return due && inUse.length > 0 ? { prepare: false, preparedInUse: true } : { prepare: due };
  };
  if (setup.mode === "existing") {
    if (state.kind === "absent") throw new NodropError("E_RELEASE", `${where} does not exist, and this deploy sends nothing (a rollback, or no artifact and no prepare command): the release may have been pruned; deploy that version with its artifact`);
    return { send: "none", ...prepare(sha) };
  }
  const artifact = setup.artifact;
  if (!artifact) return { send: state.kind === "absent" ? "create" : "none", ...prepare(sha ?? "none") };
  if (state.kind === "absent") return { send: "upload", prepare: setup.prepare !== undefined };
  if (sha === artifact.sha256) return { send: "none", ...prepare(sha) };
  throw new NodropError(
    "E_RELEASE",
    `${where} holds another build (sha256 ${sha ? `${sha.slice(0, 12)}…` : "not recorded"}; the artifact's is ${artifact.sha256.slice(0, 12)}…): a version names one build, so give this one its own version${inUse.length > 0 ? ` (${inUse.join(", ")} ${inUse.length === 1 ? "runs" : "run"} that release)` : ", or remove that release"}`,
  );
}

/**
 * Puts the release on one host; resolves with what was done, for the step's log line. A failure
 * names the host and says that the routing before it is in force: nothing in the pool was touched.
 */
export async function releaseOnHost(context: RunContext, setup: ReleaseSetup, host: string): Promise<string> {
  try {
    return await putRelease(context, setup, host);
  } catch (error) {
    const inner = toNodropError(error, "E_RELEASE");
    // A dropped connection, a timeout or an interrupt keep their code; any other failure is the release's.
    const code = inner.code === "E_ABORTED" || inner.code.startsWith("E_SSH") || inner.code === "E_TIMEOUT" ? inner.code : "E_RELEASE";
    const message = inner.message.includes(host) ? inner.message : `${inner.message} (on ${host})`;
    throw new NodropError(code, message, { cause: error, routingInForce: "previous" });
  }
}

async function putRelease(context: RunContext, setup: ReleaseSetup, host: string): Promise<string> {
  const { options, run } = context;
  const signal = options.signal;
  const version = options.version;
  const executor = setup.executorFor(host);
  const dir = setup.dirOf(host);
  const release = releasePath(dir, version);
  const where = `${release} on ${host}`;
  const inspected = await execOrThrow(executor, inspectScript(dir, version, host), `looking at ${where}`, { signal, timeoutMs: 60_000 });
  const state = parseInspection(inspected.stdout, where);
  // Instances on this host that may run this version now, on either slot (one whose version is
  // unknown might: a process that does not answer its health check still has its files open).
  const inUse = run.observed.filter((o) => o.host === host && (o.version === version || o.idle?.version === version || o.version === undefined)).map((o) => o.id);
  const action = releaseAction(state, setup, where, version, inUse);
  const done: string[] = [];
  if (action.send === "upload") {
    const artifact = setup.artifact!;
    if (state.freeBytes !== undefined && state.freeBytes < artifact.bytes) {
      throw new NodropError("E_RELEASE", `${host} has ${formatBytes(state.freeBytes)} free in ${dir}, and the artifact alone is ${formatBytes(artifact.bytes)}`);
    }
    const ms = await sendArtifact(context, executor, { dir, version, artifact, where });
    done.push(`uploaded ${formatBytes(artifact.bytes)} in ${Math.round(ms)} ms, sha256 verified on the host`);
  } else if (action.send === "create") {
    const incoming = await makeIncoming(executor, dir, host, where, signal);
    await execOrThrow(executor, emptyReleaseScript(dir, version, incoming), `creating ${where}`, { signal, timeoutMs: 60_000 });
    done.push("created (empty, for prepare)");
  } else done.push(setup.artifact && setup.mode === "deploy" ? "already there (same sha256)" : "already there");
  if (action.prepare) {
    const command = renderTemplate(setup.prepare!, { version, release, host }, "commands.prepare", { version: "the deploy's version", release: "release.dir", host: "the instance's host" });
    const t0 = performance.now();
    await execOrThrow(executor, command, `prepare of ${version}`, { signal, timeoutMs: setup.prepareTimeoutMs, echo: true });
    const held = setup.mode === "deploy" && setup.artifact ? setup.artifact.sha256 : state.kind === "present" ? state.marker.sha256 : "none";
    await execOrThrow(executor, markPreparedScript(dir, version, preparedHash(setup.prepare!, held)), `marking ${where} prepared`, { signal, timeoutMs: 60_000 });
    done.push(`prepared in ${Math.round(performance.now() - t0)} ms`);
  } else if (action.preparedInUse) done.push(`not prepared again: ${inUse.join(", ")} may run it (it was prepared by another command)`);
  else if (setup.prepare !== undefined) done.push("already prepared (same command, same build)");
  return done.join(", ");
}

/** Uploads into a fresh incoming directory and installs from there; returns the upload's ms. */
async function sendArtifact(context: RunContext, executor: Executor, o: { dir: string; version: string; artifact: Artifact; where: string }): Promise<number> {
  const signal = context.options.signal;
  const incoming = await makeIncoming(executor, o.dir, executor.host, o.where, signal);
  const t0 = performance.now();
  const progress = throttledProgress((sentBytes, totalBytes) => context.run.emit({ type: "upload", host: executor.host, sentBytes, totalBytes }));
  try {
    await uploadFile(executor, o.artifact.file, `${incoming}/${UPLOADED_NAME}`, { signal, onProgress: progress });
  } catch (error) {
    // Best effort: what arrived is removed now (a full disk needs the space back); the next deploy
    // removes it otherwise. It never was a release: only the rename below makes one.
    await executor.exec(`rm -rf -- ${shellQuote(incoming)}`, { timeoutMs: 30_000 }).catch(() => undefined);
    throw error;
  }
  const ms = performance.now() - t0;
  await execOrThrow(executor, installScript({ dir: o.dir, version: o.version, incoming, sha256: o.artifact.sha256, unpack: o.artifact.unpack, name: o.artifact.name }), `installing ${o.where}`, {
    signal,
    timeoutMs: 10 * 60_000,
  });
  return ms;
}

async function makeIncoming(executor: Executor, dir: string, host: string, where: string, signal: AbortSignal | undefined): Promise<string> {
  const made = (await execOrThrow(executor, incomingScript(dir, host), `making an upload directory for ${where}`, { signal, timeoutMs: 60_000 })).stdout.trim();
  if (!isIncomingPath(dir, made)) throw new NodropError("E_RELEASE", `the host answered ${describeValue(made)} for a new upload directory in ${dir}`);
  return made;
}

/**
 * Which releases a host removes to keep `keep`: the newest by their marker's time stay, and so do
 * the protected ones (the version deployed, the versions that ran before it: the rollback target,
 * and any version an instance still runs, on either slot) whatever their age.
 */
export function releasesToRemove(found: readonly { name: string; mtime: number }[], keep: number, protect: ReadonlySet<string>): string[] {
  const newest = [...found].sort((a, b) => b.mtime - a.mtime || b.name.localeCompare(a.name));
  return newest.slice(keep).filter((r) => !protect.has(r.name)).map((r) => r.name);
}

/** What pruning did on one host, for the report. */
export interface PrunedReleases {
  readonly host: string;
  readonly kept: readonly string[];
  readonly removed: readonly string[];
}

/** Prunes every host's releases to `keep`; a host where that fails becomes a warning (the deploy already succeeded). */
export async function pruneReleases(context: RunContext, setup: ReleaseSetup & { keep: number }, hosts: readonly string[], protect: ReadonlySet<string>): Promise<{ pruned: PrunedReleases[]; warnings: string[] }> {
  const pruned: PrunedReleases[] = [];
  const warnings: string[] = [];
  const signal = context.options.signal;
  await Promise.all(
    hosts.map(async (host) => {
      const executor = setup.executorFor(host);
      const dir = setup.dirOf(host);
      try {
        const found = parseReleaseList((await execOrThrow(executor, listReleasesScript(dir), `listing the releases in ${dir}`, { signal, timeoutMs: 60_000 })).stdout);
        const removed = releasesToRemove(found, setup.keep, protect);
        if (removed.length > 0) await execOrThrow(executor, removeReleasesScript(dir, host, removed), `removing old releases from ${dir}`, { signal, timeoutMs: 10 * 60_000 });
        pruned.push({ host, kept: found.map((r) => r.name).filter((name) => !removed.includes(name)).sort(), removed: [...removed].sort() });
      } catch (error) {
        warnings.push(`old releases were not removed on ${host}: ${(error as Error).message.split("\n")[0]}`);
      }
    }),
  );
  return { pruned: pruned.sort((a, b) => a.host.localeCompare(b.host)), warnings };
}
