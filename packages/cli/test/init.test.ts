// `nodrop init` through the CLI's own entry point, on real files (it writes, never reloads).
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../src/index.js";

function capture() {
  let text = "";
  return { write: (t: string) => void (text += t), isTTY: false, text: () => text };
}

describe("nodrop init", () => {
  it("writes the file nodrop owns once, with the strategy's routing at rest, and says what to add", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "nodrop-init-"));
    const include = path.join(dir, "nodrop", "shop.conf");
    const config = path.join(dir, "nodrop.yaml");
    writeFileSync(
      config,
      [
        "app: shop",
        "instances: [{ port: 9011 }, { port: 9012 }]",
        "commands: { stop: 'true', update: 'true', start: 'true' }",
        `proxy: { type: nginx, configFile: ${include} }`,
        "strategy: { name: sticky }",
      ].join("\n"),
    );
    const out = capture();
    const err = capture();
    expect(await main(["init", "--config", config], { stdout: out, stderr: err })).toBe(0);
    expect(out.text()).toContain(`wrote ${include} (2 instances, routing of the sticky strategy at rest)`);
    expect(out.text()).toContain(`include ${include};`);
    expect(out.text()).toContain("proxy_pass http://$nodrop_shop_pool;");
    const written = readFileSync(include, "utf8");
    expect(written).toContain("hash $remote_addr consistent;");
    expect(written).toContain("server 127.0.0.1:9011 max_fails=0; # local-9011");
    expect(written).toContain("# nodrop-generation: 1");

    // A second init leaves the file alone.
    writeFileSync(include, `${written}# edited\n`);
    const again = capture();
    expect(await main(["init", "--config", config], { stdout: again, stderr: capture() })).toBe(0);
    expect(again.text()).toContain("exists; left as it is");
    expect(readFileSync(include, "utf8")).toContain("# edited");
  });
});
