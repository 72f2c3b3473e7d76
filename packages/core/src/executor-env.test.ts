// The local executor's child environment: `unsetEnv` names are removed from what commands (and
// whatever they start) inherit; the rest of the environment and `env` still reach them.
import { afterEach, describe, expect, it } from "vitest";
import { localExecutor } from "./executor.js";

describe("localExecutor unsetEnv", () => {
  afterEach(() => {
    delete process.env.NODROP_UNIT_SECRET;
    delete process.env.NODROP_UNIT_KEPT;
  });

  it("removes the named variables, from the process's environment and from `env`, and keeps the others", async () => {
    process.env.NODROP_UNIT_SECRET = "from-process";
    process.env.NODROP_UNIT_KEPT = "kept";
    const executor = localExecutor({ env: { NODROP_UNIT_EXTRA: "extra", NODROP_UNIT_ALSO_SECRET: "from-env" }, unsetEnv: ["NODROP_UNIT_SECRET", "NODROP_UNIT_ALSO_SECRET", "NODROP_UNIT_NEVER_SET"] });
    const result = await executor.exec("env");
    expect(result.code).toBe(0);
    const names = result.stdout.split("\n").map((line) => line.split("=")[0]);
    expect(names).toContain("NODROP_UNIT_KEPT");
    expect(names).toContain("NODROP_UNIT_EXTRA");
    expect(names).toContain("PATH");
    expect(names.filter((n) => n === "NODROP_UNIT_SECRET" || n === "NODROP_UNIT_ALSO_SECRET")).toEqual([]);
    expect(result.stdout).not.toContain("from-process");
    expect(result.stdout).not.toContain("from-env");
    // This process keeps its own environment.
    expect(process.env.NODROP_UNIT_SECRET).toBe("from-process");
  });

  it("a removed variable does not reach a background daemon a command starts", async () => {
    process.env.NODROP_UNIT_SECRET = "from-process";
    const executor = localExecutor({ unsetEnv: ["NODROP_UNIT_SECRET"] });
    const started = await executor.exec("sleep 30 >/dev/null 2>&1 </dev/null & echo $!");
    const pid = Number(started.stdout.trim());
    try {
      const { readFileSync } = await import("node:fs");
      const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
      expect(environ.some((v) => v.startsWith("PATH="))).toBe(true);
      expect(environ.filter((v) => v.startsWith("NODROP_UNIT_SECRET="))).toEqual([]);
    } finally {
      process.kill(pid, "SIGKILL");
    }
  });
});
