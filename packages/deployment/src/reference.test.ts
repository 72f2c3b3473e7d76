import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { configReference } from "./reference.js";

describe("docs/config.md", () => {
  it("matches the schemas (run `pnpm run docs` after changing a schema)", () => {
    const committed = readFileSync(new URL("../../../docs/config.md", import.meta.url), "utf8");
    expect(committed).toBe(configReference());
  });

  it("documents every top-level key, the nginx options and the rolling options", () => {
    const text = configReference();
    for (const key of ["`app`", "`instances[].port`", "`commands.stop`", "`health.versionHeader`", "`proxy.configFile`", "`proxy.drainTimeout`", "`strategy.batchSize`"]) {
      expect(text).toContain(key);
    }
  });
});
