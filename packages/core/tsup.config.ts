import { readFileSync } from "node:fs";
import { defineConfig } from "tsup";

const { version } = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8")) as { version: string };

// The version is compiled in: core must know it inside a bundle (the action), where no
// package.json sits next to the code.
export default defineConfig({
  entry: ["src/index.ts", "src/http.ts"],
  format: ["esm"],
  dts: true,
  clean: true,
  target: "node22",
  sourcemap: true,
  define: { __NODROP_CORE_VERSION__: JSON.stringify(version) },
});
