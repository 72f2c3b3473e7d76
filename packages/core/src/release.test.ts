import { execFile } from "node:child_process";
import { mkdtemp, mkdir, readFile, readdir, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { type Executor, localExecutor } from "./executor.js";
import { type ReleaseSetup, preparedHash, releaseAction, releasesToRemove } from "./release.js";
import {
  type ReleaseState,
  emptyReleaseScript,
  incomingScript,
  inspectScript,
  installScript,
  listReleasesScript,
  markPreparedScript,
  parseInspection,
  parseMarker,
  parseReleaseList,
  releasePath,
  removeReleasesScript,
} from "./release-scripts.js";
import { thrown } from "./test-support.js";
import { throttledProgress, uploadFile } from "./upload.js";

const execFileP = promisify(execFile);
const SHA = "a".repeat(64);
const artifact = { file: "/tmp/web.tar.gz", name: "web.tar.gz", sha256: SHA, bytes: 10, unpack: "tar.gz" as const };
const setup = (o: Partial<Pick<ReleaseSetup, "artifact" | "prepare" | "mode">> = {}) => ({ mode: "deploy" as const, artifact, ...o });
const present = (marker: Record<string, string>): ReleaseState => ({ kind: "present", marker, freeBytes: undefined });
const absent: ReleaseState = { kind: "absent", freeBytes: undefined };

describe("releaseAction: what a host must do, from what it has", () => {
  const v2 = (marker: Record<string, string>) => present({ version: "v2", ...marker });
  const act = (state: ReleaseState, o: Parameters<typeof setup>[0] = {}, inUse: string[] = []) => releaseAction(state, { ...setup(), ...o }, "/srv/r/v2 on web1", "v2", inUse);

  it("uploads where the release is absent, sends nothing where it holds the same build", () => {
    expect(act(absent)).toEqual({ send: "upload", prepare: false });
    expect(act(v2({ sha256: SHA }))).toEqual({ send: "none", prepare: false });
  });

  it("never replaces another build, whether or not an instance runs it: a version names one build", () => {
    const e = thrown(() => act(v2({ sha256: "b".repeat(64) })));
    expect(e.code).toBe("E_RELEASE");
    expect(e.message).toMatch(/v2 on web1 holds another build \(sha256 bbbbbbbbbbbb…; the artifact's is aaaaaaaaaaaa…\): a version names one build, so give this one its own version, or remove that release/);
    expect(thrown(() => act(v2({ sha256: "b".repeat(64) }), {}, ["web1-8011"])).message).toMatch(/\(web1-8011 runs that release\)/);
  });

  it("never uses or replaces a directory nodrop did not make for this version (no marker, or another version's)", () => {
    expect(thrown(() => act(present({}))).message).toMatch(/exists, but it has no marker of nodrop's: nodrop did not make it for v2/);
    expect(thrown(() => act(present({ version: "v1", sha256: SHA }), { mode: "existing" })).message).toMatch(/its marker names v1/);
  });

  it("prepares unless the marker records this command on this build, and never under running processes", () => {
    const prepare = "cd {release} && make";
    expect(act(v2({ sha256: SHA, prepared: preparedHash(prepare, SHA) }), { prepare }).prepare).toBe(false);
    // Another command, or the same command on another build, prepares again.
    expect(act(v2({ sha256: SHA, prepared: preparedHash("make", SHA) }), { prepare }).prepare).toBe(true);
    expect(preparedHash(prepare, SHA)).not.toBe(preparedHash(prepare, "b".repeat(64)));
    expect(act(absent, { prepare })).toEqual({ send: "upload", prepare: true });
    expect(act(v2({ sha256: SHA, prepared: preparedHash("make", SHA) }), { prepare }, ["web1-8011"])).toEqual({ send: "none", prepare: false, preparedInUse: true });
  });

  it("without an artifact: makes an empty release for prepare to fill", () => {
    expect(releaseAction(absent, { mode: "deploy", prepare: "git clone x {release}" }, "r", "v2", [])).toEqual({ send: "create", prepare: true });
  });

  it("a rollback (existing) never sends, and refuses a release that is gone", () => {
    expect(act(v2({ sha256: SHA }), { mode: "existing" })).toEqual({ send: "none", prepare: false });
    expect(thrown(() => releaseAction(absent, { mode: "existing" }, "/srv/r/v1 on web2", "v1", [])).message).toMatch(/v1 on web2 does not exist, and this deploy sends nothing \(a rollback/);
  });

  it("a link or a file at the release's name is neither used nor replaced", () => {
    const e = thrown(() => act({ kind: "refused", why: "/srv/r/v2 is a symbolic link (to \"/etc\")", freeBytes: 1 }));
    expect(e.message).toMatch(/symbolic link .*neither uses nor replaces it; remove it/);
  });
});

describe("release scripts and what they print", () => {
  it("refuses a release path that is not plain and absolute, or a version that is not a name", () => {
    expect(releasePath("/srv/web/releases/", "v2")).toBe("/srv/web/releases/v2");
    for (const dir of ["srv/x", "/srv/../etc", "/srv/$(id)", "/", "/srv x"]) expect(thrown(() => releasePath(dir, "v2")).code).toBe("E_RELEASE");
    for (const version of ["../x", "-rf", "a b", ""]) expect(thrown(() => releasePath("/srv", version)).code).toBe("E_RELEASE");
  });

  it("reads a marker's well-formed fields only (a marker is a file anyone with access may edit)", () => {
    expect(parseMarker(["version=v2", `sha256=${SHA}`, `prepared=${SHA}`])).toEqual({ version: "v2", sha256: SHA, prepared: SHA });
    expect(parseMarker(["version=$(reboot)", "sha256=xyz", "prepared=1"])).toEqual({});
    expect(parseMarker(["sha256=none"])).toEqual({ sha256: "none" });
  });

  it("refuses an answer it does not expect", () => {
    expect(thrown(() => parseInspection("hello\n", "/srv/r/v2 on web1")).message).toMatch(/unexpected answer about \/srv\/r\/v2 on web1/);
    expect(parseInspection("state absent\nfree 2048\n", "w")).toEqual({ kind: "absent", freeBytes: 2048 * 1024 });
    expect(parseInspection("state absent\nfree lots\n", "w")).toEqual({ kind: "absent", freeBytes: undefined });
  });

  it("an install only from a directory incomingScript makes, with a real sha256 and a plain name", () => {
    const base = { dir: "/srv/r", version: "v2", incoming: "/srv/r/.nodrop-incoming-web1-Ab12Cd", sha256: SHA, unpack: "tar.gz" as const, name: "web.tar.gz" };
    expect(installScript(base)).toContain("mv -T -- content");
    expect(thrown(() => installScript({ ...base, incoming: "/etc" })).code).toBe("E_RELEASE");
    expect(thrown(() => installScript({ ...base, incoming: "/srv/r/.nodrop-incoming-web1-x;rm" })).code).toBe("E_RELEASE");
    expect(thrown(() => installScript({ ...base, incoming: "/srv/r/.nodrop-incoming-Ab12Cd" })).code).toBe("E_RELEASE");
    expect(thrown(() => installScript({ ...base, sha256: "$(id)" })).code).toBe("E_RELEASE");
    expect(thrown(() => installScript({ ...base, name: "../x" })).code).toBe("E_RELEASE");
  });
});

describe("the scripts on this machine (bash, GNU tar, sha256sum)", () => {
  const sh = async (executor: Executor, script: string) => {
    const result = await executor.exec(script);
    return { ...result, ok: result.code === 0 };
  };

  it("inspect sweeps cut uploads and reports a link at the release's name without following it", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-rel-"));
    const local = localExecutor();
    await mkdir(path.join(dir, ".nodrop-incoming-local-Old123"));
    // Another host's upload on a shared filesystem is its own business.
    await mkdir(path.join(dir, ".nodrop-incoming-web2-Old456"));
    await symlink("/etc", path.join(dir, "v2"));
    const state = parseInspection((await sh(local, inspectScript(dir, "v2", "local"))).stdout, "v2");
    expect(state).toMatchObject({ kind: "refused", why: 'v2 is a symbolic link (to "/etc")' });
    expect((await readdir(dir)).sort()).toEqual([".nodrop-incoming-web2-Old456", "v2"]);
  });

  it("a tarball becomes the release through one rename, its marker written; a wrong sha256 leaves nothing", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-rel-"));
    const build = await mkdtemp(path.join(os.tmpdir(), "nodrop-build-"));
    await writeFile(path.join(build, "VERSION"), "v2\n");
    const tarball = path.join(build, "..", `${path.basename(build)}.tar.gz`);
    await execFileP("tar", ["-czf", tarball, "-C", build, "."]);
    const sha = (await execFileP("sha256sum", [tarball])).stdout.split(" ")[0]!;
    const local = localExecutor();
    const send = async (sha256: string) => {
      const incoming = (await sh(local, incomingScript(dir, "local"))).stdout.trim();
      await uploadFile(local, tarball, `${incoming}/.nodrop-artifact`);
      return sh(local, installScript({ dir, version: "v2", incoming, sha256, unpack: "tar.gz", name: "web.tar.gz" }));
    };
    const bad = await send("b".repeat(64));
    expect(bad.code).toBe(3);
    expect(bad.stderr).toMatch(/checksum mismatch/);
    expect(await readdir(dir)).toEqual([]);
    expect((await send(sha)).ok).toBe(true);
    expect(await readdir(dir)).toEqual(["v2"]);
    expect(await readFile(path.join(dir, "v2", "VERSION"), "utf8")).toBe("v2\n");
    expect(await readFile(path.join(dir, "v2", ".nodrop-release"), "utf8")).toBe(`version=v2\nsha256=${sha}\n`);
    // Marked prepared through a temp file and a rename; a second mark replaces the first.
    expect((await sh(local, markPreparedScript(dir, "v2", SHA))).ok).toBe(true);
    expect((await sh(local, markPreparedScript(dir, "v2", "c".repeat(64)))).ok).toBe(true);
    expect(parseMarker((await readFile(path.join(dir, "v2", ".nodrop-release"), "utf8")).split("\n"))).toEqual({ version: "v2", sha256: sha, prepared: "c".repeat(64) });
    // An install onto an existing release without `replace` fails, and leaves it as it was.
    expect((await send(sha)).ok).toBe(false);
    expect((await readdir(dir)).sort()).toEqual(["v2"]);
  });

  it("the releases directory must pass the state directory's check: not a link, ours, nobody else may write to it", async () => {
    const base = await mkdtemp(path.join(os.tmpdir(), "nodrop-rel-"));
    const local = localExecutor();
    await mkdir(path.join(base, "real"));
    await symlink(path.join(base, "real"), path.join(base, "link"));
    const linked = await sh(local, inspectScript(path.join(base, "link"), "v2", "local"));
    expect(linked.code).toBe(3);
    expect(linked.stderr).toMatch(/link is a symbolic link .*nodrop does not follow links/);
    await mkdir(path.join(base, "open"), { mode: 0o777 });
    await execFileP("chmod", ["0777", path.join(base, "open")]);
    const open = await sh(local, inspectScript(path.join(base, "open"), "v2", "local"));
    expect(open.code).toBe(3);
    expect(open.stderr).toMatch(/open is writable by others \(mode 777\)/);
    // Nothing was made through the link.
    expect(await readdir(path.join(base, "real"))).toEqual([]);
  });

  it("a marker the artifact brings along (a link planted in the tarball) is replaced, never written through", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-rel-"));
    const build = await mkdtemp(path.join(os.tmpdir(), "nodrop-build-"));
    const victim = path.join(build, "..", `${path.basename(build)}-victim`);
    await writeFile(victim, "keep\n");
    await writeFile(path.join(build, "VERSION"), "v2\n");
    await symlink(victim, path.join(build, ".nodrop-release"));
    const tarball = `${build}.tar.gz`;
    await execFileP("tar", ["-czf", tarball, "-C", build, "."]);
    const sha = (await execFileP("sha256sum", [tarball])).stdout.split(" ")[0]!;
    const local = localExecutor();
    const incoming = (await sh(local, incomingScript(dir, "local"))).stdout.trim();
    await uploadFile(local, tarball, `${incoming}/.nodrop-artifact`);
    expect((await sh(local, installScript({ dir, version: "v2", incoming, sha256: sha, unpack: "tar.gz", name: "web.tar.gz" }))).ok).toBe(true);
    expect(await readFile(victim, "utf8")).toBe("keep\n");
    expect(await readFile(path.join(dir, "v2", ".nodrop-release"), "utf8")).toBe(`version=v2\nsha256=${sha}\n`);
  });

  it("an empty release for prepare to fill", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-rel-"));
    const local = localExecutor();
    const incoming = (await sh(local, incomingScript(dir, "local"))).stdout.trim();
    expect((await sh(local, emptyReleaseScript(dir, "v3", incoming))).ok).toBe(true);
    expect(await readdir(dir)).toEqual(["v3"]);
    expect(await readFile(path.join(dir, "v3", ".nodrop-release"), "utf8")).toBe("version=v3\nsha256=none\n");
  });
});

describe("uploadFile", () => {
  it("an executor without upload gets the file through exec in base64 chunks, byte for byte", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-up-"));
    const source = path.join(dir, "source.bin");
    const bytes = Buffer.alloc(7 * 1024 * 1024 + 123);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7919) % 251;
    await writeFile(source, bytes);
    const { upload: _none, ...execOnly } = localExecutor();
    const progress: number[] = [];
    await uploadFile(execOnly, source, path.join(dir, "copy.bin"), { onProgress: (sent) => progress.push(sent) });
    expect(Buffer.compare(await readFile(path.join(dir, "copy.bin")), bytes)).toBe(0);
    expect(progress.at(-1)).toBe(bytes.length);
    expect(progress.length).toBe(3);
  });

  it("the local executor copies, and never over a file or a link already at the name", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-up-"));
    await writeFile(path.join(dir, "a"), "new");
    await writeFile(path.join(dir, "victim"), "keep");
    await symlink(path.join(dir, "victim"), path.join(dir, "planted"));
    await expect(uploadFile(localExecutor(), path.join(dir, "a"), path.join(dir, "planted"))).rejects.toThrow(/EEXIST/);
    expect(await readFile(path.join(dir, "victim"), "utf8")).toBe("keep");
  });

  it("throttledProgress reports about every tenth and always the end", () => {
    const seen: number[] = [];
    const report = throttledProgress((sent) => seen.push(sent))!;
    for (let sent = 0; sent <= 1000; sent += 10) report(sent, 1000);
    expect(seen).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
  });
});

