import { mkdtemp, mkdir, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { NodropError, validateConfig } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { deployRelease, packArtifact } from "./artifact.js";
import { versionRanBefore } from "./locked-deploy.js";

async function source(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-src-"));
  await mkdir(path.join(dir, "app"));
  await writeFile(path.join(dir, "VERSION"), "v2\n");
  await writeFile(path.join(dir, "app", "main.py"), "print('hi')\n");
  return dir;
}

describe("packArtifact", () => {
  it("packs a directory into the same bytes for the same files (a resume finds the release it sent), without a marker it holds", async () => {
    const dir = await source();
    await writeFile(path.join(dir, ".nodrop-release"), "version=v2\nsha256=none\n");
    const first = await packArtifact(dir, "/", "release.artifact");
    const again = await packArtifact(dir, "/", "release.artifact");
    expect(first).toMatchObject({ unpack: "tar.gz", sha256: again.sha256 });
    expect(first.name).toMatch(/\.tar\.gz$/);
    expect(execFileSync("tar", ["-tzf", first.file]).toString().split("\n").filter(Boolean).sort()).toEqual(["./", "./VERSION", "./app/", "./app/main.py"]);
    // A file touched since is another build (its time is in the tarball).
    await utimes(path.join(dir, "app", "main.py"), new Date(0), new Date(0));
    expect((await packArtifact(dir, "/", "release.artifact")).sha256).not.toBe(first.sha256);
    await first.dispose();
    await again.dispose();
  });

  it("keeps a file as it is, unpacks a tarball, and refuses a missing path or a name a shell would read", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-art-"));
    await writeFile(path.join(dir, "shop-1.0-py3-none-any.whl"), "wheel");
    await writeFile(path.join(dir, "web.tgz"), "x");
    await writeFile(path.join(dir, "a b.tar"), "x");
    expect(await packArtifact("shop-1.0-py3-none-any.whl", dir, "--artifact")).toMatchObject({ unpack: "none", bytes: 5, name: "shop-1.0-py3-none-any.whl" });
    expect((await packArtifact("web.tgz", dir, "--artifact")).unpack).toBe("tar.gz");
    await expect(packArtifact("a b.tar", dir, "--artifact")).rejects.toThrow(/--artifact "a b.tar": its name must be letters, digits/);
    await expect(packArtifact("missing.tar.gz", dir, "release.artifact")).rejects.toThrow(/release.artifact "missing.tar.gz": no such file or directory/);
  });
});

describe("deployRelease", () => {
  const config = (release?: Record<string, unknown>) =>
    validateConfig(
      { app: "web", instances: [{ port: 8011 }], commands: { stop: "s", update: "u", start: "s" }, proxy: { use: "nginx" }, ...(release ? { release } : {}) },
      { baseDir: "/srv/app" },
    );
  const releaseFor = (mode: "deploy" | "existing") => ({ mode }) as never;

  it("refuses --artifact without a release section, and for a version that ran before (its release is on the hosts)", async () => {
    const error = await deployRelease({ config: config(), releaseFor }, { mode: "deploy", override: "x.tar.gz" }).catch((e: unknown) => e);
    expect(NodropError.is(error) && error.code).toBe("E_ARGS");
    expect((error as Error).message).toMatch(/--artifact needs a release section/);
    const back = await deployRelease({ config: config({ dir: "/srv/r" }), releaseFor }, { mode: "existing", override: "x.tar.gz" }).catch((e: unknown) => e);
    expect((back as Error).message).toMatch(/--artifact is not used here: going back to a version that ran before/);
  });

  it("a version ran before when an earlier deploy record names it as an instance's `from`", () => {
    const records = [{ type: "deploy", id: "a", version: "v2", strategy: "rolling", instances: [{ id: "i", from: "v1" }] }] as never[];
    expect(versionRanBefore(records, "v1")).toBe(true);
    expect(versionRanBefore(records, "v2")).toBe(false);
  });
});

