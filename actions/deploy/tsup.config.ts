import { defineConfig } from "tsup";

// One self-contained ESM bundle per entry: the runner installs nothing. ssh2 is CommonJS and
// requires Node built-ins, so the bundle gets a real `require`; its optional native helpers stay out
// (ssh2 falls back to pure JavaScript when they are missing).
export default defineConfig({
  entry: { index: "src/index.ts", post: "src/post.ts" },
  format: ["esm"],
  platform: "node",
  target: "node24",
  outDir: "dist",
  clean: true,
  splitting: false,
  sourcemap: false,
  minify: false,
  // Bundle every dependency, except ssh2's optional native helpers: cpu-features and the .node
  // crypto addon it loads in a try/catch (it falls back to pure JavaScript without them).
  noExternal: [/^(?!cpu-features$)(?!.*\.node$)/],
  external: ["cpu-features", /\.node$/],
  // CommonJS dependencies (ssh2) call require() on Node built-ins and read __dirname.
  banner: {
    js: [
      "import { createRequire as __nodropCreateRequire } from 'node:module';",
      "import { fileURLToPath as __nodropFileURLToPath } from 'node:url';",
      "import { dirname as __nodropDirname } from 'node:path';",
      "const require = __nodropCreateRequire(import.meta.url);",
      "const __filename = __nodropFileURLToPath(import.meta.url);",
      "const __dirname = __nodropDirname(__filename);",
    ].join("\n"),
  },
});
