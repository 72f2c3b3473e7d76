// Issue 14, item 6: preflight compares the routing in force (the include file's server lines) with
// the config's addresses. Here the include file routes web-8552 to 127.0.0.1:9552 while the config
// says 127.0.0.1:8552 (the instance moved; the file was not rewritten): `nodrop plan` and
// `nodrop deploy` are refused with the difference shown and nothing changes; `nodrop reconcile`
// refuses while an instance the routing serves is not healthy at the config's address, then
// fixes the file; after it the deploy goes through. Real CLI, gunicorn and nginx.
import { readFile, writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { type Fleet, runNodrop, startFleet } from "../src/index.js";

describe("nodrop reconcile: the routing in force routes an instance elsewhere than the config (real CLI, gunicorn, nginx)", () => {
  let fleet: Fleet;
  let moved: string;
  beforeAll(async () => {
    fleet = await startFleet({ ports: [8551, 8552, 8553], proxyPort: 18551 });
    // The routing in force sends web-8552's traffic to a port nothing listens on any more.
    const text = await readFile(fleet.includeFile, "utf8");
    expect(text).toContain("server 127.0.0.1:8552; # web-8552");
    moved = text.replace("server 127.0.0.1:8552; # web-8552", "server 127.0.0.1:9552; # web-8552");
    await writeFile(fleet.includeFile, moved);
    await fleet.nginx("-s", "reload");
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  const difference = "web-8552: the proxy routes to 127.0.0.1:9552, the config says 127.0.0.1:8552";

  it("plan and deploy are refused with the difference and the way out shown; nothing changes", async () => {
    const plan = await runNodrop(["plan", "--config", fleet.configFile, "--version", "v2"]);
    expect(plan.code).toBe(1);
    expect(plan.stderr).toContain(difference);
    expect(plan.stderr).toContain("nodrop reconcile");

    const deploy = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v2", "--json"]);
    expect(deploy.code).toBe(1);
    const report = JSON.parse(deploy.stdout) as { ok: boolean; error?: { message: string } };
    expect(report.ok).toBe(false);
    expect(report.error?.message).toContain(difference);
    expect(await readFile(fleet.includeFile, "utf8")).toBe(moved);
    expect(Object.values(await fleet.versions())).toEqual(["v1", "v1", "v1"]);
  });

  it("reconcile refuses when an instance the routing serves is not healthy at the config's address", async () => {
    // Another config that puts web-8553 where nothing answers.
    const config = parse(await readFile(fleet.configFile, "utf8")) as { instances: { id: string; port: number }[] };
    config.instances = config.instances.map((i) => (i.id === "web-8553" ? { ...i, port: 8599 } : i));
    const wrong = fleet.configFile.replace(/\.yaml$/, "-wrong.yaml");
    await writeFile(wrong, stringify(config));
    const result = await runNodrop(["reconcile", "--config", wrong]);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("web-8553: the proxy routes to 127.0.0.1:8553, the config says 127.0.0.1:8599");
    expect(result.stderr).toMatch(/refusing to reconcile: web-8553 is not healthy at the config's address.*nothing was changed/);
    expect(await readFile(fleet.includeFile, "utf8")).toBe(moved);
  });

  it("reconcile --dry-run shows the difference and changes nothing; reconcile fixes it; then the deploy succeeds", async () => {
    const dry = await runNodrop(["reconcile", "--config", fleet.configFile, "--dry-run"]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(difference);
    expect(dry.stdout).toContain("dry run");
    expect(await readFile(fleet.includeFile, "utf8")).toBe(moved);

    const fix = await runNodrop(["reconcile", "--config", fleet.configFile]);
    expect(fix.stderr).toBe("");
    expect(fix.code).toBe(0);
    expect(fix.stdout).toContain(difference);
    expect(fix.stdout).toContain("applied the routing in force with the config's addresses");
    expect(fix.stdout).toContain("routes every instance to the config's address");
    const text = await readFile(fleet.includeFile, "utf8");
    expect(text).toContain("server 127.0.0.1:8552; # web-8552");
    expect(text).not.toContain("9552");
    // The lock was released: the deploy that follows takes it.
    const plan = await runNodrop(["plan", "--config", fleet.configFile, "--version", "v2"]);
    expect(plan.code).toBe(0);
    const deploy = await runNodrop(["deploy", "--config", fleet.configFile, "--version", "v2"]);
    expect(deploy.code).toBe(0);
    expect(Object.values(await fleet.versions())).toEqual(["v2", "v2", "v2"]);
  });
});