describe("keeping N releases", () => {
  const found = [
    { name: "r1", mtime: 1 },
    { name: "r2", mtime: 2 },
    { name: "r3", mtime: 3 },
    { name: "r4", mtime: 4.5 },
    { name: "r5", mtime: 4.25 },
  ];

  it("removes all but the newest N, by the marker's time, not by name", () => {
    expect(releasesToRemove(found, 3, new Set()).sort()).toEqual(["r1", "r2"]);
    expect(releasesToRemove(found, 1, new Set())).toEqual(["r5", "r3", "r2", "r1"]);
  });

  it("never removes a protected release, however old", () => {
    expect(releasesToRemove(found, 2, new Set(["r1", "r4"])).sort()).toEqual(["r2", "r3"]);
  });

  it("reads only well-formed lines with a release name, and removes only names", async () => {
    expect(parseReleaseList("release r1 1700000000.123456789\nrelease $(id) 1\nrelease -rf 2\ngarbage\nrelease r2 17\n")).toEqual([
      { name: "r1", mtime: 1700000000.123456789 },
      { name: "r2", mtime: 17 },
    ]);
    expect(thrown(() => removeReleasesScript("/srv/r", "local", ["r1", "../etc"])).code).toBe("E_RELEASE");
    const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-keep-"));
    for (const name of ["r1", "r2", "handmade"]) await mkdir(path.join(dir, name));
    for (const name of ["r1", "r2"]) await writeFile(path.join(dir, name, ".nodrop-release"), `version=${name}\n`);
    const listed = parseReleaseList((await localExecutor().exec(listReleasesScript(dir))).stdout);
    // A directory without nodrop's marker is not a release nodrop made: never listed, never removed.
    expect(listed.map((r) => r.name).sort()).toEqual(["r1", "r2"]);
    expect(listed.every((r) => r.mtime > 1e9)).toBe(true);
    expect((await localExecutor().exec(removeReleasesScript(dir, "local", ["r1"]))).code).toBe(0);
    expect((await readdir(dir)).sort()).toEqual(["handmade", "r2"]);
  });
});
