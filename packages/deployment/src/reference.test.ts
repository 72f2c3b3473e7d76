import { readFileSync, readdirSync } from "node:fs";
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

describe(".changeset", () => {
  const root = new URL("../../../", import.meta.url);
  const config = JSON.parse(readFileSync(new URL(".changeset/config.json", root), "utf8")) as { ignore: string[] };
  const ignored = (name: string) => config.ignore.some((pattern) => (pattern.endsWith("*") ? name.startsWith(pattern.slice(0, -1)) : name === pattern));

  it("no changeset mixes ignored and released packages (`changeset version` refuses the whole set then)", () => {
    const files = readdirSync(new URL(".changeset/", root)).filter((f) => f.endsWith(".md") && f !== "README.md");
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) {
      const front = /^---\n([\s\S]*?)\n---/.exec(readFileSync(new URL(`.changeset/${file}`, root), "utf8"))?.[1] ?? "";
      const names = [...front.matchAll(/^"([^"]+)":\s*(major|minor|patch)$/gm)].map((m) => m[1]!);
      expect(names.length, file).toBeGreaterThan(0);
      expect(new Set(names.map(ignored)).size, `${file}: ${names.join(", ")}`).toBe(1);
    }
  });
});
